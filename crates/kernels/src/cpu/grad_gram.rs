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
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { block_gram_avx2(g, t, p, c0, c1, acc) };
            return;
        }
    }
    block_gram_body::<false>(g, t, p, c0, c1, acc);
}

/// The block kernel compiled with AVX2 + FMA enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_gram_avx2(g: &[f32], t: usize, p: usize, c0: usize, c1: usize, acc: &mut [f64]) {
    block_gram_body::<true>(g, t, p, c0, c1, acc);
}

/// Lanes of independent f64 accumulators (lets the compiler vectorise without reassociating).
const LANES: usize = 8;

/// Multiply-add, fused when the caller's target has FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Pairs are formed on 2 x 2 row tiles so each loaded value feeds two products.
#[inline(always)]
fn block_gram_body<const FMA: bool>(
    g: &[f32],
    t: usize,
    p: usize,
    c0: usize,
    c1: usize,
    acc: &mut [f64],
) {
    let row = |i: usize| &g[i * p + c0..i * p + c1];
    let mut i = 0;
    while i < t {
        let i2 = i + 1 < t;
        let mut j = i;
        while j < t {
            let j2 = j + 1 < t;
            if i2 && j2 {
                let [d00, d01, d10, d11] = dot2x2::<FMA>(row(i), row(i + 1), row(j), row(j + 1));
                acc[i * t + j] += d00;
                acc[i * t + j + 1] += d01;
                // (i+1, j) is below the diagonal when i == j: it mirrors (i, i+1).
                if j > i {
                    acc[(i + 1) * t + j] += d10;
                }
                acc[(i + 1) * t + j + 1] += d11;
            } else if i2 {
                // Last single column j of the tile row.
                let [d0, d1] = dot2x1::<FMA>(row(i), row(i + 1), row(j));
                acc[i * t + j] += d0;
                if j > i {
                    acc[(i + 1) * t + j] += d1;
                }
            } else {
                let [d0, _] = dot2x1::<FMA>(row(i), row(i), row(j));
                acc[i * t + j] += d0;
            }
            j += 2;
        }
        i += 2;
    }
}

/// Sums the lanes in a fixed tree order.
#[inline(always)]
fn hsum(a: &[f64; LANES]) -> f64 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Dot products <a0,b0>, <a0,b1>, <a1,b0>, <a1,b1> over equal-length slices.
#[inline(always)]
fn dot2x2<const FMA: bool>(a0: &[f32], a1: &[f32], b0: &[f32], b1: &[f32]) -> [f64; 4] {
    let n = a0.len();
    let (a1, b0, b1) = (&a1[..n], &b0[..n], &b1[..n]);
    let mut s00 = [0.0f64; LANES];
    let mut s01 = [0.0f64; LANES];
    let mut s10 = [0.0f64; LANES];
    let mut s11 = [0.0f64; LANES];
    let full = n / LANES * LANES;
    let mut k = 0;
    while k < full {
        for l in 0..LANES {
            let x0 = a0[k + l] as f64;
            let x1 = a1[k + l] as f64;
            let y0 = b0[k + l] as f64;
            let y1 = b1[k + l] as f64;
            s00[l] = madd::<FMA>(x0, y0, s00[l]);
            s01[l] = madd::<FMA>(x0, y1, s01[l]);
            s10[l] = madd::<FMA>(x1, y0, s10[l]);
            s11[l] = madd::<FMA>(x1, y1, s11[l]);
        }
        k += LANES;
    }
    let mut r = [hsum(&s00), hsum(&s01), hsum(&s10), hsum(&s11)];
    for k in full..n {
        let (x0, x1, y0, y1) = (a0[k] as f64, a1[k] as f64, b0[k] as f64, b1[k] as f64);
        r[0] = madd::<FMA>(x0, y0, r[0]);
        r[1] = madd::<FMA>(x0, y1, r[1]);
        r[2] = madd::<FMA>(x1, y0, r[2]);
        r[3] = madd::<FMA>(x1, y1, r[3]);
    }
    r
}

/// Dot products <a0,b>, <a1,b> over equal-length slices.
#[inline(always)]
fn dot2x1<const FMA: bool>(a0: &[f32], a1: &[f32], b: &[f32]) -> [f64; 2] {
    let n = a0.len();
    let (a1, b) = (&a1[..n], &b[..n]);
    let mut s0 = [0.0f64; LANES];
    let mut s1 = [0.0f64; LANES];
    let full = n / LANES * LANES;
    let mut k = 0;
    while k < full {
        for l in 0..LANES {
            let y = b[k + l] as f64;
            s0[l] = madd::<FMA>(a0[k + l] as f64, y, s0[l]);
            s1[l] = madd::<FMA>(a1[k + l] as f64, y, s1[l]);
        }
        k += LANES;
    }
    let mut r = [hsum(&s0), hsum(&s1)];
    for k in full..n {
        let y = b[k] as f64;
        r[0] = madd::<FMA>(a0[k] as f64, y, r[0]);
        r[1] = madd::<FMA>(a1[k] as f64, y, r[1]);
    }
    r
}
