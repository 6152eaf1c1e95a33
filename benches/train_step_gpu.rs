//! GPU training throughput (issue 9 targets), run by scripts/gpu-check.sh on a machine with an
//! NVIDIA GPU; prints why it skipped elsewhere (SCALARIZE_REQUIRE_GPU=1 makes that a failure).
//!
//! 1. images/s of ResNet-26 w1.0 and ViT-S/4 training steps (batch 256, 32x32, two 10-class
//!    heads, SGD momentum 0.9, weight decay 5e-4, fp32 with TF32 products on both sides), next
//!    to PyTorch eager on the same GPU (benches/train_step_torch.py --device cuda --tf32);
//!    per phase (forward, backward, update), and the fraction of the device's measured TF32
//!    matrix-product throughput the step reaches (GEMM FLOPs per step / step time / the rate of
//!    one 8192^3 product).
//! 2. A population of 8 ResNet-26 w0.25 members on one GPU: aggregate images/s of 8 threads,
//!    each member on its own stream, against training the 8 one after another.
//!
//! Environment: SCALARIZE_BENCH_STEPS (timed steps, default 10), SCALARIZE_BENCH_BATCH (256),
//! SCALARIZE_BENCH_MODELS (default "resnet26,vit-s:p4"), SCALARIZE_BENCH_NO_TORCH=1,
//! SCALARIZE_BENCH_SUMMARY (JSON lines for the gpu-check table).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

#[path = "common/train.rs"]
mod common;

use common::{noise, torch_images_per_sec};
use scalarize_autograd::Tensor;
use scalarize_kernels::cuda::{Gemm, Gpu, gemm, gemm_flops};
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::optim::{Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A model on `gpu` with its optimizer, a fixed batch and labels.
struct Member {
    model: Model,
    opt: Optimizer,
    x: Tensor,
    labels: Vec<Vec<i64>>,
}

impl Member {
    fn new(spec: &str, batch: usize, gpu: &Arc<Gpu>, seed: u64) -> Self {
        let mut model =
            Model::from_specs(spec, "10,10", InitOptions::default(), seed).expect("model");
        model.to_gpu(gpu).expect("model to gpu");
        let r = model.spec().resolution;
        let x = Tensor::new(noise(batch * 3 * r * r, seed + 1), &[batch, 3, r, r])
            .expect("images")
            .to_gpu(gpu)
            .expect("images to gpu");
        let labels = (0..2)
            .map(|t| {
                noise(batch, seed + 7 + t)
                    .iter()
                    .map(|v| ((v + 1.0) * 5.0) as i64 % 10)
                    .collect()
            })
            .collect();
        let config = OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            ..Default::default()
        });
        let opt = Optimizer::new(config, false).expect("optimizer");
        Self {
            model,
            opt,
            x,
            labels,
        }
    }

    /// One step; returns (forward, backward, update) seconds. Reading the loss synchronises
    /// the forward; the update ends with a synchronisation so phases do not overlap.
    fn step(&mut self, gpu: &Gpu) -> [f64; 3] {
        let t0 = Instant::now();
        let out = self
            .model
            .forward(&self.x, &Routing::AllHeads)
            .expect("forward");
        let losses: Vec<Tensor> = out
            .outputs
            .iter()
            .zip(&self.labels)
            .map(|(o, l)| {
                head_loss(
                    &self.model.heads().0[o.head],
                    &o.output,
                    &Target::Classes(l.clone()),
                )
                .expect("loss")
            })
            .collect();
        let loss = weighted_sum(&losses, &[0.5, 0.5]).expect("weighted loss");
        loss.item().expect("loss value");
        let t1 = Instant::now();
        let grads = loss.backward().expect("backward");
        drop((out, losses, loss));
        gpu.synchronize("backward").expect("sync");
        let t2 = Instant::now();
        self.model
            .step(&mut self.opt, &grads, 0.05, None)
            .expect("optimizer step");
        gpu.synchronize("update").expect("sync");
        let t3 = Instant::now();
        [
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
        ]
    }
}

/// TF32 TFLOP/s of one 8192^3 product (the device's matrix-product rate in this run).
fn peak_gemm_tflops(gpu: &Gpu) -> f64 {
    let n = 8192;
    let a = gpu.upload(&noise(n * n, 3)).expect("upload");
    let b = gpu.upload(&noise(n * n, 4)).expect("upload");
    let mut c = gpu.zeros::<f32>(n * n).expect("alloc");
    let g = Gemm::new(n, n, n);
    for _ in 0..2 {
        gemm(gpu, &g, (&a, 0), (&b, 0), (&mut c, 0)).expect("gemm");
    }
    gpu.synchronize("gemm").expect("sync");
    let reps = 10;
    let t0 = Instant::now();
    for _ in 0..reps {
        gemm(gpu, &g, (&a, 0), (&b, 0), (&mut c, 0)).expect("gemm");
    }
    gpu.synchronize("gemm").expect("sync");
    2.0 * (n as f64).powi(3) * reps as f64 / t0.elapsed().as_secs_f64() / 1e12
}

fn torch_on_gpu(spec: &str, steps: usize, batch: usize) -> Option<f64> {
    if std::env::var("SCALARIZE_BENCH_NO_TORCH").is_ok() {
        return None;
    }
    let args = [
        "--device",
        "cuda",
        "--tf32",
        "--steps",
        &steps.to_string(),
        "--batch",
        &batch.to_string(),
    ]
    .map(String::from);
    torch_images_per_sec(spec, &args)
}

fn summary(line: String) {
    if let Ok(path) = std::env::var("SCALARIZE_BENCH_SUMMARY")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn main() {
    let gpu = match Gpu::shared(0) {
        Ok(g) => g,
        Err(why) => {
            if std::env::var("SCALARIZE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("SCALARIZE_REQUIRE_GPU=1 but no usable GPU: {why}");
            }
            println!("SKIPPED train_step_gpu: {why}");
            return;
        }
    };
    gpu.set_tf32(true).expect("TF32");
    let steps = env_usize("SCALARIZE_BENCH_STEPS", 10);
    let batch = env_usize("SCALARIZE_BENCH_BATCH", 256);
    let models =
        std::env::var("SCALARIZE_BENCH_MODELS").unwrap_or_else(|_| "resnet26,vit-s:p4".into());
    let peak = peak_gemm_tflops(&gpu);
    println!(
        "device: {}; TF32 GEMM 8192^3: {peak:.1} TFLOP/s",
        gpu.name()
    );
    for spec in models.split(',') {
        let mut m = Member::new(spec, batch, &gpu, 0);
        for _ in 0..2 {
            m.step(&gpu);
        }
        let f0 = gemm_flops();
        let mut phases = [0.0f64; 3];
        let t0 = Instant::now();
        for _ in 0..steps {
            let p = m.step(&gpu);
            for (a, b) in phases.iter_mut().zip(p) {
                *a += b;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let flops = (gemm_flops() - f0) as f64;
        let ips = (steps * batch) as f64 / secs;
        let ms = |t: f64| t * 1e3 / steps as f64;
        let frac = flops / secs / 1e12 / peak;
        println!(
            "scalarize  {spec:<22} {ips:8.1} images/s  ({:.1} ms/step: forward {:.1}, backward \
             {:.1}, update {:.1}; GEMM {:.1} TFLOP/s = {:.0}% of the measured peak)",
            ms(secs),
            ms(phases[0]),
            ms(phases[1]),
            ms(phases[2]),
            flops / secs / 1e12,
            frac * 100.0
        );
        if let Some(theirs) = torch_on_gpu(spec, steps, batch) {
            println!(
                "ratio      {spec:<22} {:.2}x PyTorch eager (target >= 1x)",
                ips / theirs
            );
            summary(format!(
                "{{\"bench\":\"train_step_gpu\",\"shape\":\"{spec} b{batch}\",\"ours_ms\":{},\"baseline\":\"torch_eager_tf32\",\"baseline_ms\":{},\"speedup\":{},\"goal\":1.0}}",
                secs * 1e3 / steps as f64,
                batch as f64 / theirs * 1e3,
                ips / theirs
            ));
        }
    }

    // Population: 8 members, sequential vs one stream and thread each.
    let (members, pop_steps, spec) = (8usize, steps.max(5), "resnet26:w0.25");
    let mut pop: Vec<(Arc<Gpu>, Member)> = (0..members)
        .map(|i| {
            let s = gpu.new_stream().expect("stream");
            let m = Member::new(spec, batch, &s, i as u64);
            (s, m)
        })
        .collect();
    for (s, m) in &mut pop {
        m.step(s);
    }
    let t0 = Instant::now();
    for (s, m) in &mut pop {
        for _ in 0..pop_steps {
            m.step(s);
        }
    }
    let sequential = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for (s, m) in &mut pop {
            scope.spawn(move || {
                for _ in 0..pop_steps {
                    m.step(s);
                }
            });
        }
    });
    let concurrent = t0.elapsed().as_secs_f64();
    let images = (members * pop_steps * batch) as f64;
    println!(
        "population {members} x {spec}: one after another {:.1} images/s, concurrent streams {:.1} \
         images/s = {:.2}x (target >= 3x)",
        images / sequential,
        images / concurrent,
        sequential / concurrent
    );
    summary(format!(
        "{{\"bench\":\"pbt_population_gpu\",\"shape\":\"8 x {spec} b{batch}\",\"ours_ms\":{},\"baseline\":\"sequential\",\"baseline_ms\":{},\"speedup\":{},\"goal\":3.0}}",
        concurrent * 1e3,
        sequential * 1e3,
        sequential / concurrent
    ));
}
