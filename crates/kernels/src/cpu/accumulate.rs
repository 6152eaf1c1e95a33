//! f64 sums of f32 data in 8 independent lanes: a plain `.sum::<f64>()` is one serial chain of
//! adds (the compiler may not reorder float adds), about 5x slower than these.

const LANES: usize = 8;

/// Folds `f(a, b, c)` over matching elements of three slices into 8 f64 lanes (chunked so
/// that the compiler sees no bounds checks and vectorises).
#[inline(always)]
pub(crate) fn fold3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f64) -> f64 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut acc = [0.0f64; LANES];
    let chunks = a
        .chunks_exact(LANES)
        .zip(b.chunks_exact(LANES))
        .zip(c.chunks_exact(LANES));
    for ((ca, cb), cc) in chunks {
        for l in 0..LANES {
            acc[l] += f(ca[l], cb[l], cc[l]);
        }
    }
    let full = n / LANES * LANES;
    let mut tail = 0.0;
    for i in full..n {
        tail += f(a[i], b[i], c[i]);
    }
    acc.iter().sum::<f64>() + tail
}

/// Σ x.
pub(crate) fn sum(x: &[f32]) -> f64 {
    fold3(x, x, x, |v, _, _| v as f64)
}

/// Σ (x − m)².
pub(crate) fn sum_sq_dev(x: &[f32], m: f64) -> f64 {
    fold3(x, x, x, |v, _, _| {
        let d = v as f64 - m;
        d * d
    })
}

/// Σ g·(x − m).
pub(crate) fn dot_dev(g: &[f32], x: &[f32], m: f32) -> f64 {
    fold3(g, x, x, |a, b, _| a as f64 * (b - m) as f64)
}

/// (Σ g·[y > 0], Σ g·[y > 0]·(x − m)): the two sums of a ReLU-gated batch-norm backward.
pub(crate) fn gated_sums(g: &[f32], x: &[f32], y: &[f32], m: f32) -> (f64, f64) {
    let gate = |a: f32, u: f32| if u > 0.0 { a as f64 } else { 0.0 };
    (
        fold3(g, y, y, |a, u, _| gate(a, u)),
        fold3(g, x, y, |a, b, u| gate(a, u) * (b - m) as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_serial_sums() {
        for len in [0usize, 1, 7, 8, 9, 100] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let g: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let y: Vec<f32> = (0..len).map(|i| (i as f32 * 0.53).sin()).collect();
            let s: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) - s).abs() < 1e-12);
            let q: f64 = x.iter().map(|&v| (v as f64 - 0.2).powi(2)).sum();
            assert!((sum_sq_dev(&x, 0.2) - q).abs() < 1e-12);
            let d: f64 = g
                .iter()
                .zip(&x)
                .map(|(&a, &b)| a as f64 * (b - 0.3) as f64)
                .sum();
            assert!((dot_dev(&g, &x, 0.3) - d).abs() < 1e-12);
            let (a, b) = gated_sums(&g, &x, &y, 0.3);
            let wa: f64 = (0..len).filter(|&i| y[i] > 0.0).map(|i| g[i] as f64).sum();
            let wb: f64 = (0..len)
                .filter(|&i| y[i] > 0.0)
                .map(|i| g[i] as f64 * (x[i] - 0.3) as f64)
                .sum();
            assert!((a - wa).abs() < 1e-12 && (b - wb).abs() < 1e-12);
        }
    }
}
