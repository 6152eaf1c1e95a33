//! Per-step cost of MTO aggregation on the CPU, next to the cost of one Gram computation.
//!
//! Groups:
//! - `mto_gram/T{t}_P{p}`: the segmented Gram matrices of T task gradients over P parameters
//!   (16 layer segments), the dot products every Gram-based method needs.
//! - `mto_aggregate/T{t}_P{p}/{method}`: one `aggregate` call given that Gram matrix (the T x T
//!   solver plus the weighted sum of T x P gradients into the direction).
//! - `mto_solver/T{t}/{method}`: the same at P = 4096, where the T x T solver dominates.
//!
//! P = 10M for T = 2 and 8. T = 32 runs at P = 2.5M by default (the T x P f32 matrix at 10M is
//! 1.28 GB and one Gram pass takes seconds on a shared 2-core machine);
//! `SCALARIZE_MTO_BENCH_FULL=1` runs it at 10M too.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use scalarize_mto::{AggregateInput, TaskGradients, build, task_gram};

/// Methods that work on a gradient matrix (GradDrop only in the solver group: it is
/// elementwise over a representation, not over 10M parameters).
const GRADIENT_METHODS: &[&str] = &[
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "gradvac",
    "aligned_mtl",
    "upgrad",
    "mgda",
    "imtl_g",
    "gradnorm",
];

/// Deterministic pseudo-random gradients in [-1, 1).
fn gradients(t: usize, p: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..t * p)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// 16 equal layer segments over `p` columns.
fn segments(p: usize) -> Vec<usize> {
    let l = 16.min(p);
    (1..=l).map(|i| i * p / l).collect()
}

fn bench_aggregate(c: &mut Criterion) {
    let full = std::env::var("SCALARIZE_MTO_BENCH_FULL").is_ok_and(|v| v == "1");
    let sizes = [
        (2usize, 10_000_000usize),
        (8, 10_000_000),
        (32, if full { 10_000_000 } else { 2_500_000 }),
    ];
    let mut group = c.benchmark_group("mto");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    for (t, p) in sizes {
        let g = gradients(t, p, 17 + t as u64);
        let ends = segments(p);
        let grads = TaskGradients::new(&g, t, p, &ends).expect("valid shapes");
        let losses: Vec<f64> = (0..t).map(|i| 1.0 + 0.1 * i as f64).collect();
        let id = format!("T{t}_P{p}");
        group.bench_function(BenchmarkId::new("gram", &id), |b| {
            b.iter(|| black_box(task_gram(&grads).expect("gram")))
        });
        let gram = task_gram(&grads).expect("gram");
        for name in GRADIENT_METHODS {
            let mut m = build(name, t, 1).expect("method");
            let input = AggregateInput::from_losses(&losses)
                .with_grads(grads.clone())
                .with_gram(&gram);
            group.bench_function(BenchmarkId::new(format!("aggregate/{id}"), name), |b| {
                b.iter(|| black_box(m.aggregate(&input).expect("aggregate")))
            });
        }
    }
    for t in [2usize, 8, 32] {
        let p = 4096;
        let g = gradients(t, p, 99 + t as u64);
        let grads = TaskGradients::whole(&g, t, p).expect("valid shapes");
        let losses: Vec<f64> = (0..t).map(|i| 1.0 + 0.1 * i as f64).collect();
        let gram = task_gram(&grads).expect("gram");
        for name in GRADIENT_METHODS.iter().chain(&["graddrop"]) {
            let mut m = build(name, t, 1).expect("method");
            let input = AggregateInput::from_losses(&losses)
                .with_grads(grads.clone())
                .with_gram(&gram);
            group.bench_function(BenchmarkId::new(format!("solver/T{t}_P{p}"), name), |b| {
                b.iter(|| black_box(m.aggregate(&input).expect("aggregate")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_aggregate);
criterion_main!(benches);
