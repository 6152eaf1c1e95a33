//! Shared helpers: seeded random data, f64 references, finite differences, closeness checks.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seeded generator so that every failure reproduces.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-1, 1], kept away from 0 so that ReLU kinks and zero inputs do not
/// make a check vacuous.
pub fn randv(r: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = r.random_range(0.05..1.0);
            if r.random::<bool>() { v } else { -v }
        })
        .collect()
}

/// Widens to f64.
pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Asserts |got − want| ≤ tol·(1 + max|want|) elementwise, naming the check.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = 1.0 + want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        assert!(!e.is_nan(), "{what}: NaN at {i} (got {g}, want {w})");
        if e > worst.1 {
            worst = (i, e);
        }
    }
    assert!(
        worst.1 <= tol * scale,
        "{what}: max error {:.3e} at index {} (got {}, want {}), allowed {:.3e}",
        worst.1,
        worst.0,
        got[worst.0],
        want[worst.0],
        tol * scale
    );
}

/// Gradient of L(x) = <g, f(x)> by central differences in f64.
pub fn fd_grad(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], g: &[f64]) -> Vec<f64> {
    let h = 1e-5;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let up: f64 = f(&xp).iter().zip(g).map(|(a, b)| a * b).sum();
            xp[i] = x[i] - h;
            let dn: f64 = f(&xp).iter().zip(g).map(|(a, b)| a * b).sum();
            xp[i] = x[i];
            (up - dn) / (2.0 * h)
        })
        .collect()
}

/// <a, b> in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum()
}

/// Asserts that an error names `op` and mentions `needle`.
pub fn assert_err<T: std::fmt::Debug>(r: scalarize_kernels::Result<T>, op: &str, needle: &str) {
    match r {
        Ok(v) => panic!("{op}: expected an error mentioning `{needle}`, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.op, op, "error op (message: {e})");
            let text = e.to_string();
            assert!(
                text.contains(needle),
                "{op}: error `{text}` does not mention `{needle}`"
            );
        }
    }
}
