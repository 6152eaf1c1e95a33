use super::*;
use crate::loss::{Target, head_loss, weighted_sum};
use crate::optim::{OptimizerConfig, SgdConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_autograd::no_grad;

fn images(n: usize, c: usize, hw: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * c * hw * hw)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    Tensor::new(v, &[n, c, hw, hw]).unwrap()
}

fn model(spec: &str, heads: &str) -> Model {
    Model::from_specs(spec, heads, InitOptions::default(), 3).unwrap()
}

#[test]
fn output_shapes_for_every_head_kind() {
    for spec in ["resnet26:w0.125:r16", "vit-ti:p4:d1:r16"] {
        let mut m = model(spec, "10,a3,d2");
        let x = images(2, 3, 16, 1);
        let out = m.forward(&x, &Routing::AllHeads).unwrap();
        let f = m.spec().feature_dim();
        assert_eq!(out.features.pooled.shape(), &[2, f]);
        let shapes: Vec<Vec<usize>> = out
            .outputs
            .iter()
            .map(|o| o.output.shape().to_vec())
            .collect();
        assert_eq!(
            shapes,
            vec![vec![2, 10], vec![2, 3], vec![2, 2, 16, 16]],
            "{spec}"
        );
        assert!(out.outputs.iter().all(|o| o.rows == (0..2)));
        // Without a dense head no feature map is kept.
        let mut m = model(spec, "4");
        let out = m.forward(&x, &Routing::AllHeads).unwrap();
        assert!(out.features.map.is_none());
    }
    // Single-channel inputs (MNIST-like) with option c1.
    for spec in ["resnet26:w0.125:c1:r16", "vit-ti:p4:d1:r16:c1"] {
        let mut m = model(spec, "10");
        let out = m.forward(&images(2, 1, 16, 1), &Routing::AllHeads).unwrap();
        assert_eq!(out.outputs[0].output.shape(), &[2, 10], "{spec}");
    }
    // Batch 1 and a non-square ResNet input work too.
    let mut m = model("resnet26:w0.125", "5,d1");
    let x = Tensor::new(vec![0.5; 3 * 8 * 24], &[1, 3, 8, 24]).unwrap();
    let out = m.forward(&x, &Routing::AllHeads).unwrap();
    assert_eq!(out.outputs[1].output.shape(), &[1, 1, 8, 24]);
}

#[test]
fn bad_images_are_reported() {
    let mut m = model("vit-ti:p4:d1:r16", "10");
    let e = m
        .forward(&images(1, 3, 32, 0), &Routing::AllHeads)
        .unwrap_err()
        .to_string();
    assert!(e.contains("32x32") && e.contains("16x16"), "{e}");
    let e = m
        .forward(&images(1, 1, 16, 0), &Routing::AllHeads)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[n >= 1, 3, h, w]"), "{e}");
    let mut m = model("resnet26:w0.125", "10");
    let e = m
        .forward(&images(1, 3, 12, 0), &Routing::AllHeads)
        .unwrap_err()
        .to_string();
    assert!(e.contains("divisible by 8"), "{e}");
}

#[test]
fn domain_sub_batches_go_to_their_heads() {
    for spec in ["resnet26:w0.125:r16", "vit-ti:p4:d1:r16"] {
        let mut m = model(spec, "3,5");
        let x = images(5, 3, 16, 2);
        let all = m.forward(&x, &Routing::AllHeads).unwrap();
        // Domains: rows 0..2 -> head 1, rows 2..3 -> head 0, rows 3..5 -> head 1 (shared).
        let routing = Routing::Segments(vec![
            Segment { len: 2, head: 1 },
            Segment { len: 1, head: 0 },
            Segment { len: 2, head: 1 },
        ]);
        let out = m.forward(&x, &routing).unwrap();
        assert_eq!(out.outputs.len(), 3);
        for o in &out.outputs {
            let full = all.outputs[o.head].output.to_vec();
            let c = all.outputs[o.head].output.shape()[1];
            let want = &full[o.rows.start * c..o.rows.end * c];
            let got = o.output.to_vec();
            assert_eq!(o.output.shape(), &[o.rows.len(), c]);
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{spec}: {a} vs {b}");
            }
        }
        // Gradients reach only the heads that received rows.
        let routing = Routing::Segments(vec![Segment { len: 5, head: 1 }]);
        let out = m.forward(&x, &routing).unwrap();
        let loss = head_loss(
            &m.heads().0[1],
            &out.outputs[0].output,
            &Target::Classes(vec![0, 1, 2, 3, 4]),
        )
        .unwrap();
        let g = loss.backward().unwrap();
        assert!(m.store().grad(&g, "heads.0.weight").unwrap().is_none());
        assert!(m.store().grad(&g, "heads.1.weight").unwrap().is_some());
    }
}

fn bn_stats(m: &Model, name: &str) -> Vec<f32> {
    m.store().values(name).unwrap().to_vec()
}

#[test]
fn batch_norm_train_and_eval_modes_differ_as_expected() {
    let mut m = model("resnet26:w0.125:r16", "4");
    let x = images(4, 3, 16, 5);
    // Training forward: running mean = 0.1 * batch mean of conv1's output, per channel.
    let conv1 = x
        .conv2d(m.store().get("backbone.conv1.weight").unwrap(), None, 1, 1)
        .unwrap();
    let (n, c, hw) = (4, conv1.shape()[1], 16 * 16);
    let v = conv1.to_vec();
    let mean: Vec<f64> = (0..c)
        .map(|ch| {
            (0..n)
                .flat_map(|i| v[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter())
                .map(|&x| x as f64)
                .sum::<f64>()
                / (n * hw) as f64
        })
        .collect();
    let train_out = m.forward(&x, &Routing::AllHeads).unwrap().outputs[0]
        .output
        .to_vec();
    let rm = bn_stats(&m, "backbone.bn1.running_mean");
    for (a, b) in rm.iter().zip(&mean) {
        assert!((*a as f64 - 0.1 * b).abs() < 1e-5, "{a} vs {}", 0.1 * b);
    }
    assert!(rm.iter().any(|&v| v.abs() > 1e-4));
    let rv = bn_stats(&m, "backbone.layer2.0.bn2.running_var");
    assert!(rv.iter().all(|&v| v != 1.0));

    // Eval mode uses the running statistics: no update, different output, per-sample
    // independence (a row's output does not depend on the rest of the batch).
    m.set_train(false);
    let before = bn_stats(&m, "backbone.bn1.running_mean");
    let eval_out = {
        let _g = no_grad();
        m.forward(&x, &Routing::AllHeads).unwrap().outputs[0]
            .output
            .to_vec()
    };
    assert_eq!(before, bn_stats(&m, "backbone.bn1.running_mean"));
    assert!(
        train_out
            .iter()
            .zip(&eval_out)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
    let first = {
        let _g = no_grad();
        let x1 = x.narrow(0, 0, 1).unwrap();
        m.forward(&x1, &Routing::AllHeads).unwrap().outputs[0]
            .output
            .to_vec()
    };
    for (a, b) in first.iter().zip(&eval_out[..4]) {
        assert!((a - b).abs() < 1e-5);
    }
    // In training mode the same row's output does depend on the batch.
    m.set_train(true);
    let x1 = x.narrow(0, 0, 2).unwrap();
    let pair = m.forward(&x1, &Routing::AllHeads).unwrap().outputs[0]
        .output
        .to_vec();
    assert!(
        pair[..4]
            .iter()
            .zip(&train_out[..4])
            .any(|(a, b)| (a - b).abs() > 1e-4)
    );
}

#[test]
fn init_options_and_reproducibility() {
    let a = model("resnet26:w0.125", "10");
    let b = model("resnet26:w0.125", "10");
    assert_eq!(a.store().flat_values(), b.store().flat_values());
    let z = Model::from_specs(
        "resnet26:w0.125",
        "10",
        InitOptions {
            zero_init_residual: true,
        },
        3,
    )
    .unwrap();
    assert!(
        z.store()
            .values("backbone.layer3.1.bn3.weight")
            .unwrap()
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(
        a.store()
            .values("backbone.layer3.1.bn3.weight")
            .unwrap()
            .iter()
            .all(|&v| v == 1.0)
    );
    assert_eq!(
        a.kind_of("backbone.bn1.running_mean"),
        Some(ParamKind::RunningMean)
    );
    assert_eq!(
        a.store().num_trainable_elements(),
        a.layout().trainable_param_count()
    );
}

/// One SGD step on a fixed batch; returns the loss before the step.
fn train_step(m: &mut Model, opt: &mut Optimizer, x: &Tensor, labels: &[Vec<i64>], lr: f32) -> f32 {
    let out = m.forward(x, &Routing::AllHeads).unwrap();
    let losses: Vec<Tensor> = out
        .outputs
        .iter()
        .zip(labels)
        .map(|(o, l)| {
            head_loss(&m.heads().0[o.head], &o.output, &Target::Classes(l.clone())).unwrap()
        })
        .collect();
    let w = vec![1.0 / losses.len() as f32; losses.len()];
    let loss = weighted_sum(&losses, &w).unwrap();
    let value = loss.item().unwrap();
    let grads = loss.backward().unwrap();
    drop(out);
    m.step(opt, &grads, lr, Some(5.0)).unwrap();
    value
}

fn random_labels(n: usize, classes: usize, seed: u64) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(0..classes as i64))
        .collect()
}

#[test]
fn checkpoint_resume_matches_an_uninterrupted_run() {
    for spec in ["resnet26:w0.125:r16", "vit-ti:p8:d1:r16"] {
        let x = images(4, 3, 16, 9);
        let labels = vec![random_labels(4, 3, 1), random_labels(4, 5, 2)];
        let config = OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            ..Default::default()
        });
        let mut a = model(spec, "3,5");
        let mut opt_a = Optimizer::new(config, true).unwrap();
        let mut losses_a = Vec::new();
        for _ in 0..6 {
            losses_a.push(train_step(&mut a, &mut opt_a, &x, &labels, 0.05));
        }
        // Interrupted run: 3 steps, save, rebuild everything from the file, 3 more steps.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let mut b = model(spec, "3,5");
        let mut opt_b = Optimizer::new(config, true).unwrap();
        let mut losses_b = Vec::new();
        for _ in 0..3 {
            losses_b.push(train_step(&mut b, &mut opt_b, &x, &labels, 0.05));
        }
        b.save(&path, Some(&opt_b), 3, &BTreeMap::new()).unwrap();
        drop((b, opt_b));
        let (mut c, ck) = Model::from_checkpoint(&path).unwrap();
        assert_eq!(ck.meta.step, 3);
        let mut opt_c = ck.optimizer().unwrap().unwrap();
        for _ in 0..3 {
            losses_b.push(train_step(&mut c, &mut opt_c, &x, &labels, 0.05));
        }
        assert_eq!(losses_a, losses_b, "{spec}");
        assert_eq!(a.store().flat_values(), c.store().flat_values());
        for e in a.store().buffers() {
            assert_eq!(
                e.tensor().to_vec(),
                c.store().values(e.name()).unwrap(),
                "{}",
                e.name()
            );
        }
        assert!(losses_a[5] < losses_a[0]);
    }
}

#[test]
fn loading_a_mismatched_checkpoint_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    model("resnet26:w0.125", "10")
        .save(&path, None, 0, &BTreeMap::new())
        .unwrap();
    let mut m = model("resnet26:w0.125", "10,10");
    let before = m.store().flat_values();
    let e = m.load(&path).unwrap_err().to_string();
    assert!(
        e.contains("missing") && e.contains("`heads.1.weight`"),
        "{e}"
    );
    assert_eq!(before, m.store().flat_values());
}

#[test]
fn losses_for_binary_and_dense_heads() {
    let mut m = model("vit-ti:p4:d1:r8", "a3,d2,d1");
    let x = images(2, 3, 8, 4);
    let out = m.forward(&x, &Routing::AllHeads).unwrap();
    let attrs = Target::Attributes(vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    let seg = Target::DenseClasses((0..2 * 64).map(|i| (i % 2) as i64).collect());
    let depth = Target::DenseValues(vec![0.25; 2 * 64]);
    let l: Vec<Tensor> = [attrs, seg, depth]
        .iter()
        .zip(&out.outputs)
        .map(|(t, o)| head_loss(&m.heads().0[o.head], &o.output, t).unwrap())
        .collect();
    // BCE on near-zero logits is about ln 2; 2-class CE too.
    assert!((l[0].item().unwrap() - 2f32.ln()).abs() < 0.2);
    assert!(l.iter().all(|t| t.item().unwrap().is_finite()));
    let total = weighted_sum(&l, &[0.5, 0.3, 0.2]).unwrap();
    let expect: f32 = l
        .iter()
        .zip([0.5, 0.3, 0.2])
        .map(|(t, w)| w * t.item().unwrap())
        .sum();
    assert!((total.item().unwrap() - expect).abs() < 1e-6);
    let g = total.backward().unwrap();
    assert!(m.store().grad(&g, "heads.1.0.weight").unwrap().is_some());
    // A target of the wrong kind is refused.
    let e = head_loss(
        &m.heads().0[0],
        &out.outputs[0].output,
        &Target::Classes(vec![0, 1]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Classes") && e.contains("a3"), "{e}");
}

#[test]
fn models_and_optimizers_move_between_threads() {
    // PBT trains population members on worker threads.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Optimizer>();
    let mut m = model("vit-ti:p8:d1:r16", "3");
    let handle = std::thread::spawn(move || {
        let out = m.forward(&images(1, 3, 16, 0), &Routing::AllHeads).unwrap();
        out.outputs[0].output.shape().to_vec()
    });
    assert_eq!(handle.join().unwrap(), vec![1, 3]);
}

#[test]
fn step_skips_parameters_backward_did_not_reach() {
    // Head 0 gets no rows: like PyTorch with set_to_none, it must not move (no decay, no
    // momentum), while head 1 and the backbone do.
    let mut m = model("vit-ti:p8:d1:r16", "3,3");
    let config = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        weight_decay: 0.1,
        ..Default::default()
    });
    let mut opt = Optimizer::new(config, false).unwrap();
    let x = images(2, 3, 16, 3);
    let routing = Routing::Segments(vec![Segment { len: 2, head: 1 }]);
    let h0 = m.store().values("heads.0.weight").unwrap().to_vec();
    let h1 = m.store().values("heads.1.weight").unwrap().to_vec();
    let qkv = m
        .store()
        .values("backbone.blocks.0.attn.qkv.weight")
        .unwrap()
        .to_vec();
    for _ in 0..2 {
        let out = m.forward(&x, &routing).unwrap();
        let loss = head_loss(
            &m.heads().0[1],
            &out.outputs[0].output,
            &Target::Classes(vec![0, 2]),
        )
        .unwrap();
        let g = loss.backward().unwrap();
        drop((out, loss));
        let norm = m.step(&mut opt, &g, 0.1, Some(1e-3)).unwrap();
        assert!(norm > 1e-3);
    }
    assert_eq!(m.store().values("heads.0.weight").unwrap(), &h0[..]);
    assert_ne!(m.store().values("heads.1.weight").unwrap(), &h1[..]);
    assert_ne!(
        m.store()
            .values("backbone.blocks.0.attn.qkv.weight")
            .unwrap(),
        &qkv[..]
    );
    assert!(
        opt.state_tensors()
            .iter()
            .all(|(n, _)| !n.contains("heads.0."))
    );
}

#[test]
fn copy_state_from_copies_parameters_and_buffers() {
    let mut a = model("resnet26:w0.125:r16", "3");
    a.forward(&images(2, 3, 16, 1), &Routing::AllHeads).unwrap();
    let mut b = Model::from_specs("resnet26:w0.125:r16", "3", InitOptions::default(), 99).unwrap();
    assert_ne!(a.store().flat_values(), b.store().flat_values());
    b.copy_state_from(&a).unwrap();
    for e in a.store().iter() {
        assert_eq!(
            e.tensor().to_vec(),
            b.store().values(e.name()).unwrap(),
            "{}",
            e.name()
        );
    }
    let mut c = model("resnet26:w0.125:r16", "4");
    let e = c.copy_state_from(&a).unwrap_err().to_string();
    assert!(e.contains("heads `3`") && e.contains("heads `4`"), "{e}");
}
