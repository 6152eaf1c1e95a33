//! Batched segmented Gram matrices: throughput on the CPU, and on the GPU when one is usable,
//! next to a copy of the same size measured in the same run.
//!
//! GB/s counts the T x P gradient matrix read once and the L x T x T result written once.
//! The CPU group measures the exact `grad_gram` (f64 sums, what the MTO methods use) and the
//! opt-in `grad_gram_fast` (f32 lanes per block, cosine error ~1e-7).
//! A `LIMIT` line per shape places both against the kernel's reads without arithmetic and one
//! plain pass over the same rows (see `common/read_patterns.rs`).
//! Summary lines go to stderr and, if `SCALARIZE_BENCH_SUMMARY` names a file, are appended to
//! it as JSON. `SCALARIZE_REQUIRE_GPU=1` makes a missing GPU an error.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use scalarize_kernels::cpu;

#[path = "common/kernels.rs"]
mod common;
#[path = "common/read_patterns.rs"]
mod read_patterns;
use common::{
    cpu_reps, fastest, interleaved, median, median_secs, par_copy, report, report_vs_torch,
    torch_ms,
};

/// Small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    }
}

/// `l` segments over `p` columns: big "conv" segments alternating with 64-float "biases".
fn layer_segments(p: usize, l: usize) -> Vec<usize> {
    let pairs = l / 2;
    let big = (p - pairs * 64) / pairs;
    let mut ends = Vec::with_capacity(l);
    let mut e = 0;
    for _ in 0..pairs {
        e += big;
        ends.push(e);
        e += 64;
        ends.push(e);
    }
    *ends.last_mut().expect("l >= 2") = p;
    ends
}

fn cpu_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("grad_gram_cpu");
    for (t, p, l) in [
        (2usize, 1usize << 24, 160usize),
        (8, 1 << 22, 160),
        (16, 1 << 21, 160),
    ] {
        let mut rng = Lcg(t as u64);
        let data: Vec<f32> = (0..t * p).map(|_| rng.uniform()).collect();
        let ends = layer_segments(p, l);
        let shape = format!("T={t} P={p} L={l}");
        let bytes = (t * p * 4 + l * t * t * 8) as u64;
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(format!("gram {shape}"), |b| {
            b.iter(|| black_box(cpu::grad_gram(&data, t, p, &ends).expect("ok")))
        });
        g.bench_function(format!("gram_fast {shape}"), |b| {
            b.iter(|| black_box(cpu::grad_gram_fast(&data, t, p, &ends).expect("ok")))
        });
        // A copy moving the same number of bytes (read half, write half).
        let half = t * p / 2;
        let mut dst = vec![0.0f32; half];
        g.throughput(Throughput::Bytes((2 * half * 4) as u64));
        g.bench_function(format!("copy {shape}"), |b| {
            b.iter(|| par_copy(black_box(&data[..half]), &mut dst))
        });
        // Both read patterns load every row's whole steps: the same largest value.
        assert_eq!(
            read_patterns::tiles(&data, t, p),
            read_patterns::one_pass(&data, t, p),
            "the read patterns load different values"
        );
        // Exact, fast and copy interleaved call by call (and the read patterns).
        let reps = cpu_reps();
        let times = interleaved(
            reps,
            &mut [
                &mut || {
                    black_box(cpu::grad_gram(&data, t, p, &ends).expect("ok"));
                },
                &mut || {
                    black_box(cpu::grad_gram_fast(&data, t, p, &ends).expect("ok"));
                },
                &mut || par_copy(black_box(&data[..half]), &mut dst),
                &mut || {
                    black_box(read_patterns::tiles(black_box(&data), t, p));
                },
                &mut || {
                    black_box(read_patterns::one_pass(black_box(&data), t, p));
                },
            ],
        );
        let copy_bytes = (2 * half * 4) as f64;
        for (k, bench) in [(0, "grad_gram"), (1, "grad_gram_fast")] {
            // Fastest calls too: on a shared machine, the calls least disturbed by others.
            let best =
                100.0 * (bytes as f64 / fastest(&times[k])) / (copy_bytes / fastest(&times[2]));
            eprintln!(
                "BEST {bench} [cpu] {shape}: fastest of {reps} calls {:.1} GB/s, copy {:.1} GB/s ({best:.0}% of copy)",
                bytes as f64 / fastest(&times[k]) / 1e9,
                copy_bytes / fastest(&times[2]) / 1e9,
            );
            report(
                bench,
                "cpu",
                &shape,
                bytes as f64 / median(&times[k]) / 1e9,
                copy_bytes / median(&times[2]) / 1e9,
                Some(best),
            );
        }
        // What the kernel's reads allow without its arithmetic, against one pass over the
        // same bytes (medians; the input read once counts, as for the kernels).
        let input = (t * p * 4) as f64;
        let gbps = |k: usize| input / median(&times[k]) / 1e9;
        eprintln!(
            "LIMIT grad_gram [cpu] {shape}: the kernel's reads alone (tile by tile, no arithmetic) {:.1} GB/s, one pass over the rows {:.1} GB/s, copy {:.1} GB/s; grad_gram {:.0}% and grad_gram_fast {:.0}% of the tile reads",
            gbps(3),
            gbps(4),
            copy_bytes / median(&times[2]) / 1e9,
            100.0 * gbps(0) / gbps(3),
            100.0 * gbps(1) / gbps(3),
        );
    }
    g.finish();
}

fn gpu_benches(c: &mut Criterion) {
    use scalarize_kernels::cuda::{self, Gpu};
    let gpu = match Gpu::shared(0) {
        Ok(g) => g,
        Err(why) => {
            if std::env::var("SCALARIZE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("SCALARIZE_REQUIRE_GPU=1 but no usable GPU: {why}");
            }
            eprintln!("SKIPPED GPU benchmarks: {why}");
            return;
        }
    };
    let mut g = c.benchmark_group("grad_gram_gpu");
    // The large size: T = 8 x P = 25M with 160 segments (800 MB), plus T = 32.
    for (t, p, l) in [(8usize, 25_000_000usize, 160usize), (32, 6_250_000, 160)] {
        let mut rng = Lcg(t as u64);
        let data: Vec<f32> = (0..t * p).map(|_| rng.uniform()).collect();
        let ends = layer_segments(p, l);
        let shape = format!("T={t} P={p} L={l}");
        let dg = gpu.upload(&data).expect("upload");
        let mut out = gpu.zeros::<f64>(l * t * t).expect("alloc");
        let half = t * p / 2;
        let mut dcopy = gpu.zeros::<f32>(half).expect("alloc");
        let bytes = (t * p * 4 + l * t * t * 8) as u64;
        let mut run = || {
            cuda::grad_gram_device(&gpu, &dg, t, p, &ends, &mut out).expect("ok");
            gpu.synchronize("gram").expect("sync");
        };
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(format!("gram {shape}"), |b| b.iter(&mut run));
        let secs = median_secs(21, &mut run);
        let mut copy_once = || {
            gpu.copy(&dg, 0, &mut dcopy, 0, half).expect("copy");
            gpu.synchronize("copy").expect("sync");
        };
        g.throughput(Throughput::Bytes((2 * half * 4) as u64));
        g.bench_function(format!("copy {shape}"), |b| b.iter(&mut copy_once));
        let copy = median_secs(21, &mut copy_once);
        report(
            "grad_gram",
            "gpu",
            &shape,
            bytes as f64 / secs / 1e9,
            (2 * half * 4) as f64 / copy / 1e9,
            None,
        );
        let (ta, pa, la) = (t.to_string(), p.to_string(), l.to_string());
        let args = ["gram", "--t", &ta, "--p", &pa, "--segments", &la];
        if let Some(res) = torch_ms(&args) {
            for (name, ms) in res {
                let goal = match name.as_str() {
                    "torch_gram_per_segment" => 5.0,
                    "torch_gram_whole" => 1.5,
                    _ => continue,
                };
                report_vs_torch("grad_gram_vs_torch", &shape, secs * 1e3, &name, ms, goal);
            }
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    if !common::skip_cpu("grad_gram") {
        cpu_benches(&mut c);
    }
    gpu_benches(&mut c);
    c.final_summary();
}
