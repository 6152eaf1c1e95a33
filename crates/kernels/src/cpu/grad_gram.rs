//! Per-segment Gram matrices of T gradient vectors: the input of the Gram-based MTO methods
//! (PCGrad, MGDA, CAGrad, ...) and of per-layer gradient-conflict metrics.
//!
//! One pass over the T x P matrix: columns are cut into fixed blocks (and at segment
//! boundaries); each block's T row pieces stay in cache while every pair's dot product is
//! formed, so each cache line of the input is read from memory once. Sums are f64. Blocks are
//! grouped into fixed-size groups summed sequentially, groups run in parallel and are reduced in
//! index order, so the result does not depend on the number of threads.

use rayon::prelude::*;

use crate::error::{KernelError, Result};

const OP: &str = "grad_gram";
/// Columns per cache block: T rows x 2048 f32 (64 KiB at T = 8) stay in L2 across all pairs.
const BLOCK: usize = 2048;
/// Blocks per unit of parallel work (summed in order inside it).
const BLOCKS_PER_GROUP: usize = 16;
/// Groups in flight at once; bounds the memory held by partial sums for huge P.
const GROUPS_PER_WAVE: usize = 512;

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
/// Accumulates in f64; bit-for-bit deterministic regardless of the rayon thread count.
pub fn grad_gram(g: &[f32], t: usize, p: usize, segment_ends: &[usize]) -> Result<SegmentedGram> {
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
    let mut g0 = 0;
    while g0 < n_groups {
        let g1 = (g0 + GROUPS_PER_WAVE).min(n_groups);
        let partials: Vec<Vec<(usize, Vec<f64>)>> = (g0..g1)
            .into_par_iter()
            .map(|grp| {
                let c0 = grp * group_cols;
                let c1 = (c0 + group_cols).min(p);
                group_partials(g, t, p, segment_ends, c0, c1)
            })
            .collect();
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

/// Upper-triangle partial Gram matrices of columns [c0, c1), one per segment touched.
fn group_partials(
    g: &[f32],
    t: usize,
    p: usize,
    segment_ends: &[usize],
    c0: usize,
    c1: usize,
) -> Vec<(usize, Vec<f64>)> {
    let mut out: Vec<(usize, Vec<f64>)> = Vec::new();
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
            block_gram(g, t, p, c, b_end, acc);
        }
        c = b_end;
        if c == seg_end {
            seg += 1;
        }
    }
    out
}

/// Adds the upper triangle of the Gram matrix of columns [c0, c1) into `acc`.
fn block_gram(g: &[f32], t: usize, p: usize, c0: usize, c1: usize, acc: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            unsafe { block_gram_avx512(g, t, p, c0, c1, acc) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { block_gram_avx2(g, t, p, c0, c1, acc) };
            return;
        }
    }
    block_gram_body::<false, 4, 2>(g, t, p, c0, c1, acc);
}

/// The block kernel with AVX-512: 4 x 4 row tiles, 8 f64 lanes (one register per accumulator).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn block_gram_avx512(g: &[f32], t: usize, p: usize, c0: usize, c1: usize, acc: &mut [f64]) {
    // With T <= 2 a 4 x 4 tile would mostly compute duplicates.
    if t <= 2 {
        block_gram_body::<true, 8, 2>(g, t, p, c0, c1, acc);
    } else {
        block_gram_body::<true, 8, 4>(g, t, p, c0, c1, acc);
    }
}

/// The block kernel with AVX2: 2 x 2 row tiles, 4 f64 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_gram_avx2(g: &[f32], t: usize, p: usize, c0: usize, c1: usize, acc: &mut [f64]) {
    block_gram_body::<true, 4, 2>(g, t, p, c0, c1, acc);
}

/// Multiply-add, fused when the caller's target has FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Walks R x R tiles of row pairs (upper block triangle); each loaded value feeds R products.
/// A partial last tile repeats the last row and drops the extra results.
#[inline(always)]
fn block_gram_body<const FMA: bool, const L: usize, const R: usize>(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    acc: &mut [f64],
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
            let d = tile_dots::<FMA, L, R>(&a, &b);
            for (u, du) in d.iter().enumerate() {
                for (v, &dv) in du.iter().enumerate() {
                    let (i, j) = (bi + u, bj + v);
                    if i < t && j < t && i <= j {
                        acc[i * t + j] += dv;
                    }
                }
            }
            bj += R;
        }
        bi += R;
    }
}

// Index loops over fixed-size arrays are what the vectoriser unrolls best here.
#[allow(clippy::needless_range_loop)]
/// All R x R dot products <a_u, b_v> over equal-length slices, with L independent f64 lanes
/// per product (summed in a fixed order at the end).
#[inline(always)]
fn tile_dots<const FMA: bool, const L: usize, const R: usize>(
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

    /// Every compiled variant of the block kernel (portable, AVX2, AVX-512) against a naive sum.
    #[test]
    fn every_block_kernel_variant_matches_naive() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        };
        for (t, p, c0, c1) in [
            (1, 5, 0, 5),
            (2, 99, 1, 98),
            (7, 301, 3, 300),
            (9, 2048, 0, 2048),
            (16, 77, 1, 76),
        ] {
            let g: Vec<f32> = (0..t * p).map(|_| next()).collect();
            let mut want = vec![0.0f64; t * t];
            for i in 0..t {
                for j in i..t {
                    want[i * t + j] = (c0..c1)
                        .map(|k| g[i * p + k] as f64 * g[j * p + k] as f64)
                        .sum();
                }
            }
            let check = |got: &[f64], what: &str| {
                for i in 0..t {
                    for j in i..t {
                        let (a, b) = (got[i * t + j], want[i * t + j]);
                        assert!(
                            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                            "{what} ({i},{j}) {a} {b}"
                        );
                    }
                }
            };
            let mut got = vec![0.0f64; t * t];
            block_gram_body::<false, 4, 2>(&g, t, p, c0, c1, &mut got);
            check(&got, "portable");
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") && has!("fma") {
                    let mut got = vec![0.0f64; t * t];
                    // SAFETY: features checked.
                    unsafe { block_gram_avx2(&g, t, p, c0, c1, &mut got) };
                    check(&got, "avx2");
                }
                if has!("avx512f") && has!("fma") {
                    let mut got = vec![0.0f64; t * t];
                    // SAFETY: features checked.
                    unsafe { block_gram_avx512(&g, t, p, c0, c1, &mut got) };
                    check(&got, "avx512");
                }
            }
        }
    }
}
