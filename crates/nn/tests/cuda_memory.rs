//! Device memory in steady-state training: after two warm-up steps, further steps hold the same
//! device memory (no leak: every step frees what it allocated) and, on a GPU, reserve nothing new
//! from the driver (the memory pool's cache serves every allocation: no cudaMalloc after the
//! first steps). One test in its own process, so no other test's buffers are counted.

use scalarize_autograd::Tensor;
use scalarize_kernels::cuda::Gpu;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::optim::{Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

#[test]
fn training_steps_reuse_device_memory() {
    let Some(gpu) = Gpu::for_tests("training_steps_reuse_device_memory") else {
        return;
    };
    let spec = if gpu.is_emulated() {
        "resnet26:w0.125:r8"
    } else {
        "resnet26:w0.25"
    };
    let mut m = Model::from_specs(spec, "10,10", InitOptions::default(), 1).unwrap();
    m.to_gpu(&gpu).unwrap();
    let r = m.spec().resolution;
    let n = 4;
    let x: Vec<f32> = (0..n * 3 * r * r)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let x = Tensor::new(x, &[n, 3, r, r]).unwrap().to_gpu(&gpu).unwrap();
    let labels = vec![vec![1i64, 2, 3, 4], vec![5i64, 6, 7, 8]];
    let config = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..Default::default()
    });
    let mut opt = Optimizer::new(config, true).unwrap();
    let mut step = |m: &mut Model| {
        let out = m.forward(&x, &Routing::AllHeads).unwrap();
        let losses: Vec<Tensor> = out
            .outputs
            .iter()
            .zip(&labels)
            .map(|(o, l)| {
                head_loss(&m.heads().0[o.head], &o.output, &Target::Classes(l.clone())).unwrap()
            })
            .collect();
        let loss = weighted_sum(&losses, &[0.5, 0.5]).unwrap();
        let grads = loss.backward().unwrap();
        drop((out, losses, loss));
        m.step(&mut opt, &grads, 0.01, Some(5.0)).unwrap();
        drop(grads);
        gpu.synchronize("step").unwrap();
        gpu.memory_stats().unwrap()
    };
    step(&mut m);
    let warm = step(&mut m);
    for k in 0..3 {
        let now = step(&mut m);
        assert_eq!(
            now.in_use, warm.in_use,
            "step {k}: device memory in use changed"
        );
        if !gpu.is_emulated() {
            assert_eq!(
                now.reserved_peak, warm.reserved_peak,
                "step {k}: the pool reserved new device memory"
            );
        }
    }
    assert!(warm.in_use > 0);
}
