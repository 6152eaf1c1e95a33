//! Square f32 GEMM (C = A·B, n×n) through `scalarize_kernels::cpu::matmul`.
//! Throughput is reported in elements/s where one element is one floating-point operation,
//! so "Gelem/s" reads as GFLOP/s (2·n³ flops per product).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scalarize_kernels::cpu::matmul;
use std::hint::black_box;
use std::time::Duration;

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for n in [256usize, 512, 1024, 2048] {
        // Deterministic, non-trivial values.
        let a: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..n * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_function(format!("{n}"), |bch| {
            bch.iter(|| {
                matmul(
                    n,
                    n,
                    n,
                    black_box(&a),
                    false,
                    black_box(&b),
                    false,
                    &mut out,
                    1.0,
                    0.0,
                )
                .expect("valid shapes")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
