//! Fused weighted multi-task loss (forward + backward): throughput on the CPU, and on the GPU
//! when one is usable, next to a copy of the same size measured in the same run.
//!
//! GB/s counts each input read once and each output written once: logits, targets (and the
//! mask where there is one) read, d(logits) written (the T per-task losses are negligible).
//! The CPU baseline is a parallel copy moving the same number of bytes as the kernel, with
//! plain stores like the kernels' (each also reads every destination line before writing it,
//! which neither is credited with); a copy with streaming stores is measured and reported
//! too, as the machine's raw bandwidth. Kernel and copies alternate rep by rep so that a
//! change in machine load hits all of them alike.
//!
//! Besides criterion's report, a summary line per kernel goes to stderr and, if
//! `SCALARIZE_BENCH_SUMMARY` names a file, is appended to it as JSON (scripts/gpu-check.sh
//! builds its table from it). `SCALARIZE_REQUIRE_GPU=1` makes a missing GPU an error.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use rayon::prelude::*;
use scalarize_kernels::cpu::{self, TaskLayout, WeightedBceInput, WeightedCeInput};

#[path = "common/kernels.rs"]
mod common;
use common::{
    cpu_reps, fastest, interleaved, median, median_secs, par_copy, report, report_vs_torch,
    torch_ms,
};

/// Small deterministic generator (benchmarks need no statistical quality).
struct Lcg(u64);

impl Lcg {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u64() as f64 / (1u64 << 53) as f64) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A CE problem: n rows, heads of `sizes` classes, no mask, 5% ignored labels.
struct CeProblem {
    layout: TaskLayout,
    n: usize,
    logits: Vec<f32>,
    targets: Vec<i64>,
    weights: Vec<f32>,
}

fn ce_problem(n: usize, sizes: &[usize]) -> CeProblem {
    let mut rng = Lcg(42);
    let layout = TaskLayout::from_sizes(sizes).expect("valid sizes");
    let (t, w) = (layout.num_tasks(), layout.width());
    let logits = (0..n * w).map(|_| rng.uniform(-5.0, 5.0)).collect();
    let targets = (0..n * t)
        .map(|k| {
            if rng.below(20) == 0 {
                -100
            } else {
                rng.below(sizes[k % t]) as i64
            }
        })
        .collect();
    let weights = (0..t).map(|_| rng.uniform(0.1, 1.0)).collect();
    CeProblem {
        layout,
        n,
        logits,
        targets,
        weights,
    }
}

/// Bytes a CE call moves: logits + targets read, gradient written.
fn ce_bytes(n: usize, w: usize, t: usize) -> u64 {
    (n * w * 4 + n * t * 8 + n * w * 4) as u64
}

/// Bytes a BCE call moves: logits + targets + mask read, gradient written.
fn bce_bytes(n: usize, w: usize, t: usize) -> u64 {
    (n * w * 4 + n * w * 4 + n * t + n * w * 4) as u64
}

/// Parallel copy with streaming stores (whole 64-byte lines of `dst` bypass the caches and
/// are not read first): the machine's raw copy bandwidth.
fn par_copy_stream(src: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| stream_chunk(s, d));
}

/// One chunk of [`par_copy_stream`]: plain copies up to the first 64-byte boundary of `d` and
/// after the last, streaming stores between, then a store fence.
fn stream_chunk(s: &[f32], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_sfence, _mm_stream_ps};
        let n = d.len();
        let head = d.as_ptr().align_offset(64).min(n);
        let body = head + (n - head) / 16 * 16;
        d[..head].copy_from_slice(&s[..head]);
        for k in (head..body).step_by(4) {
            // SAFETY: k + 4 <= body <= n for both slices; d + k is 16-byte aligned.
            unsafe { _mm_stream_ps(d.as_mut_ptr().add(k), _mm_loadu_ps(s.as_ptr().add(k))) };
        }
        d[body..].copy_from_slice(&s[body..]);
        // SAFETY: sfence has no preconditions.
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    d.copy_from_slice(s);
}

/// Seconds per call of the kernel, the plain copy and the streaming copy.
struct Timings {
    kernel: Vec<f64>,
    plain: Vec<f64>,
    stream: Vec<f64>,
}

impl Timings {
    /// Median of each series.
    fn median(&self) -> (f64, f64, f64) {
        (
            median(&self.kernel),
            median(&self.plain),
            median(&self.stream),
        )
    }

    /// Fastest call of each series.
    fn best(&self) -> (f64, f64, f64) {
        (
            fastest(&self.kernel),
            fastest(&self.plain),
            fastest(&self.stream),
        )
    }
}

/// Times the kernel against a plain and a streaming copy moving `bytes`, interleaved.
fn against_copies(reps: usize, bytes: u64, mut kernel: impl FnMut()) -> Timings {
    // A copy moving `bytes` reads and writes bytes / 2 each.
    let len = (bytes / 8) as usize;
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let mut dst2 = vec![0.0f32; len];
    let mut t = interleaved(
        reps,
        &mut [
            &mut kernel,
            &mut || par_copy(black_box(&src), &mut dst),
            &mut || par_copy_stream(black_box(&src), &mut dst2),
        ],
    )
    .into_iter();
    let mut next = || t.next().expect("three series");
    Timings {
        kernel: next(),
        plain: next(),
        stream: next(),
    }
}

/// Prints and records a CPU kernel's GB/s against the plain-store copy (the kernels store
/// the same way), with the streaming copy for reference: medians (the SUMMARY line and
/// `ratio_pct`), then the fastest calls (the BEST line and `best_ratio_pct`).
fn report_cpu(bench: &str, shape: &str, bytes: u64, t: &Timings) {
    let gb = bytes as f64 / 1e9;
    let (secs, plain, stream) = t.median();
    let (gbps, plain, stream) = (gb / secs, gb / plain, gb / stream);
    let of_stream = 100.0 * gbps / stream;
    eprintln!(
        "COPY {bench} {shape}: streaming-store copy {stream:.1} GB/s ({of_stream:.0}% of it)"
    );
    let (bk, bp, bs) = t.best();
    let (bk, bp, bs) = (gb / bk, gb / bp, gb / bs);
    let best_pct = 100.0 * bk / bp;
    eprintln!(
        "BEST {bench} [cpu] {shape}: fastest of {} calls {bk:.1} GB/s, copy {bp:.1} GB/s ({best_pct:.0}% of copy), streaming copy {bs:.1} GB/s ({:.0}% of it)",
        t.kernel.len(),
        100.0 * bk / bs
    );
    report(bench, "cpu", shape, gbps, plain, Some(best_pct));
}

fn cpu_benches(c: &mut Criterion) {
    // 16384 x 1000 f32 = 64 MiB of logits: far beyond the caches.
    let ce_cases: [(usize, &[usize], &str); 2] = [
        (16_384, &[1000], "n=16384 C=1000"),
        (65_536, &[10; 40], "n=65536 40 heads x 10"),
    ];
    let mut g = c.benchmark_group("weighted_loss_cpu");
    for (n, sizes, shape) in ce_cases {
        let pr = ce_problem(n, sizes);
        let (t, w) = (pr.layout.num_tasks(), pr.layout.width());
        let input = WeightedCeInput {
            layout: &pr.layout,
            n: pr.n,
            logits: &pr.logits,
            targets: &pr.targets,
            mask: None,
            weights: &pr.weights,
            ignore_index: -100,
        };
        let mut grad = vec![0.0f32; n * w];
        let bytes = ce_bytes(n, w, t);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(format!("ce {shape}"), |b| {
            b.iter(|| black_box(cpu::weighted_ce_loss(&input, Some(&mut grad)).expect("ok")))
        });
        let mut dst = vec![0.0f32; n * w];
        g.throughput(Throughput::Bytes((2 * n * w * 4) as u64));
        g.bench_function(format!("copy {shape}"), |b| {
            b.iter(|| par_copy(black_box(&pr.logits), &mut dst))
        });
        let times = against_copies(cpu_reps(), bytes, || {
            black_box(cpu::weighted_ce_loss(&input, Some(&mut grad)).expect("ok"));
        });
        report_cpu("weighted_ce", shape, bytes, &times);
    }

    // Binary attributes (CelebA-like): 40 one-logit tasks.
    let (n, t) = (262_144, 40);
    let mut rng = Lcg(7);
    let layout = TaskLayout::from_sizes(&[1; 40]).expect("valid");
    let logits: Vec<f32> = (0..n * t).map(|_| rng.uniform(-6.0, 6.0)).collect();
    let targets: Vec<f32> = (0..n * t).map(|_| rng.below(2) as f32).collect();
    let mask: Vec<u8> = (0..n * t).map(|_| u8::from(rng.below(10) != 0)).collect();
    let weights = vec![1.0f32 / 40.0; t];
    let input = WeightedBceInput {
        layout: &layout,
        n,
        logits: &logits,
        targets: &targets,
        mask: Some(&mask),
        weights: &weights,
    };
    let mut grad = vec![0.0f32; n * t];
    let bytes = bce_bytes(n, t, t);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("bce n=262144 40 attributes", |b| {
        b.iter(|| black_box(cpu::weighted_bce_loss(&input, Some(&mut grad)).expect("ok")))
    });
    let times = against_copies(cpu_reps(), bytes, || {
        black_box(cpu::weighted_bce_loss(&input, Some(&mut grad)).expect("ok"));
    });
    report_cpu("weighted_bce", "n=262144 40 attributes", bytes, &times);
    g.finish();
}

fn gpu_benches(c: &mut Criterion) {
    use scalarize_kernels::cuda::{self, CudaCeInput, Gpu};
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
    // The large size: 65,536 rows x 1,000 classes (256 MiB of logits).
    let (n, sizes, shape) = (65_536usize, [1000usize], "n=65536 C=1000");
    let pr = ce_problem(n, &sizes);
    let (t, w) = (pr.layout.num_tasks(), pr.layout.width());
    let dl = gpu.upload(&pr.logits).expect("upload");
    let dt = gpu.upload(&pr.targets).expect("upload");
    let mut dgrad = gpu.zeros::<f32>(n * w).expect("alloc");
    let mut dcopy = gpu.zeros::<f32>(n * w).expect("alloc");
    let input = CudaCeInput {
        layout: &pr.layout,
        n,
        logits: &dl,
        targets: &dt,
        mask: None,
        weights: &pr.weights,
        ignore_index: -100,
    };
    let bytes = ce_bytes(n, w, t);
    let mut g = c.benchmark_group("weighted_loss_gpu");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("ce {shape}"), |b| {
        b.iter(|| black_box(cuda::weighted_ce_loss(&gpu, &input, Some(&mut dgrad)).expect("ok")))
    });
    g.throughput(Throughput::Bytes((2 * n * w * 4) as u64));
    g.bench_function(format!("copy {shape}"), |b| {
        b.iter(|| {
            gpu.copy(&dl, 0, &mut dcopy, 0, n * w).expect("copy");
            gpu.synchronize("copy").expect("sync");
        })
    });
    g.finish();
    let secs = median_secs(21, || {
        black_box(cuda::weighted_ce_loss(&gpu, &input, Some(&mut dgrad)).expect("ok"));
    });
    let copy = median_secs(21, || {
        gpu.copy(&dl, 0, &mut dcopy, 0, n * w).expect("copy");
        gpu.synchronize("copy").expect("sync");
    });
    report(
        "weighted_ce",
        "gpu",
        shape,
        bytes as f64 / secs / 1e9,
        (2 * n * w * 4) as f64 / copy / 1e9,
        None,
    );
    let n_arg = n.to_string();
    if let Some(res) = torch_ms(&["ce", "--n", &n_arg, "--sizes", "1000"]) {
        for (name, ms) in res {
            if name == "torch_ce_unfused" {
                report_vs_torch("weighted_ce_vs_torch", shape, secs * 1e3, &name, ms, 3.0);
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    if !common::skip_cpu("weighted_loss") {
        cpu_benches(&mut c);
    }
    gpu_benches(&mut c);
    c.final_summary();
}
