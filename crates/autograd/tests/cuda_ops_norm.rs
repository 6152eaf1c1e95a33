//! Batch norm (train with and without running statistics, eval; plain, ReLU and add+ReLU
//! epilogues) and layer norm on a CUDA device (the emulator without a GPU) against the CPU:
//! values, every input gradient, running statistics of the Tensor API and of a ParamStore whose
//! buffers live on the device, and small chains of these ops.

mod common;

use std::sync::Arc;

use common::{Rng, close, same_on_gpu};
use scalarize_autograd::{AutogradError, BatchNormMode, BnEpilogue, ParamStore, Tensor};
use scalarize_kernels::cuda::Gpu;

fn gpu(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

/// Batch 1, a plain [n, c] input (hw = 1), odd sizes and a 4-D input.
const BN_SHAPES: [&[usize]; 4] = [&[1, 3, 7], &[5, 4], &[3, 2, 5], &[2, 3, 2, 3]];

fn epilogue(k: usize, r: &Tensor) -> BnEpilogue<'_> {
    match k {
        0 => BnEpilogue::None,
        1 => BnEpilogue::Relu,
        _ => BnEpilogue::AddRelu(r),
    }
}

const EPILOGUES: [&str; 3] = ["plain", "relu", "add_relu"];

/// x, gamma, beta, residual for an input of `shape`.
fn bn_inputs(rng: &mut Rng, shape: &[usize]) -> Vec<Tensor> {
    let c = shape[1];
    vec![
        rng.tensor(shape),
        Tensor::new(rng.vec(c, 0.5, 1.5), &[c]).unwrap(),
        rng.tensor(&[c]),
        rng.tensor(shape),
    ]
}

/// The inputs the op reads: the residual only with the add+ReLU epilogue.
fn used(ins: &[Tensor], k: usize) -> &[Tensor] {
    if k == 2 { ins } else { &ins[..3] }
}

#[test]
fn batch_norm_train_matches_cpu_for_every_epilogue() {
    let Some(g) = gpu("bn_train") else {
        return;
    };
    let mut rng = Rng::new(71);
    for shape in BN_SHAPES {
        let c = shape[1];
        let ins = bn_inputs(&mut rng, shape);
        for (k, name) in EPILOGUES.iter().enumerate() {
            let what = format!("bn_train_no_running {name} {shape:?}");
            same_on_gpu(&g, &what, used(&ins, k), &mut rng, |t| {
                let r = t.get(3).unwrap_or(&t[0]);
                t[0].batch_norm_with(
                    &t[1],
                    &t[2],
                    BatchNormMode::TrainNoRunning,
                    1e-5,
                    epilogue(k, r),
                )
            });
            let what = format!("bn_train_running {name} {shape:?}");
            same_on_gpu(&g, &what, used(&ins, k), &mut rng, |t| {
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                let mode = BatchNormMode::Train {
                    running_mean: &mut rm,
                    running_var: &mut rv,
                    momentum: 0.1,
                };
                let r = t.get(3).unwrap_or(&t[0]);
                t[0].batch_norm_with(&t[1], &t[2], mode, 1e-5, epilogue(k, r))
            });
        }
        // The plain entry point too.
        same_on_gpu(&g, "bn_plain", &ins[..3], &mut rng, |t| {
            t[0].batch_norm(&t[1], &t[2], BatchNormMode::TrainNoRunning, 1e-3)
        });
    }
    // More than 8192 values per channel: the statistics are summed over several blocks.
    let shape = [3, 2, 3001];
    let ins = bn_inputs(&mut rng, &shape);
    same_on_gpu(&g, "bn_train split add_relu", &ins, &mut rng, |t| {
        let mode = BatchNormMode::TrainNoRunning;
        t[0].batch_norm_with(&t[1], &t[2], mode, 1e-5, BnEpilogue::AddRelu(&t[3]))
    });
}

#[test]
fn batch_norm_eval_matches_cpu_for_every_epilogue() {
    let Some(g) = gpu("bn_eval") else {
        return;
    };
    let mut rng = Rng::new(72);
    for shape in BN_SHAPES.iter().copied().chain([&[1, 3][..]]) {
        let c = shape[1];
        let ins = bn_inputs(&mut rng, shape);
        let (rm, rv) = (rng.vec(c, -0.5, 0.5), rng.vec(c, 0.5, 1.5));
        for (k, name) in EPILOGUES.iter().enumerate() {
            let what = format!("bn_eval {name} {shape:?}");
            same_on_gpu(&g, &what, used(&ins, k), &mut rng, |t| {
                let mode = BatchNormMode::Eval {
                    running_mean: &rm,
                    running_var: &rv,
                };
                let r = t.get(3).unwrap_or(&t[0]);
                t[0].batch_norm_with(&t[1], &t[2], mode, 1e-5, epilogue(k, r))
            });
        }
    }
}

#[test]
fn host_running_statistics_after_a_device_step_equal_the_cpus() {
    let Some(g) = gpu("bn_running_host") else {
        return;
    };
    let mut rng = Rng::new(73);
    for shape in BN_SHAPES {
        let c = shape[1];
        let ins = bn_inputs(&mut rng, shape);
        let start = (rng.vec(c, -0.5, 0.5), rng.vec(c, 0.5, 1.5));
        for k in 0..3 {
            let run = |t: &[Tensor]| {
                let (mut rm, mut rv) = start.clone();
                let mode = BatchNormMode::Train {
                    running_mean: &mut rm,
                    running_var: &mut rv,
                    momentum: 0.3,
                };
                t[0].batch_norm_with(&t[1], &t[2], mode, 1e-5, epilogue(k, &t[3]))
                    .unwrap();
                (rm, rv)
            };
            let dev: Vec<Tensor> = ins.iter().map(|t| t.to_gpu(&g).unwrap()).collect();
            let (cm, cv) = run(&ins);
            let (dm, dv) = run(&dev);
            assert_ne!(cm, start.0, "the CPU step moved the running mean");
            close(&dm, &cm, 1e-6, &format!("running_mean {shape:?} {k}"));
            close(&dv, &cv, 1e-6, &format!("running_var {shape:?} {k}"));
        }
    }
}

/// A store holding one batch norm `bn` with these values, on the host or on `g`.
fn bn_store(vals: &[Vec<f32>; 4], g: Option<&Arc<Gpu>>) -> ParamStore {
    let c = vals[0].len();
    let t = |v: &[f32]| {
        let t = Tensor::new(v.to_vec(), &[c]).unwrap();
        match g {
            Some(g) => t.to_gpu(g).unwrap(),
            None => t,
        }
    };
    let mut s = ParamStore::new();
    s.add_parameter("bn.weight", t(&vals[0])).unwrap();
    s.add_parameter("bn.bias", t(&vals[1])).unwrap();
    s.add_buffer("bn.running_mean", t(&vals[2])).unwrap();
    s.add_buffer("bn.running_var", t(&vals[3])).unwrap();
    s
}

#[test]
fn param_store_on_the_device_trains_and_evaluates_like_the_cpu() {
    let Some(g) = gpu("bn_store") else {
        return;
    };
    let mut rng = Rng::new(74);
    let (shape, c) = ([3, 4, 5], 4);
    let vals = [
        rng.vec(c, 0.5, 1.5),
        rng.vec(c, -0.5, 0.5),
        rng.vec(c, -0.5, 0.5),
        rng.vec(c, 0.5, 1.5),
    ];
    let mut cpu = bn_store(&vals, None);
    let mut dev = bn_store(&vals, Some(&g));
    let stats = |s: &ParamStore| {
        let m = s.get("bn.running_mean").unwrap();
        let v = s.get("bn.running_var").unwrap();
        (m.to_host().unwrap(), v.to_host().unwrap(), m.device())
    };
    for step in 0..3 {
        let x = rng.tensor(&shape);
        let r = rng.tensor(&shape);
        let cot = rng.cotangent(&shape);
        let before = dev.get("bn.running_mean").unwrap().clone();
        let before_vals = before.to_host().unwrap();
        let run = |s: &mut ParamStore, on: Option<&Arc<Gpu>>| {
            let mv = |t: &Tensor| on.map_or(t.clone(), |g| t.to_gpu(g).unwrap());
            let (x, r) = (mv(&x).requires_grad(), mv(&r).requires_grad());
            let y = s
                .batch_norm_with("bn", &x, true, 0.1, 1e-5, BnEpilogue::AddRelu(&r))
                .unwrap();
            let grads = y.backward_with(&mv(&cot)).unwrap();
            let grad = |t: Option<&Tensor>| t.unwrap().to_host().unwrap();
            (
                y.to_host().unwrap(),
                grad(grads.get(&x)),
                grad(grads.get(&r)),
                grad(s.grad(&grads, "bn.weight").unwrap()),
                grad(s.grad(&grads, "bn.bias").unwrap()),
            )
        };
        let want = run(&mut cpu, None);
        let got = run(&mut dev, Some(&g));
        let what = |w: &str| format!("store step {step}: {w}");
        close(&got.0, &want.0, 1e-5, &what("y"));
        close(&got.1, &want.1, 1e-5, &what("dx"));
        close(&got.2, &want.2, 1e-5, &what("dresidual"));
        close(&got.3, &want.3, 1e-5, &what("dgamma"));
        close(&got.4, &want.4, 1e-5, &what("dbeta"));
        let (cm, cv, _) = stats(&cpu);
        let (dm, dv, device) = stats(&dev);
        assert_eq!(
            device,
            before.device(),
            "running statistics stay on the device"
        );
        assert_ne!(dm, before_vals, "step {step} moved the running mean");
        close(&dm, &cm, 1e-6, &what("running_mean"));
        close(&dv, &cv, 1e-6, &what("running_var"));
        // A tensor taken before the step keeps the values it had.
        assert_eq!(before.to_host().unwrap(), before_vals, "step {step}");
    }
    // Eval with the device running statistics, each epilogue, gradients of the parameters.
    let x = rng.tensor(&shape);
    let r = rng.tensor(&shape);
    let trained = stats(&dev);
    for k in 0..3 {
        let run = |s: &mut ParamStore, on: Option<&Arc<Gpu>>| {
            let mv = |t: &Tensor| on.map_or(t.clone(), |g| t.to_gpu(g).unwrap());
            let (x, r) = (mv(&x).requires_grad(), mv(&r));
            let y = s
                .batch_norm_with("bn", &x, false, 0.1, 1e-5, epilogue(k, &r))
                .unwrap();
            let grads = y.sum().unwrap().backward().unwrap();
            let grad = |t: Option<&Tensor>| t.unwrap().to_host().unwrap();
            let gw = grad(s.grad(&grads, "bn.weight").unwrap());
            (y.to_host().unwrap(), grad(grads.get(&x)), gw)
        };
        let want = run(&mut cpu, None);
        let got = run(&mut dev, Some(&g));
        close(&got.0, &want.0, 1e-5, &format!("store eval {k}: y"));
        close(&got.1, &want.1, 1e-5, &format!("store eval {k}: dx"));
        close(&got.2, &want.2, 1e-5, &format!("store eval {k}: dgamma"));
    }
    assert_eq!(stats(&dev), trained, "eval leaves the running statistics");
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(g) = gpu("layer_norm") else {
        return;
    };
    let mut rng = Rng::new(75);
    for shape in [&[1, 5][..], &[3, 7], &[2, 3, 33], &[2, 70], &[4, 1]] {
        let d = *shape.last().unwrap();
        let ins = vec![
            rng.tensor(shape),
            Tensor::new(rng.vec(d, 0.5, 1.5), &[d]).unwrap(),
            rng.tensor(&[d]),
        ];
        same_on_gpu(&g, &format!("layer_norm {shape:?}"), &ins, &mut rng, |t| {
            t[0].layer_norm(&t[1], &t[2], 1e-5)
        });
        // Only x needs a gradient.
        same_on_gpu(
            &g,
            &format!("layer_norm x {shape:?}"),
            &ins,
            &mut rng,
            |t| t[0].layer_norm(&t[1].detach(), &t[2].detach(), 1e-5),
        );
    }
}

#[test]
fn chains_of_norms_match_cpu() {
    let Some(g) = gpu("norm_chains") else {
        return;
    };
    let mut rng = Rng::new(76);
    let shape = [2, 3, 5];
    let mut ins = bn_inputs(&mut rng, &shape);
    ins.push(Tensor::new(rng.vec(5, 0.5, 1.5), &[5]).unwrap());
    ins.push(rng.tensor(&[5]));
    // bn + residual + ReLU, then layer norm over the last axis.
    same_on_gpu(&g, "bn_add_relu -> layer_norm", &ins, &mut rng, |t| {
        let mode = BatchNormMode::TrainNoRunning;
        t[0].batch_norm_with(&t[1], &t[2], mode, 1e-5, BnEpilogue::AddRelu(&t[3]))?
            .layer_norm(&t[4], &t[5], 1e-5)
    });
    // A ResNet-style block: bn + ReLU, then bn + add(x) + ReLU, summed; x's gradient
    // arrives along two paths and is added on the device.
    same_on_gpu(
        &g,
        "bn_relu -> bn_add_relu(x) -> sum",
        &ins[..3],
        &mut rng,
        |t| {
            let h = t[0].batch_norm_with(
                &t[1],
                &t[2],
                BatchNormMode::TrainNoRunning,
                1e-5,
                BnEpilogue::Relu,
            )?;
            h.batch_norm_with(
                &t[1],
                &t[2],
                BatchNormMode::TrainNoRunning,
                1e-5,
                BnEpilogue::AddRelu(&t[0]),
            )?
            .sum()
        },
    );
    // Eval with add+ReLU feeding layer norm.
    let (rm, rv) = (rng.vec(3, -0.5, 0.5), rng.vec(3, 0.5, 1.5));
    same_on_gpu(&g, "bn_eval_add_relu -> layer_norm", &ins, &mut rng, |t| {
        let mode = BatchNormMode::Eval {
            running_mean: &rm,
            running_var: &rv,
        };
        t[0].batch_norm_with(&t[1], &t[2], mode, 1e-5, BnEpilogue::AddRelu(&t[3]))?
            .layer_norm(&t[4], &t[5], 1e-5)
    });
}

#[test]
fn device_norms_refuse_mixed_devices_and_keep_the_cpus_errors() {
    let Some(g) = gpu("norm_errors") else {
        return;
    };
    let mut rng = Rng::new(77);
    let x = rng.tensor(&[2, 3, 4]);
    let (gm, bt) = (rng.tensor(&[3]), rng.tensor(&[3]));
    let xd = x.to_gpu(&g).unwrap();
    let mode = || BatchNormMode::TrainNoRunning;
    let e = xd.batch_norm(&gm, &bt, mode(), 1e-5).unwrap_err();
    assert!(matches!(e, AutogradError::Device(_)), "{e}");
    let (gd, bd) = (gm.to_gpu(&g).unwrap(), bt.to_gpu(&g).unwrap());
    let e = xd
        .batch_norm_with(&gd, &bd, mode(), 1e-5, BnEpilogue::AddRelu(&x))
        .unwrap_err();
    assert!(matches!(e, AutogradError::Device(_)), "{e}");
    let e = xd.layer_norm(&rng.tensor(&[4]), &bd, 1e-5).unwrap_err();
    assert!(e.to_string().contains("layer_norm"), "{e}");
    let e = xd.layer_norm(&rng.tensor(&[4]), &rng.tensor(&[4]), 1e-5);
    assert!(matches!(e, Err(AutogradError::Device(_))), "{e:?}");
    // A shape error is the CPU's, on either device.
    let bad = rng.tensor(&[2]).to_gpu(&g).unwrap();
    let e = xd.batch_norm(&bad, &bd, mode(), 1e-5).unwrap_err();
    assert!(e.to_string().contains("batch_norm"), "{e}");
    // One value per channel cannot update running statistics, on either device.
    let one = rng.tensor(&[1, 3]);
    for on_device in [false, true] {
        let mv = |t: &Tensor| {
            if on_device {
                t.to_gpu(&g).unwrap()
            } else {
                t.clone()
            }
        };
        let (t, gm, bt) = (mv(&one), mv(&gm), mv(&bt));
        let (mut rm, mut rv) = (vec![0.0; 3], vec![1.0; 3]);
        let mode = BatchNormMode::Train {
            running_mean: &mut rm,
            running_var: &mut rv,
            momentum: 0.1,
        };
        assert!(
            t.batch_norm(&gm, &bt, mode, 1e-5).is_err(),
            "{}",
            t.device()
        );
    }
    // Running statistics on the device and x on the host.
    let vals = [vec![1.0; 3], vec![0.0; 3], vec![0.0; 3], vec![1.0; 3]];
    let mut store = bn_store(&vals, Some(&g));
    for train in [true, false] {
        let e = store.batch_norm("bn", &x, train, 0.1, 1e-5).unwrap_err();
        assert!(matches!(e, AutogradError::Device(_)), "{e}");
    }
    // Wrong-length device running statistics in eval: the CPU's Param error.
    let mut store = ParamStore::new();
    store.add_parameter("bn.weight", gd.clone()).unwrap();
    store.add_parameter("bn.bias", bd.clone()).unwrap();
    let two = Tensor::new(vec![0.0, 1.0], &[2])
        .unwrap()
        .to_gpu(&g)
        .unwrap();
    store.add_buffer("bn.running_mean", two.clone()).unwrap();
    store.add_buffer("bn.running_var", two).unwrap();
    let e = store.batch_norm("bn", &xd, false, 0.1, 1e-5).unwrap_err();
    assert!(matches!(e, AutogradError::Param(_)), "{e}");
}

/// The device's eval batch norm does not read its running variances back: a bad one is
/// refused where it enters instead, with host statistics before their upload (the CPU's
/// message) and in `ParamStore::set_values` for loaded ones, on either device.
#[test]
fn a_negative_running_variance_is_refused_where_it_enters() {
    let Some(g) = gpu("bn_bad_running_var") else {
        return;
    };
    let mut rng = Rng::new(78);
    let x = rng.tensor(&[2, 3, 4]).to_gpu(&g).unwrap();
    let (gm, bt) = (
        rng.tensor(&[3]).to_gpu(&g).unwrap(),
        rng.tensor(&[3]).to_gpu(&g).unwrap(),
    );
    let (rm, rv) = (vec![0.0; 3], vec![1.0, -2.0, 1.0]);
    let mode = BatchNormMode::Eval {
        running_mean: &rm,
        running_var: &rv,
    };
    let e = x.batch_norm(&gm, &bt, mode, 1e-5).unwrap_err().to_string();
    assert!(e.contains("running_var[1] + eps = -1.99999"), "{e}");
    assert!(e.contains("is not positive"), "{e}");
    // The CPU's own refusal, for comparison.
    let xc = Tensor::new(x.to_host().unwrap(), &[2, 3, 4]).unwrap();
    let (gc, bc) = (
        Tensor::new(gm.to_host().unwrap(), &[3]).unwrap(),
        Tensor::new(bt.to_host().unwrap(), &[3]).unwrap(),
    );
    let mode = BatchNormMode::Eval {
        running_mean: &rm,
        running_var: &rv,
    };
    let c = xc.batch_norm(&gc, &bc, mode, 1e-5).unwrap_err().to_string();
    assert!(c.contains("running_var[1] + eps = -1.99999"), "{c}");

    // Loaded statistics: refused by set_values, on the device and on the host, and the
    // entry keeps its values.
    let vals = [vec![1.0; 3], vec![0.0; 3], vec![0.0; 3], vec![1.0; 3]];
    for dev in [Some(&g), None] {
        let mut store = bn_store(&vals, dev);
        for bad in [vec![1.0, -0.5, 1.0], vec![f32::NAN, 1.0, 1.0]] {
            let e = store.set_values("bn.running_var", &bad).unwrap_err();
            assert!(matches!(e, AutogradError::Param(_)), "{e}");
            assert!(e.to_string().contains("bn.running_var"), "{e}");
        }
        let kept = store.get("bn.running_var").unwrap().to_host().unwrap();
        assert_eq!(kept, vec![1.0; 3]);
        // A zero variance is a variance (eps keeps it positive); other entries take anything.
        store
            .set_values("bn.running_var", &[0.0, 2.0, 1.0])
            .unwrap();
        store
            .set_values("bn.running_mean", &[-1.0, 2.0, -3.0])
            .unwrap();
        let y = store.batch_norm("bn", &x, false, 0.1, 1e-5);
        match dev {
            Some(_) => assert!(y.unwrap().to_host().unwrap().iter().all(|v| v.is_finite())),
            None => assert!(matches!(y, Err(AutogradError::Device(_)))),
        }
    }
}
