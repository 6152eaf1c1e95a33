//! CUDA 2-D convolution (kernels/conv.cu + the device GEMM) against `cpu::conv` on fresh random
//! inputs, outputs poisoned with NaN before each run. Runs on the CUDA emulator without a GPU.
//!
//! Tolerance: |cuda − cpu| ≤ 1e-5 · (|cpu| + mean |cpu|). Both sides sum at most a few hundred
//! products of values in [-1, 1] (the emulator's GEMM in f64, the CPU's in f32 with its own
//! blocking), so the f32 rounding differences stay near 1e-6 of the output's magnitude; the
//! mean term covers outputs that cancel to near zero.

mod common;

use common::{gpu_or_skip, poisoned, rand_vec};
use rand::SeedableRng;
use rand::rngs::StdRng;
use scalarize_kernels::cpu::{self, Conv2dShape};
use scalarize_kernels::cuda::{Gpu, GpuBuffer, conv};

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mean = want.iter().map(|v| v.abs() as f64).sum::<f64>() / want.len().max(1) as f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * (w.abs() as f64 + mean);
        assert!(
            ((g - w) as f64).abs() <= tol,
            "{what}[{i}]: cuda {g} cpu {w} (tolerance {tol:e})"
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    pad: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        pad,
    }
}

/// The shapes every test walks: the brief's cases plus tails and size-1 dimensions.
fn cases() -> Vec<Conv2dShape> {
    vec![
        shape(2, 3, 5, 7, 4, (3, 3), 1, 1), // 3x3 stride 1 pad 1, non-square image
        shape(3, 4, 7, 6, 5, (1, 1), 2, 0), // 1x1 stride 2 (ResNet downsample)
        shape(2, 2, 9, 11, 3, (7, 7), 2, 3), // 7x7 stride 2 pad 3 (ResNet stem)
        shape(1, 3, 4, 6, 2, (2, 3), 1, 0), // non-square kernel
        shape(2, 3, 4, 5, 6, (1, 1), 1, 0), // pointwise: x is its own column matrix
        shape(1, 1, 1, 1, 1, (1, 1), 1, 0), // every dimension 1
        shape(2, 2, 7, 8, 2, (3, 3), 3, 0), // stride 3, dropped border pixels
        shape(1, 2, 2, 3, 3, (5, 5), 1, 2), // kernel larger than the image
        shape(5, 2, 3, 4, 3, (3, 2), 2, 1), // odd batch for the chunked runs
    ]
}

/// ResNet-sized shapes, run only on a real GPU (the emulator would take minutes).
fn gpu_cases(gpu: &Gpu) -> Vec<Conv2dShape> {
    let mut all = cases();
    if !gpu.is_emulated() {
        all.extend([
            shape(8, 32, 28, 28, 64, (3, 3), 1, 1),
            shape(4, 3, 64, 64, 16, (7, 7), 2, 3),
            shape(8, 64, 14, 14, 128, (1, 1), 2, 0),
            shape(6, 64, 7, 7, 64, (3, 3), 1, 1),
        ]);
    }
    all
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

fn data(rng: &mut StdRng, s: &Conv2dShape) -> Data {
    let y_len = s.n * s.c_out * s.out_h() * s.out_w();
    Data {
        x: rand_vec(rng, s.n * s.c_in * s.h * s.w),
        w: rand_vec(rng, s.c_out * s.c_in * s.kh * s.kw),
        b: rand_vec(rng, s.c_out),
        dy: rand_vec(rng, y_len),
    }
}

/// Forward on the device, in chunks of `chunk` images when given.
fn run_forward(gpu: &Gpu, s: &Conv2dShape, d: &Data, bias: bool, chunk: Option<usize>) -> Vec<f32> {
    let (x, w, b) = (
        gpu.upload(&d.x).unwrap(),
        gpu.upload(&d.w).unwrap(),
        gpu.upload(&d.b).unwrap(),
    );
    let mut y = poisoned(gpu, d.dy.len());
    let b = bias.then_some(&b);
    match chunk {
        None => conv::conv2d_forward(gpu, s, &x, &w, b, &mut y).unwrap(),
        Some(c) => conv::conv2d_forward_chunked(gpu, s, &x, &w, b, &mut y, c).unwrap(),
    }
    gpu.download(&y).unwrap()
}

type Grads = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// Backward on the device for the requested gradients (dx, dw, dbias).
fn run_backward(
    gpu: &Gpu,
    s: &Conv2dShape,
    d: &Data,
    want: (bool, bool, bool),
    chunk: Option<usize>,
) -> Grads {
    let (x, w, dy) = (
        gpu.upload(&d.x).unwrap(),
        gpu.upload(&d.w).unwrap(),
        gpu.upload(&d.dy).unwrap(),
    );
    let mut dx = want.0.then(|| poisoned(gpu, d.x.len()));
    let mut dw = want.1.then(|| poisoned(gpu, d.w.len()));
    let mut db = want.2.then(|| poisoned(gpu, d.b.len()));
    match chunk {
        None => conv::conv2d_backward(gpu, s, &x, &w, &dy, dx.as_mut(), dw.as_mut(), db.as_mut())
            .unwrap(),
        Some(c) => conv::conv2d_backward_chunked(
            gpu,
            s,
            &x,
            &w,
            &dy,
            dx.as_mut(),
            dw.as_mut(),
            db.as_mut(),
            c,
        )
        .unwrap(),
    }
    let get = |b: Option<GpuBuffer<f32>>| b.map(|b| gpu.download(&b).unwrap());
    (get(dx), get(dw), get(db))
}

fn cpu_forward(s: &Conv2dShape, d: &Data, bias: bool) -> Vec<f32> {
    let mut y = vec![f32::NAN; d.dy.len()];
    let b = bias.then_some(&d.b[..]);
    cpu::conv2d_forward(s, &d.x, &d.w, b, &mut y).unwrap();
    y
}

fn cpu_backward(s: &Conv2dShape, d: &Data) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![f32::NAN; d.x.len()];
    let mut dw = vec![f32::NAN; d.w.len()];
    let mut db = vec![f32::NAN; d.b.len()];
    cpu::conv2d_backward(
        s,
        &d.x,
        &d.w,
        &d.dy,
        Some(&mut dx),
        Some(&mut dw),
        Some(&mut db),
    )
    .unwrap();
    (dx, dw, db)
}

#[test]
fn conv2d_forward_matches_cpu() {
    let Some(gpu) = gpu_or_skip("conv2d_forward_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(91);
    for (i, s) in gpu_cases(&gpu).iter().enumerate() {
        let d = data(&mut rng, s);
        for bias in [false, true] {
            let want = cpu_forward(s, &d, bias);
            let got = run_forward(&gpu, s, &d, bias, None);
            close(&got, &want, &format!("y {s:?} bias={bias}"));
            if i % 3 == 0 {
                let again = run_forward(&gpu, s, &d, bias, None);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{s:?}: two runs differ"
                );
            }
        }
    }
}

#[test]
fn conv2d_backward_matches_cpu() {
    let Some(gpu) = gpu_or_skip("conv2d_backward_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(92);
    for s in gpu_cases(&gpu) {
        let d = data(&mut rng, &s);
        let (dx, dw, db) = cpu_backward(&s, &d);
        let got = run_backward(&gpu, &s, &d, (true, true, true), None);
        close(&got.0.unwrap(), &dx, &format!("dx {s:?}"));
        close(&got.1.unwrap(), &dw, &format!("dw {s:?}"));
        close(&got.2.unwrap(), &db, &format!("dbias {s:?}"));
    }
}

#[test]
fn conv2d_backward_subsets_of_gradients() {
    let Some(gpu) = gpu_or_skip("conv2d_backward_subsets_of_gradients") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(93);
    // A general and a pointwise shape: each gradient alone takes its own path (a pointwise dx
    // alone needs neither the transposed dy nor a column buffer).
    for s in [cases()[0], cases()[4]] {
        let d = data(&mut rng, &s);
        let (dx, dw, db) = cpu_backward(&s, &d);
        let (gx, gw, gb) = run_backward(&gpu, &s, &d, (true, false, false), None);
        close(&gx.unwrap(), &dx, &format!("dx alone {s:?}"));
        assert!(gw.is_none() && gb.is_none());
        let (_, gw, _) = run_backward(&gpu, &s, &d, (false, true, false), None);
        close(&gw.unwrap(), &dw, &format!("dw alone {s:?}"));
        let (_, _, gb) = run_backward(&gpu, &s, &d, (false, false, true), None);
        close(&gb.unwrap(), &db, &format!("dbias alone {s:?}"));
        // Nothing requested: a no-op that still validates.
        let none = run_backward(&gpu, &s, &d, (false, false, false), None);
        assert!(none.0.is_none() && none.1.is_none() && none.2.is_none());
    }
}

#[test]
fn conv2d_chunked_matches_cpu() {
    let Some(gpu) = gpu_or_skip("conv2d_chunked_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(94);
    // 5 images in chunks of 1, 2 (a short last chunk) and more than n (clamped).
    for s in [cases()[8], cases()[1], cases()[4]] {
        let d = data(&mut rng, &s);
        let want_y = cpu_forward(&s, &d, true);
        let (dx, dw, db) = cpu_backward(&s, &d);
        for chunk in [1, 2, 0, 100] {
            let y = run_forward(&gpu, &s, &d, true, Some(chunk));
            close(&y, &want_y, &format!("y {s:?} chunk {chunk}"));
            let (gx, gw, gb) = run_backward(&gpu, &s, &d, (true, true, true), Some(chunk));
            close(&gx.unwrap(), &dx, &format!("dx {s:?} chunk {chunk}"));
            close(&gw.unwrap(), &dw, &format!("dw {s:?} chunk {chunk}"));
            close(&gb.unwrap(), &db, &format!("dbias {s:?} chunk {chunk}"));
        }
    }
}

#[test]
fn conv2d_backward_is_reproducible() {
    let Some(gpu) = gpu_or_skip("conv2d_backward_is_reproducible") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(95);
    let bits =
        |v: Option<Vec<f32>>| -> Vec<u32> { v.unwrap().iter().map(|x| x.to_bits()).collect() };
    for s in [cases()[0], cases()[2], cases()[8]] {
        let d = data(&mut rng, &s);
        for chunk in [None, Some(2)] {
            let a = run_backward(&gpu, &s, &d, (true, true, true), chunk);
            let b = run_backward(&gpu, &s, &d, (true, true, true), chunk);
            assert_eq!(bits(a.0), bits(b.0), "dx {s:?}");
            assert_eq!(bits(a.1), bits(b.1), "dw {s:?}");
            assert_eq!(bits(a.2), bits(b.2), "dbias {s:?}");
        }
    }
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let Some(gpu) = gpu_or_skip("conv2d_rejects_bad_shapes") else {
        return;
    };
    let s = cases()[0];
    let mut rng = StdRng::seed_from_u64(96);
    let d = data(&mut rng, &s);
    let (x, w, b, dy) = (
        gpu.upload(&d.x).unwrap(),
        gpu.upload(&d.w).unwrap(),
        gpu.upload(&d.b).unwrap(),
        gpu.upload(&d.dy).unwrap(),
    );
    let short = gpu.upload(&d.x[1..]).unwrap();
    let mut y = poisoned(&gpu, d.dy.len());
    let msg = |e: scalarize_kernels::KernelError| e.to_string();

    let e = msg(conv::conv2d_forward(&gpu, &s, &short, &w, None, &mut y).unwrap_err());
    assert!(
        e.contains("cuda::conv2d_forward") && e.contains("`x`"),
        "{e}"
    );
    let e = msg(conv::conv2d_forward(&gpu, &s, &x, &x, None, &mut y).unwrap_err());
    assert!(e.contains("`w`"), "{e}");
    let e = msg(conv::conv2d_forward(&gpu, &s, &x, &w, Some(&w), &mut y).unwrap_err());
    assert!(e.contains("`bias`") && e.contains("c_out=4"), "{e}");
    let mut y_bad = poisoned(&gpu, d.dy.len() + 1);
    let e = msg(conv::conv2d_forward(&gpu, &s, &x, &w, Some(&b), &mut y_bad).unwrap_err());
    assert!(e.contains("`y`"), "{e}");

    let mut big = s;
    big.kh = 8; // 8 > h + 2·pad = 7
    let e = msg(conv::conv2d_forward(&gpu, &big, &x, &w, None, &mut y).unwrap_err());
    assert!(e.contains("larger than the padded input"), "{e}");
    let mut empty = s;
    empty.c_out = 0;
    let e = msg(conv::conv2d_forward(&gpu, &empty, &x, &w, None, &mut y).unwrap_err());
    assert!(e.contains("c_out"), "{e}");
    let mut still = s;
    still.stride = 0;
    let e = msg(conv::conv2d_forward(&gpu, &still, &x, &w, None, &mut y).unwrap_err());
    assert!(e.contains("stride"), "{e}");

    let mut dw_bad = poisoned(&gpu, d.w.len() - 1);
    let e = msg(
        conv::conv2d_backward(&gpu, &s, &x, &w, &dy, None, Some(&mut dw_bad), None).unwrap_err(),
    );
    assert!(
        e.contains("cuda::conv2d_backward") && e.contains("`dw`"),
        "{e}"
    );
    let mut dx_bad = poisoned(&gpu, d.x.len() + 3);
    let e = msg(
        conv::conv2d_backward(&gpu, &s, &x, &w, &dy, Some(&mut dx_bad), None, None).unwrap_err(),
    );
    assert!(e.contains("`dx`"), "{e}");
    let mut db_bad = poisoned(&gpu, 1);
    let e = msg(
        conv::conv2d_backward(&gpu, &s, &x, &w, &dy, None, None, Some(&mut db_bad)).unwrap_err(),
    );
    assert!(e.contains("`dbias`"), "{e}");
    let e = msg(conv::conv2d_backward(&gpu, &s, &x, &w, &x, None, None, None).unwrap_err());
    assert!(e.contains("`dy`"), "{e}");
}
