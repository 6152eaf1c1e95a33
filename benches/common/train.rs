//! Shared by the training-step benchmarks (train_step.rs, train_step_gpu.rs): inputs and the
//! PyTorch side (benches/train_step_torch.py).

use std::process::Command;

/// Deterministic pseudo-random numbers in [-1, 1) (xorshift), enough for benchmark inputs.
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Runs train_step_torch.py for `spec` with extra arguments, prints its line and returns its
/// images/s; None (with the reason printed) when PyTorch is not usable.
pub fn torch_images_per_sec(spec: &str, args: &[String]) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_step_torch.py");
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args([script, "--model", spec])
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        println!(
            "pytorch    {spec:<22} skipped: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        );
        return None;
    }
    print!("{text}");
    text.split_whitespace()
        .zip(text.split_whitespace().skip(1))
        .find(|(_, unit)| *unit == "images/s")
        .and_then(|(v, _)| v.parse().ok())
}
