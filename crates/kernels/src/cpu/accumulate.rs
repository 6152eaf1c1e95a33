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

/// Two running f64 sums in `WIDE` lanes plus a scalar tail each, carried from plane to plane
/// (a per-plane reduction costs more than the sums themselves on 4x4 feature maps). Lane l
/// receives the elements at positions ≡ l (mod 16) of each plane's full 16-chunks, in plane
/// order, whichever loop order over channels feeds it.
#[derive(Clone, Copy)]
pub(crate) struct Lanes {
    a: [f64; WIDE],
    b: [f64; WIDE],
    ta: f64,
    tb: f64,
}

impl Default for Lanes {
    fn default() -> Self {
        Self {
            a: [0.0; WIDE],
            b: [0.0; WIDE],
            ta: 0.0,
            tb: 0.0,
        }
    }
}

impl Lanes {
    /// The two sums: lanes added in lane order, then the tail.
    pub(crate) fn finish(&self) -> (f64, f64) {
        (
            self.a.iter().sum::<f64>() + self.ta,
            self.b.iter().sum::<f64>() + self.tb,
        )
    }
}

/// Adds Σ (x − k) and Σ (x − k)² of one plane to `l`.
#[inline(always)]
pub(crate) fn shifted_sums_into(l: &mut Lanes, p: &[f32], k: f64) {
    let mut it = p.chunks_exact(WIDE);
    for c in &mut it {
        for ((&v, a), b) in c.iter().zip(&mut l.a).zip(&mut l.b) {
            let d = v as f64 - k;
            *a += d;
            *b += d * d;
        }
    }
    for &v in it.remainder() {
        let d = v as f64 - k;
        l.ta += d;
        l.tb += d * d;
    }
}

/// (Σ (x − k), Σ (x − k)²) over all `planes` (the tests' reference for the lane sums).
#[cfg(test)]
pub(crate) fn shifted_sums<'a>(planes: impl Iterator<Item = &'a [f32]>, k: f64) -> (f64, f64) {
    let mut l = Lanes::default();
    planes.for_each(|p| shifted_sums_into(&mut l, p, k));
    l.finish()
}

/// Adds Σ g and Σ g·(x − m) of one plane (g, x, y) to `l`, where g is gated to 0 where y ≤ 0
/// when a y plane is given, or where x·a + b ≤ 0 for `affine_gate` = Some((a, b)): the two
/// sums of a (ReLU-gated) batch-norm backward.
#[inline(always)]
pub(crate) fn grad_sums_into(
    l: &mut Lanes,
    (g, x, y): (&[f32], &[f32], Option<&[f32]>),
    m: f32,
    affine_gate: Option<(f32, f32)>,
) {
    let m = m as f64;
    let n = g.len().min(x.len());
    let (g, x) = (&g[..n], &x[..n]);
    let full = n / WIDE * WIDE;
    let gated = |i: usize| match (y, affine_gate) {
        (Some(y), _) => y[i] > 0.0,
        (None, Some((ga, gb))) => x[i] * ga + gb > 0.0,
        (None, None) => true,
    };
    for c0 in (0..full).step_by(WIDE) {
        for i in 0..WIDE {
            let gv = if gated(c0 + i) { g[c0 + i] as f64 } else { 0.0 };
            l.a[i] += gv;
            l.b[i] += gv * (x[c0 + i] as f64 - m);
        }
    }
    for i in full..n {
        let gv = if gated(i) { g[i] as f64 } else { 0.0 };
        l.ta += gv;
        l.tb += gv * (x[i] as f64 - m);
    }
}

/// (Σ g, Σ g·(x − m)) over all planes (g, x, y), gated as in `grad_sums_into` (the tests'
/// reference for the lane sums).
#[cfg(test)]
pub(crate) fn grad_sums<'a>(
    planes: &mut dyn Iterator<Item = (&'a [f32], &'a [f32], Option<&'a [f32]>)>,
    m: f32,
    affine_gate: Option<(f32, f32)>,
) -> (f64, f64) {
    let mut l = Lanes::default();
    planes.for_each(|p| grad_sums_into(&mut l, p, m, affine_gate));
    l.finish()
}

/// `shifted_sums_into` and `grad_sums_into` with explicit AVX-512 (LLVM leaves the portable
/// versions scalar, with the lanes spilled to the stack). Same lanes, same order of additions
/// and no FMA contraction, so the results are bit-identical to the portable versions.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{Lanes, WIDE};
    use std::arch::x86_64::*;

    /// Lanes 0-7 and 8-15 of 16 f32 values, widened to f64.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn widen(v: __m512) -> (__m512d, __m512d) {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
            _mm512_castps_pd(v),
            1,
        )));
        (lo, hi)
    }

    /// The 16 lanes of `a` as two registers.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(a: &[f64; WIDE]) -> (__m512d, __m512d) {
        // SAFETY: `a` holds 16 f64.
        unsafe {
            (
                _mm512_loadu_pd(a.as_ptr()),
                _mm512_loadu_pd(a.as_ptr().add(8)),
            )
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(a: &mut [f64; WIDE], (lo, hi): (__m512d, __m512d)) {
        // SAFETY: `a` holds 16 f64.
        unsafe {
            _mm512_storeu_pd(a.as_mut_ptr(), lo);
            _mm512_storeu_pd(a.as_mut_ptr().add(8), hi);
        }
    }

    /// See [`super::shifted_sums_into`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn shifted_sums_into(l: &mut Lanes, p: &[f32], k: f64) {
        let kv = _mm512_set1_pd(k);
        let (mut s0, mut s1) = load(&l.a);
        let (mut q0, mut q1) = load(&l.b);
        let mut it = p.chunks_exact(WIDE);
        for c in &mut it {
            // SAFETY: `c` holds exactly 16 f32.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let (lo, hi) = widen(v);
            let (d0, d1) = (_mm512_sub_pd(lo, kv), _mm512_sub_pd(hi, kv));
            s0 = _mm512_add_pd(s0, d0);
            s1 = _mm512_add_pd(s1, d1);
            q0 = _mm512_add_pd(q0, _mm512_mul_pd(d0, d0));
            q1 = _mm512_add_pd(q1, _mm512_mul_pd(d1, d1));
        }
        store(&mut l.a, (s0, s1));
        store(&mut l.b, (q0, q1));
        for &v in it.remainder() {
            let d = v as f64 - k;
            l.ta += d;
            l.tb += d * d;
        }
    }

    /// See [`super::grad_sums_into`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn grad_sums_into(
        l: &mut Lanes,
        (g, x, y): (&[f32], &[f32], Option<&[f32]>),
        m: f32,
        affine_gate: Option<(f32, f32)>,
    ) {
        let m = m as f64;
        let mv = _mm512_set1_pd(m);
        let (ga, gb) = affine_gate.unwrap_or((0.0, 0.0));
        let (gav, gbv) = (_mm512_set1_ps(ga), _mm512_set1_ps(gb));
        let (mut a0, mut a1) = load(&l.a);
        let (mut b0, mut b1) = load(&l.b);
        let n = g.len().min(x.len()).min(y.map_or(usize::MAX, <[f32]>::len));
        let full = n / WIDE * WIDE;
        for i in (0..full).step_by(WIDE) {
            // SAFETY: i + 16 <= n <= the length of g, x (and y).
            let (gv, xv) = unsafe {
                let gv = _mm512_loadu_ps(g.as_ptr().add(i));
                let xv = _mm512_loadu_ps(x.as_ptr().add(i));
                let zero = _mm512_setzero_ps();
                let gv = match (y, affine_gate) {
                    (Some(y), _) => {
                        let yv = _mm512_loadu_ps(y.as_ptr().add(i));
                        let pass = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(yv, zero);
                        _mm512_maskz_mov_ps(pass, gv)
                    }
                    (None, Some(_)) => {
                        // x·a + b as two roundings, like the forward (no FMA).
                        let pre = _mm512_add_ps(_mm512_mul_ps(xv, gav), gbv);
                        let pass = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(pre, zero);
                        _mm512_maskz_mov_ps(pass, gv)
                    }
                    (None, None) => gv,
                };
                (gv, xv)
            };
            let (g0, g1) = widen(gv);
            let (x0, x1) = widen(xv);
            a0 = _mm512_add_pd(a0, g0);
            a1 = _mm512_add_pd(a1, g1);
            b0 = _mm512_add_pd(b0, _mm512_mul_pd(g0, _mm512_sub_pd(x0, mv)));
            b1 = _mm512_add_pd(b1, _mm512_mul_pd(g1, _mm512_sub_pd(x1, mv)));
        }
        store(&mut l.a, (a0, a1));
        store(&mut l.b, (b0, b1));
        for i in full..n {
            let gv = match (y, affine_gate) {
                (Some(y), _) if y[i] > 0.0 => g[i] as f64,
                (Some(_), _) => 0.0,
                (None, Some(_)) if x[i] * ga + gb > 0.0 => g[i] as f64,
                (None, Some(_)) => 0.0,
                (None, None) => g[i] as f64,
            };
            l.ta += gv;
            l.tb += gv * (x[i] as f64 - m);
        }
    }
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
            let (a, b) = grad_sums(&mut [(&g[..], &x[..], None)].into_iter(), 0.3, None);
            let wa: f64 = g.iter().map(|&v| v as f64).sum();
            let wb: f64 = (0..len)
                .map(|i| g[i] as f64 * (x[i] as f64 - 0.3f32 as f64))
                .sum();
            assert!(
                (a - wa).abs() < 1e-12 && (b - wb).abs() < 1e-12,
                "{a} {wa} {b} {wb}"
            );
            let (a, b) = grad_sums(&mut [(&g[..], &x[..], Some(&y[..]))].into_iter(), 0.3, None);
            let wa: f64 = (0..len).filter(|&i| y[i] > 0.0).map(|i| g[i] as f64).sum();
            let wb: f64 = (0..len)
                .filter(|&i| y[i] > 0.0)
                .map(|i| g[i] as f64 * (x[i] as f64 - 0.3f32 as f64))
                .sum();
            assert!((a - wa).abs() < 1e-12 && (b - wb).abs() < 1e-12);
            // A gate recomputed from x: x·1.5 − 4.2 > 0.
            let gate = Some((1.5f32, -4.2f32));
            let (a, b) = grad_sums(&mut [(&g[..], &x[..], None)].into_iter(), 0.3, gate);
            let pass = |i: usize| x[i] * 1.5 - 4.2 > 0.0;
            let wa: f64 = (0..len).filter(|&i| pass(i)).map(|i| g[i] as f64).sum();
            let wb: f64 = (0..len)
                .filter(|&i| pass(i))
                .map(|i| g[i] as f64 * (x[i] as f64 - 0.3f32 as f64))
                .sum();
            assert!((a - wa).abs() < 1e-12 && (b - wb).abs() < 1e-12);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                let planes = [(&g[..], &x[..], Some(&y[..])), (&g[..], &x[..], None)];
                for gate in [None, Some((1.5f32, -4.2f32))] {
                    let (mut w, mut q) = (Lanes::default(), Lanes::default());
                    let (mut ws, mut qs) = (Lanes::default(), Lanes::default());
                    for p in planes {
                        // SAFETY: the CPU has AVX-512F (checked just above).
                        unsafe {
                            avx512::grad_sums_into(&mut w, p, 0.3, gate);
                            avx512::shifted_sums_into(&mut ws, p.1, 3.0);
                        }
                        grad_sums_into(&mut q, p, 0.3, gate);
                        shifted_sums_into(&mut qs, p.1, 3.0);
                    }
                    assert_eq!(w.finish(), q.finish(), "AVX-512 grad sums differ");
                    assert_eq!(ws.finish(), qs.finish(), "AVX-512 shifted sums differ");
                }
            }
        }
    }
}
