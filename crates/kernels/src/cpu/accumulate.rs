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

/// Lanes of the sums carried across the planes of a channel (two AVX-512 registers of f64,
/// so that consecutive adds do not wait on each other).
const WIDE: usize = 16;

/// (Σ (x − k), Σ (x − k)²) over all `planes`, in f64 lanes carried from plane to plane (a
/// per-plane reduction costs more than the sums themselves on 4x4 feature maps).
#[inline(always)]
pub(crate) fn shifted_sums<'a>(planes: impl Iterator<Item = &'a [f32]>, k: f64) -> (f64, f64) {
    let (mut s, mut q) = ([0.0f64; WIDE], [0.0f64; WIDE]);
    let (mut ts, mut tq) = (0.0f64, 0.0f64);
    for p in planes {
        let mut it = p.chunks_exact(WIDE);
        for c in &mut it {
            for l in 0..WIDE {
                let d = c[l] as f64 - k;
                s[l] += d;
                q[l] += d * d;
            }
        }
        for &v in it.remainder() {
            let d = v as f64 - k;
            ts += d;
            tq += d * d;
        }
    }
    (s.iter().sum::<f64>() + ts, q.iter().sum::<f64>() + tq)
}

/// (Σ g, Σ g·(x − m)) over all planes (g, x, y), where g is gated to 0 where y ≤ 0 when a y
/// plane is given: the two sums of a (ReLU-gated) batch-norm backward, lanes as in
/// `shifted_sums`.
#[inline(always)]
pub(crate) fn grad_sums<'a>(
    planes: impl Iterator<Item = (&'a [f32], &'a [f32], Option<&'a [f32]>)>,
    m: f32,
) -> (f64, f64) {
    let m = m as f64;
    let (mut a, mut b) = ([0.0f64; WIDE], [0.0f64; WIDE]);
    let (mut ta, mut tb) = (0.0f64, 0.0f64);
    for (g, x, y) in planes {
        let n = g.len().min(x.len());
        let (g, x) = (&g[..n], &x[..n]);
        let full = n / WIDE * WIDE;
        match y {
            None => {
                for (cg, cx) in g.chunks_exact(WIDE).zip(x.chunks_exact(WIDE)) {
                    for l in 0..WIDE {
                        let gv = cg[l] as f64;
                        a[l] += gv;
                        b[l] += gv * (cx[l] as f64 - m);
                    }
                }
                for i in full..n {
                    ta += g[i] as f64;
                    tb += g[i] as f64 * (x[i] as f64 - m);
                }
            }
            Some(y) => {
                let y = &y[..n];
                let chunks = g
                    .chunks_exact(WIDE)
                    .zip(x.chunks_exact(WIDE))
                    .zip(y.chunks_exact(WIDE));
                for ((cg, cx), cy) in chunks {
                    for l in 0..WIDE {
                        let gv = if cy[l] > 0.0 { cg[l] as f64 } else { 0.0 };
                        a[l] += gv;
                        b[l] += gv * (cx[l] as f64 - m);
                    }
                }
                for i in full..n {
                    let gv = if y[i] > 0.0 { g[i] as f64 } else { 0.0 };
                    ta += gv;
                    tb += gv * (x[i] as f64 - m);
                }
            }
        }
    }
    (a.iter().sum::<f64>() + ta, b.iter().sum::<f64>() + tb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_serial_sums() {
        for len in [0usize, 1, 7, 8, 9, 16, 17, 100] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() + 3.0).collect();
            let g: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let y: Vec<f32> = (0..len).map(|i| (i as f32 * 0.53).sin()).collect();
            let s: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) - s).abs() < 1e-12);
            let q: f64 = x.iter().map(|&v| (v as f64 - 0.2).powi(2)).sum();
            assert!((sum_sq_dev(&x, 0.2) - q).abs() < 1e-12);
            let d: f64 = (0..len).map(|i| g[i] as f64 * (x[i] - 0.3) as f64).sum();
            assert!((dot_dev(&g, &x, 0.3) - d).abs() < 1e-12);
            // Two planes of the same data: every sum doubles.
            let (ss, sq) = shifted_sums([&x[..], &x[..]].into_iter(), 3.0);
            let ws: f64 = x.iter().map(|&v| v as f64 - 3.0).sum();
            let wq: f64 = x.iter().map(|&v| (v as f64 - 3.0).powi(2)).sum();
            assert!((ss - 2.0 * ws).abs() < 1e-12 && (sq - 2.0 * wq).abs() < 1e-12);
            let (a, b) = grad_sums([(&g[..], &x[..], None)].into_iter(), 0.3);
            let wa: f64 = g.iter().map(|&v| v as f64).sum();
            let wb: f64 = (0..len)
                .map(|i| g[i] as f64 * (x[i] as f64 - 0.3f32 as f64))
                .sum();
            assert!(
                (a - wa).abs() < 1e-12 && (b - wb).abs() < 1e-12,
                "{a} {wa} {b} {wb}"
            );
            let (a, b) = grad_sums([(&g[..], &x[..], Some(&y[..]))].into_iter(), 0.3);
            let wa: f64 = (0..len).filter(|&i| y[i] > 0.0).map(|i| g[i] as f64).sum();
            let wb: f64 = (0..len)
                .filter(|&i| y[i] > 0.0)
                .map(|i| g[i] as f64 * (x[i] as f64 - 0.3f32 as f64))
                .sum();
            assert!((a - wa).abs() < 1e-12 && (b - wb).abs() < 1e-12);
        }
    }
}
