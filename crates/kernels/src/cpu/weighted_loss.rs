//! Fused weighted multi-task loss, forward and backward in one pass over the logits.
//!
//! The logits of all heads are packed per sample: row i is `[head 0 | head 1 | ... ]`, task t
//! owning columns `offsets[t]..offsets[t+1]`. Each task's mean loss over its valid samples is
//! returned (for logging, PBT and loss-based methods) and the gradient of
//! `L = sum_t p_t * mean_loss_t` is written: `p_t / n_t * (softmax - onehot)` for softmax
//! cross-entropy, `p_t / (n_t * C_t) * (sigmoid - target)` for binary cross-entropy.
//! Row losses are summed in f64 in row order, so results are deterministic.

use rayon::prelude::*;

use crate::error::{KernelError, Result, check_len};

/// Packed multi-head layout: task t owns columns `offsets[t]..offsets[t+1]` of each row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    offsets: Vec<usize>,
}

impl TaskLayout {
    /// Builds a layout from T+1 offsets (first 0, strictly increasing; the last is the row width).
    pub fn new(offsets: Vec<usize>) -> Result<Self> {
        const OP: &str = "TaskLayout::new";
        if offsets.len() < 2 {
            return Err(KernelError::new(
                OP,
                format!("{} offsets given, expected T + 1 >= 2", offsets.len()),
            ));
        }
        if offsets[0] != 0 {
            return Err(KernelError::new(
                OP,
                format!("offsets[0] = {}, expected 0", offsets[0]),
            ));
        }
        for t in 1..offsets.len() {
            if offsets[t] <= offsets[t - 1] {
                return Err(KernelError::new(
                    OP,
                    format!(
                        "offsets[{t}] = {} is not greater than offsets[{}] = {}: every task \
                         needs at least one column",
                        offsets[t],
                        t - 1,
                        offsets[t - 1]
                    ),
                ));
            }
        }
        if u32::try_from(offsets[offsets.len() - 1]).is_err() {
            return Err(KernelError::new(OP, "row width does not fit in u32"));
        }
        Ok(Self { offsets })
    }

    /// Builds a layout from the number of columns (classes) of each task.
    pub fn from_sizes(sizes: &[usize]) -> Result<Self> {
        let mut offsets = Vec::with_capacity(sizes.len() + 1);
        offsets.push(0usize);
        for &c in sizes {
            let last = offsets[offsets.len() - 1];
            offsets.push(last.saturating_add(c));
        }
        Self::new(offsets)
    }

    /// Number of tasks T.
    pub fn num_tasks(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Row width: total columns of all heads.
    pub fn width(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// The T + 1 offsets.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Columns of task `t`. Panics if `t >= T`.
    pub fn range(&self, t: usize) -> std::ops::Range<usize> {
        self.offsets[t]..self.offsets[t + 1]
    }
}

/// Inputs of the softmax cross-entropy variant (one multi-class label per sample and task).
#[derive(Clone, Copy, Debug)]
pub struct WeightedCeInput<'a> {
    /// Column layout of the heads.
    pub layout: &'a TaskLayout,
    /// Number of samples (rows).
    pub n: usize,
    /// Logits, n x width row-major.
    pub logits: &'a [f32],
    /// Class index per sample and task within that task's head, n x T; `ignore_index` skips.
    pub targets: &'a [i64],
    /// Optional n x T mask: a sample counts for task t only where the mask is nonzero.
    pub mask: Option<&'a [u8]>,
    /// Task weights p_t, length T.
    pub weights: &'a [f32],
    /// Target value meaning "no label" (PyTorch's default is -100).
    pub ignore_index: i64,
}

/// Inputs of the sigmoid binary cross-entropy variant (one target per logit).
#[derive(Clone, Copy, Debug)]
pub struct WeightedBceInput<'a> {
    /// Column layout of the heads (a binary attribute is a task with one column).
    pub layout: &'a TaskLayout,
    /// Number of samples (rows).
    pub n: usize,
    /// Logits, n x width row-major.
    pub logits: &'a [f32],
    /// Targets in [0, 1] (hard or soft labels), n x width.
    pub targets: &'a [f32],
    /// Optional n x T mask: a sample counts for task t only where the mask is nonzero.
    pub mask: Option<&'a [u8]>,
    /// Task weights p_t, length T.
    pub weights: &'a [f32],
}

/// Losses of one fused call.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedLossOutput {
    /// Mean loss of each task over its valid samples (0 for a task with none).
    pub task_loss: Vec<f32>,
    /// Number of valid samples n_t of each task.
    pub counts: Vec<usize>,
    /// The weighted loss sum_t p_t * task_loss_t.
    pub total: f32,
}

/// Rows per unit of parallel work; row losses inside are summed in order, then chunks in order.
const ROWS_PER_CHUNK: usize = 64;

/// Fused softmax cross-entropy: per-task mean losses, and if `dlogits` (n x width) is given,
/// the gradient of `sum_t p_t * loss_t` written into it (every element overwritten).
pub fn weighted_ce_loss(
    input: &WeightedCeInput<'_>,
    dlogits: Option<&mut [f32]>,
) -> Result<WeightedLossOutput> {
    const OP: &str = "weighted_ce_loss";
    let layout = input.layout;
    let (n, t_count, width) = (input.n, layout.num_tasks(), layout.width());
    check_common(OP, n, layout, input.logits, input.mask, input.weights)?;
    check_len(OP, "targets", input.targets.len(), n * t_count)?;
    let valid = |i: usize, t: usize| -> Result<bool> {
        let y = input.targets[i * t_count + t];
        let masked_in = input.mask.is_none_or(|m| m[i * t_count + t] != 0);
        if y == input.ignore_index || !masked_in {
            return Ok(false);
        }
        let c = layout.range(t).len();
        if y < 0 || y as u64 >= c as u64 {
            return Err(KernelError::new(
                OP,
                format!(
                    "targets[row {i}, task {t}] = {y} is outside [0, {c}) and is not the \
                     ignore_index {}",
                    input.ignore_index
                ),
            ));
        }
        Ok(true)
    };
    let counts = count_rows(n, t_count, valid)?;
    let scales = grad_scales(input.weights, &counts, |_| 1);
    let row_loss = |i: usize, drow: Option<&mut [f32]>, sums: &mut [f64]| {
        let row = &input.logits[i * width..(i + 1) * width];
        let mut drow = drow;
        for t in 0..t_count {
            let r = layout.range(t);
            let y = input.targets[i * t_count + t];
            let masked_in = input.mask.is_none_or(|m| m[i * t_count + t] != 0);
            let ok = masked_in && y != input.ignore_index;
            match drow.as_deref_mut() {
                Some(d) if ok => {
                    sums[t] +=
                        ce_segment(&row[r.clone()], y as usize, Some((&mut d[r], scales[t])));
                }
                Some(d) => d[r].fill(0.0),
                None if ok => sums[t] += ce_segment(&row[r], y as usize, None),
                None => {}
            }
        }
    };
    let sums = run_rows(OP, n, width, t_count, dlogits, row_loss)?;
    Ok(finish(sums, counts, input.weights))
}

/// Fused sigmoid binary cross-entropy: per-task mean losses (mean over valid samples and the
/// task's columns), and if `dlogits` is given, the gradient of `sum_t p_t * loss_t`.
pub fn weighted_bce_loss(
    input: &WeightedBceInput<'_>,
    dlogits: Option<&mut [f32]>,
) -> Result<WeightedLossOutput> {
    const OP: &str = "weighted_bce_loss";
    let layout = input.layout;
    let (n, t_count, width) = (input.n, layout.num_tasks(), layout.width());
    check_common(OP, n, layout, input.logits, input.mask, input.weights)?;
    check_len(OP, "targets", input.targets.len(), n * width)?;
    // Chunked so the scan stays a plain vectorised loop; the first bad chunk in order wins.
    let bad = input
        .targets
        .par_chunks(1 << 16)
        .enumerate()
        .filter_map(|(c, ys)| {
            let k = ys.iter().position(|y| !(0.0..=1.0).contains(y))?;
            Some((c << 16) + k)
        })
        .min();
    if let Some(k) = bad {
        return Err(KernelError::new(
            OP,
            format!(
                "targets[row {}, column {}] = {} is outside [0, 1]",
                k / width,
                k % width,
                input.targets[k]
            ),
        ));
    }
    let counts = count_rows(n, t_count, |i, t| {
        Ok(input.mask.is_none_or(|m| m[i * t_count + t] != 0))
    })?;
    let scales = grad_scales(input.weights, &counts, |t| layout.range(t).len());
    let col_task: Vec<usize> = (0..t_count)
        .flat_map(|t| layout.range(t).map(move |_| t))
        .collect();
    let row_loss = |i: usize, drow: Option<&mut [f32]>, sums: &mut [f64]| {
        let row = &input.logits[i * width..(i + 1) * width];
        let yrow = &input.targets[i * width..(i + 1) * width];
        let valid = |t: usize| input.mask.is_none_or(|m| m[i * t_count + t] != 0);
        let mut drow = drow;
        // Pieces of BCE_PIECE columns: per-column scale (0 where the task is masked out), then
        // an elementwise kernel that vectorises across columns (and so across 1-column tasks).
        let mut c0 = 0;
        while c0 < width {
            let c1 = (c0 + BCE_PIECE).min(width);
            let k = c1 - c0;
            let mut scale = [0.0f32; BCE_PIECE];
            let mut loss = [0.0f32; BCE_PIECE];
            for (sc, &t) in scale[..k].iter_mut().zip(&col_task[c0..c1]) {
                *sc = if valid(t) { scales[t] } else { 0.0 };
            }
            let d = drow.as_deref_mut().map(|d| &mut d[c0..c1]);
            bce_elems(&row[c0..c1], &yrow[c0..c1], &scale[..k], d, &mut loss[..k]);
            for (&l, &t) in loss[..k].iter().zip(&col_task[c0..c1]) {
                if valid(t) {
                    sums[t] += l as f64;
                }
            }
            c0 = c1;
        }
    };
    let mut sums = run_rows(OP, n, width, t_count, dlogits, row_loss)?;
    // Mean over the task's columns as well as its samples.
    for (t, s) in sums.iter_mut().enumerate() {
        *s /= layout.range(t).len() as f64;
    }
    Ok(finish(sums, counts, input.weights))
}

/// Valid samples per task, counted in parallel row chunks; the first error in row order wins.
fn count_rows(
    n: usize,
    t_count: usize,
    valid: impl Fn(usize, usize) -> Result<bool> + Sync,
) -> Result<Vec<usize>> {
    let per_chunk: Vec<Result<Vec<usize>>> = (0..n.div_ceil(ROWS_PER_CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut counts = vec![0usize; t_count];
            for i in c * ROWS_PER_CHUNK..((c + 1) * ROWS_PER_CHUNK).min(n) {
                for (t, k) in counts.iter_mut().enumerate() {
                    *k += usize::from(valid(i, t)?);
                }
            }
            Ok(counts)
        })
        .collect();
    let mut counts = vec![0usize; t_count];
    for chunk in per_chunk {
        for (a, b) in counts.iter_mut().zip(chunk?) {
            *a += b;
        }
    }
    Ok(counts)
}

/// Shape checks shared by both variants.
fn check_common(
    op: &'static str,
    n: usize,
    layout: &TaskLayout,
    logits: &[f32],
    mask: Option<&[u8]>,
    weights: &[f32],
) -> Result<()> {
    if n == 0 {
        return Err(KernelError::new(op, "empty batch: n = 0, expected n >= 1"));
    }
    let t = layout.num_tasks();
    let Some(len) = n.checked_mul(layout.width()) else {
        return Err(KernelError::new(op, "n * width overflows"));
    };
    check_len(op, "logits", logits.len(), len)?;
    check_len(op, "weights", weights.len(), t)?;
    if let Some(m) = mask {
        check_len(op, "mask", m.len(), n * t)?;
    }
    if let Some(k) = weights.iter().position(|w| !w.is_finite()) {
        return Err(KernelError::new(
            op,
            format!("weights[{k}] = {} is not finite", weights[k]),
        ));
    }
    Ok(())
}

/// Gradient scale of each task: p_t / (n_t * cols_t), 0 for a task with no valid sample.
fn grad_scales(weights: &[f32], counts: &[usize], cols: impl Fn(usize) -> usize) -> Vec<f32> {
    counts
        .iter()
        .enumerate()
        .map(|(t, &c)| {
            if c == 0 {
                0.0
            } else {
                (weights[t] as f64 / (c as f64 * cols(t) as f64)) as f32
            }
        })
        .collect()
}

/// Runs `row_loss` over all rows in parallel chunks; returns per-task loss sums reduced in
/// chunk order (deterministic).
fn run_rows<F>(
    op: &'static str,
    n: usize,
    width: usize,
    t_count: usize,
    dlogits: Option<&mut [f32]>,
    row_loss: F,
) -> Result<Vec<f64>>
where
    F: Fn(usize, Option<&mut [f32]>, &mut [f64]) + Sync,
{
    let chunk_sums: Vec<Vec<f64>> = match dlogits {
        Some(d) => {
            check_len(op, "dlogits", d.len(), n * width)?;
            d.par_chunks_mut(ROWS_PER_CHUNK * width)
                .enumerate()
                .map(|(c, dchunk)| {
                    let mut sums = vec![0.0f64; t_count];
                    for (k, drow) in dchunk.chunks_exact_mut(width).enumerate() {
                        row_loss(c * ROWS_PER_CHUNK + k, Some(drow), &mut sums);
                    }
                    sums
                })
                .collect()
        }
        None => (0..n.div_ceil(ROWS_PER_CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut sums = vec![0.0f64; t_count];
                for i in c * ROWS_PER_CHUNK..((c + 1) * ROWS_PER_CHUNK).min(n) {
                    row_loss(i, None, &mut sums);
                }
                sums
            })
            .collect(),
    };
    let mut sums = vec![0.0f64; t_count];
    for cs in chunk_sums {
        for (a, b) in sums.iter_mut().zip(cs) {
            *a += b;
        }
    }
    Ok(sums)
}

/// Turns loss sums into means and the weighted total.
fn finish(sums: Vec<f64>, counts: Vec<usize>, weights: &[f32]) -> WeightedLossOutput {
    let task_loss: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| if c == 0 { 0.0 } else { s / c as f64 })
        .collect();
    let total = task_loss
        .iter()
        .zip(weights)
        .map(|(&l, &w)| l * w as f64)
        .sum::<f64>() as f32;
    WeightedLossOutput {
        task_loss: task_loss.iter().map(|&l| l as f32).collect(),
        counts,
        total,
    }
}

/// Cross-entropy of one head's logits `x` with target class `y` (max-subtracted log-sum-exp);
/// writes `scale * (softmax - onehot)` into `grad` when given. Returns the loss. Dispatches to
/// a build of the same code for the widest vector unit the CPU has.
fn ce_segment(x: &[f32], y: usize, grad: Option<(&mut [f32], f32)>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { ce_segment_avx512(x, y, grad) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { ce_segment_avx2(x, y, grad) };
        }
    }
    ce_segment_body(x, y, grad)
}

/// [`ce_segment_body`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn ce_segment_avx512(x: &[f32], y: usize, grad: Option<(&mut [f32], f32)>) -> f64 {
    ce_segment_body(x, y, grad)
}

/// [`ce_segment_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ce_segment_avx2(x: &[f32], y: usize, grad: Option<(&mut [f32], f32)>) -> f64 {
    ce_segment_body(x, y, grad)
}

/// The portable body of [`ce_segment`].
#[inline(always)]
fn ce_segment_body(x: &[f32], y: usize, grad: Option<(&mut [f32], f32)>) -> f64 {
    let m = lanes_max(x);
    let s = match grad {
        Some((d, scale)) => {
            // Keep exp(x - m) in the output row (in L1) to avoid a second exp pass.
            let s = exp_shifted_store(x, m, d);
            let k = scale / s;
            for v in d.iter_mut() {
                *v *= k;
            }
            d[y] -= scale;
            s
        }
        None => exp_shifted_sum(x, m),
    };
    (m - x[y]) as f64 + (s as f64).ln()
}

/// Maximum of a non-empty slice (lane-wise, so it vectorises; max is exact in any order).
#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut xc = x.chunks_exact(LANES);
    for xs in &mut xc {
        for l in 0..LANES {
            acc[l] = if xs[l] > acc[l] { xs[l] } else { acc[l] };
        }
    }
    let mut m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in xc.remainder() {
        m = m.max(v);
    }
    m
}

/// Lanes of independent accumulators (vectorisable without reassociation).
const LANES: usize = 16;

/// Writes exp(x - m) into `d` and returns its sum.
#[inline(always)]
fn exp_shifted_store(x: &[f32], m: f32, d: &mut [f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut xc = x.chunks_exact(LANES);
    let mut dc = d.chunks_exact_mut(LANES);
    for (xs, ds) in (&mut xc).zip(&mut dc) {
        for l in 0..LANES {
            let e = exp_f32(xs[l] - m);
            ds[l] = e;
            acc[l] += e;
        }
    }
    let mut s = lanes_sum(&acc);
    for (xv, dv) in xc.remainder().iter().zip(dc.into_remainder()) {
        let e = exp_f32(xv - m);
        *dv = e;
        s += e;
    }
    s
}

/// Sum of exp(x - m).
#[inline(always)]
fn exp_shifted_sum(x: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut xc = x.chunks_exact(LANES);
    for xs in &mut xc {
        for l in 0..LANES {
            acc[l] += exp_f32(xs[l] - m);
        }
    }
    let mut s = lanes_sum(&acc);
    for xv in xc.remainder() {
        s += exp_f32(xv - m);
    }
    s
}

/// Fixed-order sum of the lanes.
#[inline(always)]
fn lanes_sum(a: &[f32; LANES]) -> f32 {
    let mut lanes = *a;
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
    }
    lanes[0]
}

/// Columns per piece of the BCE row kernel (stack buffers).
const BCE_PIECE: usize = 64;

/// Elementwise binary cross-entropy with logits: `loss[c]` = max(x,0) - x*y + log(1+e^-|x|),
/// and when `d` is given `d[c] = scale[c] * (sigmoid(x) - y)` (scale 0 for masked-out tasks).
/// Dispatches to a build for the widest vector unit the CPU has.
fn bce_elems(x: &[f32], y: &[f32], scale: &[f32], d: Option<&mut [f32]>, loss: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { bce_elems_avx512(x, y, scale, d, loss) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { bce_elems_avx2(x, y, scale, d, loss) };
        }
    }
    bce_elems_body(x, y, scale, d, loss)
}

/// [`bce_elems_body`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bce_elems_avx512(
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    d: Option<&mut [f32]>,
    loss: &mut [f32],
) {
    bce_elems_body(x, y, scale, d, loss)
}

/// [`bce_elems_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bce_elems_avx2(
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    d: Option<&mut [f32]>,
    loss: &mut [f32],
) {
    bce_elems_body(x, y, scale, d, loss)
}

// Index loops over re-sliced buffers vectorise without bounds checks.
#[allow(clippy::needless_range_loop)]
/// The portable body of [`bce_elems`].
#[inline(always)]
fn bce_elems_body(x: &[f32], y: &[f32], scale: &[f32], d: Option<&mut [f32]>, loss: &mut [f32]) {
    let n = loss.len();
    let (x, y, scale) = (&x[..n], &y[..n], &scale[..n]);
    for c in 0..n {
        let e = exp_f32(-x[c].abs());
        loss[c] = x[c].max(0.0) - x[c] * y[c] + ln1p_unit(e);
    }
    if let Some(d) = d {
        let d = &mut d[..n];
        for c in 0..n {
            let e = exp_f32(-x[c].abs());
            let r = 1.0 / (1.0 + e);
            // sigmoid(x) from e = exp(-|x|) without overflow on either side.
            let sig = if x[c] >= 0.0 { r } else { e * r };
            d[c] = scale[c] * (sig - y[c]);
        }
    }
}

/// ln(1 + e) for e in [0, 1], written to vectorise: 2 atanh(u) with u = e / (2 + e) <= 1/3,
/// odd series to u^13 (relative error below 1e-7, no cancellation for tiny e).
#[inline(always)]
pub(crate) fn ln1p_unit(e: f32) -> f32 {
    let u = e / (2.0 + e);
    let u2 = u * u;
    let p = 1.0
        + u2 * (1.0 / 3.0
            + u2 * (1.0 / 5.0
                + u2 * (1.0 / 7.0 + u2 * (1.0 / 9.0 + u2 * (1.0 / 11.0 + u2 * (1.0 / 13.0))))));
    2.0 * u * p
}

/// exp for f32 written to vectorise: Cody-Waite reduction to r in [-ln2/2, ln2/2], a degree-6
/// polynomial, and 2^k from the exponent bits. Relative error about 2e-7 on [-87, 88];
/// returns 0 below -87.3 (where the true value is under the normal range) and saturates above.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.0);
    let shifted = xc * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.666_666_7e-1
                    + r * (4.166_666_8e-2 + r * (8.333_452e-3 + r * 1.388_974_4e-3)))));
    // The integer k sits in the low mantissa bits of `shifted` (offset by 2^22): reading it
    // with integer ops keeps the loop vectorised (a float-to-int `as` cast is saturating and
    // scalar).
    let ki = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    if x < -87.3 { 0.0 } else { p * scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build of the row kernel.
    type RowKernel<'a> = &'a dyn Fn(&[f32], usize, Option<(&mut [f32], f32)>) -> f64;

    /// The portable, AVX2 and AVX-512 builds of the row kernel agree with an f64 reference.
    #[test]
    fn every_row_kernel_variant_matches_f64() {
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 40.0 - 20.0) as f32
        };
        for c in [1usize, 2, 15, 16, 17, 1000] {
            let x: Vec<f32> = (0..c).map(|_| next()).collect();
            let y = c / 2;
            let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
            let want_loss = m + s.ln() - x[y] as f64;
            let check = |f: RowKernel<'_>, what: &str| {
                let mut d = vec![f32::NAN; c];
                let loss = f(&x, y, Some((&mut d, 0.5)));
                assert!(
                    (loss - want_loss).abs() <= 1e-5 * (1.0 + want_loss.abs()),
                    "{what}"
                );
                for (j, &g) in d.iter().enumerate() {
                    let p = (x[j] as f64 - m).exp() / s;
                    let want = 0.5 * (p - if j == y { 1.0 } else { 0.0 });
                    assert!(
                        (g as f64 - want).abs() <= 1e-6,
                        "{what} c={c} j={j}: {g} {want}"
                    );
                }
            };
            check(&|x, y, g| ce_segment_body(x, y, g), "portable");
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") && has!("fma") {
                    // SAFETY: features checked.
                    check(&|x, y, g| unsafe { ce_segment_avx2(x, y, g) }, "avx2");
                }
                if has!("avx512f") {
                    // SAFETY: features checked.
                    check(&|x, y, g| unsafe { ce_segment_avx512(x, y, g) }, "avx512");
                }
            }
        }
    }

    /// A build of the BCE elementwise kernel.
    type BceKernel<'a> = &'a dyn Fn(&[f32], &[f32], &[f32], Option<&mut [f32]>, &mut [f32]);

    /// The portable, AVX2 and AVX-512 builds of the BCE kernel agree with an f64 reference.
    #[test]
    fn every_bce_kernel_variant_matches_f64() {
        let x: Vec<f32> = (0..67)
            .map(|k| (k as f32 - 33.0) * 0.7)
            .chain([1e4, -1e4])
            .collect();
        let n = x.len();
        let y: Vec<f32> = (0..n).map(|k| (k % 3) as f32 / 2.0).collect();
        let scale: Vec<f32> = (0..n)
            .map(|k| if k % 5 == 0 { 0.0 } else { 0.25 })
            .collect();
        let check = |f: BceKernel<'_>, what: &str| {
            let (mut d, mut l) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            f(&x, &y, &scale, Some(&mut d), &mut l);
            for c in 0..n {
                let (xv, yv) = (x[c] as f64, y[c] as f64);
                let want_l = xv.max(0.0) - xv * yv + (-xv.abs()).exp().ln_1p();
                let want_d = scale[c] as f64 * (1.0 / (1.0 + (-xv).exp()) - yv);
                assert!(
                    (l[c] as f64 - want_l).abs() <= 1e-6 * (1.0 + want_l.abs()),
                    "{what} l[{c}]"
                );
                assert!((d[c] as f64 - want_d).abs() <= 1e-7, "{what} d[{c}]");
            }
        };
        check(&|x, y, s, d, l| bce_elems_body(x, y, s, d, l), "portable");
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                // SAFETY: features checked.
                check(
                    &|x, y, s, d, l| unsafe { bce_elems_avx2(x, y, s, d, l) },
                    "avx2",
                );
            }
            if has!("avx512f") {
                // SAFETY: features checked.
                check(
                    &|x, y, s, d, l| unsafe { bce_elems_avx512(x, y, s, d, l) },
                    "avx512",
                );
            }
        }
    }

    #[test]
    fn ln1p_unit_is_accurate() {
        let mut e = 0.0f32;
        while e <= 1.0 {
            let (got, want) = (ln1p_unit(e) as f64, (e as f64).ln_1p());
            assert!(
                (got - want).abs() <= 2e-7 * want + 1e-30,
                "ln1p({e}) = {got}, want {want}"
            );
            e += 1.0 / 4096.0;
        }
        let tiny = 1e-20f32;
        assert!((ln1p_unit(tiny) / tiny - 1.0).abs() < 1e-6);
    }

    #[test]
    fn exp_f32_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }
}
