//! Ops on a CUDA device (the emulator without a GPU) against the same ops on the CPU: values
//! and the gradient of every input under a random cotangent, on fresh random inputs; device
//! placement rules and errors.

mod common;

use std::sync::Arc;

use common::{Rng, close, same_on_gpu};
use scalarize_autograd::ops::weighted_loss::TaskLosses;
use scalarize_autograd::{AutogradError, Backward, Device, TaskLayout, Tensor};
use scalarize_kernels::cuda::Gpu;

fn gpu(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

#[test]
fn pointwise_and_elementwise_ops_match_cpu() {
    let Some(g) = gpu("pointwise_ops") else {
        return;
    };
    let mut rng = Rng::new(41);
    for shape in [vec![1], vec![3, 5], vec![2, 3, 37]] {
        let a = Tensor::new(rng.away_from_zero(shape.iter().product()), &shape).unwrap();
        let b = rng.tensor(&shape);
        let ins = [a, b];
        same_on_gpu(&g, "relu", &ins[..1], &mut rng, |t| t[0].relu());
        same_on_gpu(&g, "gelu", &ins[..1], &mut rng, |t| t[0].gelu());
        same_on_gpu(&g, "add", &ins, &mut rng, |t| t[0].add(&t[1]));
        same_on_gpu(&g, "sub", &ins, &mut rng, |t| t[0].sub(&t[1]));
        same_on_gpu(&g, "mul", &ins, &mut rng, |t| t[0].mul(&t[1]));
        same_on_gpu(&g, "mul_self", &ins[..1], &mut rng, |t| t[0].mul(&t[0]));
        same_on_gpu(&g, "scale", &ins[..1], &mut rng, |t| t[0].scale(-1.7));
        same_on_gpu(&g, "sum", &ins[..1], &mut rng, |t| t[0].sum());
        same_on_gpu(&g, "mean", &ins[..1], &mut rng, |t| t[0].mean());
        same_on_gpu(&g, "reshape", &ins[..1], &mut rng, |t| {
            t[0].reshape(&[t[0].numel()])?.relu()
        });
    }
}

#[test]
fn bias_and_linear_match_cpu() {
    let Some(g) = gpu("bias_and_linear") else {
        return;
    };
    let mut rng = Rng::new(42);
    let x = rng.tensor(&[4, 5]);
    let b = rng.tensor(&[5]);
    same_on_gpu(&g, "add_bias", &[x.clone(), b], &mut rng, |t| {
        t[0].add_bias(&t[1])
    });
    let x4 = rng.tensor(&[2, 3, 4, 5]);
    let cb = rng.tensor(&[3]);
    same_on_gpu(&g, "add_channel_bias", &[x4, cb], &mut rng, |t| {
        t[0].add_channel_bias(&t[1])
    });
    for shape in [vec![1, 5], vec![7, 5], vec![2, 3, 5]] {
        let x = rng.tensor(&shape);
        let w = rng.tensor(&[6, 5]);
        let b = rng.tensor(&[6]);
        same_on_gpu(&g, "linear", &[x.clone(), w.clone(), b], &mut rng, |t| {
            t[0].linear(&t[1], Some(&t[2]))
        });
        same_on_gpu(&g, "linear_nobias", &[x, w], &mut rng, |t| {
            t[0].linear(&t[1], None)
        });
    }
}

#[test]
fn weighted_losses_and_a_small_mlp_match_cpu() {
    let Some(g) = gpu("weighted_losses") else {
        return;
    };
    let mut rng = Rng::new(43);
    let layout = TaskLayout::from_sizes(&[3, 4]).unwrap();
    let n = 9;
    let targets: Vec<i64> = (0..n * 2)
        .map(|k| {
            if k == 5 {
                -100
            } else {
                rng.below([3, 4][k % 2]) as i64
            }
        })
        .collect();
    let mask: Vec<u8> = (0..n * 2).map(|k| u8::from(k % 5 != 0)).collect();
    let weights = [0.7f32, 1.3];
    let x = rng.tensor(&[n, 6]);
    let w1 = rng.tensor(&[8, 6]);
    let b1 = rng.tensor(&[8]);
    let w2 = rng.tensor(&[7, 8]);
    // A two-layer MLP with two heads under the fused weighted CE: the trainer's inner loop.
    same_on_gpu(
        &g,
        "mlp_ce",
        &[x.clone(), w1.clone(), b1.clone(), w2.clone()],
        &mut rng,
        |t| {
            let h = t[0].linear(&t[1], Some(&t[2]))?.relu()?;
            let logits = h.linear(&t[3], None)?;
            let (loss, _) =
                logits.weighted_ce_loss(&layout, &targets, Some(&mask), &weights, -100)?;
            Ok(loss)
        },
    );
    let bce_t: Vec<f32> = (0..n * 7).map(|_| rng.unit()).collect();
    same_on_gpu(&g, "mlp_bce", &[x, w1, b1, w2], &mut rng, |t| {
        let logits = t[0]
            .linear(&t[1], Some(&t[2]))?
            .gelu()?
            .linear(&t[3], None)?;
        let (loss, _) = logits.weighted_bce_loss(&layout, &bce_t, None, &weights)?;
        Ok(loss)
    });
}

#[test]
fn backward_runs_on_the_device_and_accumulates_shared_inputs() {
    let Some(g) = gpu("device_backward") else {
        return;
    };
    let mut rng = Rng::new(44);
    let x = rng.tensor(&[3, 4]);
    // x feeds three ops: its gradient is the device sum of three contributions.
    same_on_gpu(&g, "fan_out", &[x], &mut rng, |t| {
        t[0].relu()?.add(&t[0].scale(2.0)?)?.mul(&t[0])?.sum()
    });
    // backward() of a device scalar seeds its cotangent on the device.
    let w = rng.tensor(&[3, 4]).to_gpu(&g).unwrap().requires_grad();
    let grads = w.mul(&w).unwrap().mean().unwrap().backward().unwrap();
    let gw = grads.get(&w).unwrap();
    assert_eq!(gw.device(), w.device());
    let want: Vec<f32> = w.to_vec().iter().map(|v| 2.0 * v / 12.0).collect();
    close(&gw.to_host().unwrap(), &want, 1e-6, "d mean(w²)");
}

#[test]
fn devices_do_not_mix_and_host_only_access_says_so() {
    let Some(g) = gpu("device_errors") else {
        return;
    };
    let mut rng = Rng::new(45);
    let a = rng.tensor(&[2, 3]);
    let d = a.to_gpu(&g).unwrap();
    match a.add(&d) {
        Err(AutogradError::Device(msg)) => {
            assert!(
                msg.contains("add") && msg.contains("different devices"),
                "{msg}"
            )
        }
        other => panic!("expected a device error, got {other:?}"),
    }
    // Host-only access to device values is refused with a clear error, never a panic.
    match d.as_slice() {
        Err(AutogradError::Device(msg)) => assert!(msg.contains("no CUDA implementation"), "{msg}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    // A cotangent on another device than its root.
    let y = d.requires_grad().relu().unwrap();
    let cot = rng.cotangent(&[2, 3]);
    let e = Backward::new().root(&y, &cot).run().unwrap_err();
    assert!(e.to_string().contains("cotangent on cpu"), "{e}");
    // Round trip keeps the values exactly.
    assert_eq!(d.to_cpu().unwrap().to_vec(), a.to_vec());
    assert_eq!(d.to_device(Device::Cpu).unwrap().to_vec(), a.to_vec());
}

/// The fused weighted losses on the device: the targets are checked and counted on the host
/// (the CPU's messages, nothing launched), the total and the per-task losses stay on the
/// device and equal the CPU's.
#[test]
fn weighted_losses_check_targets_on_the_host_and_keep_results_on_the_device() {
    let Some(g) = gpu("weighted_host_checks") else {
        return;
    };
    let mut rng = Rng::new(91);
    let layout = TaskLayout::from_sizes(&[3, 2]).unwrap();
    let x = rng.tensor(&[2, 5]);
    let xd = x.to_gpu(&g).unwrap();
    let w = [0.7, 1.3];
    let e = xd
        .weighted_ce_loss(&layout, &[0, 1, 2, 7], None, &w, -100)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("targets[row 1, task 1] = 7 is outside [0, 2) and is not the ignore_index"),
        "{e}"
    );
    let e = xd
        .weighted_bce_loss(
            &layout,
            &[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2.0, 0.5, 0.5, 0.5],
            None,
            &w,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("targets[row 1, column 1] = 2 is outside [0, 1]"),
        "{e}"
    );

    let targets = [2, -100, 0, 1];
    let (total, tasks) = xd
        .weighted_ce_loss(&layout, &targets, None, &w, -100)
        .unwrap();
    let (want_total, want) = x
        .weighted_ce_loss(&layout, &targets, None, &w, -100)
        .unwrap();
    assert_eq!(total.device(), xd.device());
    assert_eq!(tasks.task_loss.device(), xd.device());
    assert_eq!(tasks.task_loss.shape(), &[2]);
    // The device call's counts, task losses and total against the host call's.
    let same = |what: &str,
                (total, tasks): (Tensor, TaskLosses),
                (want_total, want): (Tensor, TaskLosses)| {
        assert_eq!(tasks.counts, vec![2, 1], "{what}");
        assert_eq!(tasks.counts, want.counts, "{what}");
        close(
            &tasks.task_loss.to_host().unwrap(),
            &want.task_loss.to_vec(),
            1e-6,
            &format!("{what} task losses"),
        );
        close(
            &[total.item().unwrap()],
            &[want_total.item().unwrap()],
            1e-6,
            &format!("{what} total"),
        );
    };
    same("ce", (total, tasks), (want_total, want));
    let probs: Vec<f32> = (0..10).map(|_| rng.unit()).collect();
    let mask = [1u8, 0, 1, 1];
    same(
        "bce",
        xd.weighted_bce_loss(&layout, &probs, Some(&mask), &w)
            .unwrap(),
        x.weighted_bce_loss(&layout, &probs, Some(&mask), &w)
            .unwrap(),
    );
}
