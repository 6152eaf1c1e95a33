//! Issue 9, item 1: a training step on a CUDA device (the CPU emulator without a GPU) keeps its
//! tensors on the device. Host transfers are only the input batch and the targets going in,
//! and the loss (when the test reads it) and the gradient norm (`Model::step`'s one read-back)
//! coming out: every download is a full stream synchronisation that stops the host from
//! queuing work ahead of the GPU. Counted with `Gpu::transfer_stats` for a small ResNet and a
//! ViT-Ti, with the per-head cross-entropy and with the fused weighted loss.

use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_autograd::{Gradients, TaskLayout, Tensor};
use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::cuda::gpu::TransferStats;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::optim::{Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

/// The tests of this file share the process-wide emulator handle (or GPU 0), whose counters
/// they read: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Samples per batch and classes per head (two heads).
const N: usize = 4;
const CLASSES: usize = 10;

/// The two architectures of the issue, at the emulator's resolution.
fn specs(gpu: &Gpu) -> [String; 2] {
    let r = if gpu.is_emulated() { 8 } else { 32 };
    [format!("resnet26:w0.25:r{r}"), format!("vit-ti:p4:r{r}")]
}

/// How the step forms its loss.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// `head_loss` (cross-entropy) per head, then `weighted_sum`.
    PerHead,
    /// The fused weighted cross-entropy over the two heads' logits side by side.
    Fused,
}

/// What one step moved, in three parts.
#[derive(Debug)]
struct Step {
    /// Input upload, forward, loss and backward (the loss not read yet).
    graph: TransferStats,
    /// Reading the loss for the log.
    read_loss: TransferStats,
    /// `Model::step` (gradient norm, clipping, SGD-momentum update).
    update: TransferStats,
}

fn batch(r: usize, seed: u64) -> (Tensor, Vec<Vec<i64>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..N * 3 * r * r)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let labels = (0..2)
        .map(|_| {
            (0..N)
                .map(|i| {
                    // An ignored label now and then: the targets are checked and counted on
                    // the host, so they cost nothing more on the device.
                    if i == 1 {
                        -100
                    } else {
                        rng.random_range(0..CLASSES as i64)
                    }
                })
                .collect()
        })
        .collect();
    (Tensor::new(x, &[N, 3, r, r]).unwrap(), labels)
}

/// The loss of both heads (weights 0.4 / 0.6) and its gradients.
fn loss_and_grads(
    m: &mut Model,
    x: &Tensor,
    labels: &[Vec<i64>],
    loss: Loss,
) -> (Tensor, Gradients) {
    let out = m.forward(x, &Routing::AllHeads).unwrap();
    let total = match loss {
        Loss::PerHead => {
            let losses: Vec<Tensor> = out
                .outputs
                .iter()
                .zip(labels)
                .map(|(o, l)| {
                    head_loss(&m.heads().0[o.head], &o.output, &Target::Classes(l.clone())).unwrap()
                })
                .collect();
            weighted_sum(&losses, &[0.4, 0.6]).unwrap()
        }
        Loss::Fused => {
            let parts: Vec<&Tensor> = out.outputs.iter().map(|o| &o.output).collect();
            let packed = Tensor::concat(&parts, 1).unwrap();
            let layout = TaskLayout::from_sizes(&[CLASSES, CLASSES]).unwrap();
            // [n, T] targets, row-major.
            let targets: Vec<i64> = (0..N).flat_map(|i| [labels[0][i], labels[1][i]]).collect();
            let (total, tasks) = packed
                .weighted_ce_loss(&layout, &targets, None, &[0.4, 0.6], -100)
                .unwrap();
            assert_eq!(tasks.counts, vec![N - 1, N - 1], "counted on the host");
            assert_eq!(tasks.task_loss.device(), total.device());
            total
        }
    };
    assert_eq!(total.device(), m.device(), "the loss stays on the device");
    let grads = total.backward().unwrap();
    (total, grads)
}

/// One training step of `m` on `gpu`, with the transfers of each part.
fn step(gpu: &Arc<Gpu>, m: &mut Model, opt: &mut Optimizer, seed: u64, loss: Loss) -> Step {
    let r = m.spec().resolution;
    let (x, labels) = batch(r, seed);
    let t0 = gpu.transfer_stats();
    let x = x.to_gpu(gpu).unwrap();
    let (total, grads) = loss_and_grads(m, &x, &labels, loss);
    let t1 = gpu.transfer_stats();
    let value = total.item().unwrap();
    assert!(value.is_finite() && value > 0.0, "loss {value}");
    let t2 = gpu.transfer_stats();
    let norm = m.step(opt, &grads, 0.05, Some(1.0)).unwrap();
    assert!(norm.is_finite() && norm > 0.0, "norm {norm}");
    let t3 = gpu.transfer_stats();
    Step {
        graph: t1.since(&t0),
        read_loss: t2.since(&t1),
        update: t3.since(&t2),
    }
}

/// Bytes of `n` floats.
fn f32s(n: usize) -> u64 {
    (n * 4) as u64
}

/// Bytes of `n` i64 targets.
fn i64s(n: usize) -> u64 {
    (n * 8) as u64
}

fn check_steps(loss: Loss) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = Gpu::for_tests(&format!("cuda_syncs {loss:?}")) else {
        return;
    };
    for spec in specs(&gpu) {
        let mut m = Model::from_specs(&spec, "10,10", InitOptions::default(), 3).unwrap();
        m.to_gpu(&gpu).unwrap();
        let config = OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        });
        let mut opt = Optimizer::new(config, true).unwrap();
        // The first step creates what later steps reuse (optimizer state, constant tables
        // such as backward's seed): the second is the steady state.
        let first = step(&gpu, &mut m, &mut opt, 1, loss);
        eprintln!("{spec} {loss:?} first step: {first:?}");
        {
            let seed = 2;
            let s = step(&gpu, &mut m, &mut opt, seed, loss);
            let what = format!("{spec} {loss:?} step {seed}");
            eprintln!("{what}: {s:?}");
            let r = m.spec().resolution;
            // Forward, loss and backward: nothing comes back; what goes in is the input batch
            // and the targets (the per-head cross-entropy uploads each head's targets; the
            // fused loss its [n, T] targets and one table of head offsets and task weights).
            let (uploads, upload_bytes) = match loss {
                Loss::PerHead => (1 + 2, f32s(N * 3 * r * r) + 2 * i64s(N)),
                Loss::Fused => (1 + 2, f32s(N * 3 * r * r) + i64s(2 * N) + 4 * (3 + 2)),
            };
            assert_eq!(
                s.graph,
                TransferStats {
                    downloads: 0,
                    download_bytes: 0,
                    uploads,
                    upload_bytes,
                    syncs: 0,
                },
                "{what}: forward + backward"
            );
            // Reading the loss for the log: one float.
            assert_eq!(
                s.read_loss,
                TransferStats {
                    downloads: 1,
                    download_bytes: 4,
                    ..TransferStats::default()
                },
                "{what}: the loss"
            );
            // The update: one download, the squared gradient norm (an f64; clipping and the
            // returned norm need it on the host), and one upload, the multi-tensor optimizer's
            // table of parameter segments; no explicit synchronisation.
            assert_eq!(
                (s.update.downloads, s.update.download_bytes),
                (1, 8),
                "{what}: update: {:?}",
                s.update
            );
            assert_eq!(s.update.uploads, 1, "{what}: update: {:?}", s.update);
            assert_eq!(s.update.syncs, 0, "{what}: update: {:?}", s.update);
        }
    }
}

#[test]
fn a_device_step_with_per_head_losses_reads_back_only_the_loss_and_the_norm() {
    check_steps(Loss::PerHead);
}

#[test]
fn a_device_step_with_the_fused_weighted_loss_reads_back_only_the_loss_and_the_norm() {
    check_steps(Loss::Fused);
}

/// Evaluation on the device (BN with its running statistics, no grad): the batch goes in,
/// nothing comes back until the caller reads the logits. The eval batch norm used to read
/// every layer's running variances back to check them; they are now checked where they enter
/// (`ParamStore::set_values`, host statistics).
#[test]
fn a_device_eval_forward_reads_nothing_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = Gpu::for_tests("a_device_eval_forward_reads_nothing_back") else {
        return;
    };
    for spec in specs(&gpu) {
        let mut m = Model::from_specs(&spec, "10,10", InitOptions::default(), 4).unwrap();
        m.to_gpu(&gpu).unwrap();
        m.set_train(false);
        let r = m.spec().resolution;
        let _no_grad = scalarize_autograd::no_grad();
        for seed in [5, 6] {
            let (x, _) = batch(r, seed);
            let before = gpu.transfer_stats();
            let x = x.to_gpu(&gpu).unwrap();
            let out = m.forward(&x, &Routing::AllHeads).unwrap();
            let d = gpu.transfer_stats().since(&before);
            assert_eq!(
                d,
                TransferStats {
                    uploads: 1,
                    upload_bytes: f32s(N * 3 * r * r),
                    ..TransferStats::default()
                },
                "{spec} eval forward {seed}: only the batch goes in"
            );
            let logits = out.outputs[0].output.to_host().unwrap();
            assert!(logits.iter().all(|v| v.is_finite()), "{spec}");
        }
    }
}
