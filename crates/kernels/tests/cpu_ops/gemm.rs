use crate::common::*;
use scalarize_kernels::cpu::{matmul, matmul_batched};

/// Naive f64 product of op(A) [m×k] and op(B) [k×n].
fn naive(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s;
        }
    }
    c
}

#[test]
fn matmul_all_transpositions_alpha_beta() {
    let mut r = rng(1);
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 5, 3),
        (33, 17, 65),
        (130, 200, 70),
        (3, 64, 1),
    ] {
        for ta in [false, true] {
            for tb in [false, true] {
                let a = randv(&mut r, m * k);
                let b = randv(&mut r, k * n);
                let c0 = randv(&mut r, m * n);
                let p = naive(m, k, n, &a, ta, &b, tb);
                // beta = 0: old C must not be read, even when it holds NaN.
                let mut c = vec![f32::NAN; m * n];
                matmul(m, k, n, &a, ta, &b, tb, &mut c, 1.0, 0.0).unwrap();
                assert_close(&format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"), &c, &p, 1e-5);
                // alpha and beta.
                let mut c = c0.clone();
                matmul(m, k, n, &a, ta, &b, tb, &mut c, -0.5, 2.0).unwrap();
                let want: Vec<f64> = p
                    .iter()
                    .zip(&c0)
                    .map(|(&v, &c)| -0.5 * v + 2.0 * c as f64)
                    .collect();
                assert_close(&format!("matmul alpha/beta {m}x{k}x{n}"), &c, &want, 1e-5);
            }
        }
    }
}

#[test]
fn matmul_batched_matches_per_item() {
    let mut r = rng(2);
    // Small products (spread over the batch) and one large (serial loop, parallel inside).
    for &(batch, m, k, n) in &[
        (1, 3, 4, 5),
        (5, 7, 9, 3),
        (3, 16, 8, 16),
        (2, 128, 128, 128),
    ] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = randv(&mut r, batch * m * k);
            let b = randv(&mut r, batch * k * n);
            let c0 = randv(&mut r, batch * m * n);
            let mut c = c0.clone();
            matmul_batched(batch, m, k, n, &a, ta, &b, tb, &mut c, 1.5, 1.0).unwrap();
            let mut want = Vec::new();
            for i in 0..batch {
                let p = naive(
                    m,
                    k,
                    n,
                    &a[i * m * k..(i + 1) * m * k],
                    ta,
                    &b[i * k * n..(i + 1) * k * n],
                    tb,
                );
                for (j, v) in p.iter().enumerate() {
                    want.push(1.5 * v + c0[i * m * n + j] as f64);
                }
            }
            assert_close(
                &format!("matmul_batched {batch}x{m}x{k}x{n}"),
                &c,
                &want,
                1e-5,
            );
        }
    }
}
