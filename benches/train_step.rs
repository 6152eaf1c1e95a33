//! Whole training steps: images/s of ResNet-26 w0.25 and ViT-Ti/4 depth 6 at batch 64, 32x32
//! images, two 10-class heads, SGD (momentum 0.9, weight decay 5e-4), and the same models in
//! PyTorch (benches/train_step_torch.py) in the same run when `python3` can import torch.
//! See benches/README.md. Environment: SCALARIZE_BENCH_STEPS (timed steps, default 5),
//! SCALARIZE_BENCH_MODELS (comma-separated specs), RAYON_NUM_THREADS (threads, also passed to
//! PyTorch), SCALARIZE_BENCH_NO_TORCH=1 to skip the PyTorch side.

use std::time::Instant;

#[path = "common/train.rs"]
mod common;

use common::{noise, torch_images_per_sec};
use scalarize_autograd::Tensor;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::optim::{Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

const BATCH: usize = 64;
const DEFAULT_MODELS: &str = "resnet26:w0.25,vit-ti:p4:d6";

/// Wall time of the three phases of a step, accumulated over the timed steps.
#[derive(Default)]
struct Phases {
    forward: f64,
    backward: f64,
    update: f64,
}

fn step(
    m: &mut Model,
    opt: &mut Optimizer,
    x: &Tensor,
    labels: &[Vec<i64>],
    phases: &mut Phases,
) -> f32 {
    let t0 = Instant::now();
    let out = m.forward(x, &Routing::AllHeads).expect("forward");
    let losses: Vec<Tensor> = out
        .outputs
        .iter()
        .zip(labels)
        .map(|(o, l)| {
            head_loss(&m.heads().0[o.head], &o.output, &Target::Classes(l.clone())).expect("loss")
        })
        .collect();
    let loss = weighted_sum(&losses, &[0.5, 0.5]).expect("weighted loss");
    let value = loss.item().expect("scalar");
    let t1 = Instant::now();
    let grads = loss.backward().expect("backward");
    // Dropping the graph first lets the optimizer update parameters in place (no copy).
    drop((out, losses, loss));
    let t2 = Instant::now();
    m.step(opt, &grads, 0.05, None).expect("optimizer step");
    let t3 = Instant::now();
    phases.forward += (t1 - t0).as_secs_f64();
    phases.backward += (t2 - t1).as_secs_f64();
    phases.update += (t3 - t2).as_secs_f64();
    value
}

/// CPU time (user + system, all threads) this process has used, from /proc/self/stat; None
/// off Linux. On a shared machine it moves far less than wall time when other processes
/// compete for the cores (compare runs with RAYON_NUM_THREADS=1: no thread spins idle).
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux configuration Rust targets.
    Some(ticks / 100.0)
}

fn bench_ours(spec: &str, steps: usize) -> f64 {
    let mut m = Model::from_specs(spec, "10,10", InitOptions::default(), 0).expect("model");
    let r = m.spec().resolution;
    let x = Tensor::new(noise(BATCH * 3 * r * r, 1), &[BATCH, 3, r, r]).expect("images");
    let labels: Vec<Vec<i64>> = (0..2)
        .map(|t| {
            noise(BATCH, 7 + t)
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
    let mut opt = Optimizer::new(config, false).expect("optimizer");
    for _ in 0..2 {
        step(&mut m, &mut opt, &x, &labels, &mut Phases::default());
    }
    let mut phases = Phases::default();
    let (t0, c0) = (Instant::now(), process_cpu_secs());
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = step(&mut m, &mut opt, &x, &labels, &mut phases);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = match (c0, process_cpu_secs()) {
        (Some(a), Some(b)) => format!("cpu {:.1} ms/step, ", (b - a) * 1e3 / steps as f64),
        _ => String::new(),
    };
    let ips = (steps * BATCH) as f64 / secs;
    let ms = |t: f64| t * 1e3 / steps as f64;
    println!(
        "scalarize  {spec:<22} {ips:8.1} images/s  ({:.1} ms/step, {cpu}forward {:.1}, backward \
         {:.1}, update {:.1}; final loss {loss:.3})",
        ms(secs),
        ms(phases.forward),
        ms(phases.backward),
        ms(phases.update)
    );
    ips
}

fn bench_torch(spec: &str, steps: usize, threads: usize) -> Option<f64> {
    let args = [
        "--steps",
        &steps.to_string(),
        "--threads",
        &threads.to_string(),
    ]
    .map(String::from);
    torch_images_per_sec(spec, &args)
}

fn main() {
    let steps: usize = std::env::var("SCALARIZE_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let models = std::env::var("SCALARIZE_BENCH_MODELS").unwrap_or_else(|_| DEFAULT_MODELS.into());
    let threads = rayon::current_num_threads();
    let with_torch = std::env::var("SCALARIZE_BENCH_NO_TORCH").is_err();
    println!(
        "train step: batch {BATCH}, 32x32, heads 10,10, SGD; {steps} timed steps; {threads} threads"
    );
    for spec in models.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ours = bench_ours(spec, steps);
        if with_torch && let Some(theirs) = bench_torch(spec, steps, threads) {
            println!("ratio      {spec:<22} {:8.2}x PyTorch", ours / theirs);
        }
    }
}
