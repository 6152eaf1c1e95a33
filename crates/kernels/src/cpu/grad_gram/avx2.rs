//! The block kernels with AVX2 + FMA intrinsics, for x86 CPUs without AVX-512 (AMD Zen 2/3,
//! older Intel): the vectoriser's version of [`super::upper_tiles`] reached only a quarter of
//! the memory bandwidth there (T = 8, exact).
//!
//! A block is walked in chunks of columns whose T rows fit in L1. The exact kernel first
//! converts a chunk to f64 (zero-padded to whole vectors, so tiles need no tail code) and then
//! forms every pair's products from L1: each conversion is done once instead of once per tile
//! the row appears in. Both kernels work on groups of 4 rows (see [`for_tiles`]) and reduce
//! each chunk's lanes in f64 in a fixed order.

use std::arch::x86_64::*;

/// Rows per tile group: a diagonal group's 10 pairs (10 accumulators + 4 row vectors) and an
/// off-diagonal 2 x 4 half tile (8 accumulators) both keep the 8 FMAs in flight that Zen's two
/// 4-cycle FMA pipes need; 3 x 3 tiles left the diagonal ones latency-bound.
const R: usize = 4;
/// Values of one chunk (T rows x chunk columns): 24 KiB of f64, inside the 32 KiB L1.
const CHUNK: usize = 3072;
/// Most columns per chunk: at most 128 products per f32 lane before a chunk's lanes are
/// reduced in f64 (the bound the AVX-512 kernel has per 2048-column block).
const MAX_COLS: usize = 1024;

/// Chunk buffer aligned for 32-byte vector loads; left uninitialised (zeroing 24 KiB per
/// block would cost a third of the block's reads): only written values are read.
#[repr(align(32))]
struct Buf(std::mem::MaybeUninit<[f64; CHUNK]>);

/// Columns per chunk for `t` rows (a multiple of 16), or None when even 16 columns of `t` rows
/// do not fit a chunk (t > 192; the caller then uses the portable kernel).
pub(super) fn chunk_cols(t: usize) -> Option<usize> {
    let cols = (CHUNK / t.max(1) / 16 * 16).min(MAX_COLS);
    (cols >= 16).then_some(cols)
}

/// Adds the exact upper triangle of the Gram matrix of columns [c0, c1) into `acc` (f64
/// products and sums). While a chunk's tiles run, its tiles prefetch the next chunk's
/// columns (as far as column c1 + ahead): the FMAs then overlap the memory reads (13.1-13.6
/// against 8.4-8.6 GB/s without, T = 8 on 2 threads).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `g` holds t x p values, c0 <= c1 <= p, acc >= t * t,
/// and `chunk_cols(t)` is Some.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn block_gram_f64(
    g: &[f32],
    t: usize,
    p: usize,
    (c0, c1): (usize, usize),
    ahead: usize,
    acc: &mut [f64],
) {
    assert!(c0 <= c1 && c1 <= p && g.len() >= t * p && acc.len() >= t * t);
    let cols = chunk_cols(t).expect("t rows fit a chunk");
    let mut buf = Buf(std::mem::MaybeUninit::uninit());
    let mut k0 = c0;
    while k0 < c1 {
        let n = (c1 - k0).min(cols);
        // Row stride in the buffer: n rounded up to whole 4-lane vectors (t * w <= CHUNK).
        let w = n.div_ceil(4) * 4;
        for i in 0..t {
            // SAFETY: row i's columns [k0, k0 + n) lie inside `g` (asserted above); the
            // buffer row i holds w >= n values.
            unsafe {
                let src = g.as_ptr().add(i * p + k0);
                let dst = buf.0.as_mut_ptr().cast::<f64>().add(i * w);
                let mut k = 0;
                while k + 4 <= n {
                    _mm256_store_pd(dst.add(k), _mm256_cvtps_pd(_mm_loadu_ps(src.add(k))));
                    k += 4;
                }
                if k < n {
                    // Zero padding: padded columns add exact zeros to every product.
                    let x = _mm_maskload_ps(src.add(k), tail_mask4(n - k));
                    _mm256_store_pd(dst.add(k), _mm256_cvtps_pd(x));
                }
            }
        }
        let base = buf.0.as_ptr().cast::<f64>();
        // SAFETY: rows are clamped to t - 1 and each buffer row holds w values.
        let row = |i: usize| unsafe { base.add(i.min(t - 1) * w) };
        // The next chunk's columns (up to the end of the prefetch window), dealt out to the
        // tiles a few rows each, so that they arrive while this chunk's FMAs run.
        let next = k0 + n;
        let pf_cols = (c1 + ahead).min(next + cols).saturating_sub(next);
        let groups = t.div_ceil(R);
        let per_tile = t.div_ceil(groups * groups);
        let mut q = 0;
        for_tiles(t, |bi, ra, bj, rb| {
            let a: [*const f64; R] = std::array::from_fn(|u| row(bi + u));
            let b: [*const f64; R] = std::array::from_fn(|v| row(bj + v));
            let r0 = q * per_tile;
            q += 1;
            let pf = Prefetch {
                // Prefetch addresses are never dereferenced: wrapping_add keeps them defined.
                rows: std::array::from_fn(|k| g.as_ptr().wrapping_add((r0 + k) * p + next)),
                count: if pf_cols == 0 {
                    0
                } else {
                    t.saturating_sub(r0).min(per_tile)
                },
                cols: pf_cols,
            };
            // SAFETY: AVX2/FMA (this function's contract); rows hold w values.
            let d = unsafe { tile_f64(a, b, w, ra, rb, bi == bj, pf) };
            add_tile(acc, t, (bi, ra), (bj, rb), &d);
        });
        k0 += n;
    }
}

/// Writes the upper triangle of the Gram matrix of columns [c0, c1) into `out`, with products
/// summed in 8 f32 lanes per chunk (at most 128 per lane) and chunks summed in f64. No
/// software prefetch: the hardware's alone measured faster here (15.6 vs 11-12 GB/s, T = 8).
///
/// # Safety
/// As [`block_gram_f64`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn block_gram_f32(
    g: &[f32],
    t: usize,
    p: usize,
    (c0, c1): (usize, usize),
    out: &mut [f64],
) {
    assert!(c0 <= c1 && c1 <= p && g.len() >= t * p && out.len() >= t * t);
    let cols = chunk_cols(t).expect("t rows fit a chunk");
    for i in 0..t {
        out[i * t + i..(i + 1) * t].fill(0.0);
    }
    let mut k0 = c0;
    while k0 < c1 {
        let n = (c1 - k0).min(cols);
        // SAFETY: rows are clamped to t - 1; columns [k0, k0 + n) lie inside `g`.
        let row = |i: usize| unsafe { g.as_ptr().add(i.min(t - 1) * p + k0) };
        for_tiles(t, |bi, ra, bj, rb| {
            let a: [*const f32; R] = std::array::from_fn(|u| row(bi + u));
            let b: [*const f32; R] = std::array::from_fn(|v| row(bj + v));
            // SAFETY: AVX2/FMA (this function's contract); rows hold n values.
            let d = unsafe { tile_f32(a, b, n, ra, rb, bi == bj) };
            add_tile(out, t, (bi, ra), (bj, rb), &d);
        });
        k0 += n;
    }
}

/// Rows whose columns [0, cols) one tile prefetches, one cache line per row every 16 columns.
#[derive(Clone, Copy)]
struct Prefetch {
    rows: [*const f32; R],
    count: usize,
    cols: usize,
}

/// The lanes below `k` (1..=3) set: a mask for `_mm_maskload_ps`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tail_mask4(k: usize) -> __m128i {
    let idx = _mm_setr_epi32(0, 1, 2, 3);
    _mm_cmpgt_epi32(_mm_set1_epi32(k as i32), idx)
}

/// The lanes below `k` (1..=7) set: a mask for `_mm256_maskload_ps`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tail_mask8(k: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), idx)
}

/// Calls `f(bi, ra, bj, rb)` for every tile of the upper block triangle of t rows in groups
/// of R: the diagonal groups (ra = rb < R only for the last group) and each off-diagonal group
/// pair as two 2 x rb halves (rb < R only for the last group).
#[inline(always)]
fn for_tiles(t: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut bi = 0;
    while bi < t {
        let ra = (t - bi).min(R);
        f(bi, ra, bi, ra);
        let mut bj = bi + R;
        while bj < t {
            // A later group exists, so this one is full (ra == R).
            let rb = (t - bj).min(R);
            f(bi, 2, bj, rb);
            f(bi + 2, 2, bj, rb);
            bj += R;
        }
        bi += R;
    }
}

/// Adds the ra x rb tile at rows (bi, bj) into `acc`, upper triangle only.
#[inline(always)]
fn add_tile(
    acc: &mut [f64],
    t: usize,
    (bi, ra): (usize, usize),
    (bj, rb): (usize, usize),
    d: &[[f64; R]; R],
) {
    for (u, du) in d.iter().enumerate().take(ra) {
        for (v, &dv) in du.iter().enumerate().take(rb) {
            if bi + u <= bj + v {
                acc[(bi + u) * t + bj + v] += dv;
            }
        }
    }
}

/// Sums the 4 f64 lanes in a fixed order ((0 + 2) + (1 + 3)).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_pd(v: __m256d) -> f64 {
    let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// Sums the 8 f32 lanes in f64 in a fixed order (halves lane-wise, then [`hsum_pd`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f64 {
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
    hsum_pd(_mm256_add_pd(lo, hi))
}

/// Exact f64 tile over `w` buffered columns (a multiple of 4), dispatched on its shape (see
/// [`for_tiles`]).
///
/// # Safety
/// AVX2/FMA; the rows hold `w` values at 32-byte-aligned addresses.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f64(
    a: [*const f64; R],
    b: [*const f64; R],
    w: usize,
    ra: usize,
    rb: usize,
    diag: bool,
    pf: Prefetch,
) -> [[f64; R]; R] {
    // SAFETY (every arm): forwarded contract; the first ra / rb pointers are used.
    unsafe {
        match (diag, ra, rb) {
            (true, 4, _) => widen(dots_f64::<4, 4, true>(a, a, w, pf)),
            (true, 3, _) => widen(dots_f64::<3, 3, true>(head(a), head(a), w, pf)),
            (true, 2, _) => widen(dots_f64::<2, 2, true>(head(a), head(a), w, pf)),
            (true, _, _) => widen(dots_f64::<1, 1, true>(head(a), head(a), w, pf)),
            (false, _, 4) => widen(dots_f64::<2, 4, false>(head(a), b, w, pf)),
            (false, _, 3) => widen(dots_f64::<2, 3, false>(head(a), head(b), w, pf)),
            (false, _, 2) => widen(dots_f64::<2, 2, false>(head(a), head(b), w, pf)),
            (false, _, _) => widen(dots_f64::<2, 1, false>(head(a), head(b), w, pf)),
        }
    }
}

/// f32-lane tile over `n` columns, dispatched on its shape (see [`for_tiles`]).
///
/// # Safety
/// AVX2/FMA; the rows hold `n` readable values.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32(
    a: [*const f32; R],
    b: [*const f32; R],
    n: usize,
    ra: usize,
    rb: usize,
    diag: bool,
) -> [[f64; R]; R] {
    // SAFETY (every arm): forwarded contract; the first ra / rb pointers are used.
    unsafe {
        match (diag, ra, rb) {
            (true, 4, _) => widen(dots_f32::<4, 4, true>(a, a, n)),
            (true, 3, _) => widen(dots_f32::<3, 3, true>(head(a), head(a), n)),
            (true, 2, _) => widen(dots_f32::<2, 2, true>(head(a), head(a), n)),
            (true, _, _) => widen(dots_f32::<1, 1, true>(head(a), head(a), n)),
            (false, _, 4) => widen(dots_f32::<2, 4, false>(head(a), b, n)),
            (false, _, 3) => widen(dots_f32::<2, 3, false>(head(a), head(b), n)),
            (false, _, 2) => widen(dots_f32::<2, 2, false>(head(a), head(b), n)),
            (false, _, _) => widen(dots_f32::<2, 1, false>(head(a), head(b), n)),
        }
    }
}

/// The first K row pointers.
#[inline(always)]
fn head<P, const K: usize>(a: [*const P; R]) -> [*const P; K] {
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

/// Dot products <a_u, b_v> over `w` f64 columns (a multiple of 4); only u <= v when DIAG.
///
/// # Safety
/// AVX2/FMA; every pointer is 32-byte aligned and valid for `w` reads.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_f64<const RA: usize, const RB: usize, const DIAG: bool>(
    a: [*const f64; RA],
    b: [*const f64; RB],
    w: usize,
    pf: Prefetch,
) -> [[f64; RB]; RA] {
    let mut acc = [[_mm256_setzero_pd(); RB]; RA];
    let mut k = 0;
    while k < w {
        if k % 16 == 0 && k < pf.cols {
            for &r in &pf.rows[..pf.count] {
                // A prefetch never faults and does not access memory semantically.
                _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(k).cast::<i8>());
            }
        }
        // SAFETY: k + 4 <= w.
        let x: [__m256d; RA] = std::array::from_fn(|u| unsafe { _mm256_load_pd(a[u].add(k)) });
        for v in 0..RB {
            // SAFETY: k + 4 <= w.
            let y = if DIAG {
                x[v.min(RA - 1)]
            } else {
                unsafe { _mm256_load_pd(b[v].add(k)) }
            };
            for u in 0..RA {
                if !DIAG || u <= v {
                    acc[u][v] = _mm256_fmadd_pd(x[u], y, acc[u][v]);
                }
            }
        }
        k += 4;
    }
    super::reduce_tile(&acc, DIAG, |a| hsum_pd(a))
}

/// Dot products <a_u, b_v> over `n` f32 columns with 8 f32 lanes per product (the last
/// partial vector through masked loads); only u <= v when DIAG.
///
/// # Safety
/// AVX2/FMA; every pointer is valid for `n` reads.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_f32<const RA: usize, const RB: usize, const DIAG: bool>(
    a: [*const f32; RA],
    b: [*const f32; RB],
    n: usize,
) -> [[f64; RB]; RA] {
    let mut acc = [[_mm256_setzero_ps(); RB]; RA];
    let full = n / 8 * 8;
    let mut k = 0;
    while k < full {
        // SAFETY: k + 8 <= n.
        let x: [__m256; RA] = std::array::from_fn(|u| unsafe { _mm256_loadu_ps(a[u].add(k)) });
        // SAFETY: k + 8 <= n.
        unsafe { step_f32::<RA, RB, DIAG>(&mut acc, &x, b, k, None) };
        k += 8;
    }
    if k < n {
        // Masked loads read only the n - k valid values (and never fault past them).
        let m = tail_mask8(n - k);
        // SAFETY: the mask covers only valid columns.
        let x: [__m256; RA] =
            std::array::from_fn(|u| unsafe { _mm256_maskload_ps(a[u].add(k), m) });
        // SAFETY: the mask covers only valid columns.
        unsafe { step_f32::<RA, RB, DIAG>(&mut acc, &x, b, k, Some(m)) };
    }
    super::reduce_tile(&acc, DIAG, |a| hsum_ps(a))
}

/// One 8-column step of [`dots_f32`]: load b's vectors (through `mask` when given) and do the
/// FMAs.
///
/// # Safety
/// AVX2/FMA; columns k..k + 8 (or the masked ones) are valid in every row.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn step_f32<const RA: usize, const RB: usize, const DIAG: bool>(
    acc: &mut [[__m256; RB]; RA],
    x: &[__m256; RA],
    b: [*const f32; RB],
    k: usize,
    mask: Option<__m256i>,
) {
    for v in 0..RB {
        let y = if DIAG {
            x[v.min(RA - 1)]
        } else {
            // SAFETY: forwarded contract.
            unsafe {
                match mask {
                    None => _mm256_loadu_ps(b[v].add(k)),
                    Some(m) => _mm256_maskload_ps(b[v].add(k), m),
                }
            }
        };
        for u in 0..RA {
            if !DIAG || u <= v {
                acc[u][v] = _mm256_fmadd_ps(x[u], y, acc[u][v]);
            }
        }
    }
}
