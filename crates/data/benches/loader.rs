//! Loader throughput (random crop + flip + normalise on 32x32, 2 workers) and JPEG decode +
//! resize throughput at 96x96 and 224x224. All data is generated here.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scalarize_data::sample::InMemory;
use scalarize_data::transforms::{Interp, decode_image, resize_image};
use scalarize_data::{Augment, Loader, LoaderConfig, Source, TaskSpec};

fn cifar_like(n: usize) -> InMemory {
    InMemory {
        height: 32,
        width: 32,
        channels: 3,
        pixels: (0..n * 3072)
            .map(|i| ((i * 2654435761usize) >> 13) as u8)
            .collect(),
        task_specs: vec![TaskSpec::class("class", 10)],
        labels: vec![(0..n).map(|i| (i % 10) as u32).collect()],
    }
}

fn loader(c: &mut Criterion) {
    let n = 10_240;
    let mut g = c.benchmark_group("loader_32x32_crop_flip_normalise");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    for workers in [0usize, 2] {
        let cfg = LoaderConfig {
            batch_size: 256,
            workers,
            prefetch: 4,
            seed: 1,
            ..Default::default()
        };
        let aug = Augment::cifar_train([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
        let l = Loader::new(vec![Source::new(cifar_like(n), aug)], cfg).expect("loader");
        let mut epoch = 0u64;
        g.bench_function(format!("workers_{workers}"), |b| {
            b.iter(|| {
                epoch += 1;
                for batch in l.epoch(epoch) {
                    black_box(batch.expect("batch").images.len());
                }
            })
        });
    }
    g.finish();
}

fn jpeg_bytes(h: u32, w: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        // Smooth gradients plus texture, closer to photos than noise.
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            (((x ^ y) * 7) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode");
    out.into_inner()
}

fn decode_resize(c: &mut Criterion) {
    let mut g = c.benchmark_group("jpeg_decode_resize");
    g.throughput(Throughput::Elements(1));
    for (src, dst) in [
        ((96u32, 96u32), 96usize),
        ((256, 256), 224),
        ((375, 500), 224),
    ] {
        let bytes = jpeg_bytes(src.0, src.1);
        // Decode alone, to separate decoder cost from resize cost.
        g.bench_function(format!("{}x{}_decode_only", src.0, src.1), |b| {
            b.iter(|| decode_image(black_box(&bytes), 3, Path::new("bench.jpg")).expect("decode"))
        });
        g.bench_function(format!("{}x{}_to_{dst}_area", src.0, src.1), |b| {
            b.iter(|| {
                let img =
                    decode_image(black_box(&bytes), 3, Path::new("bench.jpg")).expect("decode");
                black_box(resize_image(&img, dst, dst, Interp::Area))
            })
        });
        g.bench_function(format!("{}x{}_to_{dst}_bilinear", src.0, src.1), |b| {
            b.iter(|| {
                let img =
                    decode_image(black_box(&bytes), 3, Path::new("bench.jpg")).expect("decode");
                black_box(resize_image(&img, dst, dst, Interp::Bilinear))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, loader, decode_resize);
criterion_main!(benches);
