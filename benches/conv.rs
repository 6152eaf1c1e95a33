//! 2-D convolution forward and backward at the shapes of ResNet-26 width 0.25 (CIFAR stem,
//! bottleneck blocks, base width 16) on 32x32 inputs, batch 64.
//! Throughput is in elements/s where one element is one floating-point operation, so
//! "Gelem/s" reads as GFLOP/s. Forward = 2·n·c_out·oh·ow·c_in·kh·kw flops; the backward
//! (dx and dw) is twice that.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scalarize_kernels::cpu::{Conv2dShape, conv2d_backward, conv2d_forward};
use std::time::Duration;

const BATCH: usize = 64;

fn conv(c_in: usize, hw: usize, c_out: usize, k: usize, stride: usize) -> Conv2dShape {
    Conv2dShape {
        n: BATCH,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride,
        pad: k / 2,
    }
}

fn fwd_flops(s: &Conv2dShape) -> u64 {
    (2 * s.n * s.c_out * s.out_h() * s.out_w() * s.c_in * s.kh * s.kw) as u64
}

/// Every convolution of ResNet-26 w0.25 (torchvision v1.5 bottlenecks: stride on the 3x3),
/// with the number of times it occurs.
fn resnet26_w025() -> Vec<(Conv2dShape, usize)> {
    let mut convs = vec![(conv(3, 32, 16, 3, 1), 1)]; // stem
    let mut c_in = 16;
    let mut hw = 32;
    for (stage, width) in [16usize, 32, 64, 128].into_iter().enumerate() {
        let out = 4 * width;
        let stride = if stage == 0 { 1 } else { 2 };
        let ohw = hw / stride;
        // Block 1: 1x1 reduce, strided 3x3, 1x1 expand, 1x1 strided downsample.
        convs.push((conv(c_in, hw, width, 1, 1), 1));
        convs.push((conv(width, hw, width, 3, stride), 1));
        convs.push((conv(width, ohw, out, 1, 1), 1));
        convs.push((conv(c_in, hw, out, 1, stride), 1));
        // Block 2.
        convs.push((conv(out, ohw, width, 1, 1), 1));
        convs.push((conv(width, ohw, width, 3, 1), 1));
        convs.push((conv(width, ohw, out, 1, 1), 1));
        c_in = out;
        hw = ohw;
    }
    convs
}

fn buffers(s: &Conv2dShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..s.n * s.c_in * s.h * s.w)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
        .collect();
    let w: Vec<f32> = (0..s.c_out * s.c_in * s.kh * s.kw)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.05)
        .collect();
    let y = vec![0.0f32; s.n * s.c_out * s.out_h() * s.out_w()];
    (x, w, y)
}

fn name(s: &Conv2dShape) -> String {
    format!(
        "{}x{}_s{}_{}to{}_at{}",
        s.kh, s.kw, s.stride, s.c_in, s.c_out, s.h
    )
}

/// Forward and backward of the distinct shapes, one by one.
fn bench_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    let mut seen = Vec::new();
    for (s, _) in resnet26_w025() {
        if seen.contains(&s) {
            continue;
        }
        seen.push(s);
        let (x, w, mut y) = buffers(&s);
        let (mut dx, mut dw) = (vec![0.0f32; x.len()], vec![0.0f32; w.len()]);
        group.throughput(Throughput::Elements(fwd_flops(&s)));
        group.bench_function(format!("fwd/{}", name(&s)), |b| {
            b.iter(|| conv2d_forward(&s, &x, &w, None, &mut y).expect("valid shapes"))
        });
        group.throughput(Throughput::Elements(2 * fwd_flops(&s)));
        group.bench_function(format!("bwd/{}", name(&s)), |b| {
            b.iter(|| {
                conv2d_backward(&s, &x, &w, &y, Some(&mut dx), Some(&mut dw), None)
                    .expect("valid shapes")
            })
        });
    }
    group.finish();
}

/// All convolutions of the network, forward then backward (dx and dw; no dx for the stem,
/// whose input is the image): the number the ">= 50% of the GEMM rate" target is read on.
fn bench_network(c: &mut Criterion) {
    let convs = resnet26_w025();
    let mut bufs: Vec<_> = convs
        .iter()
        .map(|(s, _)| {
            let (x, w, y) = buffers(s);
            let (dx, dw) = (vec![0.0f32; x.len()], vec![0.0f32; w.len()]);
            (x, w, y, dx, dw)
        })
        .collect();
    let flops: u64 = convs
        .iter()
        .enumerate()
        .map(|(i, (s, count))| (if i == 0 { 2 } else { 3 }) * fwd_flops(s) * *count as u64)
        .sum();
    let mut group = c.benchmark_group("conv_network");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(flops));
    group.bench_function("resnet26_w025_b64_fwd_bwd", |b| {
        b.iter(|| {
            for (i, ((s, _), (x, w, y, dx, dw))) in convs.iter().zip(bufs.iter_mut()).enumerate() {
                conv2d_forward(s, x, w, None, y).expect("valid shapes");
                let dx = if i == 0 {
                    None
                } else {
                    Some(dx.as_mut_slice())
                };
                conv2d_backward(s, x, w, y, dx, Some(dw), None).expect("valid shapes");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_network, bench_shapes);
criterion_main!(benches);
