//! Per-segment Gram matrices of T gradient vectors: the input of the Gram-based MTO methods
//! (PCGrad, MGDA, CAGrad, ...) and of per-layer gradient-conflict metrics.
//!
//! One pass over the T x P matrix: columns are cut into fixed blocks (and at segment
//! boundaries); each block's T row pieces stay in cache while every pair's dot product is
//! formed, so each cache line of the input is read from memory once. Sums are f64. Blocks are
//! grouped into fixed-size groups summed sequentially, groups run in parallel and are reduced in
//! index order, so the result does not depend on the number of threads.

use super::par::map_range;

use crate::error::{KernelError, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

const OP: &str = "grad_gram";
/// Values (T x P) from which the Gram's column groups run on rayon's pool; a smaller call runs
/// the same groups in the same order on the calling thread (the same sums, bit for bit):
/// entering the pool from outside costs tens of microseconds on a 2-vCPU VM. Measured (Zen 5,
/// 2 threads, calls interleaved, median): T = 2 x P = 65,536 14.5 GB/s on the calling thread vs
/// 3.0 on the pool, T = 2 x 524,288 35.0 vs 29.5, T = 8 x 131,072 21.5 vs 17.1, T = 16 x 65,536
/// 9.4 vs 6.2; from about 2M values the two are even and the pool wins the fastest calls.
pub const GRAM_PAR_MIN_VALUES: usize = 1 << 21;
/// Columns per cache block: T rows x 2048 f32 (64 KiB at T = 8) stay in L2 across all pairs.
const BLOCK: usize = 2048;
/// Blocks per unit of parallel work (summed in order inside it).
const BLOCKS_PER_GROUP: usize = 16;
/// Groups in flight at once; bounds the memory held by partial sums for huge P.
const GROUPS_PER_WAVE: usize = 512;

/// Whether the Gram's AVX-512 kernels prefetch each next block into L1 (T0) on this CPU rather
/// than into L2 (T1): T0 on AMD Zen 5 only, where it measured faster (false without AVX-512).
pub fn grad_gram_prefetches_into_l1() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::has_avx512() && avx512::prefetch_into_l1()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Per-segment and whole-vector Gram matrices of T gradient vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentedGram {
    /// Number of vectors (tasks).
    pub t: usize,
    /// One T x T row-major Gram matrix per segment, in segment order.
    pub segments: Vec<Vec<f64>>,
    /// The T x T row-major Gram matrix of the whole vectors (sum of the segments).
    pub total: Vec<f64>,
}

/// Which Gram matrix of a [`SegmentedGram`] to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GramPart {
    /// Segment `l` (a layer).
    Segment(usize),
    /// The whole vectors.
    Total,
}

impl SegmentedGram {
    /// Number of segments L.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }

    /// The T x T matrix of `part`. Panics if the segment index is out of range.
    pub fn matrix(&self, part: GramPart) -> &[f64] {
        match part {
            GramPart::Segment(l) => &self.segments[l],
            GramPart::Total => &self.total,
        }
    }

    /// Dot product <g_i, g_j> restricted to segment `seg`. Panics on an out-of-range index.
    pub fn dot(&self, seg: usize, i: usize, j: usize) -> f64 {
        self.segments[seg][i * self.t + j]
    }

    /// Euclidean norm of g_i restricted to segment `seg`.
    pub fn norm(&self, seg: usize, i: usize) -> f64 {
        self.dot(seg, i, i).max(0.0).sqrt()
    }

    /// Cosine between g_i and g_j restricted to segment `seg`; 0 when either piece is zero.
    pub fn cosine(&self, seg: usize, i: usize, j: usize) -> f64 {
        cosine_of(self.matrix(GramPart::Segment(seg)), self.t, i, j)
    }

    /// Dot product of the whole vectors g_i and g_j.
    pub fn total_dot(&self, i: usize, j: usize) -> f64 {
        self.total[i * self.t + j]
    }

    /// Euclidean norm of the whole vector g_i.
    pub fn total_norm(&self, i: usize) -> f64 {
        self.total_dot(i, i).max(0.0).sqrt()
    }

    /// Cosine between the whole vectors g_i and g_j; 0 when either is zero.
    pub fn total_cosine(&self, i: usize, j: usize) -> f64 {
        cosine_of(&self.total, self.t, i, j)
    }

    /// The T x T row-major cosine matrix of `part` (1 on the diagonal of non-zero vectors).
    pub fn cosine_matrix(&self, part: GramPart) -> Vec<f64> {
        let m = self.matrix(part);
        let t = self.t;
        (0..t * t).map(|k| cosine_of(m, t, k / t, k % t)).collect()
    }
}

/// Cosine from a Gram matrix, clamped to [-1, 1] against rounding; 0 for a zero vector.
fn cosine_of(m: &[f64], t: usize, i: usize, j: usize) -> f64 {
    let d = m[i * t + i] * m[j * t + j];
    if d > 0.0 {
        (m[i * t + j] / d.sqrt()).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// Checks `segment_ends` for `p` columns: non-empty, strictly increasing, first > 0, last == p.
pub(crate) fn check_segments(op: &'static str, p: usize, segment_ends: &[usize]) -> Result<()> {
    let Some(&last) = segment_ends.last() else {
        return Err(KernelError::new(
            op,
            "segment_ends is empty, expected at least one segment (last end == p)",
        ));
    };
    let mut prev = 0usize;
    for (l, &e) in segment_ends.iter().enumerate() {
        if e <= prev {
            return Err(KernelError::new(
                op,
                format!(
                    "segment_ends[{l}] = {e} is not greater than the previous end {prev}: \
                     ends must be strictly increasing and segments non-empty"
                ),
            ));
        }
        prev = e;
    }
    if last != p {
        return Err(KernelError::new(
            op,
            format!("last segment end is {last}, expected p = {p}"),
        ));
    }
    Ok(())
}

/// Per-segment and whole-vector Gram matrices of the rows of `g` (T x P row-major f32).
///
/// `segment_ends` are the exclusive ends of the L segments (strictly increasing, last == p).
/// Exact products and f64 sums (error ~1e-16 relative to sqrt(G_ii G_jj)), which the MTO
/// methods need on near-singular Gram matrices; bit-for-bit deterministic regardless of the
/// rayon thread count.
pub fn grad_gram(g: &[f32], t: usize, p: usize, segment_ends: &[usize]) -> Result<SegmentedGram> {
    gram(g, t, p, segment_ends, true)
}

/// [`grad_gram`] with products summed in f32 lanes inside each 2048-column block (block sums
/// added in f64): about twice the arithmetic rate, at a cosine error of about 1e-7 (at most
/// 1e-6 in the tests). For metrics (per-layer conflict logging), not for methods that solve
/// with the Gram matrix. Blocks outside f32's range fall back to exact sums. Deterministic.
pub fn grad_gram_fast(
    g: &[f32],
    t: usize,
    p: usize,
    segment_ends: &[usize],
) -> Result<SegmentedGram> {
    gram(g, t, p, segment_ends, false)
}

/// [`grad_gram`] (`exact`) or [`grad_gram_fast`].
fn gram(
    g: &[f32],
    t: usize,
    p: usize,
    segment_ends: &[usize],
    exact: bool,
) -> Result<SegmentedGram> {
    if t == 0 || p == 0 {
        return Err(KernelError::new(
            OP,
            format!("empty input: t = {t}, p = {p}, expected both >= 1"),
        ));
    }
    let Some(len) = t.checked_mul(p) else {
        return Err(KernelError::new(
            OP,
            format!("t * p overflows: t = {t}, p = {p}"),
        ));
    };
    crate::error::check_len(OP, "g", g.len(), len)?;
    check_segments(OP, p, segment_ends)?;

    let l_count = segment_ends.len();
    let mut segments = vec![vec![0.0f64; t * t]; l_count];
    let group_cols = BLOCK * BLOCKS_PER_GROUP;
    let n_groups = p.div_ceil(group_cols);
    let pool = n_groups > 1 && len >= GRAM_PAR_MIN_VALUES;
    let mut g0 = 0;
    while g0 < n_groups {
        let g1 = (g0 + GROUPS_PER_WAVE).min(n_groups);
        let partials = map_range(pool, g1 - g0, |k| {
            let c0 = (g0 + k) * group_cols;
            let c1 = (c0 + group_cols).min(p);
            group_partials(Rows { g, t, p }, segment_ends, c0..c1, exact)
        });
        // Fixed-order reduction: group index order, then segment order inside a group.
        for parts in partials {
            for (seg, part) in parts {
                for (acc, v) in segments[seg].iter_mut().zip(&part) {
                    *acc += v;
                }
            }
        }
        g0 = g1;
    }

    for m in &mut segments {
        mirror_upper(m, t);
    }
    let mut total = vec![0.0f64; t * t];
    for m in &segments {
        for (acc, v) in total.iter_mut().zip(m) {
            *acc += v;
        }
    }
    Ok(SegmentedGram { t, segments, total })
}

/// Copies the upper triangle onto the lower one.
fn mirror_upper(m: &mut [f64], t: usize) {
    for i in 0..t {
        for j in 0..i {
            m[i * t + j] = m[j * t + i];
        }
    }
}

/// The T x P input matrix.
#[derive(Clone, Copy)]
struct Rows<'a> {
    g: &'a [f32],
    t: usize,
    p: usize,
}

/// Upper-triangle partial Gram matrices of columns `cols`, one per segment touched.
fn group_partials(
    rows: Rows<'_>,
    segment_ends: &[usize],
    cols: std::ops::Range<usize>,
    exact: bool,
) -> Vec<(usize, Vec<f64>)> {
    let (t, c0, c1) = (rows.t, cols.start, cols.end);
    let mut out: Vec<(usize, Vec<f64>)> = Vec::new();
    let mut scratch = vec![0.0f64; t * t];
    let mut seg = segment_ends.partition_point(|&e| e <= c0);
    let mut c = c0;
    while c < c1 {
        let seg_end = segment_ends[seg];
        // Block boundaries on the global BLOCK grid, cut at segment ends.
        let b_end = ((c / BLOCK + 1) * BLOCK).min(seg_end).min(c1);
        if out.last().is_none_or(|(s, _)| *s != seg) {
            out.push((seg, vec![0.0f64; t * t]));
        }
        if let Some((_, acc)) = out.last_mut() {
            // Prefetch as much of the next block as lies in this group.
            let ahead = BLOCK.min(c1 - b_end);
            if exact {
                exact_block(rows, c..b_end, ahead, acc, &mut scratch);
            } else {
                fast_block(rows, c..b_end, ahead, acc, &mut scratch);
            }
        }
        c = b_end;
        if c == seg_end {
            seg += 1;
        }
    }
    out
}

/// Adds the exact upper triangle of the Gram matrix of columns `cols` = [c0, c1) into `acc`;
/// the AVX-512 kernel prefetches columns [c1, c1 + ahead) of every row meanwhile.
fn exact_block(
    rows: Rows<'_>,
    cols: std::ops::Range<usize>,
    ahead: usize,
    acc: &mut [f64],
    scratch: &mut [f64],
) {
    let Rows { g, t, p } = rows;
    let (c0, c1) = (cols.start, cols.end);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        unsafe { avx512::block_gram::<true>(g, t, p, c0, c1, ahead, scratch) };
        add_upper(acc, scratch, t);
        return;
    }
    block_gram_f64(g, t, p, c0, c1, ahead, acc);
}

/// A SIMD tile's dot products: `sum` of each accumulator's lanes (only u <= v when `diag`,
/// where the tile's two sides are the same rows; the rest stay 0).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn reduce_tile<T: Copy, const RA: usize, const RB: usize>(
    acc: &[[T; RB]; RA],
    diag: bool,
    sum: impl Fn(T) -> f64,
) -> [[f64; RB]; RA] {
    std::array::from_fn(|u| {
        std::array::from_fn(|v| if !diag || u <= v { sum(acc[u][v]) } else { 0.0 })
    })
}

/// acc += m on the upper triangle.
fn add_upper(acc: &mut [f64], m: &[f64], t: usize) {
    for i in 0..t {
        for j in i..t {
            acc[i * t + j] += m[i * t + j];
        }
    }
}

/// Adds the upper triangle of the Gram matrix of columns `cols` = [c0, c1) into `acc`
/// (for [`grad_gram_fast`]), prefetching columns [c1, c1 + ahead) of every row meanwhile.
///
/// The products of one block are summed in f32 lanes (at most BLOCK / 16 = 128 products per
/// lane), the lanes are reduced in f64 and only the block sums are added to the f64
/// accumulators: f32 FMAs do twice the work per instruction of f64 ones and need no
/// conversion, which is what makes T >= 8 memory-bound instead of compute-bound. The error is
/// a few f32 roundings relative to sqrt(G_ii G_jj) of the block (measured: at most ~1e-7 on
/// the tests' shapes, see `tests/grad_gram_cpu.rs`). Blocks where f32 could lose more than
/// that (a product overflowing, or rows so small that products fall below the f32 normal
/// range) are recomputed with exact f64 products.
fn fast_block(
    rows: Rows<'_>,
    cols: std::ops::Range<usize>,
    ahead: usize,
    acc: &mut [f64],
    scratch: &mut [f64],
) {
    let Rows { g, t, p } = rows;
    let (c0, c1) = (cols.start, cols.end);
    block_gram_f32(g, t, p, c0, c1, ahead, scratch);
    if f32_block_is_safe(g, t, p, c0, c1, scratch) {
        add_upper(acc, scratch, t);
    } else {
        exact_block(rows, cols, 0, acc, scratch);
    }
}

/// Smallest block sum of squares G_ii trusted from the f32 path (2^-100). Products lose
/// precision below 2^-126 (f32 subnormals), so a block of at most BLOCK columns can be off by
/// about BLOCK * 2^-150 absolute from underflow, which is below 2^-39 relative to any
/// sqrt(G_ii G_jj) >= 2^-100.
const F32_MIN_TRUSTED: f64 = 7.888_609_052_210_118e-31;

/// Whether the f32 block sums in `m` (upper triangle) are as accurate as f32 allows: every
/// entry finite (no product or sum overflowed; NaN inputs also take the exact path) and every
/// row either exactly zero in the block or with G_ii >= [`F32_MIN_TRUSTED`].
fn f32_block_is_safe(g: &[f32], t: usize, p: usize, c0: usize, c1: usize, m: &[f64]) -> bool {
    for i in 0..t {
        if !m[i * t + i..(i + 1) * t].iter().all(|v| v.is_finite()) {
            return false;
        }
        // An exactly zero row piece (a task's gradient on another task's head) has exact
        // products either way; only a non-zero tiny one needs f64.
        if m[i * t + i] < F32_MIN_TRUSTED && g[i * p + c0..i * p + c1].iter().any(|&x| x != 0.0) {
            return false;
        }
    }
    true
}

/// Writes the upper triangle of the block Gram matrix of columns [c0, c1) into `out`,
/// summing products in f32 lanes (see [`fast_block`]). The AVX-512 build prefetches the
/// `ahead` columns after c1 (the next block) so that memory reads overlap the FMAs.
fn block_gram_f32(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    ahead: usize,
    out: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { avx512::block_gram::<false>(g, t, p, c0, c1, ahead, out) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { block_gram_f32_avx2(g, t, p, c0, c1, out) };
            return;
        }
    }
    block_gram_f32_body::<false, 16, 2>(g, t, p, c0, c1, out);
}

/// The f32-lane block kernel with AVX2: the intrinsics of [`avx2::block_gram_f32`], or for
/// T > 192 (rows that do not fit its L1 chunks) [`block_gram_f32_body`] with 2 x 2 row tiles
/// of 16 f32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_gram_f32_avx2(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    out: &mut [f64],
) {
    if avx2::chunk_cols(t).is_some() {
        // SAFETY: AVX2 and FMA (this function's contract); the chunk fits.
        unsafe { avx2::block_gram_f32(g, t, p, (c0, c1), out) };
    } else {
        block_gram_f32_body::<true, 16, 2>(g, t, p, c0, c1, out);
    }
}

/// The f32-lane block kernel written for the vectoriser (AVX2 and portable builds): R x R
/// tiles of row pairs as in [`upper_tiles`], writing the upper triangle into `out`.
#[inline(always)]
fn block_gram_f32_body<const FMA: bool, const L: usize, const R: usize>(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    out: &mut [f64],
) {
    upper_tiles::<R>(g, t, p, (c0, c1), tile_dots_f32::<FMA, L, R>, |k, d| {
        out[k] = d;
    });
}

// Index loops over fixed-size arrays are what the vectoriser unrolls best here.
#[allow(clippy::needless_range_loop)]
/// All R x R dot products <a_u, b_v> with L independent f32 lanes per product; the lanes are
/// summed in f64 in a fixed pairwise order and the tail products are added exactly in f64.
#[inline(always)]
fn tile_dots_f32<const FMA: bool, const L: usize, const R: usize>(
    a: &[&[f32]; R],
    b: &[&[f32]; R],
) -> [[f64; R]; R] {
    let n = a[0].len();
    let full = n / L * L;
    let mut acc = [[[0.0f32; L]; R]; R];
    let mut k = 0;
    while k < full {
        let x: [&[f32; L]; R] =
            std::array::from_fn(|r| a[r][k..k + L].try_into().expect("chunk of L"));
        let y: [&[f32; L]; R] =
            std::array::from_fn(|r| b[r][k..k + L].try_into().expect("chunk of L"));
        for u in 0..R {
            for v in 0..R {
                for l in 0..L {
                    acc[u][v][l] = if FMA {
                        x[u][l].mul_add(y[v][l], acc[u][v][l])
                    } else {
                        x[u][l] * y[v][l] + acc[u][v][l]
                    };
                }
            }
        }
        k += L;
    }
    let mut out = [[0.0f64; R]; R];
    for u in 0..R {
        for v in 0..R {
            let mut lanes = [0.0f64; L];
            for l in 0..L {
                lanes[l] = acc[u][v][l] as f64;
            }
            let mut w = L;
            while w > 1 {
                w /= 2;
                for l in 0..w {
                    lanes[l] += lanes[l + w];
                }
            }
            let mut sum = lanes[0];
            for kk in full..n {
                sum += a[u][kk] as f64 * b[v][kk] as f64;
            }
            out[u][v] = sum;
        }
    }
    out
}

/// Adds the upper triangle of the Gram matrix of columns [c0, c1) into `acc` with exact f64
/// products and f64 sums: the reference the f32-lane kernels fall back to.
/// The AVX2 kernel prefetches columns up to c1 + ahead of every row meanwhile.
fn block_gram_f64(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    ahead: usize,
    acc: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            unsafe { block_gram_f64_avx512(g, t, p, c0, c1, acc) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { block_gram_f64_avx2(g, t, p, c0, c1, ahead, acc) };
            return;
        }
    }
    block_gram_f64_body::<false, 4, 2>(g, t, p, c0, c1, acc);
}

/// The f64 block kernel with AVX-512: 4 x 4 row tiles, 8 f64 lanes (one register per sum).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn block_gram_f64_avx512(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    acc: &mut [f64],
) {
    // With T <= 2 a 4 x 4 tile would mostly compute duplicates.
    if t <= 2 {
        block_gram_f64_body::<true, 8, 2>(g, t, p, c0, c1, acc);
    } else {
        block_gram_f64_body::<true, 8, 4>(g, t, p, c0, c1, acc);
    }
}

/// The f64 block kernel with AVX2: the intrinsics of [`avx2::block_gram_f64`], or for T > 192
/// [`block_gram_f64_body`] with 2 x 2 row tiles of 4 f64 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_gram_f64_avx2(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    ahead: usize,
    acc: &mut [f64],
) {
    if avx2::chunk_cols(t).is_some() {
        // SAFETY: AVX2 and FMA (this function's contract); the chunk fits.
        unsafe { avx2::block_gram_f64(g, t, p, (c0, c1), ahead, acc) };
    } else {
        block_gram_f64_body::<true, 4, 2>(g, t, p, c0, c1, acc);
    }
}

/// Multiply-add, fused when the caller's target has FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Walks R x R tiles of row pairs (upper block triangle) of columns [c0, c1); each loaded value
/// feeds R products. `put(i·t + j, dot)` receives each upper-triangle entry; a partial last
/// tile repeats the last row and drops the extra results.
#[inline(always)]
fn upper_tiles<const R: usize>(
    g: &[f32],
    t: usize,
    p: usize,
    (c0, c1): (usize, usize),
    dots: impl Fn(&[&[f32]; R], &[&[f32]; R]) -> [[f64; R]; R],
    mut put: impl FnMut(usize, f64),
) {
    let row = |i: usize| {
        let i = i.min(t - 1);
        &g[i * p + c0..i * p + c1]
    };
    let mut bi = 0;
    while bi < t {
        let a: [&[f32]; R] = std::array::from_fn(|u| row(bi + u));
        let mut bj = bi;
        while bj < t {
            let b: [&[f32]; R] = std::array::from_fn(|v| row(bj + v));
            let d = dots(&a, &b);
            for (u, du) in d.iter().enumerate() {
                for (v, &dv) in du.iter().enumerate() {
                    let (i, j) = (bi + u, bj + v);
                    if i < t && j < t && i <= j {
                        put(i * t + j, dv);
                    }
                }
            }
            bj += R;
        }
        bi += R;
    }
}

/// The f64 block kernel written for the vectoriser: adds the upper triangle of the block's
/// Gram matrix into `acc` (see [`upper_tiles`]).
#[inline(always)]
fn block_gram_f64_body<const FMA: bool, const L: usize, const R: usize>(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    acc: &mut [f64],
) {
    upper_tiles::<R>(g, t, p, (c0, c1), tile_dots_f64::<FMA, L, R>, |k, d| {
        acc[k] += d;
    });
}

// Index loops over fixed-size arrays are what the vectoriser unrolls best here.
#[allow(clippy::needless_range_loop)]
/// All R x R dot products <a_u, b_v> over equal-length slices, with L independent f64 lanes
/// per product (summed in a fixed order at the end).
#[inline(always)]
fn tile_dots_f64<const FMA: bool, const L: usize, const R: usize>(
    a: &[&[f32]; R],
    b: &[&[f32]; R],
) -> [[f64; R]; R] {
    let n = a[0].len();
    let full = n / L * L;
    let mut acc = [[[0.0f64; L]; R]; R];
    let mut k = 0;
    while k < full {
        let mut x = [[0.0f64; L]; R];
        let mut y = [[0.0f64; L]; R];
        for r in 0..R {
            let ca: &[f32; L] = a[r][k..k + L].try_into().expect("chunk of L");
            let cb: &[f32; L] = b[r][k..k + L].try_into().expect("chunk of L");
            for l in 0..L {
                x[r][l] = ca[l] as f64;
                y[r][l] = cb[l] as f64;
            }
        }
        for u in 0..R {
            for v in 0..R {
                for l in 0..L {
                    acc[u][v][l] = madd::<FMA>(x[u][l], y[v][l], acc[u][v][l]);
                }
            }
        }
        k += L;
    }
    let mut out = [[0.0f64; R]; R];
    for u in 0..R {
        for v in 0..R {
            // Fixed pairwise order over the lanes.
            let mut lanes = acc[u][v];
            let mut w = L;
            while w > 1 {
                w /= 2;
                for l in 0..w {
                    lanes[l] += lanes[l + w];
                }
            }
            let mut sum = lanes[0];
            for kk in full..n {
                sum = madd::<FMA>(a[u][kk] as f64, b[v][kk] as f64, sum);
            }
            out[u][v] = sum;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block kernel build: (g, t, p, c0, c1, out).
    type BlockKernel<'a> = &'a dyn Fn(&[f32], usize, usize, usize, usize, &mut [f64]);

    /// Uniform values in [-1, 1), with every 7th scaled by 30 (mixed magnitudes).
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|k| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32;
                if k % 7 == 0 { 30.0 * u } else { u }
            })
            .collect()
    }

    /// Checks every upper entry of `kernel`'s block Gram matrix against exact f64 sums, with
    /// `tol` relative to sqrt(G_ii G_jj); returns the worst relative error seen.
    fn check_kernel(kernel: BlockKernel<'_>, what: &str, tol: f64) -> f64 {
        let mut worst = 0.0f64;
        for (t, p, c0, c1) in [
            (1, 5, 0, 5),
            (2, 99, 1, 98),
            (3, 40, 0, 40),
            (4, 16, 0, 16),
            (5, 33, 2, 31),
            (7, 301, 3, 300),
            (8, 2048, 0, 2048),
            (9, 2048, 0, 2048),
            (13, 1000, 17, 1000),
            (16, 77, 1, 76),
            (33, 130, 0, 130),
            // More rows than the AVX2 chunks hold: the vectoriser's kernel.
            (200, 37, 3, 36),
        ] {
            let g = values(12345 + t as u64, t * p);
            let exact = |i: usize, j: usize| -> f64 {
                (c0..c1)
                    .map(|k| g[i * p + k] as f64 * g[j * p + k] as f64)
                    .sum()
            };
            // Poisoned below the diagonal and above: kernels that write must fill the upper
            // triangle, kernels that add start from zero there.
            let mut got = vec![0.0f64; t * t];
            kernel(&g, t, p, c0, c1, &mut got);
            for i in 0..t {
                for j in i..t {
                    let scale = (exact(i, i) * exact(j, j)).sqrt().max(1e-300);
                    let err = (got[i * t + j] - exact(i, j)).abs() / scale;
                    worst = worst.max(err);
                    assert!(
                        err <= tol,
                        "{what} t={t} n={} ({i},{j}) rel err {err}",
                        c1 - c0
                    );
                }
            }
        }
        worst
    }

    /// Every compiled variant of the exact f64 block kernel (portable, AVX2, AVX-512).
    #[test]
    fn every_f64_block_kernel_variant_matches_naive() {
        check_kernel(
            &|g, t, p, c0, c1, out| block_gram_f64_body::<false, 4, 2>(g, t, p, c0, c1, out),
            "portable",
            1e-12,
        );
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                // SAFETY: features checked.
                check_kernel(
                    &|g, t, p, c0, c1, out| unsafe { block_gram_f64_avx2(g, t, p, c0, c1, 0, out) },
                    "avx2",
                    1e-12,
                );
            }
            if has!("avx512f") {
                // SAFETY: features checked.
                check_kernel(
                    &|g, t, p, c0, c1, out| unsafe {
                        avx512::block_gram::<true>(g, t, p, c0, c1, 0, out)
                    },
                    "avx512 intrinsics",
                    1e-12,
                );
            }
            if has!("avx512f") && has!("fma") {
                // SAFETY: features checked.
                check_kernel(
                    &|g, t, p, c0, c1, out| unsafe { block_gram_f64_avx512(g, t, p, c0, c1, out) },
                    "avx512",
                    1e-12,
                );
            }
        }
    }

    /// Every compiled variant of the f32-lane block kernel (portable, AVX2, AVX-512 intrinsics,
    /// including masked tails and partial tiles). Measured worst error: about 1e-7 relative to
    /// sqrt(G_ii G_jj) (a few f32 roundings), against 1e-12 for the f64 kernels.
    #[test]
    fn every_f32_block_kernel_variant_matches_naive() {
        let tol = 1e-6;
        let mut worst = check_kernel(
            &|g, t, p, c0, c1, out| block_gram_f32_body::<false, 16, 2>(g, t, p, c0, c1, out),
            "portable f32",
            tol,
        );
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                // SAFETY: features checked.
                let w = check_kernel(
                    &|g, t, p, c0, c1, out| unsafe { block_gram_f32_avx2(g, t, p, c0, c1, out) },
                    "avx2 f32",
                    tol,
                );
                worst = worst.max(w);
            }
            if has!("avx512f") {
                // SAFETY: features checked.
                let w = check_kernel(
                    &|g, t, p, c0, c1, out| unsafe {
                        avx512::block_gram::<false>(g, t, p, c0, c1, 0, out)
                    },
                    "avx512 f32",
                    tol,
                );
                worst = worst.max(w);
            }
        }
        eprintln!("f32-lane block kernels: worst relative error {worst:.2e}");
        // Not exact: f32 sums really are in use (guards against a silent fall back to f64).
        assert!(worst > 1e-12, "{worst}");
    }

    /// Blocks the f32 path cannot represent fall back to exact f64 sums, and zero rows do not.
    #[test]
    fn out_of_f32_range_blocks_are_exact() {
        let (t, p) = (3, 300);
        let base = values(5, t * p);
        // Row 1 tiny (squares below f32's normal range), then huge (squares overflow f32).
        for scale in [1e-25f32, 1e25] {
            let mut g = base.clone();
            for x in &mut g[p..2 * p] {
                *x *= scale;
            }
            let mut scratch = vec![0.0f64; t * t];
            block_gram_f32(&g, t, p, 0, p, 0, &mut scratch);
            assert!(
                !f32_block_is_safe(&g, t, p, 0, p, &scratch),
                "scale {scale}"
            );
            let mut acc = vec![0.0f64; t * t];
            fast_block(Rows { g: &g, t, p }, 0..p, 0, &mut acc, &mut scratch);
            let mut want = vec![0.0f64; t * t];
            exact_block(Rows { g: &g, t, p }, 0..p, 0, &mut want, &mut scratch);
            assert_eq!(acc, want, "scale {scale}");
        }
        // A zero row piece is exact in f32 and keeps the fast path.
        let mut g = base.clone();
        g[p..2 * p].fill(0.0);
        let mut scratch = vec![0.0f64; t * t];
        block_gram_f32(&g, t, p, 0, p, 0, &mut scratch);
        assert!(f32_block_is_safe(&g, t, p, 0, p, &scratch));
        assert_eq!(
            (scratch[t + 1], scratch[1], scratch[t + 2]),
            (0.0, 0.0, 0.0)
        );
        // NaN input propagates (through the exact path).
        let mut g = base;
        g[7] = f32::NAN;
        let mut acc = vec![0.0f64; t * t];
        fast_block(Rows { g: &g, t, p }, 0..p, 0, &mut acc, &mut scratch);
        assert!(acc[0].is_nan());
    }

    /// Columns past one wave of groups (the partial sums held at once): the second wave's
    /// groups must start where the first wave's end, and segments may straddle the waves.
    #[test]
    fn more_columns_than_one_wave_of_groups() {
        let wave = GROUPS_PER_WAVE * BLOCKS_PER_GROUP * BLOCK;
        let (t, p) = (2, wave + 40_001);
        let g = values(77, t * p);
        assert!(t * p >= GRAM_PAR_MIN_VALUES, "runs on the pool");
        // A small first segment, one ending just before the wave boundary, one straddling it.
        let ends = [1000, wave - 100, wave + 50, p];
        let dot = |i: usize, j: usize, r: std::ops::Range<usize>| -> f64 {
            r.map(|k| g[i * p + k] as f64 * g[j * p + k] as f64).sum()
        };
        // Reference (0,0), (0,1), (1,1) per segment, then over the whole vector.
        let pairs = [(0, 0), (0, 1), (1, 1)];
        let mut start = 0;
        let mut want: Vec<[f64; 3]> = Vec::new();
        for &e in &ends {
            want.push(pairs.map(|(i, j)| dot(i, j, start..e)));
            start = e;
        }
        let total = want
            .iter()
            .fold([0.0; 3], |a, w| [a[0] + w[0], a[1] + w[1], a[2] + w[2]]);
        for exact in [true, false] {
            let got = gram(&g, t, p, &ends, exact).expect("valid input");
            let tol = if exact { 1e-12 } else { 1e-6 };
            for (l, w) in want.iter().enumerate() {
                for (k, &(i, j)) in pairs.iter().enumerate() {
                    let scale = (w[2 * i] * w[2 * j]).sqrt();
                    let err = (got.dot(l, i, j) - w[k]).abs() / scale;
                    assert!(err <= tol, "exact {exact} seg {l} ({i},{j}) rel err {err}");
                }
            }
            let scale = (total[0] * total[2]).sqrt();
            let err = (got.total_dot(0, 1) - total[1]).abs() / scale;
            assert!(err <= tol, "exact {exact} total rel err {err}");
        }
    }

    /// The CPUID decode behind the prefetch hint agrees with the kernel's own decode.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn prefetch_hint_follows_the_cpu_family() {
        let info = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let field = |name: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        };
        let zen5 = field("vendor_id").as_deref() == Some("AuthenticAMD")
            && field("cpu family").as_deref() == Some("26");
        assert_eq!(
            avx512::prefetch_into_l1(),
            zen5,
            "vendor {:?}, family {:?}",
            field("vendor_id"),
            field("cpu family")
        );
    }
}
