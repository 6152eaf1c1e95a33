//! Shared by the kernel benchmarks (grad_gram.rs, weighted_loss.rs): the copy they are
//! compared with, timing, the summary lines (stderr and `SCALARIZE_BENCH_SUMMARY`), and the
//! PyTorch side (benches/torch_kernels.py).

use std::io::Write;
use std::time::Instant;

use rayon::prelude::*;

/// Parallel copy: the machine's achievable bandwidth for the same access pattern.
pub fn par_copy(src: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Median wall time of `reps` calls after one warm-up call.
pub fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Prints a summary line (medians) and appends it as JSON to `SCALARIZE_BENCH_SUMMARY` if set,
/// with the ratio of the fastest calls where there is one.
pub fn report(
    bench: &str,
    device: &str,
    shape: &str,
    gbps: f64,
    copy_gbps: f64,
    best_ratio: Option<f64>,
) {
    let ratio = 100.0 * gbps / copy_gbps;
    eprintln!(
        "SUMMARY {bench} [{device}] {shape}: {gbps:.1} GB/s, copy {copy_gbps:.1} GB/s ({ratio:.0}% of copy)"
    );
    let best = best_ratio.map_or(String::new(), |b| format!(",\"best_ratio_pct\":{b:.1}"));
    append_summary(format!(
        "{{\"bench\":\"{bench}\",\"device\":\"{device}\",\"shape\":\"{shape}\",\"gbps\":{gbps:.3},\"copy_gbps\":{copy_gbps:.3},\"ratio_pct\":{ratio:.1}{best}}}\n"
    ));
}

/// Runs `benches/torch_kernels.py` with `args`; returns its (name, median ms) results, or None
/// after printing why PyTorch could not be measured.
pub fn torch_ms(args: &[&str]) -> Option<Vec<(String, f64)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_kernels.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    match std::process::Command::new(&python)
        .arg(script)
        .args(args)
        .output()
    {
        Err(e) => {
            eprintln!("SKIPPED PyTorch comparison: cannot run {python}: {e}");
            None
        }
        Ok(o) if !o.status.success() => {
            let why = String::from_utf8_lossy(&o.stderr);
            eprintln!("SKIPPED PyTorch comparison: {}", why.trim());
            None
        }
        Ok(o) => Some(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next()? == "RESULT").then_some(())?;
                    let name = it.next()?.to_string();
                    let ms: f64 = it.next()?.parse().ok()?;
                    Some((name, ms))
                })
                .collect(),
        ),
    }
}

/// Prints and records our time against a PyTorch baseline measured in the same run.
pub fn report_vs_torch(
    bench: &str,
    shape: &str,
    ours_ms: f64,
    torch: &str,
    torch_ms: f64,
    goal: f64,
) {
    let speedup = torch_ms / ours_ms;
    eprintln!(
        "SUMMARY {bench} [gpu] {shape}: {ours_ms:.3} ms vs {torch} {torch_ms:.3} ms = {speedup:.2}x (goal {goal}x)"
    );
    append_summary(format!(
        "{{\"bench\":\"{bench}\",\"device\":\"gpu\",\"shape\":\"{shape}\",\"ours_ms\":{ours_ms:.4},\"baseline\":\"{torch}\",\"baseline_ms\":{torch_ms:.4},\"speedup\":{speedup:.3},\"goal\":{goal}}}\n"
    ));
}

/// Appends one JSON line to the file `SCALARIZE_BENCH_SUMMARY` names, if set
/// (scripts/gpu-check.sh builds its table from it).
fn append_summary(line: String) {
    if let Ok(path) = std::env::var("SCALARIZE_BENCH_SUMMARY") {
        let ok = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = ok {
            eprintln!("cannot append to {path}: {e}");
        }
    }
}

/// Whether only the GPU groups run (`SCALARIZE_BENCH_GPU_ONLY=1`, set by scripts/gpu-check.sh:
/// device time is scarce and the CPU figures belong to the CPU machine); prints the skip.
pub fn skip_cpu(bench: &str) -> bool {
    let skip = std::env::var("SCALARIZE_BENCH_GPU_ONLY").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED {bench} CPU benchmarks: SCALARIZE_BENCH_GPU_ONLY=1");
    }
    skip
}

/// Rounds per CPU measurement: `SCALARIZE_BENCH_REPS`, or 21.
pub fn cpu_reps() -> usize {
    std::env::var("SCALARIZE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(21)
}

/// Seconds per call of each of `fs` over `reps` rounds after one warm-up round, the calls
/// interleaved within each round so that a change in machine load hits them all alike.
pub fn interleaved(reps: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<Vec<f64>> {
    let mut times = vec![Vec::with_capacity(reps); fs.len()];
    for rep in 0..=reps {
        for (f, t) in fs.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            f();
            if rep > 0 {
                t.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    times
}

/// Median of a series of times.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Fastest of a series of times: on a machine shared with other tenants, the call least
/// disturbed by them (used for the kernel and its copy alike).
pub fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
