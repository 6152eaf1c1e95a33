//! The AVX-512 block kernels (exact f64 products and f32 lanes), written with intrinsics so
//! that a 4 x 4 tile keeps its 16 accumulators in registers and the block tail is one masked
//! load instead of scalar code.

use std::arch::x86_64::*;

/// Rows per tile side: 16 accumulators + 8 loaded vectors fit the 32 zmm registers.
const R: usize = 4;

/// Rows of the next block that one tile prefetches while it runs, one cache line per row
/// and step, so that the T row pieces of the next block are requested once, spread over
/// the whole block's FMAs.
#[derive(Clone, Copy)]
struct Prefetch {
    rows: [*const f32; R],
    count: usize,
    cols: usize,
    /// Into L1 (T0) rather than L2 (T1); see [`prefetch_into_l1`].
    l1: bool,
}

/// Whether the next block is prefetched into L1 (T0) rather than L2 (T1). T0 only on AMD
/// family 26 (Zen 5), where it was never slower and often faster (2-vCPU VM, 2 threads,
/// calls interleaved, 7 rounds, medians T1 -> T0): exact T = 16 14.5-20.0 -> 14.7-21.8
/// GB/s, T = 8 21.6-32.3 -> 24.2-36.5, T = 2 28.9-38.7 -> 26.8-45.4 (fastest calls
/// 38.0-41.4 -> 42.0-57.2). On Zen 4 L1 prefetches measured slower (they evict rows of
/// the current block, which the tiles read four times at T = 16).
pub(super) fn prefetch_into_l1() -> bool {
    static L1: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *L1.get_or_init(|| {
        let vendor = __cpuid(0);
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let eax = __cpuid(1).eax;
        let base = (eax >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((eax >> 20) & 0xff)
        } else {
            base
        };
        amd && family == 0x1a
    })
}

/// Writes the upper triangle of the Gram matrix of columns [c0, c1) into `out`, and
/// prefetches columns [c1, c1 + ahead) of every row.
///
/// # Safety
/// The CPU must support AVX-512F; `g` must hold t x p values, c0 <= c1 <= p, out >= t * t.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block_gram<const EXACT: bool>(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    ahead: usize,
    out: &mut [f64],
) {
    assert!(c0 <= c1 && c1 <= p && g.len() >= t * p && out.len() >= t * t);
    let n = c1 - c0;
    // SAFETY: i < t, so row i's columns [c0, c1) lie inside `g` (asserted above).
    let row = |i: usize| unsafe { g.as_ptr().add(i * p + c0) };
    // The rows to prefetch are dealt out to the tiles in order, at most R per tile
    // (T / (nb (nb + 1) / 2) <= 8 / (nb + 1) <= R with nb = ceil(T / R) tile rows).
    let nb = t.div_ceil(R);
    let per_tile = t.div_ceil(nb * (nb + 1) / 2);
    let l1 = prefetch_into_l1();
    let mut q = 0;
    let mut next_prefetch = || {
        let r0 = q * per_tile;
        q += 1;
        Prefetch {
            // Prefetch addresses are never dereferenced: wrapping_add keeps them defined.
            rows: std::array::from_fn(|k| g.as_ptr().wrapping_add((r0 + k) * p + c1)),
            count: if ahead == 0 {
                0
            } else {
                t.saturating_sub(r0).min(per_tile)
            },
            cols: ahead,
            l1,
        }
    };
    let mut bi = 0;
    while bi < t {
        let ra = (t - bi).min(R);
        let a: [*const f32; R] = std::array::from_fn(|u| row(bi + u.min(ra - 1)));
        // Diagonal tile: only the u <= v products of rows bi..bi+ra.
        // SAFETY (all tile calls): the rows hold n readable values each.
        let pf = next_prefetch();
        let d = unsafe {
            match ra {
                4 => widen::<4, 4>(tile::<EXACT, 4, 4, true>(a, a, n, pf)),
                3 => widen(tile::<EXACT, 3, 3, true>(head(a), head(a), n, pf)),
                2 => widen(tile::<EXACT, 2, 2, true>(head(a), head(a), n, pf)),
                _ => widen(tile::<EXACT, 1, 1, true>(head(a), head(a), n, pf)),
            }
        };
        store(out, t, bi, bi, ra, ra, &d);
        // Off-diagonal tiles: rows bi.. (a full tile whenever a later tile exists).
        let mut bj = bi + R;
        while bj < t {
            let rb = (t - bj).min(R);
            let b: [*const f32; R] = std::array::from_fn(|v| row(bj + v.min(rb - 1)));
            let pf = next_prefetch();
            let d = unsafe {
                match rb {
                    4 => tile::<EXACT, 4, 4, false>(a, b, n, pf),
                    3 => widen(tile::<EXACT, 4, 3, false>(a, head(b), n, pf)),
                    2 => widen(tile::<EXACT, 4, 2, false>(a, head(b), n, pf)),
                    _ => widen(tile::<EXACT, 4, 1, false>(a, head(b), n, pf)),
                }
            };
            store(out, t, bi, bj, ra, rb, &d);
            bj += R;
        }
        bi += R;
    }
}

/// The first K row pointers.
#[inline(always)]
fn head<const K: usize>(a: [*const f32; R]) -> [*const f32; K] {
    std::array::from_fn(|k| a[k])
}

/// Pads a tile result to R x R (the padding is never stored).
#[inline(always)]
fn widen<const RA: usize, const RB: usize>(d: [[f64; RB]; RA]) -> [[f64; R]; R] {
    let mut w = [[0.0f64; R]; R];
    for (wu, du) in w.iter_mut().zip(&d) {
        wu[..RB].copy_from_slice(du);
    }
    w
}

/// Stores the ra x rb tile at rows (bi, bj), upper triangle only.
#[inline(always)]
fn store(out: &mut [f64], t: usize, bi: usize, bj: usize, ra: usize, rb: usize, d: &[[f64; R]; R]) {
    for (u, du) in d.iter().enumerate().take(ra) {
        for (v, &dv) in du.iter().enumerate().take(rb) {
            if bi + u <= bj + v {
                out[(bi + u) * t + bj + v] = dv;
            }
        }
    }
}

/// Dot products <a_u, b_v> of n-float rows (only u <= v when DIAG, where a and b are the
/// same rows): exact f64 products and sums when EXACT, else f32 lanes.
///
/// # Safety
/// AVX-512F; every pointer must be valid for n reads.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const EXACT: bool, const RA: usize, const RB: usize, const DIAG: bool>(
    a: [*const f32; RA],
    b: [*const f32; RB],
    n: usize,
    pf: Prefetch,
) -> [[f64; RB]; RA] {
    // SAFETY: forwarded contract.
    unsafe {
        if EXACT {
            tile_f64::<RA, RB, DIAG>(a, b, n, pf)
        } else {
            tile_f32::<RA, RB, DIAG>(a, b, n, pf)
        }
    }
}

/// Issues the tile's share of next-block prefetches for column offset k.
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch(pf: &Prefetch, k: usize) {
    if k < pf.cols {
        for &r in &pf.rows[..pf.count] {
            // A prefetch never faults and does not access memory semantically.
            let a = r.wrapping_add(k).cast::<i8>();
            if pf.l1 {
                _mm_prefetch::<_MM_HINT_T0>(a);
            } else {
                _mm_prefetch::<_MM_HINT_T1>(a);
            }
        }
    }
}

/// [`tile`] with exact f64 products (f32 -> f64 conversion on load) and 8-lane f64 sums,
/// 16 columns per step.
///
/// # Safety
/// AVX-512F; every pointer must be valid for n reads.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile_f64<const RA: usize, const RB: usize, const DIAG: bool>(
    a: [*const f32; RA],
    b: [*const f32; RB],
    n: usize,
    pf: Prefetch,
) -> [[f64; RB]; RA] {
    let mut acc = [[_mm512_setzero_pd(); RB]; RA];
    let full = n / 16 * 16;
    let mut k = 0;
    while k < full {
        prefetch(&pf, k);
        // SAFETY: k + 16 <= n.
        let x: [[__m512d; 2]; RA] = std::array::from_fn(|u| unsafe {
            [
                _mm512_cvtps_pd(_mm256_loadu_ps(a[u].add(k))),
                _mm512_cvtps_pd(_mm256_loadu_ps(a[u].add(k + 8))),
            ]
        });
        // SAFETY: columns k..k + 16 are valid in every row.
        unsafe { step_f64::<RA, RB, DIAG>(&mut acc, &x, b, k, u16::MAX) };
        k += 16;
    }
    if k < n {
        let m = ((1u32 << (n - k)) - 1) as u16;
        // SAFETY: the mask covers only the n - k valid values.
        let x: [[__m512d; 2]; RA] =
            std::array::from_fn(|u| unsafe { widen16(_mm512_maskz_loadu_ps(m, a[u].add(k))) });
        // SAFETY: the mask covers only valid columns.
        unsafe { step_f64::<RA, RB, DIAG>(&mut acc, &x, b, k, m) };
    }
    super::reduce_tile(&acc, DIAG, |a| _mm512_reduce_add_pd(a))
}

/// The 16 f32 lanes of v as two f64 vectors (low half, high half).
#[inline]
#[target_feature(enable = "avx512f")]
fn widen16(v: __m512) -> [__m512d; 2] {
    let hi = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(v));
    [
        _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
        _mm512_cvtps_pd(_mm256_castsi256_ps(hi)),
    ]
}

/// One 16-column step of [`tile_f64`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn step_f64<const RA: usize, const RB: usize, const DIAG: bool>(
    acc: &mut [[__m512d; RB]; RA],
    x: &[[__m512d; 2]; RA],
    b: [*const f32; RB],
    k: usize,
    m: u16,
) {
    for v in 0..RB {
        let y = if DIAG {
            x[v.min(RA - 1)]
        } else if m == u16::MAX {
            // SAFETY: 16 valid columns.
            unsafe {
                [
                    _mm512_cvtps_pd(_mm256_loadu_ps(b[v].add(k))),
                    _mm512_cvtps_pd(_mm256_loadu_ps(b[v].add(k + 8))),
                ]
            }
        } else {
            // SAFETY: the caller's mask covers only valid columns.
            widen16(unsafe { _mm512_maskz_loadu_ps(m, b[v].add(k)) })
        };
        for u in 0..RA {
            if !DIAG || u <= v {
                acc[u][v] = _mm512_fmadd_pd(x[u][0], y[0], acc[u][v]);
                acc[u][v] = _mm512_fmadd_pd(x[u][1], y[1], acc[u][v]);
            }
        }
    }
}

/// [`tile`] with 16 f32 lanes per product, reduced in f64.
///
/// # Safety
/// AVX-512F; every pointer must be valid for n reads.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile_f32<const RA: usize, const RB: usize, const DIAG: bool>(
    a: [*const f32; RA],
    b: [*const f32; RB],
    n: usize,
    pf: Prefetch,
) -> [[f64; RB]; RA] {
    let mut acc = [[_mm512_setzero_ps(); RB]; RA];
    let full = n / 16 * 16;
    let mut k = 0;
    while k < full {
        // SAFETY: k + 16 <= n.
        prefetch(&pf, k);
        let x: [__m512; RA] = std::array::from_fn(|u| unsafe { _mm512_loadu_ps(a[u].add(k)) });
        // SAFETY: columns k..k + 16 are valid in every row.
        unsafe { step::<RA, RB, DIAG>(&mut acc, &x, b, k, u16::MAX) };
        k += 16;
    }
    if k < n {
        // Masked loads read only the n - k valid values (and never fault past them).
        let m = ((1u32 << (n - k)) - 1) as u16;
        let x: [__m512; RA] =
            std::array::from_fn(|u| unsafe { _mm512_maskz_loadu_ps(m, a[u].add(k)) });
        // SAFETY: the mask covers only valid columns.
        unsafe { step::<RA, RB, DIAG>(&mut acc, &x, b, k, m) };
    }
    super::reduce_tile(&acc, DIAG, |a| lanes_to_f64(a))
}

/// One 16-column step of [`tile`]: load b's vectors (mask m) and do the FMAs.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn step<const RA: usize, const RB: usize, const DIAG: bool>(
    acc: &mut [[__m512; RB]; RA],
    x: &[__m512; RA],
    b: [*const f32; RB],
    k: usize,
    m: u16,
) {
    for v in 0..RB {
        let y = if DIAG {
            x[v.min(RA - 1)]
        } else {
            // SAFETY: the caller's mask covers only valid columns.
            unsafe { _mm512_maskz_loadu_ps(m, b[v].add(k)) }
        };
        for u in 0..RA {
            if !DIAG || u <= v {
                acc[u][v] = _mm512_fmadd_ps(x[u], y, acc[u][v]);
            }
        }
    }
}

/// Sum of 16 f32 lanes in f64 (fixed order: halves added lane-wise, then a fixed tree).
#[inline]
#[target_feature(enable = "avx512f")]
fn lanes_to_f64(v: __m512) -> f64 {
    let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    let hi_bits = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(v));
    let hi = _mm512_cvtps_pd(_mm256_castsi256_ps(hi_bits));
    _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
}
