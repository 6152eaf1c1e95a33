//! AVX2 + FMA pieces of the small-head CE tile (see `ce_small_rows`), for x86 CPUs without
//! AVX-512: the vectoriser unrolled the 8-lane loops of the portable tile into scalar code.

use std::arch::x86_64::*;

use super::{PREFETCH_AHEAD, TILE_ROWS};

/// exp of 8 lanes, as [`super::exp_f32`] (same reduction and polynomial): 0 below -87.3,
/// saturated above 88, NaN stays NaN (the clamps take x as the operand that wins on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp8(x: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let s = _mm256_set1_ps;
    // max/min return their second operand when either is NaN.
    let xc = _mm256_min_ps(s(88.0), _mm256_max_ps(s(-87.3), x));
    let shifted = _mm256_fmadd_ps(xc, s(std::f32::consts::LOG2_E), s(ROUND));
    let k = _mm256_sub_ps(shifted, s(ROUND));
    let r = _mm256_fnmadd_ps(k, s(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(k, s(LN2_LO), r);
    let mut p = s(1.388_974_4e-3);
    for c in [8.333_452e-3, 4.166_666_8e-2, 1.666_666_7e-1, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, s(c));
    }
    // 2^k from the integer k held in the low mantissa bits of `shifted`.
    let ki = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_castps_si256(s(ROUND)));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        ki,
        _mm256_set1_epi32(127),
    )));
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, s(-87.3));
    _mm256_andnot_ps(under, _mm256_mul_ps(p, scale))
}

/// ln(1 + e) of 8 lanes with e in [0, 1], as [`super::ln1p_unit`]: 2 atanh(u) with
/// u = e / (2 + e), odd series to u^13 with fused multiply-adds.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn ln1p_unit8(e: __m256) -> __m256 {
    let u = _mm256_div_ps(e, _mm256_add_ps(_mm256_set1_ps(2.0), e));
    let u2 = _mm256_mul_ps(u, u);
    let mut p = _mm256_set1_ps(1.0 / 13.0);
    for c in [1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        p = _mm256_fmadd_ps(p, u2, _mm256_set1_ps(c));
    }
    _mm256_mul_ps(_mm256_add_ps(u, u), p)
}

/// ln(s) of 8 softmax denominators s >= 1, as [`super::ln_sum`].
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn ln_sum8(s: __m256) -> __m256 {
    let bits = _mm256_castps_si256(s);
    let k = _mm256_cvtepi32_ps(_mm256_sub_epi32(
        _mm256_srli_epi32::<23>(bits),
        _mm256_set1_epi32(127),
    ));
    let m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(0x3f80_0000),
    ));
    // ln(m) = ln(1 + e) with e = m - 1 in [0, 1).
    let ln1p = ln1p_unit8(_mm256_sub_ps(m, _mm256_set1_ps(1.0)));
    let v = _mm256_fmadd_ps(k, _mm256_set1_ps(std::f32::consts::LN_2), ln1p);
    // s - s: NaN for NaN s, 0 otherwise.
    _mm256_add_ps(v, _mm256_sub_ps(s, s))
}

/// One head of a tile (its columns, 8 row lanes each): adds the loss of each valid lane to
/// `sum` in lane order and, with GRAD, replaces the head's logits by the gradient (zeros in
/// invalid lanes). `code` holds each lane's class (-1 where invalid).
///
/// # Safety
/// AVX2 and FMA; the code of every valid lane is below `head.len()` (>= 1).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn small_head<const GRAD: bool>(
    head: &mut [[f32; TILE_ROWS]],
    code: &[i8; TILE_ROWS],
    scale: f32,
    sum: &mut f64,
) {
    let c = head.len();
    assert!(c >= 1);
    let ptr = head.as_mut_ptr().cast::<f32>();
    // SAFETY: j < c, so the 8 lanes of column j lie inside `head`.
    let load = |j: usize| unsafe { _mm256_loadu_ps(ptr.add(j * TILE_ROWS)) };
    let xy: [f32; TILE_ROWS] = std::array::from_fn(|l| {
        if code[l] >= 0 {
            head[code[l] as usize][l]
        } else {
            0.0
        }
    });
    let mut m = load(0);
    for j in 1..c {
        m = _mm256_max_ps(load(j), m);
    }
    let mut s = _mm256_setzero_ps();
    for j in 0..c {
        let e = exp8(_mm256_sub_ps(load(j), m));
        if GRAD {
            // SAFETY: as `load`.
            unsafe { _mm256_storeu_ps(ptr.add(j * TILE_ROWS), e) };
        }
        s = _mm256_add_ps(s, e);
    }
    let mut lm = [0.0f32; TILE_ROWS];
    let mut ls = [0.0f32; TILE_ROWS];
    // SAFETY: both arrays hold 8 floats.
    unsafe {
        _mm256_storeu_ps(lm.as_mut_ptr(), m);
        _mm256_storeu_ps(ls.as_mut_ptr(), ln_sum8(s));
    }
    for l in 0..TILE_ROWS {
        if code[l] >= 0 {
            *sum += (lm[l] - xy[l]) as f64 + ls[l] as f64;
        }
    }
    if GRAD {
        let packed = i64::from_ne_bytes(code.map(|c| c as u8));
        let codes = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(packed));
        let valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(codes, _mm256_set1_epi32(-1)));
        let g = _mm256_and_ps(valid, _mm256_div_ps(_mm256_set1_ps(scale), s));
        for j in 0..c {
            // The and zeroes invalid lanes even where the exp is NaN.
            let v = _mm256_and_ps(valid, _mm256_mul_ps(load(j), g));
            // SAFETY: as `load`.
            unsafe { _mm256_storeu_ps(ptr.add(j * TILE_ROWS), v) };
        }
        for l in 0..TILE_ROWS {
            if code[l] >= 0 {
                head[code[l] as usize][l] -= scale;
            }
        }
    }
}

/// Cross-entropy of one head's logits `x` with target class `y`, as `super::ce_segment_body`
/// (max-subtracted log-sum-exp; `scale * (softmax - onehot)` into the gradient when given)
/// with the exp in FMA intrinsics: the vectoriser's build kept mul and add apart and ran at
/// about half this speed. The last `len % 8` classes take the scalar exp.
///
/// # Safety
/// AVX2 and FMA; `y < x.len()`, and the gradient (when given) is as long as `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn ce_segment(x: &[f32], y: usize, grad: Option<(&mut [f32], f32)>) -> f64 {
    let n = x.len();
    assert!(y < n && grad.as_ref().is_none_or(|(d, _)| d.len() == n));
    let full = n / 8 * 8;
    let xp = x.as_ptr();
    // SAFETY: k + 8 <= full <= n.
    let load = |k: usize| unsafe { _mm256_loadu_ps(xp.add(k)) };
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for k in (0..full).step_by(8) {
        if k % 16 == 0 {
            // A line of the logits PREFETCH_AHEAD values on (the next row's, whatever the
            // layout), as in the AVX-512 head kernel: C = 1,000, 2 threads, 15.1-15.5 ->
            // 17.4-18.8 GB/s (this build timed on a Zen 5, calls interleaved).
            // A prefetch never faults and does not access memory semantically.
            _mm_prefetch::<_MM_HINT_T0>(xp.wrapping_add(k + PREFETCH_AHEAD).cast::<i8>());
        }
        mv = _mm256_max_ps(load(k), mv);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mv) };
    let mut m = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in &x[full..] {
        m = m.max(v);
    }
    let s = match grad {
        Some((d, scale)) => {
            let s = exp_sum::<true>(x, m, d);
            let g = _mm256_set1_ps(scale / s);
            let dp = d.as_mut_ptr();
            for k in (0..full).step_by(8) {
                // SAFETY: k + 8 <= full <= d.len().
                unsafe {
                    _mm256_storeu_ps(dp.add(k), _mm256_mul_ps(_mm256_loadu_ps(dp.add(k)), g))
                };
            }
            for v in &mut d[full..] {
                *v *= scale / s;
            }
            d[y] -= scale;
            s
        }
        None => exp_sum::<false>(x, m, &mut []),
    };
    (m - x[y]) as f64 + (s as f64).ln()
}

/// Sum of exp(x - m) over `x`; with STORE the exps are written into `d` (as long as `x`).
/// Two accumulators, so that the adds of consecutive vectors do not wait on each other.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_sum<const STORE: bool>(x: &[f32], m: f32, d: &mut [f32]) -> f32 {
    let n = x.len();
    assert!(!STORE || d.len() == n);
    let full = n / 8 * 8;
    let mb = _mm256_set1_ps(m);
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for k in (0..full).step_by(8) {
        // SAFETY: k + 8 <= full <= n (and d.len() == n with STORE).
        let e = exp8(_mm256_sub_ps(
            unsafe { _mm256_loadu_ps(x.as_ptr().add(k)) },
            mb,
        ));
        if STORE {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr().add(k), e) };
        }
        if k / 8 % 2 == 0 {
            s0 = _mm256_add_ps(s0, e);
        } else {
            s1 = _mm256_add_ps(s1, e);
        }
    }
    let mut s = hsum8(_mm256_add_ps(s0, s1));
    for k in full..n {
        let e = super::exp_f32(x[k] - m);
        if STORE {
            d[k] = e;
        }
        s += e;
    }
    s
}

/// Sum of the 8 lanes in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum8(v: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
}

/// The whole 8-column vectors of one BCE row (see `super::bce_rows_with`): writes each
/// element's loss max(x,0) - x*y + ln(1 + e^-|x|) into `row.loss` (0 where not valid) and,
/// with GRAD, `scale * (sigmoid(x) - y)` into `row.d` (0 where not valid). Returns the
/// columns done and whether a target among them lies outside [0, 1] (NaN included). The same
/// exp and ln(1 + e) as the portable code, with fused multiply-adds.
///
/// # Safety
/// AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bce_row<const GRAD: bool, const MASK: bool>(
    row: super::BceRow<'_>,
) -> (usize, bool) {
    let super::BceRow {
        x,
        y,
        valid,
        scale,
        d,
        loss,
    } = row;
    let n = x.len();
    assert!(y.len() == n && scale.len() >= n && loss.len() >= n);
    assert!((!MASK || valid.len() >= n) && (!GRAD || d.len() >= n));
    let full = n / 8 * 8;
    let s = _mm256_set1_ps;
    let sign = s(-0.0);
    let mut bad = _mm256_setzero_ps();
    for k in (0..full).step_by(8) {
        // SAFETY: k + 8 <= full <= n for every slice read or written (asserted above).
        unsafe {
            let xv = _mm256_loadu_ps(x.as_ptr().add(k));
            let yv = _mm256_loadu_ps(y.as_ptr().add(k));
            let e = exp8(_mm256_or_ps(xv, sign));
            let ln1p = ln1p_unit8(e);
            let l = _mm256_add_ps(
                _mm256_fnmadd_ps(xv, yv, _mm256_max_ps(xv, _mm256_setzero_ps())),
                ln1p,
            );
            let keep = if MASK {
                let bytes = _mm_cvtsi64_si128(i64::from_ne_bytes(
                    valid[k..k + 8].try_into().expect("8 validity bytes"),
                ));
                let wide = _mm256_cvtepu8_epi32(bytes);
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(wide, _mm256_setzero_si256()))
            } else {
                _mm256_castsi256_ps(_mm256_set1_epi32(-1))
            };
            _mm256_storeu_ps(loss.as_mut_ptr().add(k), _mm256_and_ps(keep, l));
            if GRAD {
                // sigmoid(x) from e = exp(-|x|) without overflow on either side.
                let inv = _mm256_div_ps(s(1.0), _mm256_add_ps(s(1.0), e));
                let nonneg = _mm256_cmp_ps::<_CMP_GE_OQ>(xv, _mm256_setzero_ps());
                let sig = _mm256_blendv_ps(_mm256_mul_ps(e, inv), inv, nonneg);
                let sc = _mm256_loadu_ps(scale.as_ptr().add(k));
                let g = _mm256_mul_ps(sc, _mm256_sub_ps(sig, yv));
                _mm256_storeu_ps(d.as_mut_ptr().add(k), _mm256_and_ps(keep, g));
            }
            // Not (y >= 0) or not (y <= 1): true for NaN as well.
            let out = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_NGE_UQ>(yv, _mm256_setzero_ps()),
                _mm256_cmp_ps::<_CMP_NLE_UQ>(yv, s(1.0)),
            );
            bad = _mm256_or_ps(bad, out);
        }
    }
    (full, _mm256_movemask_ps(bad) != 0)
}

/// Transposes 8 vectors (rows) of 8 floats into 8 vectors (columns).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t: [__m256; 8] = std::array::from_fn(|k| {
        let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // u[4h + q]: from the row pairs (4h, 4h + 1) and (4h + 2, 4h + 3).
    let u: [__m256; 8] = std::array::from_fn(|k| {
        let (h, q) = (k / 4, k % 4);
        let (a, b) = (t[4 * h + q / 2], t[4 * h + 2 + q / 2]);
        if q % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    std::array::from_fn(|j| {
        if j < 4 {
            _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j])
        } else {
            _mm256_permute2f128_ps::<0x31>(u[j - 4], u[j])
        }
    })
}

/// `super::tile_load_rows` for a full tile: 8 x 8 blocks through [`transpose8`].
///
/// # Safety
/// AVX2; `x` holds 8 rows of `tile.len()` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_load(x: &[f32], tile: &mut [[f32; TILE_ROWS]]) {
    let w = tile.len();
    assert_eq!(x.len(), TILE_ROWS * w);
    let full = w / 8 * 8;
    for c in (0..full).step_by(8) {
        // SAFETY: row l's columns c..c + 8 lie inside `x` (c + 8 <= w).
        let rows = std::array::from_fn(|l| unsafe { _mm256_loadu_ps(x.as_ptr().add(l * w + c)) });
        for (j, v) in transpose8(rows).into_iter().enumerate() {
            // SAFETY: tile[c + j] holds 8 floats.
            unsafe { _mm256_storeu_ps(tile[c + j].as_mut_ptr(), v) };
        }
    }
    for c in full..w {
        for l in 0..TILE_ROWS {
            tile[c][l] = x[l * w + c];
        }
    }
}

/// `super::tile_store_rows` for a full tile: 8 x 8 blocks through [`transpose8`].
///
/// # Safety
/// AVX2; `d` holds 8 rows of `tile.len()` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_store(tile: &[[f32; TILE_ROWS]], d: &mut [f32]) {
    let w = tile.len();
    assert_eq!(d.len(), TILE_ROWS * w);
    let full = w / 8 * 8;
    for c in (0..full).step_by(8) {
        // SAFETY: tile[c + j] holds 8 floats.
        let cols = std::array::from_fn(|j| unsafe { _mm256_loadu_ps(tile[c + j].as_ptr()) });
        for (l, v) in transpose8(cols).into_iter().enumerate() {
            // SAFETY: row l's columns c..c + 8 lie inside `d` (c + 8 <= w).
            unsafe { _mm256_storeu_ps(d.as_mut_ptr().add(l * w + c), v) };
        }
    }
    for c in full..w {
        for l in 0..TILE_ROWS {
            d[l * w + c] = tile[c][l];
        }
    }
}
