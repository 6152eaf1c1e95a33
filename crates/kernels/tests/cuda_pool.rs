//! CUDA pooling (kernels/pool.cu) against `cpu::pool` on fresh random inputs, outputs poisoned
//! with NaN before each run. Runs on the CUDA emulator without a GPU.
//!
//! Tolerances: the max-pool outputs and argmax are selections and must match exactly (the tie
//! and NaN rules included). The sums (average pooling, the max-pool and global-average
//! gradients) perform the CPU's own f32 operations in the CPU's order (the gathers visit the
//! outputs in the order the CPU scatters them; products are never fused into FMAs), so today
//! they agree bit for bit; the tests allow |cuda − cpu| ≤ 1e-6·(|cpu| + 1) (a few ulps of
//! inputs in [-1, 1]) so that a reordering of the CPU's sums does not break them. The
//! global-average forward sums in f64 in another order before rounding: at most an ulp apart.
//! Every device result must also be bit-identical across two runs.

mod common;

use common::{bits, close, gpu_or_skip, poisoned, rand_vec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu::{self, Pool2dShape};
use scalarize_kernels::cuda::{Gpu, pool};

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    pad: usize,
) -> Pool2dShape {
    Pool2dShape {
        n,
        c,
        h,
        w,
        kh,
        kw,
        stride,
        pad,
    }
}

fn cases() -> Vec<Pool2dShape> {
    vec![
        shape(2, 3, 7, 9, (3, 3), 2, 1), // ResNet stem max-pool, odd sizes
        shape(1, 2, 5, 6, (2, 2), 2, 0), // the last row is dropped
        shape(2, 1, 4, 5, (3, 2), 1, 1), // non-square window, overlapping
        shape(1, 1, 1, 1, (1, 1), 1, 0), // every dimension 1
        shape(1, 2, 8, 7, (5, 5), 3, 2), // wide padding, stride 3
        shape(3, 2, 3, 4, (3, 4), 1, 0), // window = image
    ]
}

/// Adds ResNet-sized shapes on a real GPU (the emulator would take minutes).
fn gpu_cases(gpu: &Gpu) -> Vec<Pool2dShape> {
    let mut all = cases();
    if !gpu.is_emulated() {
        all.extend([
            shape(4, 64, 56, 56, (3, 3), 2, 1),
            shape(8, 32, 15, 17, (2, 2), 2, 0),
        ]);
    }
    all
}

fn in_len(s: &Pool2dShape) -> usize {
    s.n * s.c * s.h * s.w
}

fn out_len(s: &Pool2dShape) -> usize {
    s.n * s.c * s.out_h() * s.out_w()
}

#[test]
fn avg_pool2d_matches_cpu() {
    let Some(gpu) = gpu_or_skip("avg_pool2d_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(71);
    for s in gpu_cases(&gpu) {
        let x = rand_vec(&mut rng, in_len(&s));
        let dy = rand_vec(&mut rng, out_len(&s));
        let mut want_y = vec![f32::NAN; out_len(&s)];
        cpu::avg_pool2d_forward(&s, &x, &mut want_y).unwrap();
        let mut want_dx = vec![f32::NAN; in_len(&s)];
        cpu::avg_pool2d_backward(&s, &dy, &mut want_dx).unwrap();

        let (dxin, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
        let mut first: Option<(Vec<u32>, Vec<u32>)> = None;
        for run in 0..2 {
            let mut y = poisoned(&gpu, out_len(&s));
            pool::avg_pool2d_forward(&gpu, &s, &dxin, &mut y).unwrap();
            let got_y = gpu.download(&y).unwrap();
            close(&got_y, &want_y, &format!("y {s:?} run {run}"));
            let mut dx = poisoned(&gpu, in_len(&s));
            pool::avg_pool2d_backward(&gpu, &s, &ddy, &mut dx).unwrap();
            let got_dx = gpu.download(&dx).unwrap();
            close(&got_dx, &want_dx, &format!("dx {s:?} run {run}"));
            let now = (bits(&got_y), bits(&got_dx));
            match &first {
                None => first = Some(now),
                Some(f) => assert!(f == &now, "{s:?}: two runs differ"),
            }
        }
    }
}

#[test]
fn max_pool2d_matches_cpu_with_ties_and_nans() {
    let Some(gpu) = gpu_or_skip("max_pool2d_matches_cpu_with_ties_and_nans") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(72);
    for s in gpu_cases(&gpu) {
        // Continuous values, then a few levels (ties in most windows), then NaNs among them.
        for kind in 0..3 {
            let x: Vec<f32> = (0..in_len(&s))
                .map(|_| match kind {
                    0 => rng.random_range(-1.0f32..1.0),
                    _ if kind == 2 && rng.random_bool(0.1) => f32::NAN,
                    _ => rng.random_range(0..3) as f32 - 1.0,
                })
                .collect();
            let dy = rand_vec(&mut rng, out_len(&s));
            let mut want_y = vec![f32::NAN; out_len(&s)];
            let mut want_a = vec![u32::MAX; out_len(&s)];
            cpu::max_pool2d_forward(&s, &x, &mut want_y, &mut want_a).unwrap();
            let mut want_dx = vec![f32::NAN; in_len(&s)];
            cpu::max_pool2d_backward(&s, &want_a, &dy, &mut want_dx).unwrap();

            let (dxin, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
            let mut first_dx = None;
            for run in 0..2 {
                let what = format!("{s:?} kind {kind} run {run}");
                let mut y = poisoned(&gpu, out_len(&s));
                let mut a = gpu.upload(&vec![u32::MAX; out_len(&s)]).unwrap();
                pool::max_pool2d_forward(&gpu, &s, &dxin, &mut y, &mut a).unwrap();
                assert_eq!(bits(&gpu.download(&y).unwrap()), bits(&want_y), "y {what}");
                assert_eq!(gpu.download(&a).unwrap(), want_a, "argmax {what}");
                let mut dx = poisoned(&gpu, in_len(&s));
                pool::max_pool2d_backward(&gpu, &s, &a, &ddy, &mut dx).unwrap();
                let got_dx = gpu.download(&dx).unwrap();
                close(&got_dx, &want_dx, &format!("dx {what}"));
                match &first_dx {
                    None => first_dx = Some(bits(&got_dx)),
                    Some(f) => assert_eq!(f, &bits(&got_dx), "dx {what}: two runs differ"),
                }
            }
        }
    }
}

#[test]
fn check_max_pool2d_argmax_names_the_first_bad_argmax() {
    let Some(gpu) = gpu_or_skip("check_max_pool2d_argmax_names_the_first_bad_argmax") else {
        return;
    };
    let s = cases()[0];
    let mut rng = StdRng::seed_from_u64(73);
    let x = rand_vec(&mut rng, in_len(&s));
    let mut want_a = vec![0u32; out_len(&s)];
    let mut y = vec![0.0; out_len(&s)];
    cpu::max_pool2d_forward(&s, &x, &mut y, &mut want_a).unwrap();
    pool::check_max_pool2d_argmax(&gpu, &s, &gpu.upload(&want_a).unwrap()).unwrap();

    // Outside the plane (the CPU twin refuses it too).
    let mut a = want_a.clone();
    a[5] = (s.h * s.w) as u32;
    let e = pool::check_max_pool2d_argmax(&gpu, &s, &gpu.upload(&a).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cuda::check_max_pool2d_argmax")
            && e.contains("argmax[5]")
            && e.contains("plane"),
        "{e}"
    );

    // Inside the plane but outside the window of output 0 (rows 0..2, columns 0..2): the
    // first bad index is reported.
    let mut a = want_a.clone();
    a[0] = (s.w * 5 + 6) as u32;
    a[7] = (s.h * s.w + 1) as u32;
    let e = pool::check_max_pool2d_argmax(&gpu, &s, &gpu.upload(&a).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("argmax[0]") && e.contains("window"), "{e}");
}

/// The backward trusts its argmax (they come from the forward kernel; checking them would
/// read a verdict back every step): one outside its window only loses that dy, with no
/// out-of-bounds access (the emulator's guarded memory would report one).
#[test]
fn max_pool2d_backward_drops_a_foreign_argmax_without_reading_back() {
    let Some(gpu) = gpu_or_skip("max_pool2d_backward_drops_a_foreign_argmax") else {
        return;
    };
    let s = cases()[0];
    let mut rng = StdRng::seed_from_u64(74);
    let x = rand_vec(&mut rng, in_len(&s));
    let dyv = rand_vec(&mut rng, out_len(&s));
    let mut a = vec![0u32; out_len(&s)];
    let mut y = vec![0.0; out_len(&s)];
    cpu::max_pool2d_forward(&s, &x, &mut y, &mut a).unwrap();
    let mut want = vec![0.0; in_len(&s)];
    cpu::max_pool2d_backward(&s, &a, &dyv, &mut want).unwrap();
    // Output 0's argmax moved off the plane: its dy goes nowhere.
    want[a[0] as usize] -= dyv[0];
    let moved = a[0];
    a[0] = u32::MAX;
    let dy = gpu.upload(&dyv).unwrap();
    let mut dx = poisoned(&gpu, in_len(&s));
    pool::max_pool2d_backward(&gpu, &s, &gpu.upload(&a).unwrap(), &dy, &mut dx).unwrap();
    let got = gpu.download(&dx).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // The pixel that lost a contribution was summed in another order: allow rounding.
        let tol = if i == moved as usize {
            1e-5 * (1.0 + w.abs())
        } else {
            0.0
        };
        assert!((g - w).abs() <= tol, "dx[{i}] = {g}, want {w}");
    }
}

#[test]
fn global_avg_pool_matches_cpu() {
    let Some(gpu) = gpu_or_skip("global_avg_pool_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(74);
    let mut cases = vec![(2, 3, 49), (1, 1, 1), (3, 5, 33), (1, 4, 1000), (2, 2, 7)];
    if !gpu.is_emulated() {
        cases.extend([(32, 512, 49), (4, 64, 3136)]);
    }
    for (n, c, hw) in cases {
        let x: Vec<f32> = (0..n * c * hw)
            .map(|_| rng.random_range(-1.0f32..1.0) + 0.25)
            .collect();
        let dy = rand_vec(&mut rng, n * c);
        let mut want_y = vec![f32::NAN; n * c];
        cpu::global_avg_pool_forward(n, c, hw, &x, &mut want_y).unwrap();
        let mut want_dx = vec![f32::NAN; n * c * hw];
        cpu::global_avg_pool_backward(n, c, hw, &dy, &mut want_dx).unwrap();

        let (dxin, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
        let mut first = None;
        for run in 0..2 {
            let mut y = poisoned(&gpu, n * c);
            pool::global_avg_pool_forward(&gpu, n, c, hw, &dxin, &mut y).unwrap();
            let got = gpu.download(&y).unwrap();
            for (i, (&g, &w)) in got.iter().zip(&want_y).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs() + 1e-9,
                    "y[{i}] n={n} c={c} hw={hw}: cuda {g} cpu {w}"
                );
            }
            match &first {
                None => first = Some(bits(&got)),
                Some(b) => assert_eq!(b, &bits(&got), "two runs differ"),
            }
            let mut dx = poisoned(&gpu, n * c * hw);
            pool::global_avg_pool_backward(&gpu, n, c, hw, &ddy, &mut dx).unwrap();
            let got_dx = gpu.download(&dx).unwrap();
            close(
                &got_dx,
                &want_dx,
                &format!("dx n={n} c={c} hw={hw} run {run}"),
            );
        }
    }
}

#[test]
fn pool_rejects_bad_shapes() {
    let Some(gpu) = gpu_or_skip("pool_rejects_bad_shapes") else {
        return;
    };
    let s = cases()[0];
    let x = gpu.upload(&vec![0.5f32; in_len(&s)]).unwrap();
    let mut y = poisoned(&gpu, out_len(&s));
    let mut y_bad = poisoned(&gpu, out_len(&s) + 1);
    let mut a = gpu.upload(&vec![0u32; out_len(&s)]).unwrap();
    let mut a_bad = gpu.upload(&vec![0u32; out_len(&s) - 1]).unwrap();
    let s_ = |e: scalarize_kernels::KernelError| e.to_string();

    let e = s_(pool::avg_pool2d_forward(&gpu, &s, &x, &mut y_bad).unwrap_err());
    assert!(
        e.contains("cuda::avg_pool2d_forward") && e.contains("`y`"),
        "{e}"
    );
    let e = s_(pool::avg_pool2d_backward(&gpu, &s, &y, &mut y_bad).unwrap_err());
    assert!(e.contains("`dx`"), "{e}");
    let e = s_(pool::max_pool2d_forward(&gpu, &s, &x, &mut y, &mut a_bad).unwrap_err());
    assert!(e.contains("`argmax`"), "{e}");
    let e = s_(pool::max_pool2d_forward(&gpu, &s, &y, &mut y_bad, &mut a).unwrap_err());
    assert!(e.contains("`x`"), "{e}");
    let mut dx = poisoned(&gpu, in_len(&s));
    let e = s_(pool::max_pool2d_backward(&gpu, &s, &a, &x, &mut dx).unwrap_err());
    assert!(e.contains("`dy`"), "{e}");

    let mut wide_pad = s;
    wide_pad.pad = 2; // > 3 / 2
    let e = s_(pool::avg_pool2d_forward(&gpu, &wide_pad, &x, &mut y).unwrap_err());
    assert!(e.contains("at most half the window"), "{e}");
    let mut big = s;
    big.kw = 12; // > w + 2·pad = 11
    let e = s_(pool::max_pool2d_forward(&gpu, &big, &x, &mut y, &mut a).unwrap_err());
    assert!(e.contains("larger than the padded input"), "{e}");
    let mut empty = s;
    empty.c = 0;
    let e = s_(pool::avg_pool2d_forward(&gpu, &empty, &x, &mut y).unwrap_err());
    assert!(e.contains("`c` is 0"), "{e}");

    let e = s_(pool::global_avg_pool_forward(&gpu, 2, 3, 0, &x, &mut y).unwrap_err());
    assert!(
        e.contains("cuda::global_avg_pool_forward") && e.contains("`hw` is 0"),
        "{e}"
    );
    let e = s_(pool::global_avg_pool_forward(&gpu, 2, 3, 5, &x, &mut y).unwrap_err());
    assert!(e.contains("`x`"), "{e}");
    let mut dx = poisoned(&gpu, 2 * 3 * 5);
    let e = s_(pool::global_avg_pool_backward(&gpu, 2, 3, 5, &x, &mut dx).unwrap_err());
    assert!(e.contains("`dy`"), "{e}");
}
