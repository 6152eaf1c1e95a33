//! CUDA cross-entropy and BCE with logits (forward and backward) against their CPU twins on
//! fresh random inputs (extreme logits, ignored rows), outputs poisoned with NaN before each
//! run; runs on the CUDA emulator without a GPU.

mod common;

use common::{bits, poisoned};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::cuda::cross_entropy::{
    CeTargets, bce_with_logits_backward, bce_with_logits_forward, cross_entropy_backward,
    cross_entropy_forward,
};
use scalarize_kernels::cuda::softmax::WARP_MAX_DIM;

const IGNORE: i64 = -100;

/// (rows, classes): a single class, odd lengths for the lane tails, 1000 classes on one warp,
/// 2049 > WARP_MAX_DIM on a whole block, and many short rows.
const SHAPES: &[(usize, usize)] = &[(1, 1), (5, 7), (9, 33), (3, 1000), (2, 2049), (40, 3)];

fn logits(rng: &mut StdRng, n: usize, extreme: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if extreme && rng.random_bool(0.3) {
                if rng.random_bool(0.5) { 1e4 } else { -1e4 }
            } else {
                rng.random_range(-8.0f32..8.0)
            }
        })
        .collect()
}

/// |got − want| ≤ 1e-5·|want| + abs[i]: the GPU sums the exponentials in a tree, the CPU in
/// a row-order loop, so results agree to float rounding of the terms involved (`abs`).
fn close(got: &[f32], want: &[f32], abs: impl Fn(usize) -> f32, what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + abs(i);
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: cuda {g} cpu {w} (tol {tol})"
        );
    }
}

#[test]
fn cross_entropy_matches_cpu() {
    const { assert!(1000 <= WARP_MAX_DIM && 2049 > WARP_MAX_DIM) };
    let Some(gpu) = Gpu::for_tests("cross_entropy_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(41);
    for &(rows, classes) in SHAPES {
        for (extreme, ignore_p) in [(false, 0.0), (true, 0.25), (false, 1.0)] {
            let what = format!("rows={rows} classes={classes} extreme={extreme} ignore={ignore_p}");
            let n = rows * classes;
            let x = logits(&mut rng, n, extreme);
            let t: Vec<i64> = (0..rows)
                .map(|_| {
                    if rng.random_bool(ignore_p) {
                        IGNORE
                    } else {
                        rng.random_range(0..classes as i64)
                    }
                })
                .collect();
            let scale = rng.random_range(0.1f32..2.0);
            let mut want_l = vec![0.0; rows];
            let want_valid =
                cpu::cross_entropy_forward(rows, classes, &x, &t, IGNORE, &mut want_l).unwrap();
            let mut want_d = vec![0.0; n];
            cpu::cross_entropy_backward(rows, classes, &x, &t, IGNORE, scale, &mut want_d).unwrap();

            let dx = gpu.upload(&x).unwrap();
            let dt = CeTargets::upload(&gpu, classes, &t, IGNORE).unwrap();
            assert_eq!(
                dt.valid(),
                want_valid,
                "{what}: valid rows counted on the host"
            );
            let mut l = poisoned(&gpu, rows);
            let valid = cross_entropy_forward(&gpu, rows, classes, &dx, &dt, &mut l).unwrap();
            assert_eq!(valid, want_valid, "{what}: valid rows");
            let got_l = gpu.download(&l).unwrap();
            // loss = (m + log s) − x[t]: rounding of m + log s is an ulp of the largest logit.
            let row_max = |r: usize| {
                x[r * classes..(r + 1) * classes]
                    .iter()
                    .fold(1.0f32, |a, &v| a.max(v.abs()))
            };
            close(
                &got_l,
                &want_l,
                |r| 1e-6 * row_max(r),
                &format!("forward {what}"),
            );
            for (r, &tr) in t.iter().enumerate() {
                if tr == IGNORE {
                    assert_eq!(got_l[r].to_bits(), 0, "{what}: ignored row {r} loss");
                }
            }

            let mut d = poisoned(&gpu, n);
            cross_entropy_backward(&gpu, rows, classes, &dx, &dt, scale, &mut d).unwrap();
            let got_d = gpu.download(&d).unwrap();
            close(
                &got_d,
                &want_d,
                |_| 1e-6 * scale,
                &format!("backward {what}"),
            );
            for (r, &tr) in t.iter().enumerate() {
                if tr == IGNORE {
                    let row = &got_d[r * classes..(r + 1) * classes];
                    assert!(row.iter().all(|v| v.to_bits() == 0), "{what}: row {r}");
                }
            }

            // Reproducible bit for bit.
            let mut l2 = poisoned(&gpu, rows);
            cross_entropy_forward(&gpu, rows, classes, &dx, &dt, &mut l2).unwrap();
            assert_eq!(bits(&gpu.download(&l2).unwrap()), bits(&got_l), "{what}");
            let mut d2 = poisoned(&gpu, n);
            cross_entropy_backward(&gpu, rows, classes, &dx, &dt, scale, &mut d2).unwrap();
            assert_eq!(bits(&gpu.download(&d2).unwrap()), bits(&got_d), "{what}");
        }
    }
}

#[test]
fn cross_entropy_rejects_bad_targets_and_shapes() {
    let Some(gpu) = Gpu::for_tests("cross_entropy_rejects_bad_targets_and_shapes") else {
        return;
    };
    let x = gpu.upload(&[0.5f32, -1.0, 2.0, 0.0, 1.0, 3.0]).unwrap();
    let mut l = poisoned(&gpu, 2);
    let mut d = poisoned(&gpu, 6);
    // Out of range (3 of 3 classes) and negative non-ignore targets; the first bad row is
    // named. The targets are checked on the host, before they reach the device.
    for (targets, msg) in [
        (
            [0i64, 3],
            "target 3 of row 1 is outside [0, 3) and is not ignore_index -100",
        ),
        ([-2, 7], "target -2 of row 0 is outside [0, 3)"),
    ] {
        let e = CeTargets::upload(&gpu, 3, &targets, IGNORE).unwrap_err();
        assert!(e.to_string().contains(msg), "{e}");
    }
    // The ignore label itself is fine even though it is outside [0, classes).
    let ok = CeTargets::upload(&gpu, 3, &[IGNORE, 2], IGNORE).unwrap();
    assert_eq!((ok.valid(), ok.len(), ok.ignore_index()), (1, 2, IGNORE));
    let t1 = CeTargets::upload(&gpu, 3, &[0i64], IGNORE).unwrap();
    let e = cross_entropy_forward(&gpu, 2, 3, &x, &t1, &mut l).unwrap_err();
    assert!(
        e.to_string()
            .contains("buffer `targets` has 1 elements, expected 2"),
        "{e}"
    );
    let t2 = CeTargets::upload(&gpu, 3, &[0i64, 1], IGNORE).unwrap();
    let e = cross_entropy_forward(&gpu, 2, 4, &x, &t2, &mut l).unwrap_err();
    assert!(
        e.to_string()
            .contains("buffer `logits` has 6 elements, expected 8"),
        "{e}"
    );
    let e = cross_entropy_forward(&gpu, 2, 3, &x, &t2, &mut d).unwrap_err();
    assert!(e.to_string().contains("buffer `losses` has 6"), "{e}");
    let e = cross_entropy_backward(&gpu, 2, 3, &x, &t2, 1.0, &mut l).unwrap_err();
    assert!(e.to_string().contains("buffer `dlogits` has 2"), "{e}");
    let e = cross_entropy_forward(&gpu, 2, 0, &x, &t2, &mut l).unwrap_err();
    assert!(e.to_string().contains("dimension `classes` is 0"), "{e}");
    // Targets checked for 3 classes are refused by logits of 2 (a row of 6 = 3 x 2).
    let e = cross_entropy_forward(&gpu, 3, 2, &x, &t2, &mut l).unwrap_err();
    assert!(e.to_string().contains("buffer `targets` has 2"), "{e}");
    let t3 = CeTargets::upload(&gpu, 3, &[0i64, 1, 2], IGNORE).unwrap();
    let mut l3 = poisoned(&gpu, 3);
    let e = cross_entropy_forward(&gpu, 3, 2, &x, &t3, &mut l3).unwrap_err();
    assert!(
        e.to_string()
            .contains("targets were checked against 3 classes, the logits have 2"),
        "{e}"
    );
    // Nothing was written by the refused calls.
    assert!(gpu.download(&l).unwrap().iter().all(|v| v.is_nan()));
    assert!(gpu.download(&d).unwrap().iter().all(|v| v.is_nan()));
    assert!(gpu.download(&l3).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn bce_with_logits_matches_cpu() {
    let Some(gpu) = Gpu::for_tests("bce_with_logits_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(42);
    for n in [1usize, 7, 33, 1000] {
        let x = logits(&mut rng, n, true);
        let t: Vec<f32> = (0..n)
            .map(|_| match rng.random_range(0..3) {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random_range(0.0f32..1.0),
            })
            .collect();
        let scale = rng.random_range(0.1f32..2.0);
        let mut want_l = vec![0.0; n];
        cpu::bce_with_logits_forward(&x, &t, &mut want_l).unwrap();
        let mut want_d = vec![0.0; n];
        cpu::bce_with_logits_backward(&x, &t, scale, &mut want_d).unwrap();

        let (dx, dt) = (gpu.upload(&x).unwrap(), gpu.upload(&t).unwrap());
        let mut l = poisoned(&gpu, n);
        bce_with_logits_forward(&gpu, &dx, &dt, &mut l).unwrap();
        let got_l = gpu.download(&l).unwrap();
        // max(x, 0) − x·t may be fused into one FMA on a GPU: an ulp of x·t apart.
        close(
            &got_l,
            &want_l,
            |i| 1e-6 * (1.0 + x[i].abs()),
            &format!("bce forward n={n}"),
        );
        let mut d = poisoned(&gpu, n);
        bce_with_logits_backward(&gpu, &dx, &dt, scale, &mut d).unwrap();
        let got_d = gpu.download(&d).unwrap();
        close(
            &got_d,
            &want_d,
            |_| 1e-6 * scale,
            &format!("bce backward n={n}"),
        );

        let mut l2 = poisoned(&gpu, n);
        bce_with_logits_forward(&gpu, &dx, &dt, &mut l2).unwrap();
        assert_eq!(bits(&gpu.download(&l2).unwrap()), bits(&got_l), "n={n}");
        let mut d2 = poisoned(&gpu, n);
        bce_with_logits_backward(&gpu, &dx, &dt, scale, &mut d2).unwrap();
        assert_eq!(bits(&gpu.download(&d2).unwrap()), bits(&got_d), "n={n}");
    }
}

#[test]
fn bce_with_logits_rejects_bad_lengths() {
    let Some(gpu) = Gpu::for_tests("bce_with_logits_rejects_bad_lengths") else {
        return;
    };
    let x = gpu.upload(&[0.5f32, -1.0, 2.0]).unwrap();
    let t2 = gpu.upload(&[1.0f32, 0.0]).unwrap();
    let t3 = gpu.upload(&[1.0f32, 0.0, 0.5]).unwrap();
    let mut out = poisoned(&gpu, 3);
    let e = bce_with_logits_forward(&gpu, &x, &t2, &mut out).unwrap_err();
    assert!(
        e.to_string()
            .contains("buffer `targets` has 2 elements, expected 3 (the length of `x`)"),
        "{e}"
    );
    let mut out2 = poisoned(&gpu, 2);
    let e = bce_with_logits_backward(&gpu, &x, &t3, 1.0, &mut out2).unwrap_err();
    assert!(e.to_string().contains("buffer `dx` has 2"), "{e}");
    // Empty inputs are refused (where the device can hold an empty buffer at all).
    if let (Ok(empty), Ok(mut out0)) = (gpu.upload::<f32>(&[]), gpu.upload::<f32>(&[])) {
        let e = bce_with_logits_forward(&gpu, &empty, &empty, &mut out0).unwrap_err();
        assert!(e.to_string().contains("empty tensor"), "{e}");
    }
    assert!(gpu.download(&out).unwrap().iter().all(|v| v.is_nan()));
}
