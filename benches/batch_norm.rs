//! Training-mode batch norm (fused with ReLU, or with a residual add and ReLU, as in a ResNet
//! bottleneck), forward and backward, at the ResNet-26 w0.25 shapes (batch 64, 32x32 input).
//! Throughput counts the bytes each pass must move: forward reads x (+ residual) and writes y;
//! backward reads x and dy (+ y after a residual add) and writes dx (+ dresidual). Compare with a copy of the same
//! size measured in the same run.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scalarize_kernels::cpu::{
    batch_norm_add_relu_backward, batch_norm_add_relu_forward_train, batch_norm_relu_backward,
    batch_norm_relu_forward_train,
};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;

fn noise(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + seed * 13) % 29) as f32 - 14.0) * 0.07)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_norm");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    // (channels, plane size): stem/stage 1 bottleneck, stage 1 output, stages 2-4 outputs.
    for &(ch, hw) in &[(16, 1024), (64, 1024), (128, 256), (256, 64), (512, 16)] {
        let len = BATCH * ch * hw;
        let x = noise(len, 1);
        let res = noise(len, 2);
        let dy = noise(len, 3);
        let gamma = vec![1.1f32; ch];
        let beta = vec![0.1f32; ch];
        let (mut y, mut dx, mut dr) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
        let (mut m, mut s) = (vec![0.0f32; ch], vec![0.0f32; ch]);
        let (mut dg, mut db) = (vec![0.0f32; ch], vec![0.0f32; ch]);
        let shape = format!("c{ch} hw{hw}");
        g.throughput(Throughput::Bytes((2 * len * 4) as u64));
        g.bench_function(format!("copy {shape}"), |b| {
            b.iter(|| dx.copy_from_slice(black_box(&x)))
        });
        g.throughput(Throughput::Bytes((2 * len * 4) as u64));
        g.bench_function(format!("relu forward {shape}"), |b| {
            b.iter(|| {
                batch_norm_relu_forward_train(
                    BATCH, ch, hw, &x, &gamma, &beta, 1e-5, &mut y, &mut m, &mut s,
                )
                .unwrap()
            })
        });
        g.throughput(Throughput::Bytes((3 * len * 4) as u64));
        g.bench_function(format!("relu backward {shape}"), |b| {
            b.iter(|| {
                batch_norm_relu_backward(
                    BATCH,
                    ch,
                    hw,
                    &x,
                    &dy,
                    (&gamma, &beta),
                    &m,
                    &s,
                    &mut dx,
                    &mut dg,
                    &mut db,
                )
                .unwrap()
            })
        });
        g.throughput(Throughput::Bytes((3 * len * 4) as u64));
        g.bench_function(format!("add-relu forward {shape}"), |b| {
            b.iter(|| {
                batch_norm_add_relu_forward_train(
                    BATCH, ch, hw, &x, &res, &gamma, &beta, 1e-5, &mut y, &mut m, &mut s,
                )
                .unwrap()
            })
        });
        g.throughput(Throughput::Bytes((5 * len * 4) as u64));
        g.bench_function(format!("add-relu backward {shape}"), |b| {
            b.iter(|| {
                batch_norm_add_relu_backward(
                    BATCH, ch, hw, &x, &y, &dy, &gamma, &m, &s, &mut dx, &mut dr, &mut dg, &mut db,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
