//! Whole models on a CUDA device (the CPU emulator without a GPU) against the same models on
//! the CPU: ResNet-26 and ViT-Ti/4 forward and backward (outputs, loss, every parameter
//! gradient), training steps with SGD and AdamW on the device (losses, parameters, BN running
//! statistics), and checkpoints written from the device. The emulator runs every GPU thread on
//! the CPU, so it uses 8x8 images; a real GPU gets the 32x32 models.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_autograd::{Device, Gradients, Tensor};
use scalarize_kernels::cuda::Gpu;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::optim::{AdamWConfig, Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

/// The two architectures of the issue, at a resolution the device can afford.
fn specs(gpu: &Gpu) -> [String; 2] {
    let r = if gpu.is_emulated() { 8 } else { 32 };
    [format!("resnet26:w0.25:r{r}"), format!("vit-ti:p4:r{r}")]
}

fn batch(n: usize, r: usize, seed: u64) -> (Tensor, Vec<Vec<i64>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * 3 * r * r)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let labels = (0..2)
        .map(|_| (0..n).map(|_| rng.random_range(0..10)).collect())
        .collect();
    (Tensor::new(x, &[n, 3, r, r]).unwrap(), labels)
}

/// Loss of both heads (weights 0.4 / 0.6) and its gradients.
fn loss_and_grads(m: &mut Model, x: &Tensor, labels: &[Vec<i64>]) -> (f32, Vec<f32>, Gradients) {
    let out = m.forward(x, &Routing::AllHeads).unwrap();
    let logits = out.outputs[0].output.to_vec();
    let losses: Vec<Tensor> = out
        .outputs
        .iter()
        .zip(labels)
        .map(|(o, l)| {
            head_loss(&m.heads().0[o.head], &o.output, &Target::Classes(l.clone())).unwrap()
        })
        .collect();
    let loss = weighted_sum(&losses, &[0.4, 0.6]).unwrap();
    assert_eq!(
        loss.device(),
        m.device(),
        "the loss stays on the model's device"
    );
    let grads = loss.backward().unwrap();
    (loss.item().unwrap(), logits, grads)
}

/// |device - cpu| <= rel·(max |cpu| + |cpu|) elementwise. Train-mode BN over small batches
/// and 1x1 maps amplifies summation-order differences (the device's f64 GEMM reference or
/// cuBLAS vs the CPU's blocked GEMM): with these 8-image batches a 1e-7 relative change of the
/// input moves the stem's weight gradient by 1.5e-5 (2.3e-4 with 3 images), hence 1e-3; a
/// wrong gradient is off by O(1).
fn close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max)
        .max(1e-6);
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / (scale + w.abs());
        worst = worst.max(err);
        assert!(
            err <= rel,
            "{what}: [{i}] device {g} cpu {w} (max |cpu| {scale})"
        );
    }
    if worst > rel / 10.0 {
        eprintln!("{what}: worst relative difference {worst:.2e}");
    }
}

fn pair(spec: &str, gpu: &Arc<Gpu>) -> (Model, Model) {
    let cpu = Model::from_specs(spec, "10,10", InitOptions::default(), 5).unwrap();
    let mut dev = Model::from_specs(spec, "10,10", InitOptions::default(), 5).unwrap();
    dev.to_gpu(gpu).unwrap();
    assert_eq!(dev.device(), Device::Cuda(gpu.ordinal()));
    (cpu, dev)
}

#[test]
fn forward_and_backward_match_the_cpu() {
    let Some(gpu) = Gpu::for_tests("model_forward_backward") else {
        return;
    };
    for spec in specs(&gpu) {
        let (mut cpu, mut dev) = pair(&spec, &gpu);
        let r = cpu.spec().resolution;
        let (x, labels) = batch(8, r, 11);
        let (lc, oc, gc) = loss_and_grads(&mut cpu, &x, &labels);
        let (ld, od, gd) = loss_and_grads(&mut dev, &x.to_gpu(&gpu).unwrap(), &labels);
        close(&od, &oc, 1e-3, &format!("{spec}: head 0 logits"));
        close(&[ld], &[lc], 1e-4, &format!("{spec}: loss"));
        let mut checked = 0;
        for e in cpu.store().trainable() {
            let want = cpu.store().grad(&gc, e.name()).unwrap().map(Tensor::to_vec);
            let got = dev.store().grad(&gd, e.name()).unwrap().map(|t| {
                assert_eq!(
                    t.device(),
                    dev.device(),
                    "{spec}: {} gradient device",
                    e.name()
                );
                t.to_vec()
            });
            match (got, want) {
                (Some(g), Some(w)) => {
                    close(&g, &w, 1e-3, &format!("{spec}: d {}", e.name()));
                    checked += 1;
                }
                (g, w) => assert_eq!(g.is_some(), w.is_some(), "{spec}: {}", e.name()),
            }
        }
        assert!(checked > 10, "{spec}: only {checked} gradients compared");
    }
}

/// The optimizers the device tests step with: SGD (Nesterov momentum 0.9, weight decay
/// 5e-4) and AdamW with its defaults.
fn optimizers() -> [OptimizerConfig; 2] {
    [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            ..Default::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ]
}

#[test]
fn training_steps_on_the_device_follow_the_cpu() {
    let Some(gpu) = Gpu::for_tests("model_training_steps") else {
        return;
    };
    let configs = optimizers();
    for (spec, config) in specs(&gpu).into_iter().zip(configs) {
        let (mut cpu, mut dev) = pair(&spec, &gpu);
        let r = cpu.spec().resolution;
        let (x, labels) = batch(8, r, 12);
        let xd = x.to_gpu(&gpu).unwrap();
        let (mut oc, mut od) = (
            Optimizer::new(config, true).unwrap(),
            Optimizer::new(config, true).unwrap(),
        );
        let lr = if matches!(config, OptimizerConfig::Sgd(_)) {
            0.05
        } else {
            1e-3
        };
        for step in 0..3 {
            let (lc, _, gc) = loss_and_grads(&mut cpu, &x, &labels);
            let (ld, _, gd) = loss_and_grads(&mut dev, &xd, &labels);
            close(&[ld], &[lc], 1e-3, &format!("{spec}: loss at step {step}"));
            let nc = cpu.step(&mut oc, &gc, lr, Some(1.0)).unwrap();
            let nd = dev.step(&mut od, &gd, lr, Some(1.0)).unwrap();
            close(
                &[nd],
                &[nc],
                1e-3,
                &format!("{spec}: gradient norm at step {step}"),
            );
        }
        close(
            &dev.store().flat_values(),
            &cpu.store().flat_values(),
            1e-3,
            &format!("{spec}: parameters after 3 steps"),
        );
        for e in cpu.store().buffers() {
            let got = dev.store().get(e.name()).unwrap().to_vec();
            close(
                &got,
                &e.tensor().to_vec(),
                1e-3,
                &format!("{spec}: {}", e.name()),
            );
        }
        // The device optimizer's state reads back like the host one's.
        let (hc, hd) = (oc.clone(), od.clone());
        let names = |o: &Optimizer| -> Vec<String> {
            o.state_tensors().into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(names(&hd), names(&hc), "{spec}: optimizer state names");
        for ((n, a), (_, b)) in hd.state_tensors().into_iter().zip(hc.state_tensors()) {
            close(a, b, 2e-3, &format!("{spec}: {n}"));
        }
    }
}

#[test]
fn a_checkpoint_saved_from_the_device_loads_on_the_cpu() {
    let Some(gpu) = Gpu::for_tests("model_device_checkpoint") else {
        return;
    };
    let spec = &specs(&gpu)[0];
    let (_, mut dev) = pair(spec, &gpu);
    let r = dev.spec().resolution;
    let (x, labels) = batch(2, r, 13);
    let config = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..Default::default()
    });
    let mut opt = Optimizer::new(config, true).unwrap();
    let (_, _, g) = loss_and_grads(&mut dev, &x.to_gpu(&gpu).unwrap(), &labels);
    dev.step(&mut opt, &g, 0.1, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.safetensors");
    dev.save(&path, Some(&opt), 1, &Default::default()).unwrap();
    let (back, ck) = Model::from_checkpoint(&path).unwrap();
    assert_eq!(back.device(), Device::Cpu);
    assert_eq!(back.store().flat_values(), dev.store().flat_values());
    let restored = ck.optimizer().unwrap().unwrap();
    assert_eq!(restored, opt, "optimizer state survives the round trip");
}

/// A one-block ViT (every parameter kind, a tenth of ViT-Ti's parameters) for the optimizer
/// tests, which the emulator steps through element by element.
fn small_spec(gpu: &Gpu) -> String {
    let r = if gpu.is_emulated() { 8 } else { 32 };
    format!("vit-ti:p4:r{r}:d1")
}

/// Random directions in store order, one per step (fresh values, never zeros).
fn directions(m: &Model, steps: usize, seed: u64) -> Vec<Vec<f32>> {
    let n = m.store().num_trainable_elements();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..steps)
        .map(|_| (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect())
        .collect()
}

/// Asserts two optimizers hold bit-identical state (names and values).
fn same_state(dev: &Optimizer, cpu: &Optimizer, what: &str) {
    let (hd, hc) = (dev.clone(), cpu.clone());
    let (sd, sc) = (hd.state_tensors(), hc.state_tensors());
    assert_eq!(sd.len(), sc.len(), "{what}: number of state tensors");
    for ((nd, a), (nc, b)) in sd.into_iter().zip(sc) {
        assert_eq!(nd, nc, "{what}: state tensor names");
        bits(a, b, &format!("{what}: {nd}"));
    }
    assert_eq!(hd.param_steps(), hc.param_steps(), "{what}: AdamW steps");
}

/// Bit equality, reporting the first differing element.
fn bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: [{i}] device {} cpu {}", got[i], want[i]);
    }
}

/// `step_flat_device` with a device direction takes the same steps as `step_flat` on the CPU
/// (bit for bit: the device optimizer uses the host's rounding), with and without clipping,
/// and so does `step_flat` with a host direction on a device model.
#[test]
fn step_flat_device_matches_step_flat_on_the_cpu() {
    let Some(gpu) = Gpu::for_tests("model_step_flat_device") else {
        return;
    };
    let configs = optimizers();
    let spec = &small_spec(&gpu);
    for (k, config) in configs.into_iter().enumerate() {
        for clip in [None, Some(20.0f32)] {
            let what = format!("{config:?} clip {clip:?}");
            let (mut cpu, mut dev) = pair(spec, &gpu);
            let (_, mut dev_host) = pair(spec, &gpu);
            let new_opt = || Optimizer::new(config, true).unwrap();
            let (mut oc, mut od, mut oh) = (new_opt(), new_opt(), new_opt());
            for (s, d) in directions(&cpu, 3, 40 + k as u64).iter().enumerate() {
                let mut host = d.clone();
                let want_norm = match clip {
                    Some(m) => {
                        scalarize_nn::optim::clip_grad_norm(&mut [&mut host[..]], m).unwrap()
                    }
                    None => scalarize_nn::optim::global_grad_norm(&[&host[..]]) as f32,
                };
                if clip.is_some() {
                    assert!(want_norm > 20.0, "{what}: the clip must act");
                }
                cpu.step_flat(&mut oc, &host, 0.05).unwrap();
                let dd = gpu.upload(d).unwrap();
                let norm = dev.step_flat_device(&mut od, &dd, 0.05, clip).unwrap();
                assert_eq!(norm, want_norm, "{what}: norm at step {s}");
                if clip.is_none() {
                    dev_host.step_flat(&mut oh, d, 0.05).unwrap();
                }
            }
            let want = cpu.store().flat_values();
            bits(
                &dev.store().flat_values(),
                &want,
                &format!("{what}: parameters"),
            );
            same_state(&od, &oc, &what);
            if clip.is_none() {
                let w = format!("{what}: step_flat with a host direction");
                bits(&dev_host.store().flat_values(), &want, &w);
                same_state(&oh, &oc, &w);
            }
        }
    }
}

/// Wrong lengths and host models are clear errors that change nothing.
#[test]
fn step_flat_device_rejects_bad_inputs() {
    let Some(gpu) = Gpu::for_tests("model_step_flat_device_errors") else {
        return;
    };
    let spec = &small_spec(&gpu);
    let (mut cpu, mut dev) = pair(spec, &gpu);
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(AdamWConfig::default()), true).unwrap();
    let n = dev.store().num_trainable_elements();
    let before = dev.store().flat_values();
    let short = gpu.upload(&vec![1.0f32; n - 1]).unwrap();
    let e = dev
        .step_flat_device(&mut opt, &short, 0.1, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{}", n - 1)) && e.contains(&n.to_string()),
        "{e}"
    );
    let ok = gpu.upload(&vec![1.0f32; n]).unwrap();
    let e = cpu
        .step_flat_device(&mut opt, &ok, 0.1, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GPU"), "{e}");
    assert_eq!(dev.store().flat_values(), before, "nothing changed");
}

/// `Model::step` on the device with clipping takes the CPU's clipped step bit for bit: the
/// device gradients, read back, drive the host rule (`clip_grad_norm`, then
/// `Optimizer::update` per parameter that has a gradient). The first step's loss uses head 0
/// only, so head 1 has no gradient and must be skipped (no decay, no state).
#[test]
fn clipped_device_step_equals_the_clipped_cpu_step() {
    let Some(gpu) = Gpu::for_tests("model_clipped_device_step") else {
        return;
    };
    let configs = optimizers();
    let spec = &small_spec(&gpu);
    for config in configs {
        let (mut cpu, mut dev) = pair(spec, &gpu);
        let r = cpu.spec().resolution;
        let (x, labels) = batch(4, r, 14);
        let xd = x.to_gpu(&gpu).unwrap();
        let (mut oc, mut od) = (
            Optimizer::new(config, true).unwrap(),
            Optimizer::new(config, true).unwrap(),
        );
        let max_norm = 0.5f32;
        for step in 0..2 {
            let what = format!("{config:?} step {step}");
            let out = dev.forward(&xd, &Routing::AllHeads).unwrap();
            let heads = if step == 0 { 1 } else { 2 };
            let losses: Vec<Tensor> = out.outputs[..heads]
                .iter()
                .zip(&labels)
                .map(|(o, l)| {
                    let h = &dev.heads().0[o.head];
                    head_loss(h, &o.output, &Target::Classes(l.clone())).unwrap()
                })
                .collect();
            let loss = weighted_sum(&losses, &vec![1.0; heads]).unwrap();
            let gd = loss.backward().unwrap();
            drop((out, losses, loss));
            // The host rule on the same gradients.
            let mut present: Vec<(String, Vec<f32>)> = dev
                .store()
                .trainable()
                .filter_map(|e| {
                    let g = dev.store().grad(&gd, e.name()).unwrap()?;
                    Some((e.name().to_string(), g.to_vec()))
                })
                .collect();
            let n_trainable = dev.store().trainable().count();
            assert_eq!(
                present.len() < n_trainable,
                step == 0,
                "{what}: head 1 has no gradient on the first step only"
            );
            let mut views: Vec<&mut [f32]> = present.iter_mut().map(|(_, g)| &mut g[..]).collect();
            let want = scalarize_nn::optim::clip_grad_norm(&mut views, max_norm).unwrap();
            assert!(want > max_norm, "{what}: the clip must act (norm {want})");
            for (name, g) in &present {
                let kind = cpu.kind_of(name).unwrap();
                let v = cpu.store_mut().values_mut(name).unwrap();
                oc.update(name, kind, v, g, 0.05).unwrap();
            }
            let norm = dev.step(&mut od, &gd, 0.05, Some(max_norm)).unwrap();
            assert_eq!(norm, want, "{what}: norm");
            bits(
                &dev.store().flat_values(),
                &cpu.store().flat_values(),
                &format!("{what}: parameters"),
            );
            same_state(&od, &oc, &what);
        }
    }
}
