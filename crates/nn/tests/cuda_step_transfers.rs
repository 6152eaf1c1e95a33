//! Host-device traffic of a device optimizer step: after the first step (which creates the
//! optimizer state), `Model::step` and `Model::step_flat_device` move one table to the device
//! and read 8 bytes back (the gradient norm), whatever the number of parameters. One test in
//! its own process: the emulator's handle is process-wide, so other tests' copies would be
//! counted too.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_autograd::Tensor;
use scalarize_kernels::cuda::Gpu;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss};
use scalarize_nn::optim::{AdamWConfig, Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

#[test]
fn a_device_step_moves_one_table_up_and_the_norm_back() {
    let Some(gpu) = Gpu::for_tests("device_step_transfers") else {
        return;
    };
    let r = if gpu.is_emulated() { 8 } else { 32 };
    let spec = format!("vit-ti:p4:r{r}:d1");
    let mut rng = StdRng::seed_from_u64(21);
    let n = 2;
    let x: Vec<f32> = (0..n * 3 * r * r).map(|_| rng.random::<f32>()).collect();
    let x = Tensor::new(x, &[n, 3, r, r]).unwrap().to_gpu(&gpu).unwrap();
    let labels: Vec<i64> = (0..n).map(|_| rng.random_range(0..10)).collect();
    let configs = [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ];
    for config in configs {
        let mut m = Model::from_specs(&spec, "10,10", InitOptions::default(), 3).unwrap();
        m.to_gpu(&gpu).unwrap();
        let mut opt = Optimizer::new(config, true).unwrap();
        let p = m.store().num_trainable_elements();
        let dir: Vec<f32> = (0..p).map(|_| rng.random::<f32>() - 0.5).collect();
        let dir = gpu.upload(&dir).unwrap();
        for step in 0..3 {
            let out = m.forward(&x, &Routing::AllHeads).unwrap();
            let target = Target::Classes(labels.clone());
            let loss = head_loss(&m.heads().0[0], &out.outputs[0].output, &target).unwrap();
            let grads = loss.backward().unwrap();
            drop((out, loss));
            let before = gpu.transfer_stats();
            m.step(&mut opt, &grads, 0.01, Some(1.0)).unwrap();
            let moved = gpu.transfer_stats().since(&before);
            if step > 0 {
                assert_eq!(
                    (moved.uploads, moved.downloads, moved.download_bytes),
                    (1, 1, 8),
                    "{config:?}: step {step}"
                );
            }
            let before = gpu.transfer_stats();
            m.step_flat_device(&mut opt, &dir, 0.01, None).unwrap();
            let moved = gpu.transfer_stats().since(&before);
            assert_eq!(
                (moved.uploads, moved.downloads, moved.download_bytes),
                (1, 1, 8),
                "{config:?}: step_flat_device {step}"
            );
        }
    }
}
