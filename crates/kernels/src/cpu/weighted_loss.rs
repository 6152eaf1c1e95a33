//! Fused weighted multi-task loss, forward and backward in one pass over the logits.
//!
//! The logits of all heads are packed per sample: row i is `[head 0 | head 1 | ... ]`, task t
//! owning columns `offsets[t]..offsets[t+1]`. Each task's mean loss over its valid samples is
//! returned (for logging, PBT and loss-based methods) and the gradient of
//! `L = sum_t p_t * mean_loss_t` is written: `p_t / n_t * (softmax - onehot)` for softmax
//! cross-entropy, `p_t / (n_t * C_t) * (sigmoid - target)` for binary cross-entropy.
//! Row losses are summed in f64 in row order, so results are deterministic.

use super::has_avx512;
use super::par::{map_chunks, map_chunks_mut, map_range};

#[cfg(target_arch = "x86_64")]
mod avx2;
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

/// Target floats per block: the unit a row kernel is called on and, when streaming, staged in
/// (a block of this size stays in L1 between the kernel writing it and the copy reading it).
const BLOCK_FLOATS: usize = 8192;

/// How far ahead (in elements) the streaming kernels (AVX-512 and AVX2) prefetch their
/// inputs: 8 KiB of f32, a few hundred nanoseconds of work on one core, about a memory latency
/// or two (1,024 to 8,192 measured the same).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PREFETCH_AHEAD: usize = 2048;

/// Target floats per parallel task (several blocks: a rayon task costs about a microsecond).
const TASK_FLOATS: usize = 32_768;

/// Gradient size from which d(logits) would be written with streaming (non-temporal) stores
/// if [`STREAM_BY_DEFAULT`]: an output this large leaves the cache before its reader gets to
/// it anyway, and streaming saves the read-for-ownership of every written line.
const STREAM_MIN_BYTES: usize = 8 << 20;

/// Whether large gradients are streamed by default. Off: measured on the 2-core AVX-512 VM
/// (interleaved runs, full-size benchmark shapes), streaming each block's staged gradient
/// made C = 1000 about 1.5x slower and 40 attributes BCE about 1.25x slower, and 40 heads x 10
/// no faster: the stores leave in bursts (one block at a time) that the core cannot overlap
/// with its arithmetic, while plain stores drain through the caches in the background. The
/// path stays, tested, for machines where memory rather than arithmetic is the limit.
const STREAM_BY_DEFAULT: bool = false;

/// How d(logits) reaches memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// Streaming from [`STREAM_MIN_BYTES`] on if [`STREAM_BY_DEFAULT`] and the AVX-512
    /// kernels run, plain otherwise.
    Auto,
    /// Plain stores.
    // Plain and Stream are chosen by the tests only (which compare the two).
    #[cfg_attr(not(test), allow(dead_code))]
    Plain,
    /// Streaming stores whatever the size (where the AVX-512 kernels run).
    #[cfg_attr(not(test), allow(dead_code))]
    Stream,
}

/// Rows per block and per parallel task for rows of `width` floats: functions of the width
/// only, so the order in which losses are summed (in order inside a task, then task by task)
/// does not depend on the thread count or on how d(logits) is stored. Blocks of 16 or more rows
/// are whole multiples of 16 (the small-head kernel transposes 16 rows at a time).
fn block_plan(width: usize) -> (usize, usize) {
    let fit = BLOCK_FLOATS / width;
    let block = if fit >= 16 {
        fit.min(512) / 16 * 16
    } else {
        fit.max(1)
    };
    let per_task = (TASK_FLOATS / (block * width)).max(1);
    (block, block * per_task)
}

/// Fused softmax cross-entropy: per-task mean losses, and if `dlogits` (n x width) is given,
/// the gradient of `sum_t p_t * loss_t` written into it (every element overwritten).
pub fn weighted_ce_loss(
    input: &WeightedCeInput<'_>,
    dlogits: Option<&mut [f32]>,
) -> Result<WeightedLossOutput> {
    weighted_ce_impl(input, dlogits, has_avx512())
}

/// [`weighted_ce_loss`] with the AVX-512 row kernel (`vector`, which the caller must have
/// checked) or the portable one.
fn weighted_ce_impl(
    input: &WeightedCeInput<'_>,
    dlogits: Option<&mut [f32]>,
    vector: bool,
) -> Result<WeightedLossOutput> {
    weighted_ce_with(input, dlogits, vector, Store::Auto)
}

/// Whether the gradient is streamed: only behind the AVX-512 kernels (the portable path is the
/// fallback for old CPUs, kept simple).
fn streams(store: Store, vector: bool, grad_floats: usize) -> bool {
    vector
        && match store {
            Store::Auto => STREAM_BY_DEFAULT && grad_floats * 4 >= STREAM_MIN_BYTES,
            Store::Plain => false,
            Store::Stream => true,
        }
}

/// [`weighted_ce_impl`] with the choice of how the gradient is stored.
fn weighted_ce_with(
    input: &WeightedCeInput<'_>,
    dlogits: Option<&mut [f32]>,
    vector: bool,
    store: Store,
) -> Result<WeightedLossOutput> {
    const OP: &str = "weighted_ce_loss";
    let vector = vector && cfg!(target_arch = "x86_64");
    let layout = input.layout;
    let (n, t_count) = (input.n, layout.num_tasks());
    check_common(OP, n, layout, input.logits, input.mask, input.weights)?;
    check_len(OP, "targets", input.targets.len(), n * t_count)?;
    // Layouts of heads of at most 16 classes take the row-transposed tile kernel, which reads
    // the compact per-entry codes the counting pass writes (class index, -1 where invalid:
    // 1 byte per entry instead of an 8-byte target and a mask byte).
    let small = (0..t_count).all(|t| layout.range(t).len() <= 16);
    let mut codes = if small {
        CE_CODES.with_borrow_mut(std::mem::take)
    } else {
        Vec::new()
    };
    if small {
        // Every entry is written by the counting pass; the padding lets the tile load whole
        // 16-entry vectors at the end of the last row.
        codes.resize(n * t_count + CODE_PAD, -1);
    }
    let counts = ce_counts(OP, input, small.then(|| &mut codes[..n * t_count]));
    let result = counts.and_then(|counts| ce_rows(input, dlogits, vector, store, counts, &codes));
    if small && codes.capacity() <= CODES_KEEP_MAX {
        CE_CODES.with_borrow_mut(|c| *c = codes);
    }
    result
}

/// Padding bytes after the codes of a CE call (one vector load of 16).
const CODE_PAD: usize = 16;

/// Largest codes buffer kept between calls (bytes).
const CODES_KEEP_MAX: usize = 64 << 20;

thread_local! {
    /// Codes buffer of the small-head CE path, kept per calling thread between calls: a fresh
    /// buffer of a few MB costs a page fault per 4 KiB on first touch.
    static CE_CODES: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The row pass of [`weighted_ce_with`] once the counts are known; `codes` holds the counting
/// pass's per-entry codes (n x T, then padding) when every head has at most 16 classes, and is
/// empty otherwise.
fn ce_rows(
    input: &WeightedCeInput<'_>,
    dlogits: Option<&mut [f32]>,
    vector: bool,
    store: Store,
    counts: Vec<usize>,
    codes: &[i8],
) -> Result<WeightedLossOutput> {
    const OP: &str = "weighted_ce_loss";
    let layout = input.layout;
    let (n, t_count, width) = (input.n, layout.num_tasks(), layout.width());
    let stream = streams(store, vector, n.saturating_mul(width));
    let scales = grad_scales(input.weights, &counts, |_| 1);
    let targets_row = |i: usize| &input.targets[i * t_count..(i + 1) * t_count];
    let mask_row = |i: usize| input.mask.map(|m| &m[i * t_count..(i + 1) * t_count]);
    #[cfg(target_arch = "x86_64")]
    if vector {
        // Layouts of heads of at most 16 classes: the row-transposed tile kernel.
        let small = (!codes.is_empty()).then_some(avx512::SmallTile {
            offsets: layout.offsets(),
            scales: &scales,
        });
        let chunk = |rows: std::ops::Range<usize>, mut d: Option<&mut [f32]>, sums: &mut [f64]| {
            if let Some(st) = &small {
                let (a, b) = (rows.start, rows.end);
                let (xs, cs) = (
                    &input.logits[a * width..b * width],
                    &codes[a * t_count..b * t_count + CODE_PAD],
                );
                // SAFETY: the CPU supports AVX-512F (checked by the caller); the codes of
                // valid entries are inside their heads (checked by ce_counts).
                unsafe { st.run(xs, cs, d, sums) };
                return;
            }
            for (k, i) in rows.enumerate() {
                let drow = d.as_deref_mut().map(|d| &mut d[k * width..(k + 1) * width]);
                let row = &input.logits[i * width..(i + 1) * width];
                let ce = avx512::CeRow {
                    offsets: layout.offsets(),
                    targets: targets_row(i),
                    mask: mask_row(i),
                    ignore_index: input.ignore_index,
                    scales: &scales,
                };
                // SAFETY: the CPU supports AVX-512F (checked by the caller); targets of valid
                // entries are inside their heads (checked by ce_counts).
                unsafe { ce.run(row, drow, sums) };
            }
        };
        let sums = run_rows(OP, n, width, t_count, dlogits, stream, chunk)?;
        return Ok(finish(sums, counts, input.weights));
    }
    if !codes.is_empty() {
        // Heads of at most 16 classes: the transposed tile of the portable build.
        let chunk = |rows: std::ops::Range<usize>, d: Option<&mut [f32]>, sums: &mut [f64]| {
            let (a, b) = (rows.start, rows.end);
            let (xs, cs) = (
                &input.logits[a * width..b * width],
                &codes[a * t_count..b * t_count],
            );
            ce_small_rows(layout.offsets(), &scales, xs, cs, d, sums);
        };
        let sums = run_rows(OP, n, width, t_count, dlogits, false, chunk)?;
        return Ok(finish(sums, counts, input.weights));
    }
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
    let sums = run_rows(
        OP,
        n,
        width,
        t_count,
        dlogits,
        false,
        by_rows(width, row_loss),
    )?;
    Ok(finish(sums, counts, input.weights))
}

/// Fused sigmoid binary cross-entropy: per-task mean losses (mean over valid samples and the
/// task's columns), and if `dlogits` is given, the gradient of `sum_t p_t * loss_t`. Targets
/// must lie in [0, 1]; when one does not, the error names the first such target and
/// `dlogits` may have been partly written.
pub fn weighted_bce_loss(
    input: &WeightedBceInput<'_>,
    dlogits: Option<&mut [f32]>,
) -> Result<WeightedLossOutput> {
    weighted_bce_impl(input, dlogits, has_avx512())
}

/// [`weighted_bce_loss`] with the AVX-512 row kernel (`vector`, which the caller must have
/// checked) or the portable one.
fn weighted_bce_impl(
    input: &WeightedBceInput<'_>,
    dlogits: Option<&mut [f32]>,
    vector: bool,
) -> Result<WeightedLossOutput> {
    weighted_bce_with(input, dlogits, vector, Store::Auto)
}

/// [`weighted_bce_impl`] with the choice of how the gradient is stored.
fn weighted_bce_with(
    input: &WeightedBceInput<'_>,
    dlogits: Option<&mut [f32]>,
    vector: bool,
    store: Store,
) -> Result<WeightedLossOutput> {
    const OP: &str = "weighted_bce_loss";
    let vector = vector && cfg!(target_arch = "x86_64");
    let layout = input.layout;
    let (n, t_count, width) = (input.n, layout.num_tasks(), layout.width());
    let stream = streams(store, vector, n.saturating_mul(width));
    check_common(OP, n, layout, input.logits, input.mask, input.weights)?;
    check_len(OP, "targets", input.targets.len(), n * width)?;
    let check_targets = || -> Result<()> {
        // Chunked (in parallel for a large call); the first bad chunk in order wins.
        let bad = map_chunks(on_pool(n * width), input.targets, 1 << 16, |(c, ys)| {
            let k = ys.iter().position(|y| !(0.0..=1.0).contains(y))?;
            Some((c << 16) + k)
        })
        .into_iter()
        .flatten()
        .min();
        match bad {
            Some(k) => Err(KernelError::new(
                OP,
                format!(
                    "targets[row {}, column {}] = {} is outside [0, 1]",
                    k / width,
                    k % width,
                    input.targets[k]
                ),
            )),
            None => Ok(()),
        }
    };
    let counts = mask_counts(n, t_count, input.mask, n * width);
    let scales = grad_scales(input.weights, &counts, |t| layout.range(t).len());
    let col_task: Vec<usize> = (0..t_count)
        .flat_map(|t| layout.range(t).map(move |_| t))
        .collect();
    let col_scale: Vec<f32> = col_task.iter().map(|&t| scales[t]).collect();
    // The flat AVX-512 kernel when its phase tables are small and every block starts a period:
    // a period is lcm(W, 16) elements, `phases` whole vectors.
    let phases = width / gcd(width, 16);
    let period_rows = 16 / gcd(width, 16);
    let flat =
        vector && phases <= BCE_MAX_PHASES && block_plan(width).0.is_multiple_of(period_rows);
    let phase_scale: Option<Vec<f32>> =
        flat.then(|| (0..16 * phases).map(|k| col_scale[k % width]).collect());
    let bad_target = std::sync::atomic::AtomicBool::new(false);
    let chunk = |rows: std::ops::Range<usize>, d: Option<&mut [f32]>, sums: &mut [f64]| {
        // Loss sums per column (f64, padded to whole vectors), folded into the tasks at the
        // end of the chunk: the row loop then needs no per-column task lookup.
        let mut col_sums = vec![0.0f64; width.next_multiple_of(16)];
        // Per-element validity: the mask rows themselves when every task has one column, else
        // expanded to the columns.
        let expanded: Vec<u8>;
        let valid = match input.mask {
            None => None,
            Some(m) if width == t_count => Some(&m[rows.start * t_count..rows.end * t_count]),
            Some(m) => {
                expanded = m[rows.start * t_count..rows.end * t_count]
                    .chunks_exact(t_count)
                    .flat_map(|mr| col_task.iter().map(|&t| mr[t]))
                    .collect();
                Some(&expanded[..])
            }
        };
        let (xs, ys) = (
            &input.logits[rows.start * width..rows.end * width],
            &input.targets[rows.start * width..rows.end * width],
        );
        let ok = match &phase_scale {
            #[cfg(target_arch = "x86_64")]
            Some(phase_scale) => {
                let bce = avx512::BceFlat {
                    logits: xs,
                    targets: ys,
                    valid,
                    phase_scale,
                };
                let mut phase_sums = vec![0.0f64; phase_scale.len()];
                // SAFETY: the CPU supports AVX-512F (checked by the caller).
                let ok = unsafe { bce.run(d, &mut phase_sums) };
                for (k, &s) in phase_sums.iter().enumerate() {
                    col_sums[k % width] += s;
                }
                ok
            }
            #[cfg(target_arch = "x86_64")]
            None if vector => {
                let bce = avx512::BceRows {
                    width,
                    logits: xs,
                    targets: ys,
                    valid,
                    col_scale: &col_scale,
                };
                // SAFETY: the CPU supports AVX-512F (checked by the caller).
                unsafe { bce.run(d, &mut col_sums) }
            }
            _ => bce_rows(width, xs, ys, valid, &col_scale, d, &mut col_sums),
        };
        if !ok {
            bad_target.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for (&t, &s) in col_task.iter().zip(&col_sums) {
            sums[t] += s;
        }
    };
    let mut sums = run_rows(OP, n, width, t_count, dlogits, stream, chunk)?;
    // The kernels check the targets in their own pass (an up-front scan was a quarter of the
    // call's time); only then is the first bad one looked for.
    if bad_target.into_inner() {
        check_targets()?;
        unreachable!("the row pass saw a target outside [0, 1] that the scan did not");
    }
    // Mean over the task's columns as well as its samples.
    for (t, s) in sums.iter_mut().enumerate() {
        *s /= layout.range(t).len() as f64;
    }
    Ok(finish(sums, counts, input.weights))
}

/// Most vectors per period for the flat BCE kernel (its per-phase tables live on the stack).
const BCE_MAX_PHASES: usize = 64;

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Rows per unit of the counting passes (cheap per row, so many at a time).
const COUNT_ROWS: usize = 1024;

/// Logits from which a loss call runs its chunks on rayon's pool; a smaller call runs the
/// same chunks in the same order on the calling thread (the same sums, bit for bit). Entering
/// the pool from outside and splitting the work costs tens of microseconds on a 2-vCPU VM,
/// more than a pass over fewer values: measured (Zen 5, 2 threads, calls interleaved) CE with
/// C = 1,000 at 64 rows 566 (pool) vs 211 ns/row (calling thread), 256 rows 255 vs 221, 1,024
/// rows 184 vs 211; 40 heads x 10 at 256 rows 343 vs 182; BCE with 40 attributes at 4,096
/// rows median 12.9 vs 17.8 GB/s, 16,384 rows 21.0 vs 16.3.
pub const LOSS_PAR_MIN_VALUES: usize = 1 << 19;

/// Whether a call over `values` logits runs its chunks on rayon's pool.
fn on_pool(values: usize) -> bool {
    values >= LOSS_PAR_MIN_VALUES
}

/// Valid samples per task of a CE call (target not ignored, mask nonzero). The per-chunk
/// loop is branch-free; a chunk with an out-of-range target is rescanned in order to name the
/// first bad entry, and the first such chunk in row order wins.
/// With `codes` (n x T), also writes each entry's code: its class index, -1 where the entry is
/// invalid (undefined where the call fails).
fn ce_counts(
    op: &'static str,
    input: &WeightedCeInput<'_>,
    codes: Option<&mut [i8]>,
) -> Result<Vec<usize>> {
    let layout = input.layout;
    let (n, t_count) = (input.n, layout.num_tasks());
    let sizes: Vec<u64> = (0..t_count).map(|t| layout.range(t).len() as u64).collect();
    let chunk = |c: usize, out: Option<&mut [i8]>| {
        let rows = c * COUNT_ROWS..((c + 1) * COUNT_ROWS).min(n);
        let ys = &input.targets[rows.start * t_count..rows.end * t_count];
        let ms = input
            .mask
            .map(|m| &m[rows.start * t_count..rows.end * t_count]);
        let (counts, bad) = count_valid(ys, ms, &sizes, input.ignore_index, out);
        if !bad {
            return Ok(counts);
        }
        for (r, yr) in ys.chunks_exact(t_count).enumerate() {
            let i = rows.start + r;
            for (t, &y) in yr.iter().enumerate() {
                let masked_in = input.mask.is_none_or(|m| m[i * t_count + t] != 0);
                if y != input.ignore_index && masked_in && y as u64 >= sizes[t] {
                    return Err(KernelError::new(
                        op,
                        format!(
                            "targets[row {i}, task {t}] = {y} is outside [0, {}) and is \
                                 not the ignore_index {}",
                            sizes[t], input.ignore_index
                        ),
                    ));
                }
            }
        }
        unreachable!("a chunk flagged bad has a bad target")
    };
    let pool = on_pool(n * layout.width());
    let per_chunk: Vec<Result<Vec<usize>>> = match codes {
        Some(codes) => {
            assert_eq!(codes.len(), n * t_count);
            map_chunks_mut(pool, codes, COUNT_ROWS * t_count, |(c, out)| {
                chunk(c, Some(out))
            })
        }
        None => map_range(pool, n.div_ceil(COUNT_ROWS), |c| chunk(c, None)),
    };
    let mut counts = vec![0usize; t_count];
    for chunk in per_chunk {
        for (a, b) in counts.iter_mut().zip(chunk?) {
            *a += b;
        }
    }
    Ok(counts)
}

/// Valid entries per task of rows of CE targets (and mask), and whether a valid target lies
/// outside its head. With `codes` (as long as `ys`), writes each entry's code: the target
/// as i8 where valid, -1 elsewhere (only meaningful when no target is out of range).
fn count_valid(
    ys: &[i64],
    mask: Option<&[u8]>,
    sizes: &[u64],
    ignore: i64,
    codes: Option<&mut [i8]>,
) -> (Vec<usize>, bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { avx512::count_valid(ys, mask, sizes, ignore, codes) };
    }
    count_valid_scalar(ys, mask, sizes, ignore, codes)
}

/// The portable body of [`count_valid`].
fn count_valid_scalar(
    ys: &[i64],
    mask: Option<&[u8]>,
    sizes: &[u64],
    ignore: i64,
    mut codes: Option<&mut [i8]>,
) -> (Vec<usize>, bool) {
    let t_count = sizes.len();
    let mut counts = vec![0usize; t_count];
    let mut bad = false;
    for (r, yr) in ys.chunks_exact(t_count).enumerate() {
        let mr = mask.map(|m| &m[r * t_count..(r + 1) * t_count]);
        for t in 0..t_count {
            let y = yr[t];
            let ok = y != ignore && mr.is_none_or(|m| m[t] != 0);
            counts[t] += usize::from(ok);
            bad |= ok & (y as u64 >= sizes[t]);
            if let Some(c) = codes.as_deref_mut() {
                c[r * t_count + t] = if ok { y as i8 } else { -1 };
            }
        }
    }
    (counts, bad)
}

/// Samples per task with a nonzero mask entry (all n without a mask); `values`: the call's
/// logits (see [`on_pool`]).
fn mask_counts(n: usize, t_count: usize, mask: Option<&[u8]>, values: usize) -> Vec<usize> {
    let Some(mask) = mask else {
        return vec![n; t_count];
    };
    let per_chunk = map_chunks(on_pool(values), mask, COUNT_ROWS * t_count, |(_, m)| {
        count_mask_rows(m, t_count)
    });
    let mut counts = vec![0usize; t_count];
    for chunk in per_chunk {
        for (a, b) in counts.iter_mut().zip(chunk) {
            *a += b as usize;
        }
    }
    counts
}

/// Nonzero entries per task of mask rows (`t_count` bytes each).
fn count_mask_rows(m: &[u8], t_count: usize) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { count_mask_rows_avx2(m, t_count) };
    }
    count_mask_rows_body(m, t_count)
}

/// [`count_mask_rows_body`] built for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_mask_rows_avx2(m: &[u8], t_count: usize) -> Vec<u32> {
    count_mask_rows_body(m, t_count)
}

/// Byte counters over up to 255 rows at a time, then widened. For each 32 tasks, the rows'
/// 32-byte windows are summed in a register (one AVX2 compare and add per row; a window that
/// runs past its row's T bytes also counts bytes of the next row in lanes that are never read);
/// a window that would pass the end of `m` adds only its row's bytes. (u32 counters over
/// exactly T bytes per row, 4 per SSE2 instruction with a scalar tail, took 12.8% of a
/// 40-attribute BCE call's samples against the BCE pass's 39.5%; this, 4.8% against 40%.)
#[inline(always)]
fn count_mask_rows_body(m: &[u8], t_count: usize) -> Vec<u32> {
    let mut counts = vec![0u32; t_count];
    let rows = m.len() / t_count;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + 255).min(rows);
        for j0 in (0..t_count).step_by(32) {
            let own = (t_count - j0).min(32);
            // Rows r < fit have a whole window inside m: r T + j0 + 32 <= m.len().
            let fit = m
                .len()
                .checked_sub(j0 + 32)
                .map_or(r0, |room| (room / t_count + 1).clamp(r0, r1));
            let mut acc = [0u8; 32];
            for r in r0..fit {
                let start = r * t_count + j0;
                let window: &[u8; 32] = m[start..start + 32].try_into().expect("32 bytes");
                for (a, &b) in acc.iter_mut().zip(window) {
                    *a = a.wrapping_add(u8::from(b != 0));
                }
            }
            for r in fit..r1 {
                let start = r * t_count + j0;
                for (a, &b) in acc.iter_mut().zip(&m[start..start + own]) {
                    *a = a.wrapping_add(u8::from(b != 0));
                }
            }
            for (c, &a) in counts[j0..j0 + own].iter_mut().zip(&acc) {
                *c += u32::from(a);
            }
        }
        r0 = r1;
    }
    counts
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

/// Turns a per-row kernel into a per-chunk one for [`run_rows`].
fn by_rows<F>(
    width: usize,
    row_loss: F,
) -> impl Fn(std::ops::Range<usize>, Option<&mut [f32]>, &mut [f64]) + Sync
where
    F: Fn(usize, Option<&mut [f32]>, &mut [f64]) + Sync,
{
    move |rows, mut d, sums| {
        for (k, i) in rows.enumerate() {
            row_loss(
                i,
                d.as_deref_mut().map(|d| &mut d[k * width..(k + 1) * width]),
                sums,
            );
        }
    }
}

/// Runs `chunk_loss(rows, d(logits) of those rows, per-task sums)` block by block (see
/// [`block_plan`]), tasks in parallel; returns per-task loss sums added in row order inside a
/// task and then task by task (deterministic). With `stream` each block's gradient is written
/// to a staging buffer and copied out with streaming stores (same values, same order).
fn run_rows<F>(
    op: &'static str,
    n: usize,
    width: usize,
    t_count: usize,
    dlogits: Option<&mut [f32]>,
    stream: bool,
    chunk_loss: F,
) -> Result<Vec<f64>>
where
    F: Fn(std::ops::Range<usize>, Option<&mut [f32]>, &mut [f64]) + Sync,
{
    let (block, task) = block_plan(width);
    let pool = on_pool(n * width);
    let task_sums: Vec<Vec<f64>> = match dlogits {
        Some(d) => {
            check_len(op, "dlogits", d.len(), n * width)?;
            let run_task = |(c, dtask): (usize, &mut [f32])| {
                let mut sums = vec![0.0f64; t_count];
                let mut stage = vec![0.0f32; if stream { block * width } else { 0 }];
                for (b, dblock) in dtask.chunks_mut(block * width).enumerate() {
                    let r0 = c * task + b * block;
                    let rows = r0..r0 + dblock.len() / width;
                    if stream {
                        let st = &mut stage[..dblock.len()];
                        chunk_loss(rows, Some(st), &mut sums);
                        stream_copy(st, dblock);
                    } else {
                        chunk_loss(rows, Some(dblock), &mut sums);
                    }
                }
                if stream {
                    stream_fence();
                }
                sums
            };
            map_chunks_mut(pool, d, task * width, run_task)
        }
        None => {
            let run_task = |c: usize| {
                let mut sums = vec![0.0f64; t_count];
                let end = ((c + 1) * task).min(n);
                for r0 in (c * task..end).step_by(block) {
                    chunk_loss(r0..(r0 + block).min(end), None, &mut sums);
                }
                sums
            };
            map_range(pool, n.div_ceil(task), run_task)
        }
    };
    let mut sums = vec![0.0f64; t_count];
    for cs in task_sums {
        for (a, b) in sums.iter_mut().zip(cs) {
            *a += b;
        }
    }
    Ok(sums)
}

/// Copies `src` into `dst` with streaming stores for the 64-byte-aligned whole lines of `dst`
/// (plain stores for the partial lines at either end). [`stream_fence`] must follow before
/// the data is handed to another thread.
fn stream_copy(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { avx512::stream_copy(src, dst) };
        }
        let n = dst.len();
        let head = dst.as_ptr().align_offset(64).min(n);
        let body = head + (n - head) / 16 * 16;
        dst[..head].copy_from_slice(&src[..head]);
        for k in (head..body).step_by(4) {
            // SAFETY: k + 4 <= body <= n for both slices; dst + k is 16-byte aligned (64 at
            // every fourth k, which the lines need to combine into whole-line writes).
            unsafe { _mm_stream_ps(dst.as_mut_ptr().add(k), _mm_loadu_ps(src.as_ptr().add(k))) };
        }
        dst[body..].copy_from_slice(&src[body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Orders this thread's streaming stores before its later stores (and so before the task's
/// completion is published to the thread that reads the gradient).
fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no preconditions (SSE is part of x86_64).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
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

/// [`ce_segment_body`] with AVX2 + FMA intrinsics (see [`avx2::ce_segment`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ce_segment_avx2(x: &[f32], y: usize, grad: Option<(&mut [f32], f32)>) -> f64 {
    // SAFETY: AVX2 and FMA (this function's contract); the callers pass y inside the head
    // and a gradient slice of the head's length.
    unsafe { avx2::ce_segment(x, y, grad) }
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

/// Rows per tile of [`ce_small_rows`] (one 8-lane AVX2 vector per column).
const TILE_ROWS: usize = 8;

/// CE of whole rows on the path without AVX-512 when every head has at most 16 classes: adds
/// each valid head's loss to `sums` (T) and writes the gradient (zeros for invalid heads) into
/// `d` if asked. `codes` holds T codes per row (class index where valid, -1 elsewhere; see
/// `count_valid`). Dispatches to a build for the widest vector unit the CPU has.
fn ce_small_rows(
    offsets: &[usize],
    scales: &[f32],
    x: &[f32],
    codes: &[i8],
    d: Option<&mut [f32]>,
    sums: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { ce_small_rows_avx2(offsets, scales, x, codes, d, sums) };
        }
    }
    ce_small_rows_body(offsets, scales, x, codes, d, sums)
}

/// [`ce_small_rows_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ce_small_rows_avx2(
    offsets: &[usize],
    scales: &[f32],
    x: &[f32],
    codes: &[i8],
    d: Option<&mut [f32]>,
    sums: &mut [f64],
) {
    // SAFETY (both): AVX2 and FMA (this function's contract); codes of valid entries lie
    // inside their heads (checked by the counting pass).
    let head = |h: &mut [[f32; TILE_ROWS]], c: &[i8; TILE_ROWS], scale, sum: &mut f64| unsafe {
        avx2::small_head::<true>(h, c, scale, sum)
    };
    let head_loss = |h: &mut [[f32; TILE_ROWS]], c: &[i8; TILE_ROWS], scale, sum: &mut f64| unsafe {
        avx2::small_head::<false>(h, c, scale, sum)
    };
    // SAFETY (both): AVX2 (this function's contract).
    let load = |x: &[f32], tile: &mut [[f32; TILE_ROWS]]| unsafe { avx2::tile_load(x, tile) };
    let store = |tile: &[[f32; TILE_ROWS]], d: &mut [f32]| unsafe { avx2::tile_store(tile, d) };
    match d {
        Some(d) => {
            let ops = TileOps { head, load, store };
            ce_small_rows_with::<true, _, _, _>(offsets, scales, x, codes, d, sums, ops)
        }
        None => {
            let ops = TileOps {
                head: head_loss,
                load,
                store,
            };
            ce_small_rows_with::<false, _, _, _>(offsets, scales, x, codes, &mut [], sums, ops)
        }
    }
}

/// The portable body of [`ce_small_rows`]: blocks of [`TILE_ROWS`] rows are transposed into a
/// column-major tile, so that every head's max, exp, sum, log and gradient are lane-wise
/// operations across rows (whatever the head sizes; a 10-class head is no whole vector of a
/// row), and the gradient is transposed back.
#[inline(always)]
fn ce_small_rows_body(
    offsets: &[usize],
    scales: &[f32],
    x: &[f32],
    codes: &[i8],
    d: Option<&mut [f32]>,
    sums: &mut [f64],
) {
    let ops = |head| -> PortableOps {
        TileOps {
            head,
            load: tile_load_rows,
            store: tile_store_rows,
        }
    };
    match d {
        Some(d) => ce_small_rows_with::<true, _, _, _>(
            offsets,
            scales,
            x,
            codes,
            d,
            sums,
            ops(small_head::<true>),
        ),
        None => ce_small_rows_with::<false, _, _, _>(
            offsets,
            scales,
            x,
            codes,
            &mut [],
            sums,
            ops(small_head::<false>),
        ),
    }
}

/// The per-tile operations of [`ce_small_rows_with`]: `head(columns, codes, scale, sum)` for
/// each head (see [`small_head`]), and the transposes of a full tile, `load(8 rows, tile)` and
/// `store(tile, 8 rows)` (partial tiles take [`tile_load_rows`] / [`tile_store_rows`]).
struct TileOps<H, I, O> {
    head: H,
    load: I,
    store: O,
}

/// The portable tile operations.
type PortableOps = TileOps<
    fn(&mut [[f32; TILE_ROWS]], &[i8; TILE_ROWS], f32, &mut f64),
    fn(&[f32], &mut [[f32; TILE_ROWS]]),
    fn(&[[f32; TILE_ROWS]], &mut [f32]),
>;

/// [`ce_small_rows_body`] with (GRAD) or without the gradient, given the tile operations.
#[inline(always)]
fn ce_small_rows_with<const GRAD: bool, H, I, O>(
    offsets: &[usize],
    scales: &[f32],
    x: &[f32],
    codes: &[i8],
    d: &mut [f32],
    sums: &mut [f64],
    ops: TileOps<H, I, O>,
) where
    H: Fn(&mut [[f32; TILE_ROWS]], &[i8; TILE_ROWS], f32, &mut f64),
    I: Fn(&[f32], &mut [[f32; TILE_ROWS]]),
    O: Fn(&[[f32; TILE_ROWS]], &mut [f32]),
{
    const L: usize = TILE_ROWS;
    let t_count = offsets.len() - 1;
    let w = offsets[t_count];
    let rows = x.len() / w;
    let mut tile = vec![[0.0f32; L]; w];
    for r0 in (0..rows).step_by(L) {
        let k = (rows - r0).min(L);
        let xs = &x[r0 * w..(r0 + k) * w];
        if k == L {
            (ops.load)(xs, &mut tile);
        } else {
            tile_load_rows(xs, &mut tile);
        }
        for t in 0..t_count {
            let mut code = [-1i8; L];
            for (l, c) in code.iter_mut().enumerate().take(k) {
                *c = codes[(r0 + l) * t_count + t];
            }
            (ops.head)(
                &mut tile[offsets[t]..offsets[t + 1]],
                &code,
                scales[t],
                &mut sums[t],
            );
        }
        if GRAD {
            let ds = &mut d[r0 * w..(r0 + k) * w];
            if k == L {
                (ops.store)(&tile, ds);
            } else {
                tile_store_rows(&tile, ds);
            }
        }
    }
}

/// Transposes the rows `x` (up to [`TILE_ROWS`] of `tile.len()` floats) into the tile's lanes;
/// lanes past the last row get zeros (finite values, never valid).
fn tile_load_rows(x: &[f32], tile: &mut [[f32; TILE_ROWS]]) {
    let w = tile.len();
    let k = x.len() / w;
    for (l, xr) in x.chunks_exact(w).enumerate() {
        for (col, &v) in tile.iter_mut().zip(xr) {
            col[l] = v;
        }
    }
    for col in tile.iter_mut() {
        col[k..].fill(0.0);
    }
}

/// Transposes the tile's first lanes back into the rows `d` (up to [`TILE_ROWS`]).
fn tile_store_rows(tile: &[[f32; TILE_ROWS]], d: &mut [f32]) {
    for (l, dr) in d.chunks_exact_mut(tile.len()).enumerate() {
        for (v, col) in dr.iter_mut().zip(tile) {
            *v = col[l];
        }
    }
}

// Index loops over the tile's fixed-size lanes.
#[allow(clippy::needless_range_loop)]
/// One head of a tile (its columns, [`TILE_ROWS`] row lanes each), portable build: adds the
/// loss of each valid lane to `sum` in lane order and, with GRAD, replaces the head's logits
/// by the gradient (zeros in invalid lanes). `code` holds each lane's class (-1 where
/// invalid; valid ones below the head's size).
#[inline(always)]
fn small_head<const GRAD: bool>(
    head: &mut [[f32; TILE_ROWS]],
    code: &[i8; TILE_ROWS],
    scale: f32,
    sum: &mut f64,
) {
    const L: usize = TILE_ROWS;
    let valid: [bool; L] = std::array::from_fn(|l| code[l] >= 0);
    // The target logits, before the exps overwrite the tile.
    let xy: [f32; L] = std::array::from_fn(|l| {
        if valid[l] {
            head[code[l] as usize][l]
        } else {
            0.0
        }
    });
    let mut m = head[0];
    for col in &head[1..] {
        for l in 0..L {
            m[l] = if col[l] > m[l] { col[l] } else { m[l] };
        }
    }
    let mut s = [0.0f32; L];
    for col in head.iter_mut() {
        for l in 0..L {
            let e = exp_f32(col[l] - m[l]);
            if GRAD {
                col[l] = e;
            }
            s[l] += e;
        }
    }
    for l in 0..L {
        if valid[l] {
            *sum += (m[l] - xy[l]) as f64 + ln_sum(s[l]) as f64;
        }
    }
    if GRAD {
        let g: [f32; L] = std::array::from_fn(|l| scale / s[l]);
        for col in head.iter_mut() {
            for l in 0..L {
                col[l] = if valid[l] { col[l] * g[l] } else { 0.0 };
            }
        }
        for l in 0..L {
            if valid[l] {
                head[code[l] as usize][l] -= scale;
            }
        }
    }
}

/// ln(s) of a softmax denominator s >= 1 (a sum of exps whose largest term is 1), written to
/// vectorise: s = 2^k * m with m in [1, 2), ln s = k ln 2 + ln(1 + (m - 1)). Absolute error
/// about 1e-7 per unit of ln s; NaN for NaN s.
#[inline(always)]
pub(crate) fn ln_sum(s: f32) -> f32 {
    let bits = s.to_bits();
    let k = ((bits >> 23) as i32 - 127) as f32;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    // s * 0: NaN for NaN (the exponent bits alone would give a finite value), 0 otherwise.
    k * std::f32::consts::LN_2 + ln1p_unit(m - 1.0) + s * 0.0
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

/// Whole rows of the BCE on the path without the AVX-512 kernels: adds every valid element's
/// loss max(x,0) - x*y + log(1+e^-|x|) to `col_sums[column]` and, when `d` is given, writes
/// `d = col_scale[column] * (sigmoid(x) - y)` (0 where not valid). Returns false when a target
/// lies outside [0, 1]. Dispatches to a build for the widest vector unit the CPU has.
fn bce_rows(
    width: usize,
    x: &[f32],
    y: &[f32],
    valid: Option<&[u8]>,
    col_scale: &[f32],
    d: Option<&mut [f32]>,
    col_sums: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { bce_rows_avx512(width, x, y, valid, col_scale, d, col_sums) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { bce_rows_avx2(width, x, y, valid, col_scale, d, col_sums) };
        }
    }
    bce_rows_body(width, x, y, valid, col_scale, d, col_sums)
}

/// [`bce_rows_body`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bce_rows_avx512(
    width: usize,
    x: &[f32],
    y: &[f32],
    valid: Option<&[u8]>,
    col_scale: &[f32],
    d: Option<&mut [f32]>,
    col_sums: &mut [f64],
) -> bool {
    bce_rows_body(width, x, y, valid, col_scale, d, col_sums)
}

/// [`bce_rows_body`] with the whole vectors of each row in AVX2 + FMA intrinsics (see
/// [`avx2::bce_row`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bce_rows_avx2(
    width: usize,
    x: &[f32],
    y: &[f32],
    valid: Option<&[u8]>,
    col_scale: &[f32],
    d: Option<&mut [f32]>,
    col_sums: &mut [f64],
) -> bool {
    /// The AVX2 row kernel.
    struct Avx2;
    impl BceLead for Avx2 {
        #[inline(always)]
        fn lead<const GRAD: bool, const MASK: bool>(&self, row: BceRow<'_>) -> (usize, bool) {
            // SAFETY: only reached from bce_rows_avx2, whose caller checked AVX2 and FMA.
            unsafe { avx2::bce_row::<GRAD, MASK>(row) }
        }
    }
    bce_rows_cases(width, x, y, valid, col_scale, d, col_sums, Avx2)
}

/// The portable body of [`bce_rows`].
#[inline(always)]
fn bce_rows_body(
    width: usize,
    x: &[f32],
    y: &[f32],
    valid: Option<&[u8]>,
    col_scale: &[f32],
    d: Option<&mut [f32]>,
    col_sums: &mut [f64],
) -> bool {
    /// No vector kernel: the loop of [`bce_rows_with`] does every column.
    struct Portable;
    impl BceLead for Portable {
        #[inline(always)]
        fn lead<const GRAD: bool, const MASK: bool>(&self, _: BceRow<'_>) -> (usize, bool) {
            (0, false)
        }
    }
    bce_rows_cases(width, x, y, valid, col_scale, d, col_sums, Portable)
}

/// A vector kernel for a leading run of each BCE row's columns (see [`bce_rows_with`]).
trait BceLead {
    /// Does the leading columns of `row`; returns how many and whether a target among them
    /// lies outside [0, 1].
    fn lead<const GRAD: bool, const MASK: bool>(&self, row: BceRow<'_>) -> (usize, bool);
}

/// [`bce_rows_with`] instantiated for the (gradient, mask) case of the call, so that the
/// column loop has no branches left to stop the vectoriser.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bce_rows_cases(
    width: usize,
    x: &[f32],
    y: &[f32],
    valid: Option<&[u8]>,
    col_scale: &[f32],
    d: Option<&mut [f32]>,
    col_sums: &mut [f64],
    k: impl BceLead,
) -> bool {
    let sums = &mut col_sums[..width];
    let scale = &col_scale[..width];
    match (d, valid) {
        (Some(d), Some(v)) => {
            bce_rows_with::<true, true>(x, y, v, scale, d, sums, |r| k.lead::<true, true>(r))
        }
        (Some(d), None) => {
            bce_rows_with::<true, false>(x, y, &[], scale, d, sums, |r| k.lead::<true, false>(r))
        }
        (None, Some(v)) => bce_rows_with::<false, true>(x, y, v, scale, &mut [], sums, |r| {
            k.lead::<false, true>(r)
        }),
        (None, None) => bce_rows_with::<false, false>(x, y, &[], scale, &mut [], sums, |r| {
            k.lead::<false, false>(r)
        }),
    }
}

/// One row of the BCE for a vector kernel (see [`bce_rows_with`]).
pub(crate) struct BceRow<'a> {
    /// Logits of the row.
    pub x: &'a [f32],
    /// Targets of the row.
    pub y: &'a [f32],
    /// Validity of the row's elements (empty when every element counts).
    pub valid: &'a [u8],
    /// Gradient scale per column.
    pub scale: &'a [f32],
    /// The row's gradient (empty when none is asked for).
    pub d: &'a mut [f32],
    /// The row's losses to fill (0 where not valid).
    pub loss: &'a mut [f32],
}

// Index loops over re-sliced rows vectorise without bounds checks.
#[allow(clippy::needless_range_loop)]
/// [`bce_rows_body`] for one case: `valid` is read only with MASK and `d` written only with
/// GRAD; `sums` and `scale` hold one value per column. `lead(row)` handles a leading run of
/// each row's columns (a vector kernel) and returns how many and whether a target among them
/// lies outside [0, 1]; the loop here does the rest.
#[inline(always)]
fn bce_rows_with<const GRAD: bool, const MASK: bool>(
    x: &[f32],
    y: &[f32],
    valid: &[u8],
    scale: &[f32],
    d: &mut [f32],
    sums: &mut [f64],
    lead: impl Fn(BceRow<'_>) -> (usize, bool),
) -> bool {
    let width = sums.len();
    let mut bad = 0u32;
    // A row's losses in f32 first: with the f64 sums in the same loop the vectoriser picked
    // 4 lanes and masked stores (slower than the scalar code on Zen 3).
    let mut lrow = vec![0.0f32; width];
    for r in 0..x.len() / width {
        let row = r * width..(r + 1) * width;
        let (xr, yr) = (&x[row.clone()], &y[row.clone()]);
        let vr = if MASK { &valid[row.clone()] } else { &[][..] };
        let dr = if GRAD { &mut d[row] } else { &mut [][..] };
        let (c0, lead_bad) = lead(BceRow {
            x: xr,
            y: yr,
            valid: vr,
            scale,
            d: &mut *dr,
            loss: &mut lrow,
        });
        bad |= u32::from(lead_bad);
        for c in c0..width {
            let (xv, yv) = (xr[c], yr[c]);
            let keep = !MASK || vr[c] != 0;
            let e = exp_f32(-xv.abs());
            let l = xv.max(0.0) - xv * yv + ln1p_unit(e);
            lrow[c] = if keep { l } else { 0.0 };
            if GRAD {
                // sigmoid(x) from e = exp(-|x|) without overflow on either side.
                let inv = 1.0 / (1.0 + e);
                let sig = if xv >= 0.0 { inv } else { e * inv };
                dr[c] = if keep { scale[c] * (sig - yv) } else { 0.0 };
            }
            // NaN is outside too.
            bad |= u32::from(!(0.0..=1.0).contains(&yv));
        }
        for c in 0..width {
            sums[c] += lrow[c] as f64;
        }
    }
    bad == 0
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

/// The AVX-512 row kernels: whole rows of all heads at once, with 16-lane exp / log written
/// with intrinsics. A head of up to 16 classes is one masked vector (max, exp, sum and the
/// gradient without any scalar per-class work), the logs of up to 16 heads' sums are one
/// vector log, and BCE handles 16 columns per vector.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::PREFETCH_AHEAD;

    #[inline(always)]
    fn splat(v: f32) -> __m512 {
        // SAFETY: _mm512_set1_ps only needs AVX-512F, which every caller has enabled.
        unsafe { _mm512_set1_ps(v) }
    }

    /// exp of 16 lanes: the reduction and polynomial of [`super::exp_f32`] with the 2^k
    /// scaling done by vscalefps. 0 below -87.3 (and for -inf), saturating above 88, NaN
    /// stays NaN (the clamps take x as the operand that wins on NaN).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp16(x: __m512) -> __m512 {
        exp16n([x])[0]
    }

    /// [`exp16`] of N independent vectors, stage by stage: the N dependency chains are
    /// interleaved in program order, which the out-of-order core overlaps far better than N
    /// calls one after the other (measured: the row kernels were latency-bound).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp16n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let xc = x.map(|v| _mm512_min_ps(splat(88.0), _mm512_max_ps(splat(-87.3), v)));
        let k = xc.map(|v| {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(v, splat(std::f32::consts::LOG2_E)),
            )
        });
        let mut r: [__m512; N] =
            std::array::from_fn(|i| _mm512_fnmadd_ps(k[i], splat(LN2_HI), xc[i]));
        r = std::array::from_fn(|i| _mm512_fnmadd_ps(k[i], splat(LN2_LO), r[i]));
        let mut p = [splat(1.388_974_4e-3); N];
        for c in [8.333_452e-3, 4.166_666_8e-2, 1.666_666_7e-1, 0.5, 1.0, 1.0] {
            p = std::array::from_fn(|i| _mm512_fmadd_ps(p[i], r[i], splat(c)));
        }
        std::array::from_fn(|i| {
            let e = _mm512_scalef_ps(p[i], k[i]);
            let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x[i], splat(-87.3));
            _mm512_mask_mov_ps(e, under, _mm512_setzero_ps())
        })
    }

    /// 2^t of 16 lanes: round(t), a degree-5 minimax polynomial of 2^f on [-1/2, 1/2]
    /// (relative error 1e-7) and vscalefps. 0 where t < -125 (and for t = -inf; the result
    /// stays a normal float), NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp2_16(t: __m512) -> __m512 {
        exp2_16n([t])[0]
    }

    /// [`exp2_16`] of N independent vectors, stage by stage (see [`exp16n`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp2_16n<const N: usize>(t: [__m512; N]) -> [__m512; N] {
        let k: [__m512; N] = std::array::from_fn(|i| {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t[i])
        });
        let f: [__m512; N] = std::array::from_fn(|i| _mm512_sub_ps(t[i], k[i]));
        let mut p = [splat(1.327_647_2e-3); N];
        for c in [
            9.675_541e-3,
            5.550_713e-2,
            2.402_212e-1,
            6.931_469_4e-1,
            1.000_000_1,
        ] {
            p = std::array::from_fn(|i| _mm512_fmadd_ps(p[i], f[i], splat(c)));
        }
        std::array::from_fn(|i| {
            // Not less than -125, or NaN.
            let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(t[i], splat(-125.0));
            _mm512_maskz_scalef_ps(keep, p[i], k[i])
        })
    }

    /// 2^(x log2(e) - b) of 16 lanes (exp(x - m) when b = m log2(e), up to a common factor
    /// that the softmax kernel cancels): t = x log2(e) - b in one fused operation, then
    /// [`exp2_16`]. The rounding of t costs a relative error of about 6e-8 |x - m|, negligible
    /// against the terms near the maximum.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp2_fms16(x: __m512, b: __m512) -> __m512 {
        exp2_16(_mm512_fmsub_ps(x, splat(std::f32::consts::LOG2_E), b))
    }

    /// exp(-|x|) of N vectors of 16 lanes (the BCE kernel's e), stage by stage: [`exp2_16`]
    /// of -|x log2(e)|, the sign set with an integer or (AVX-512F has no float or). Relative
    /// error about 6e-8 |x| + 1e-7; 0 for |x| = inf, NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_neg_abs16n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        exp2_16n(std::array::from_fn(|i| {
            let t = _mm512_mul_ps(x[i], splat(std::f32::consts::LOG2_E));
            let t = _mm512_or_si512(_mm512_castps_si512(t), _mm512_set1_epi32(i32::MIN));
            _mm512_castsi512_ps(t)
        }))
    }

    /// a + ln(1 + e) for e in [0, 1], N vectors of 16 lanes, stage by stage: e q(e) + a with
    /// q a degree-8 minimax polynomial of ln(1 + e) / e (relative error 2e-7, none of it lost
    /// for tiny e), the addition fused into the last step; no division.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn ln1p_unit16_plus_n<const N: usize>(
        e: [__m512; N],
        a: [__m512; N],
    ) -> [__m512; N] {
        let mut q = [splat(5.232_694e-3); N];
        for c in [
            -2.950_523_8e-2,
            7.822_596e-2,
            -1.366_324_6e-1,
            1.910_600_7e-1,
            -2.484_298_2e-1,
            3.331_909_8e-1,
            -4.999_949_3e-1,
            9.999_999_4e-1,
        ] {
            q = std::array::from_fn(|i| _mm512_fmadd_ps(q[i], e[i], splat(c)));
        }
        std::array::from_fn(|i| _mm512_fmadd_ps(e[i], q[i], a[i]))
    }

    /// The BCE terms of N independent vectors, stage by stage (see [`exp16n`]): for each,
    /// e = exp(-|x|) ([`exp_neg_abs16n`]) and the loss max(x, 0) - x y + ln(1 + e)
    /// ([`ln1p_unit16_plus_n`]). One vector's steps form a chain of about 20 dependent
    /// operations, longer than the floating-point scheduler lets the core overlap across
    /// loop iterations; interleaved in program order, N chains run side by side.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn bce_terms_n<const N: usize>(
        x: [__m512; N],
        y: [__m512; N],
    ) -> ([__m512; N], [__m512; N]) {
        let e = exp_neg_abs16n(x);
        let base: [__m512; N] = std::array::from_fn(|i| {
            _mm512_fnmadd_ps(x[i], y[i], _mm512_max_ps(x[i], _mm512_setzero_ps()))
        });
        (e, ln1p_unit16_plus_n(e, base))
    }

    /// Natural log of 16 positive normal lanes (Cephes logf: mantissa in [sqrt(1/2), sqrt(2)),
    /// degree-8 polynomial, exponent times ln 2 in two parts); about 1 ulp, ln(1) = 0 exactly.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn ln16(x: __m512) -> __m512 {
        let m1 = _mm512_getmant_ps::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(x);
        let e = _mm512_getexp_ps(x);
        let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m1, splat(std::f32::consts::SQRT_2));
        let m = _mm512_mask_mul_ps(m1, big, m1, splat(0.5));
        let e = _mm512_mask_add_ps(e, big, e, splat(1.0));
        let f = _mm512_sub_ps(m, splat(1.0));
        let z = _mm512_mul_ps(f, f);
        let mut p = splat(7.037_683_6e-2);
        for c in [
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ] {
            p = _mm512_fmadd_ps(p, f, splat(c));
        }
        let y = _mm512_mul_ps(_mm512_mul_ps(p, f), z);
        let y = _mm512_fmadd_ps(e, splat(-2.121_944_4e-4), y);
        let y = _mm512_fnmadd_ps(z, splat(0.5), y);
        _mm512_fmadd_ps(e, splat(0.693_359_4), _mm512_add_ps(f, y))
    }

    /// ln(1 + e) for e in [0, 1] on N vectors of 16 lanes, stage by stage (see [`exp16n`]):
    /// the series of [`super::ln1p_unit`], with 1 / (2 + e) from rcp14 and one Newton step
    /// (relative error about 2^-28).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn ln1p_unit16n<const N: usize>(e: [__m512; N]) -> [__m512; N] {
        let a = e.map(|v| _mm512_add_ps(splat(2.0), v));
        let r0 = a.map(|v| _mm512_rcp14_ps(v));
        let r: [__m512; N] = std::array::from_fn(|i| {
            _mm512_mul_ps(r0[i], _mm512_fnmadd_ps(a[i], r0[i], splat(2.0)))
        });
        let u: [__m512; N] = std::array::from_fn(|i| _mm512_mul_ps(e[i], r[i]));
        let u2 = u.map(|v| _mm512_mul_ps(v, v));
        let mut p = [splat(1.0 / 13.0); N];
        for c in [1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
            p = std::array::from_fn(|i| _mm512_fmadd_ps(p[i], u2[i], splat(c)));
        }
        std::array::from_fn(|i| _mm512_mul_ps(_mm512_add_ps(u[i], u[i]), p[i]))
    }

    /// Mask of the first k lanes (k <= 16).
    #[inline(always)]
    fn first(k: usize) -> __mmask16 {
        ((1u32 << k) - 1) as __mmask16
    }

    /// `$op` over the first `$n` vectors of the array `$v` as a pairwise tree: neighbours first,
    /// an odd last one carried up. A macro rather than a function taking a closure: the
    /// closure would not inherit the caller's target features and would not inline.
    macro_rules! tree {
        ($v:expr, $n:expr, $op:ident) => {{
            let mut v = $v;
            let mut n = $n;
            while n > 1 {
                for i in 0..n / 2 {
                    v[i] = $op(v[2 * i], v[2 * i + 1]);
                }
                if n % 2 == 1 {
                    v[n / 2] = v[n - 1];
                }
                n = n.div_ceil(2);
            }
            v[0]
        }};
    }

    /// One row of the fused softmax cross-entropy over all heads.
    pub(super) struct CeRow<'a> {
        /// The layout's T + 1 offsets.
        pub offsets: &'a [usize],
        /// This row's T targets.
        pub targets: &'a [i64],
        /// This row's T mask entries, if any.
        pub mask: Option<&'a [u8]>,
        pub ignore_index: i64,
        /// Gradient scale p_t / n_t per task.
        pub scales: &'a [f32],
    }

    impl CeRow<'_> {
        /// Adds each valid head's loss to `sums` and writes the row's gradient if asked
        /// (zeros for invalid heads).
        ///
        /// # Safety
        /// AVX-512F; the target of every valid head must lie inside it (checked by the
        /// counting pass; indexing is bounds-checked anyway).
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run(&self, x: &[f32], mut d: Option<&mut [f32]>, sums: &mut [f64]) {
            let t_count = self.offsets.len() - 1;
            let mut t0 = 0;
            while t0 < t_count {
                let t1 = (t0 + 16).min(t_count);
                // Per head: m - x[y] and the exp sum s (1 for skipped heads, so ln s = 0).
                let mut shift = [0.0f32; 16];
                let mut s = [1.0f32; 16];
                let mut ok = [false; 16];
                // Valid heads of at most 16 classes, done together by `small_heads`.
                let mut small = [0usize; 16];
                let mut n_small = 0;
                for t in t0..t1 {
                    let r = self.offsets[t]..self.offsets[t + 1];
                    let y = self.targets[t];
                    let valid = y != self.ignore_index && self.mask.is_none_or(|m| m[t] != 0);
                    if valid && r.len() <= 16 {
                        ok[t - t0] = true;
                        small[n_small] = t;
                        n_small += 1;
                        continue;
                    }
                    let grad = d.as_deref_mut().map(|d| &mut d[r.clone()]);
                    if valid {
                        let xs = &x[r];
                        let y = y as usize;
                        let xy = xs[y];
                        // SAFETY: AVX-512F is enabled; y < xs.len() (indexed just above).
                        let (m, sum) = unsafe { head(xs, y, grad, self.scales[t]) };
                        shift[t - t0] = m - xy;
                        s[t - t0] = sum;
                        ok[t - t0] = true;
                    } else if let Some(g) = grad {
                        g.fill(0.0);
                    }
                }
                let heads = &small[..n_small];
                // SAFETY: AVX-512F is enabled; valid targets lie inside their heads.
                unsafe { self.small_heads(x, heads, t0, d.as_deref_mut(), &mut shift, &mut s) };
                // SAFETY: 16-element arrays.
                let ln = unsafe { _mm512_loadu_ps(s.as_ptr()) };
                let mut ln_s = [0.0f32; 16];
                // SAFETY: 16-element array.
                unsafe { _mm512_storeu_ps(ln_s.as_mut_ptr(), ln16(ln)) };
                for t in t0..t1 {
                    if ok[t - t0] {
                        sums[t] += shift[t - t0] as f64 + ln_s[t - t0] as f64;
                    }
                }
                t0 = t1;
            }
        }
    }

    impl CeRow<'_> {
        /// Softmax of up to 16 valid heads of at most 16 classes each, transposed: after
        /// loading head b into vector b (classes in lanes, -inf past the head) and a 16 x 16
        /// transpose, vector j holds class j of every head, so the max, the exp sum, the
        /// target logit, ln s and scale / s of all heads are plain lane-wise operations (no
        /// horizontal reductions, no scalar work per head). Sets `shift` (m - x[y]) and `s`
        /// at slot t - t0 and writes the gradients (transposed back) if asked.
        ///
        /// # Safety
        /// AVX-512F; every head's target lies inside it.
        #[target_feature(enable = "avx512f")]
        unsafe fn small_heads(
            &self,
            x: &[f32],
            heads: &[usize],
            t0: usize,
            d: Option<&mut [f32]>,
            shift: &mut [f32; 16],
            s: &mut [f32; 16],
        ) {
            let nb = heads.len();
            assert!(nb <= 16);
            if nb == 0 {
                return;
            }
            let range = |b: usize| self.offsets[heads[b]]..self.offsets[heads[b] + 1];
            let mut rows = [_mm512_setzero_ps(); 16];
            let mut ys = [-1i32; 16];
            let mut sc = [0.0f32; 16];
            let mut c_max = 0;
            for b in 0..nb {
                let xs = &x[range(b)];
                let y = self.targets[heads[b]];
                assert!(xs.len() <= 16 && (0..xs.len() as i64).contains(&y));
                c_max = c_max.max(xs.len());
                ys[b] = y as i32;
                sc[b] = self.scales[heads[b]];
                // SAFETY: the mask covers the head's values; masked lanes read nothing.
                rows[b] = unsafe {
                    _mm512_mask_loadu_ps(splat(f32::NEG_INFINITY), first(xs.len()), xs.as_ptr())
                };
            }
            let cols = transpose16(rows);
            // SAFETY: 16-element arrays.
            let (yv, scv) = unsafe {
                (
                    _mm512_loadu_si512(ys.as_ptr().cast()),
                    _mm512_loadu_ps(sc.as_ptr()),
                )
            };
            let mut m = cols[0];
            for col in &cols[1..c_max] {
                m = _mm512_max_ps(m, *col);
            }
            let mut e = [_mm512_setzero_ps(); 16];
            let mut sum = _mm512_setzero_ps();
            let mut xy = _mm512_setzero_ps();
            for j in 0..c_max {
                e[j] = exp16(_mm512_sub_ps(cols[j], m));
                sum = _mm512_add_ps(sum, e[j]);
                let is_y = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32(j as i32));
                xy = _mm512_mask_mov_ps(xy, is_y, cols[j]);
            }
            let mut shifts = [0.0f32; 16];
            let mut sums = [0.0f32; 16];
            // SAFETY: 16-element arrays.
            unsafe {
                _mm512_storeu_ps(shifts.as_mut_ptr(), _mm512_sub_ps(m, xy));
                _mm512_storeu_ps(sums.as_mut_ptr(), sum);
            }
            for b in 0..nb {
                shift[heads[b] - t0] = shifts[b];
                s[heads[b] - t0] = sums[b];
            }
            let Some(d) = d else { return };
            let k = _mm512_div_ps(scv, sum);
            let mut g = [_mm512_setzero_ps(); 16];
            for j in 0..c_max {
                let is_y = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32(j as i32));
                let gj = _mm512_mul_ps(e[j], k);
                g[j] = _mm512_mask_sub_ps(gj, is_y, gj, scv);
            }
            let g = transpose16(g);
            for b in 0..nb {
                let out = &mut d[range(b)];
                // SAFETY: the mask covers the head's out.len() <= 16 values.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), first(out.len()), g[b]) };
            }
        }
    }

    /// 16 lanes of tile storage, aligned to a cache line.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Lanes([f32; 16]);

    thread_local! {
        /// Tile storage of [`SmallTile::run`], kept per thread between calls (a block is a few
        /// microseconds of work; allocating and zeroing its tiles each time cost about 5%).
        static TILE: std::cell::RefCell<Vec<Lanes>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Softmax cross-entropy for layouts of small heads, 16 rows at a time with the rows in the
    /// lanes: the block's logits are transposed 16 x 16 into a tile where vector j holds
    /// column j of the 16 rows, so every head's max, exp sum, target logit, log and gradient
    /// are lane-wise operations on whole vectors (no lane is wasted whatever the head sizes,
    /// no horizontal reductions except one per head and block for the loss sum), and the
    /// gradient is transposed back. One pass over the logits: each is read from memory once
    /// and the tile stays in L1.
    pub(super) struct SmallTile<'a> {
        /// The layout's T + 1 offsets.
        pub offsets: &'a [usize],
        /// Gradient scale p_t / n_t per task.
        pub scales: &'a [f32],
    }

    impl SmallTile<'_> {
        /// Rows of a block: adds each valid head's loss to `sums` (T) and writes the rows'
        /// gradient (zeros for invalid heads) into `d` if asked.
        ///
        /// `codes` holds T codes per row (the class index of a valid entry, -1 for an invalid
        /// one; see `count_valid`) and then [`super::CODE_PAD`] bytes of any value.
        ///
        /// # Safety
        /// AVX-512F; `x` (and `d`) hold whole rows of the layout; the code of every valid
        /// entry lies inside its head (checked by the counting pass).
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run(
            &self,
            x: &[f32],
            codes: &[i8],
            mut d: Option<&mut [f32]>,
            sums: &mut [f64],
        ) {
            let t_count = self.offsets.len() - 1;
            let w = self.offsets[t_count];
            let rows = x.len() / w;
            assert!(x.len() == rows * w && codes.len() == rows * t_count + super::CODE_PAD);
            assert!(d.as_deref().is_none_or(|d| d.len() == x.len()));
            assert!(sums.len() == t_count && self.scales.len() == t_count);
            let need = w.div_ceil(16) * 16 + 4 * t_count.div_ceil(16) * 16;
            // Heads all of one size get a build of the block with that size fixed: the class
            // loops unroll and the per-class constants are hoisted.
            let c0 = self.offsets[1];
            let uniform = (0..t_count).all(|t| self.offsets[t + 1] - self.offsets[t] == c0);
            #[allow(clippy::type_complexity)]
            let block: unsafe fn(
                &Self,
                &[f32],
                &[i8],
                Option<&mut [f32]>,
                &mut [f64],
                &mut [Lanes],
            ) = match (uniform, c0) {
                (true, 2) => Self::block::<2>,
                (true, 3) => Self::block::<3>,
                (true, 4) => Self::block::<4>,
                (true, 5) => Self::block::<5>,
                (true, 8) => Self::block::<8>,
                (true, 10) => Self::block::<10>,
                (true, 16) => Self::block::<16>,
                _ => Self::block::<0>,
            };
            TILE.with_borrow_mut(|tile| {
                if tile.len() < need {
                    tile.resize(need, Lanes([0.0; 16]));
                }
                for r0 in (0..rows).step_by(16) {
                    let r1 = (r0 + 16).min(rows);
                    let dr = d.as_deref_mut().map(|d| &mut d[r0 * w..r1 * w]);
                    // SAFETY: AVX-512F is enabled; the slices are whole rows (asserted above)
                    // and the tile holds `need` vectors; C is 0 or the size of every head.
                    unsafe {
                        block(
                            self,
                            &x[r0 * w..r1 * w],
                            &codes[r0 * t_count..r1 * t_count + super::CODE_PAD],
                            dr,
                            sums,
                            tile,
                        )
                    };
                }
            });
        }

        /// Offset and size of head t: from the layout, or t C and C when every head has C
        /// classes (so the compiler sees the loop lengths).
        #[inline(always)]
        fn head<const C: usize>(&self, t: usize) -> (usize, usize) {
            if C > 0 {
                (t * C, C)
            } else {
                (self.offsets[t], self.offsets[t + 1] - self.offsets[t])
            }
        }

        // The head loops index the offsets, the scales, the sums and the tile by task.
        #[allow(clippy::needless_range_loop)]
        /// Up to 16 rows (see [`SmallTile::run`]); `tile` holds at least
        /// `ceil16(W) + 4 ceil16(T)` vectors.
        ///
        /// `C` > 0: every head has C classes (loops of compile-time length); 0: any sizes.
        ///
        /// # Safety
        /// As for `run`, with at most 16 rows; C is 0 or the size of every head.
        #[target_feature(enable = "avx512f")]
        unsafe fn block<const C: usize>(
            &self,
            x: &[f32],
            codes: &[i8],
            d: Option<&mut [f32]>,
            sums: &mut [f64],
            tile: &mut [Lanes],
        ) {
            let t_count = self.offsets.len() - 1;
            let w = self.offsets[t_count];
            let nr = x.len() / w;
            assert!((1..=16).contains(&nr) && codes.len() == nr * t_count + super::CODE_PAD);
            let (wb, tb) = (w.div_ceil(16), t_count.div_ceil(16));
            // Tile layout: W columns (16 rows each), then the T codes as i32, transposed (16
            // rows each), then three vectors per head (see the phases below).
            let (cols, ycols) = tile.split_at_mut(wb * 16);
            let ycols = &mut ycols[..4 * tb * 16];
            // Raw pointers into the tile (all indices below are inside the parts just split).
            let cols_p = cols.as_mut_ptr().cast::<f32>();
            let ycols_p = ycols.as_mut_ptr().cast::<i32>();
            let col = |j: usize| cols_p.wrapping_add(16 * j);
            let last = nr - 1;
            // Rows past the block repeat its last row (valid memory; never valid, never stored).
            for cb in 0..wb {
                let c0 = cb * 16;
                let cm = first((w - c0).min(16));
                // Plain loops and indexing rather than array::from_fn / into_iter(): those
                // moved the arrays through memory with a memcpy per transpose.
                let mut v = [_mm512_setzero_ps(); 16];
                for (r, vr) in v.iter_mut().enumerate() {
                    // SAFETY: the mask covers columns c0.. inside row min(r, last).
                    *vr =
                        unsafe { _mm512_maskz_loadu_ps(cm, x.as_ptr().add(r.min(last) * w + c0)) };
                }
                let t = transpose16(v);
                for (j, c) in t.iter().enumerate() {
                    // SAFETY: c0 + j < wb * 16 = cols.len(); Lanes are 64-byte aligned.
                    unsafe { _mm512_store_ps(col(c0 + j), *c) };
                }
            }
            // Codes of 16 tasks of the 16 rows widened to i32 and transposed: vector t then holds
            // task t's code in every row. Rows past the block get -1 (invalid); a load at the
            // end of a row reads the next row's codes or the padding, for tasks past T (unused).
            for b in 0..tb {
                let mut v = [_mm512_castsi512_ps(_mm512_set1_epi32(-1)); 16];
                for (r, vr) in v.iter_mut().enumerate().take(nr) {
                    // SAFETY: r T + 16 b + 16 <= (nr - 1) T + 16 tb <= nr T + 15 < codes.len().
                    let c =
                        unsafe { _mm_loadu_si128(codes.as_ptr().add(r * t_count + 16 * b).cast()) };
                    *vr = _mm512_castsi512_ps(_mm512_cvtepi8_epi32(c));
                }
                let t = transpose16(v);
                for (j, c) in t.iter().enumerate() {
                    // SAFETY: b * 16 + j < tb * 16, inside ycols.
                    unsafe { _mm512_store_ps(ycols_p.add(16 * (b * 16 + j)).cast(), *c) };
                }
            }
            let grad = d.is_some();
            // Per-head vectors between the phases below (part, head): 0 the rows' losses,
            // 1 m - x[y] - delta ln 2, 2 the exp sum.
            let head_p = |part: usize, t: usize| {
                ycols_p
                    .wrapping_add(16 * (tb * 16 * (1 + part) + t))
                    .cast::<f32>()
            };
            // The logs run over all heads after the exponentials rather than head by head: a
            // head's steps form one long dependency chain (max, exps, sum, log), and the
            // out-of-order core only overlaps consecutive heads when they are independent work
            // in one loop.
            // Software prefetch of the next block's logits and codes (contiguous after these)
            // is spread over the heads: the 16 rows are 16 streams for the hardware prefetcher.
            // (Prefetch addresses are never dereferenced: wrapping_add keeps them defined.)
            let x_lines = (x.len() * 4).div_ceil(64);
            let x_next = x.as_ptr().wrapping_add(x.len()).cast::<i8>();
            let y_lines = (nr * t_count).div_ceil(64);
            let codes_next = codes.as_ptr().wrapping_add(nr * t_count);
            // The next block's gradient lines too: fetched ahead, its stores do not wait for
            // the lines to be read (write-allocate) at the end of the next block.
            let d_next = d
                .as_deref()
                .map(|d| d.as_ptr().wrapping_add(d.len()).cast::<i8>());
            let d_lines = if d_next.is_some() { x_lines } else { 0 };
            let all_lines = x_lines + y_lines + d_lines;
            let per_head = all_lines.div_ceil(t_count);
            for t in 0..t_count {
                let (o, c) = self.head::<C>(t);
                assert!(o + c <= wb * 16);
                // SAFETY (tile loads and stores below): columns o..o + c < wb * 16; the head
                // vectors lie inside the tile.
                // With C fixed the head's columns stay in registers between the max and exp.
                let mut xs = [_mm512_setzero_ps(); 16];
                if C > 0 {
                    for j in 0..C {
                        xs[j] = unsafe { _mm512_load_ps(col(o + j)) };
                    }
                }
                let xj = |j: usize| {
                    if C > 0 {
                        xs[j]
                    } else {
                        unsafe { _mm512_load_ps(col(o + j)) }
                    }
                };
                // With C fixed, max and sum are pairwise trees (depth log2 C instead of a chain
                // of C - 1): a head's steps form one dependency chain, and the chain's length
                // is what limits the tile. A NaN anywhere reaches the sum whatever m is.
                let m = if C > 0 {
                    tree!(xs, C, _mm512_max_ps)
                } else {
                    let mut m = xj(0);
                    for j in 1..c {
                        m = _mm512_max_ps(xj(j), m);
                    }
                    m
                };
                // exp(x - m) as 2^(x log2 e - b) with b = m log2 e rounded: one fused op per
                // element instead of a subtraction and a multiplication. The common factor
                // 2^delta (delta = m log2 e - b, computed exactly) cancels in the softmax and
                // is taken out of the log below.
                let b = _mm512_mul_ps(m, splat(std::f32::consts::LOG2_E));
                let delta = _mm512_fmsub_ps(m, splat(std::f32::consts::LOG2_E), b);
                let yv = unsafe { _mm512_load_si512(ycols_p.add(16 * t).cast()) };
                let mut s = _mm512_setzero_ps();
                let mut xy = _mm512_setzero_ps();
                // With C fixed the exponentials stay in registers until the gradient below.
                let mut es = [_mm512_setzero_ps(); 16];
                for j in 0..c {
                    let x = xj(j);
                    let e = exp2_fms16(x, b);
                    if C > 0 {
                        es[j] = e;
                    } else {
                        if grad {
                            // Keep the exponential in the tile for the gradient.
                            unsafe { _mm512_store_ps(col(o + j), e) };
                        }
                        s = _mm512_add_ps(s, e);
                    }
                    let is_y = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32(j as i32));
                    xy = _mm512_mask_mov_ps(xy, is_y, x);
                }
                if C > 0 {
                    s = tree!(es, C, _mm512_add_ps);
                }
                let shift =
                    _mm512_fnmadd_ps(delta, splat(std::f32::consts::LN_2), _mm512_sub_ps(m, xy));
                unsafe {
                    _mm512_store_ps(head_p(1, t), shift);
                    _mm512_store_ps(head_p(2, t), s);
                }
                if grad {
                    // The head's gradient right away (the exponentials in registers or the tile):
                    // (scale / s) e - scale at the target, exact zeros in invalid rows (even
                    // with non-finite logits); invalid rows have code -1 and no one-hot lane.
                    let valid = _mm512_cmpge_epi32_mask(yv, _mm512_setzero_si512());
                    let k = _mm512_maskz_div_ps(valid, splat(self.scales[t]), s);
                    let sc = splat(self.scales[t]);
                    for j in 0..c {
                        let e = if C > 0 {
                            es[j]
                        } else {
                            unsafe { _mm512_load_ps(col(o + j)) }
                        };
                        let is_y = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32(j as i32));
                        let g = _mm512_maskz_mul_ps(valid, e, k);
                        unsafe { _mm512_store_ps(col(o + j), _mm512_mask_sub_ps(g, is_y, g, sc)) };
                    }
                }
                // Three plain loops (logits, codes, gradient lines) over this head's share
                // [lo, hi) of the next block's lines: one branchy loop choosing the stream per
                // line cost 14% of the kernel in cache (Zen 5, 1 thread, calls interleaved).
                // Prefetches never fault, so the addresses may lie past the slices; into L1
                // (T0), the gradient lines owned (prefetchw): 16.1 -> 16.6-17.2 GB/s against
                // L2 prefetches (Zen 5, 2 threads, calls interleaved).
                let (lo, hi) = (t * per_head, ((t + 1) * per_head).min(all_lines));
                for l in lo..hi.min(x_lines) {
                    _mm_prefetch::<_MM_HINT_T0>(x_next.wrapping_add(64 * l));
                }
                for l in lo.max(x_lines)..hi.min(x_lines + y_lines) {
                    _mm_prefetch::<_MM_HINT_T0>(codes_next.wrapping_add(64 * (l - x_lines)));
                }
                if let Some(dp) = d_next {
                    for l in lo.max(x_lines + y_lines)..hi {
                        _mm_prefetch::<_MM_HINT_ET0>(dp.wrapping_add(64 * (l - x_lines - y_lines)));
                    }
                }
            }
            for t in 0..t_count {
                // SAFETY: as above.
                let (shift, s) =
                    unsafe { (_mm512_load_ps(head_p(1, t)), _mm512_load_ps(head_p(2, t))) };
                let yv = unsafe { _mm512_load_si512(ycols_p.add(16 * t).cast()) };
                let valid = _mm512_cmpge_epi32_mask(yv, _mm512_setzero_si512());
                // loss = (m - x[y]) + ln s, zero for invalid rows; summed over the rows below.
                let loss = _mm512_maskz_add_ps(valid, shift, ln16(s));
                unsafe { _mm512_store_ps(head_p(0, t), loss) };
            }
            // Each head's loss summed over the block's rows in f32 (16 non-negative terms),
            // 16 heads at a time: transposed, the sums are lane-wise additions; then widened
            // once and added to the f64 task sums.
            for g in 0..tb {
                let mut v = [_mm512_setzero_ps(); 16];
                for (j, vj) in v.iter_mut().enumerate() {
                    let t = 16 * g + j;
                    // SAFETY: as above; heads past T have no loss.
                    if t < t_count {
                        *vj = unsafe { _mm512_load_ps(head_p(0, t)) };
                    }
                }
                let r = transpose16(v);
                let mut q = [_mm512_setzero_ps(); 8];
                for i in 0..8 {
                    q[i] = _mm512_add_ps(r[2 * i], r[2 * i + 1]);
                }
                for i in 0..4 {
                    q[i] = _mm512_add_ps(q[2 * i], q[2 * i + 1]);
                }
                let tot = _mm512_add_ps(_mm512_add_ps(q[0], q[1]), _mm512_add_ps(q[2], q[3]));
                let k = (t_count - 16 * g).min(16);
                let (mlo, mhi) = ((first(k) & 0xff) as __mmask8, (first(k) >> 8) as __mmask8);
                let hi = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(tot));
                let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(tot));
                let hi = _mm512_cvtps_pd(_mm256_castsi256_ps(hi));
                let acc = sums.as_mut_ptr().wrapping_add(16 * g);
                // SAFETY: the masks cover sums[16 g..16 g + k], inside `sums` (T long).
                unsafe {
                    let a = _mm512_maskz_loadu_pd(mlo, acc);
                    _mm512_mask_storeu_pd(acc, mlo, _mm512_add_pd(a, lo));
                    let a = _mm512_maskz_loadu_pd(mhi, acc.wrapping_add(8));
                    _mm512_mask_storeu_pd(acc.wrapping_add(8), mhi, _mm512_add_pd(a, hi));
                }
            }
            let Some(d) = d else { return };
            for cb in 0..wb {
                let c0 = cb * 16;
                let k = (w - c0).min(16);
                let mut v = [_mm512_setzero_ps(); 16];
                for (j, vj) in v.iter_mut().enumerate() {
                    // SAFETY: c0 + j < wb * 16.
                    *vj = unsafe { _mm512_load_ps(col(c0 + j)) };
                }
                let g = transpose16(v);
                for (r, gr) in g.iter().enumerate().take(nr) {
                    let out = &mut d[r * w + c0..r * w + c0 + k];
                    // SAFETY: out holds k values (a full vector when k = 16).
                    unsafe {
                        if k == 16 {
                            _mm512_storeu_ps(out.as_mut_ptr(), *gr);
                        } else {
                            _mm512_mask_storeu_ps(out.as_mut_ptr(), first(k), *gr);
                        }
                    }
                }
            }
        }
    }

    /// 16 x 16 transpose: lane j of result i is lane i of input j.
    #[inline]
    #[target_feature(enable = "avx512f")]
    // Each step reads other entries of the previous array than the one it writes.
    #[allow(clippy::needless_range_loop)]
    pub(super) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // Plain loops over arrays built in place (array::from_fn went through a memcpy of the
        // 1 KiB arrays in the tile kernel).
        // Per 128-bit lane L: t[2i] = rows 2i, 2i+1 interleaved at columns 4L, 4L+1, and
        // t[2i+1] at columns 4L+2, 4L+3.
        let mut t = [_mm512_setzero_ps(); 16];
        for k in 0..16 {
            let (a, b) = (r[k & !1], r[k | 1]);
            t[k] = if k % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            };
        }
        // u[4g + c], lane L: column 4L + c of rows 4g..4g + 4.
        let mut u = [_mm512_setzero_ps(); 16];
        for k in 0..16 {
            let (g, c) = (k / 4, k % 4);
            let a = _mm512_castps_pd(t[4 * g + c / 2]);
            let b = _mm512_castps_pd(t[4 * g + 2 + c / 2]);
            u[k] = _mm512_castpd_ps(if c % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            });
        }
        // p[c] / q[c]: even / odd 128-bit lanes of u[c], u[4 + c]; pp / qq the same for
        // u[8 + c], u[12 + c].
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let p = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let q = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
            let pp = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let qq = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            out[c] = _mm512_shuffle_f32x4::<0x88>(p, pp);
            out[4 + c] = _mm512_shuffle_f32x4::<0x88>(q, qq);
            out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(p, pp);
            out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(q, qq);
        }
        out
    }

    /// Softmax of one head: returns (shift, s) with loss = shift - x[y] + ln s (shift = max
    /// and s = sum of exp(x - max) up to 16 classes; above, both carry the common factor of
    /// the 2^(x log2 e - b) form); writes `scale * (softmax - onehot(y))` into `grad` when
    /// given.
    ///
    /// # Safety
    /// AVX-512F; y < x.len(); grad (if any) as long as x.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn head(x: &[f32], y: usize, grad: Option<&mut [f32]>, scale: f32) -> (f32, f32) {
        let c = x.len();
        let neg_inf = splat(f32::NEG_INFINITY);
        if c <= 16 {
            let mk = first(c);
            // SAFETY: the mask covers the c valid values; masked lanes read nothing.
            let v = unsafe { _mm512_mask_loadu_ps(neg_inf, mk, x.as_ptr()) };
            let m = _mm512_reduce_max_ps(v);
            let e = exp16(_mm512_sub_ps(v, splat(m)));
            let s = _mm512_reduce_add_ps(e);
            if let Some(g) = grad {
                assert_eq!(g.len(), c);
                let dv = _mm512_mul_ps(e, splat(scale / s));
                let dv = _mm512_mask_sub_ps(dv, 1 << y, dv, splat(scale));
                // SAFETY: g holds c values.
                unsafe { _mm512_mask_storeu_ps(g.as_mut_ptr(), mk, dv) };
            }
            return (m, s);
        }
        let full = c / 16 * 16;
        let tail = first(c - full);
        let p = x.as_ptr();
        // SAFETY (loads below): k + 16 <= full <= c, and the tail mask covers c - full values.
        let mut mv = neg_inf;
        for k in (0..full).step_by(16) {
            // The logits PREFETCH_AHEAD values on (the next row's, whatever the layout):
            // without it each row's first pass waits for its lines (C = 1,000: 18 -> 20-22
            // GB/s, 2 threads, calls interleaved with and without).
            // A prefetch never faults and does not access memory semantically.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(k + PREFETCH_AHEAD).cast::<i8>());
            mv = _mm512_max_ps(mv, unsafe { _mm512_loadu_ps(p.add(k)) });
        }
        mv = _mm512_max_ps(mv, unsafe {
            _mm512_mask_loadu_ps(neg_inf, tail, p.add(full))
        });
        let m = _mm512_reduce_max_ps(mv);
        // exp(x - m) as 2^(x log2 e - b) with b = m log2 e rounded, as in the small-head tile:
        // one fused operation per element instead of a subtraction and the range reduction
        // of exp; the common factor 2^delta (delta = m log2 e - b, exact) cancels in the
        // softmax and is taken out of the log through the returned shift.
        let bv = _mm512_mul_ps(splat(m), splat(std::f32::consts::LOG2_E));
        let delta = _mm512_cvtss_f32(_mm512_fmsub_ps(
            splat(m),
            splat(std::f32::consts::LOG2_E),
            bv,
        ));
        if let Some(g) = grad.as_deref() {
            assert_eq!(g.len(), c);
        }
        // Keep the exponentials in the output row (in L1) to avoid a second exp pass.
        let q = grad.map(|g| g.as_mut_ptr());
        // Four vectors per step with four sums (see exp16n), summed in a fixed order.
        let mut sv = [_mm512_setzero_ps(); 4];
        let mut k = 0;
        while k + 64 <= full {
            let e = exp2_16n::<4>(std::array::from_fn(|i| {
                let x = unsafe { _mm512_loadu_ps(p.add(k + 16 * i)) };
                _mm512_fmsub_ps(x, splat(std::f32::consts::LOG2_E), bv)
            }));
            for i in 0..4 {
                if let Some(q) = q {
                    unsafe { _mm512_storeu_ps(q.add(k + 16 * i), e[i]) };
                }
                sv[i] = _mm512_add_ps(sv[i], e[i]);
            }
            k += 64;
        }
        while k < full {
            let e = exp2_fms16(unsafe { _mm512_loadu_ps(p.add(k)) }, bv);
            if let Some(q) = q {
                unsafe { _mm512_storeu_ps(q.add(k), e) };
            }
            sv[0] = _mm512_add_ps(sv[0], e);
            k += 16;
        }
        let v = unsafe { _mm512_mask_loadu_ps(neg_inf, tail, p.add(full)) };
        let e = exp2_fms16(v, bv);
        if let Some(q) = q {
            unsafe { _mm512_mask_storeu_ps(q.add(full), tail, e) };
        }
        sv[0] = _mm512_add_ps(sv[0], e);
        let s = _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(sv[0], sv[1]),
            _mm512_add_ps(sv[2], sv[3]),
        ));
        if let Some(q) = q {
            let kv = splat(scale / s);
            for k in (0..full).step_by(16) {
                unsafe { _mm512_storeu_ps(q.add(k), _mm512_mul_ps(_mm512_loadu_ps(q.add(k)), kv)) };
            }
            let v = unsafe { _mm512_maskz_loadu_ps(tail, q.add(full)) };
            unsafe { _mm512_mask_storeu_ps(q.add(full), tail, _mm512_mul_ps(v, kv)) };
            // SAFETY: y < c (the caller's contract, asserted by indexing in CeRow::run).
            unsafe { *q.add(y) -= scale };
        }
        (m - delta * std::f32::consts::LN_2, s)
    }

    /// [`super::count_valid`], eight tasks per vector (the scalar loop was a tenth of a
    /// small-head CE call).
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn count_valid(
        ys: &[i64],
        mask: Option<&[u8]>,
        sizes: &[u64],
        ignore: i64,
        mut codes: Option<&mut [i8]>,
    ) -> (Vec<usize>, bool) {
        let t_count = sizes.len();
        assert!(ys.len().is_multiple_of(t_count) && mask.is_none_or(|m| m.len() == ys.len()));
        assert!(codes.as_deref().is_none_or(|c| c.len() == ys.len()));
        let minus1 = _mm_set1_epi8(-1);
        let blocks = t_count.div_ceil(8);
        let mut cnt = vec![_mm512_setzero_si512(); blocks];
        let size_v: Vec<__m512i> = (0..blocks)
            .map(|b| {
                let k = (t_count - 8 * b).min(8);
                // SAFETY: the mask covers sizes 8 b..8 b + k.
                unsafe {
                    _mm512_maskz_loadu_epi64(first(k) as __mmask8, sizes.as_ptr().add(8 * b).cast())
                }
            })
            .collect();
        let (ign, one) = (_mm512_set1_epi64(ignore), _mm512_set1_epi64(1));
        let mut bad: __mmask8 = 0;
        for r in 0..ys.len() / t_count {
            for b in 0..blocks {
                let at = r * t_count + 8 * b;
                let k = (t_count - 8 * b).min(8);
                let m8 = first(k) as __mmask8;
                // The targets PREFETCH_AHEAD entries on (a line per 8): the 40 heads x 10
                // benchmark went from 18 to 22.5 GB/s with this pass's reads prefetched (2
                // threads, calls interleaved). Prefetches never fault.
                _mm_prefetch::<_MM_HINT_T0>(ys.as_ptr().wrapping_add(at + PREFETCH_AHEAD).cast());
                // SAFETY: the mask covers targets at..at + k of row r.
                let y = unsafe { _mm512_maskz_loadu_epi64(m8, ys.as_ptr().add(at).cast()) };
                let mut ok = m8 & _mm512_cmpneq_epi64_mask(y, ign);
                if let Some(m) = mask {
                    let mb = &m[at..at + k];
                    ok &= if k == 8 {
                        let v = u64::from_le_bytes(mb.try_into().expect("8 bytes"));
                        _mm512_cmpneq_epi64_mask(
                            _mm512_cvtepu8_epi64(_mm_cvtsi64_si128(v as i64)),
                            _mm512_setzero_si512(),
                        )
                    } else {
                        mb.iter()
                            .enumerate()
                            .fold(0, |acc, (l, &v)| acc | (u8::from(v != 0) << l))
                    };
                }
                cnt[b] = _mm512_mask_add_epi64(cnt[b], ok, cnt[b], one);
                // Unsigned: a negative target is out of range too.
                bad |= ok & _mm512_cmpge_epu64_mask(y, size_v[b]);
                if let Some(c) = codes.as_deref_mut() {
                    // The 8 targets narrowed to bytes, -1 where invalid.
                    let c8 = _mm512_mask_cvtepi64_epi8(minus1, ok, y);
                    let out = &mut c[at..at + k];
                    if k == 8 {
                        // SAFETY: out holds 8 bytes.
                        unsafe { _mm_storel_epi64(out.as_mut_ptr().cast(), c8) };
                    } else {
                        let mut tmp = [0i8; 16];
                        // SAFETY: 16-byte array.
                        unsafe { _mm_storeu_si128(tmp.as_mut_ptr().cast(), c8) };
                        out.copy_from_slice(&tmp[..k]);
                    }
                }
            }
        }
        let mut counts = vec![0usize; t_count];
        for (b, c) in cnt.iter().enumerate() {
            let mut lanes = [0u64; 8];
            // SAFETY: 8 lanes into an 8-element array.
            unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), *c) };
            for (l, &v) in lanes.iter().enumerate().take((t_count - 8 * b).min(8)) {
                counts[8 * b + l] = v as usize;
            }
        }
        (counts, bad != 0)
    }

    /// [`super::stream_copy`] with 64-byte streaming stores.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn stream_copy(src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let n = dst.len();
        let head = dst.as_ptr().align_offset(64).min(n);
        let body = head + (n - head) / 16 * 16;
        dst[..head].copy_from_slice(&src[..head]);
        for k in (head..body).step_by(16) {
            // SAFETY: k + 16 <= body <= n for both slices; dst + k is 64-byte aligned.
            unsafe {
                _mm512_stream_ps(
                    dst.as_mut_ptr().add(k),
                    _mm512_loadu_ps(src.as_ptr().add(k)),
                )
            };
        }
        dst[body..].copy_from_slice(&src[body..]);
    }

    /// Rows of the fused sigmoid binary cross-entropy as one flat run of elements, 16 per
    /// vector whatever the row width (a row of 40 columns as 16 + 16 + 8 lanes left a sixth
    /// of every vector idle): lane l of vector v is column (16 v + l) mod W, so the column a
    /// lane stands for repeats with a period of P = lcm(W, 16) / 16 vectors, and the
    /// per-column gradient scales and loss sums are kept per phase v mod P.
    pub(super) struct BceFlat<'a> {
        /// The rows' logits (rows x width, starting at a row whose phase is 0).
        pub logits: &'a [f32],
        /// The rows' targets.
        pub targets: &'a [f32],
        /// Per-element validity (nonzero = counts); None when every element counts.
        pub valid: Option<&'a [u8]>,
        /// Gradient scale of lane l at phase p: entry 16 p + l (P x 16, P <= 64).
        pub phase_scale: &'a [f32],
    }

    /// Periods whose losses are summed in f32 before they are widened into the f64 phase sums
    /// (four terms per lane: the widening was a tenth of the kernel's operations).
    const BCE_F32_PERIODS: usize = 4;

    impl BceFlat<'_> {
        /// Adds each valid element's loss to `phase_sums[16 p + l]` (in element order, four
        /// periods at a time summed in f32 first) and writes `scale * (sigmoid(x) - y)` (0
        /// where invalid) into `d` if given. Returns false if a target is outside [0, 1] (or
        /// NaN).
        ///
        /// # Safety
        /// AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run(&self, d: Option<&mut [f32]>, phase_sums: &mut [f64]) -> bool {
            let len = self.logits.len();
            let phases = self.phase_scale.len() / 16;
            assert!(self.targets.len() == len && self.valid.is_none_or(|v| v.len() == len));
            assert!((1..=super::BCE_MAX_PHASES).contains(&phases));
            assert!(self.phase_scale.len() == 16 * phases && phase_sums.len() == 16 * phases);
            assert!(d.as_deref().is_none_or(|d| d.len() == len));
            // One build per (gradient, mask) case: the loop body then has no branch on either.
            let q = d.map_or(std::ptr::null_mut(), |d| d.as_mut_ptr());
            // SAFETY: the lengths are asserted above; q is null exactly when GRAD is false.
            unsafe {
                match (q.is_null(), self.valid) {
                    (false, Some(val)) => self.run_with::<true, true>(q, val, phase_sums),
                    (false, None) => self.run_with::<true, false>(q, &[], phase_sums),
                    (true, Some(val)) => self.run_with::<false, true>(q, val, phase_sums),
                    (true, None) => self.run_with::<false, false>(q, &[], phase_sums),
                }
            }
        }

        /// [`Self::run`] for a gradient pointer `q` (GRAD) and validity bytes `val` (MASK):
        /// one vector per iteration in element order, so that the loop body is the vector
        /// arithmetic and little else, and the out-of-order core overlaps consecutive vectors
        /// (an earlier version interleaved four vectors by hand; the compiler rolled that back
        /// into a loop with its vectors and bookkeeping on the stack, about twice as slow).
        ///
        /// # Safety
        /// AVX-512F; `q` valid for `logits.len()` writes when GRAD; `val` as long as the
        /// logits when MASK.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run_with<const GRAD: bool, const MASK: bool>(
            &self,
            q: *mut f32,
            val: &[u8],
            phase_sums: &mut [f64],
        ) -> bool {
            let len = self.logits.len();
            let phases = self.phase_scale.len() / 16;
            let zero = _mm512_setzero_ps();
            let nv = len.div_ceil(16);
            let group = BCE_F32_PERIODS * phases;
            let mut part = [zero; super::BCE_MAX_PHASES];
            let part_p = part.as_mut_ptr();
            let mut bad: __mmask16 = 0;
            let mut v0 = 0;
            while v0 < nv {
                let end = (v0 + group).min(nv);
                // Phase of vector v (v0 is a whole number of periods), counted along.
                let mut p = 0;
                let mut v = v0;
                while v < end {
                    // BCE_LANES whole vectors at a time where they fit, else one (masked).
                    // SAFETY: the lanes under the masks lie inside the slices; every phase
                    // index is < phases.
                    if v + BCE_LANES <= end && 16 * (v + BCE_LANES) <= len {
                        bad |= unsafe {
                            self.lanes::<GRAD, MASK, BCE_LANES>(q, val, v, &mut p, part_p)
                        };
                        v += BCE_LANES;
                    } else {
                        bad |= unsafe { self.lanes::<GRAD, MASK, 1>(q, val, v, &mut p, part_p) };
                        v += 1;
                    }
                }
                // Widen the group's f32 partial sums into the f64 phase sums.
                for (p, pp) in part.iter_mut().enumerate().take(phases) {
                    let hi = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(*pp));
                    let acc = phase_sums[16 * p..16 * p + 16].as_mut_ptr();
                    // SAFETY: 16 values from 16 p.
                    unsafe {
                        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(*pp));
                        _mm512_storeu_pd(acc, _mm512_add_pd(_mm512_loadu_pd(acc), lo));
                        let hi = _mm512_cvtps_pd(_mm256_castsi256_ps(hi));
                        _mm512_storeu_pd(
                            acc.add(8),
                            _mm512_add_pd(_mm512_loadu_pd(acc.add(8)), hi),
                        );
                    }
                    *pp = zero;
                }
                v0 = end;
            }
            bad == 0
        }
    }

    /// Whole vectors handled together by [`BceFlat`] (see [`bce_terms_n`]).
    const BCE_LANES: usize = 4;

    /// scale * (sigmoid(x) - y) where `vk`, 0 elsewhere, from e = exp(-|x|): sigmoid without
    /// overflow on either side. A division (a separate unit, otherwise idle here) rather than
    /// rcp14 and a Newton step (measured about 3% slower).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bce_grad(x: __m512, y: __m512, e: __m512, scale: __m512, vk: __mmask16) -> __m512 {
        let one = splat(1.0);
        let rc = _mm512_div_ps(one, _mm512_add_ps(one, e));
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
        let sig = _mm512_mask_mul_ps(rc, neg, e, rc);
        _mm512_maskz_mul_ps(vk, scale, _mm512_sub_ps(sig, y))
    }

    impl BceFlat<'_> {
        /// U vectors from vector v (whole when U > 1; a single one may be partial, its lanes
        /// past the logits neither read nor written): their losses added to the phase accumulators `part`
        /// (phases counted along in `p`) and their gradients written to `q` (GRAD). Returns
        /// the lanes whose target is outside [0, 1] (or NaN), or-ed over the vectors.
        ///
        /// # Safety
        /// AVX-512F; vector v (and, for U > 1, whole vectors v..v + U) inside the slices (and
        /// `q`, `val`); `part` holds the phases' accumulators.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn lanes<const GRAD: bool, const MASK: bool, const U: usize>(
            &self,
            q: *mut f32,
            val: &[u8],
            v: usize,
            p: &mut usize,
            part: *mut __m512,
        ) -> __mmask16 {
            let len = self.logits.len();
            let phases = self.phase_scale.len() / 16;
            let (xp, yp) = (self.logits.as_ptr(), self.targets.as_ptr());
            // Several vectors are always whole (the caller's contract): constant masks keep the
            // mask arithmetic and its branches off the main path.
            let mk: [__mmask16; U] = std::array::from_fn(|u| {
                if U > 1 {
                    u16::MAX
                } else {
                    first((len - 16 * (v + u)).min(16))
                }
            });
            if U > 1 {
                // Every stream PREFETCH_AHEAD elements on: logits, targets and mask bytes
                // read, gradient lines owned before the stores reach them (prefetchw). The
                // four streams cross 4 KiB pages where the hardware prefetchers stop; with
                // these the BCE benchmark went from 16-17 to 23 GB/s (2 threads, calls
                // interleaved with and without; the reads alone: 21).
                // Prefetches never fault and do not access memory semantically.
                let k = 16 * v + PREFETCH_AHEAD;
                for u in 0..U {
                    _mm_prefetch::<_MM_HINT_T0>(xp.wrapping_add(k + 16 * u).cast::<i8>());
                    _mm_prefetch::<_MM_HINT_T0>(yp.wrapping_add(k + 16 * u).cast::<i8>());
                    if GRAD {
                        _mm_prefetch::<_MM_HINT_ET0>(q.wrapping_add(k + 16 * u).cast::<i8>());
                    }
                }
                if MASK {
                    // One byte per element: a line per 4 vectors.
                    for u in (0..U).step_by(4) {
                        _mm_prefetch::<_MM_HINT_T0>(
                            val.as_ptr().wrapping_add(k + 16 * u).cast::<i8>(),
                        );
                    }
                }
            }
            // SAFETY: forwarded contract; the masks cover only lanes inside the slices.
            let x: [__m512; U] = std::array::from_fn(|u| unsafe {
                _mm512_maskz_loadu_ps(mk[u], xp.add(16 * (v + u)))
            });
            let y: [__m512; U] = std::array::from_fn(|u| unsafe {
                _mm512_maskz_loadu_ps(mk[u], yp.add(16 * (v + u)))
            });
            let vk: [__mmask16; U] = std::array::from_fn(|u| {
                let k = 16 * (v + u);
                if !MASK {
                    mk[u]
                } else if mk[u] == u16::MAX {
                    // SAFETY: 16 bytes from k lie inside `val`.
                    let b = unsafe { _mm_loadu_si128(val.as_ptr().add(k).cast()) };
                    _mm512_cmpneq_epi32_mask(_mm512_cvtepu8_epi32(b), _mm512_setzero_si512())
                } else {
                    val[k..len]
                        .iter()
                        .enumerate()
                        .fold(0, |acc, (l, &b)| acc | (u16::from(b != 0) << l))
                }
            });
            let mut bad = 0;
            for u in 0..U {
                // Two comparisons (NaN fails both).
                bad |= mk[u]
                    & (_mm512_cmp_ps_mask::<_CMP_NGE_UQ>(y[u], _mm512_setzero_ps())
                        | _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(y[u], splat(1.0)));
            }
            let (e, loss) = bce_terms_n(x, y);
            for u in 0..U {
                // SAFETY: *p < phases: part has entry *p, phase_scale 16 values from 16 *p.
                unsafe {
                    let acc = part.add(*p);
                    *acc = _mm512_mask_add_ps(*acc, vk[u], *acc, loss[u]);
                    if GRAD {
                        let scale = _mm512_loadu_ps(self.phase_scale.as_ptr().add(16 * *p));
                        let g = bce_grad(x[u], y[u], e[u], scale, vk[u]);
                        _mm512_mask_storeu_ps(q.add(16 * (v + u)), mk[u], g);
                    }
                }
                *p += 1;
                if *p == phases {
                    *p = 0;
                }
            }
            bad
        }
    }

    /// Rows of the fused sigmoid binary cross-entropy (one parallel chunk).
    pub(super) struct BceRows<'a> {
        /// Row width (columns).
        pub width: usize,
        /// The chunk's logits, rows x width.
        pub logits: &'a [f32],
        /// The chunk's targets, rows x width.
        pub targets: &'a [f32],
        /// Per-element validity, rows x width (nonzero = the sample counts for the column's
        /// task); None when every element counts.
        pub valid: Option<&'a [u8]>,
        /// Gradient scale p_t / (n_t C_t) of each column's task.
        pub col_scale: &'a [f32],
    }

    /// Rows handled together: their vector steps are independent, which keeps the long
    /// exp / log dependency chains overlapping instead of waiting on each other.
    const BCE_ROWS: usize = 4;

    impl BceRows<'_> {
        /// Adds each valid element's loss to `col_sums[column]` (f64, in row order; length
        /// padded to a multiple of 16) and writes `scale * (sigmoid(x) - y)` (0 where invalid)
        /// into `d` if given. Returns false if a target is outside [0, 1] (or NaN).
        ///
        /// # Safety
        /// AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run(&self, d: Option<&mut [f32]>, col_sums: &mut [f64]) -> bool {
            let w = self.width;
            let len = self.logits.len();
            assert!(w > 0 && len.is_multiple_of(w) && self.targets.len() == len);
            assert!(self.col_scale.len() == w && col_sums.len() >= w.next_multiple_of(16));
            assert!(d.as_deref().is_none_or(|d| d.len() == len));
            assert!(self.valid.is_none_or(|v| v.len() == len));
            let rows = len / w;
            let d = d.map(|d| d.as_mut_ptr());
            let (zero, one) = (_mm512_setzero_ps(), splat(1.0));
            let mut bad: __mmask16 = 0;
            let mut r0 = 0;
            while r0 < rows {
                for c in (0..w).step_by(16) {
                    let k = (w - c).min(16);
                    let mut sum_lo = _mm512_setzero_pd();
                    let mut sum_hi = _mm512_setzero_pd();
                    let sc =
                        unsafe { _mm512_maskz_loadu_ps(first(k), self.col_scale.as_ptr().add(c)) };
                    // Stage by stage over the BCE_ROWS rows (see exp16n).
                    let at: [usize; BCE_ROWS] =
                        std::array::from_fn(|u| (r0 + u).min(rows - 1) * w + c);
                    // Rows past the end get an empty mask (and a valid row's address).
                    let mk: [__mmask16; BCE_ROWS] =
                        std::array::from_fn(|u| if r0 + u < rows { first(k) } else { 0 });
                    // SAFETY (loads and stores): elements at..at + k exist in every rows x
                    // width buffer (lengths asserted above); masked lanes are not accessed.
                    let x: [__m512; BCE_ROWS] = std::array::from_fn(|u| unsafe {
                        _mm512_maskz_loadu_ps(mk[u], self.logits.as_ptr().add(at[u]))
                    });
                    let y: [__m512; BCE_ROWS] = std::array::from_fn(|u| unsafe {
                        _mm512_maskz_loadu_ps(mk[u], self.targets.as_ptr().add(at[u]))
                    });
                    for u in 0..BCE_ROWS {
                        let out_of_range = _mm512_cmp_ps_mask::<_CMP_NGE_UQ>(y[u], zero)
                            | _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(y[u], one);
                        bad |= out_of_range & mk[u];
                    }
                    let vk: [__mmask16; BCE_ROWS] = std::array::from_fn(|u| match self.valid {
                        None => mk[u],
                        Some(v) if at[u] + 16 <= len => {
                            // SAFETY: 16 bytes from `at` lie inside `v`.
                            let b = unsafe { _mm_loadu_si128(v.as_ptr().add(at[u]).cast()) };
                            mk[u]
                                & _mm512_cmpneq_epi32_mask(
                                    _mm512_cvtepu8_epi32(b),
                                    _mm512_setzero_si512(),
                                )
                        }
                        Some(v) => {
                            mk[u]
                                & v[at[u]..at[u] + k]
                                    .iter()
                                    .enumerate()
                                    .fold(0, |acc, (l, &b)| acc | (u16::from(b != 0) << l))
                        }
                    });
                    // loss = max(x, 0) - x y + ln(1 + e^-|x|), zero where invalid.
                    let e = exp16n(x.map(|v| _mm512_sub_ps(zero, _mm512_abs_ps(v))));
                    let l1p = ln1p_unit16n(e);
                    for u in 0..BCE_ROWS {
                        let base = _mm512_fnmadd_ps(x[u], y[u], _mm512_max_ps(x[u], zero));
                        let loss = _mm512_maskz_mov_ps(vk[u], _mm512_add_ps(base, l1p[u]));
                        let hi = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(loss));
                        sum_lo =
                            _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(loss)));
                        sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm256_castsi256_ps(hi)));
                    }
                    if let Some(q) = d {
                        // sigmoid(x) from e = exp(-|x|) without overflow on either side.
                        let a = e.map(|v| _mm512_add_ps(one, v));
                        let r0v = a.map(|v| _mm512_rcp14_ps(v));
                        for u in 0..BCE_ROWS {
                            let rc =
                                _mm512_mul_ps(r0v[u], _mm512_fnmadd_ps(a[u], r0v[u], splat(2.0)));
                            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x[u], zero);
                            let sig = _mm512_mask_mul_ps(rc, neg, e[u], rc);
                            let g = _mm512_maskz_mul_ps(vk[u], sc, _mm512_sub_ps(sig, y[u]));
                            // Plain stores where possible: masked stores to memory that is not
                            // in cache are slow.
                            if mk[u] == u16::MAX {
                                unsafe { _mm512_storeu_ps(q.add(at[u]), g) };
                            } else if mk[u] != 0 {
                                let mut buf = [0.0f32; 16];
                                unsafe {
                                    _mm512_storeu_ps(buf.as_mut_ptr(), g);
                                    std::ptr::copy_nonoverlapping(buf.as_ptr(), q.add(at[u]), k);
                                }
                            }
                        }
                    }
                    // The rows' losses were summed in row order; add them to the column sums.
                    let acc = col_sums[c..c + 16].as_mut_ptr();
                    // SAFETY: col_sums holds 16 values from c (length asserted above).
                    unsafe {
                        _mm512_storeu_pd(acc, _mm512_add_pd(_mm512_loadu_pd(acc), sum_lo));
                        _mm512_storeu_pd(
                            acc.add(8),
                            _mm512_add_pd(_mm512_loadu_pd(acc.add(8)), sum_hi),
                        );
                    }
                }
                r0 += BCE_ROWS;
            }
            bad == 0
        }
    }
}

#[cfg(test)]
// The references index several arrays by the same task number; plain loops read clearest.
#[allow(clippy::needless_range_loop)]
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
                let loss_only = f(&x, y, None);
                assert!(
                    (loss_only - want_loss).abs() <= 1e-5 * (1.0 + want_loss.abs()),
                    "{what} loss only"
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

    /// A build of the BCE row kernel: (width, x, y, valid, col_scale, d, col_sums) -> ok.
    type BceKernel<'a> = &'a dyn Fn(
        usize,
        &[f32],
        &[f32],
        Option<&[u8]>,
        &[f32],
        Option<&mut [f32]>,
        &mut [f64],
    ) -> bool;

    /// The portable, AVX2 and AVX-512 builds of the BCE row kernel agree with an f64
    /// reference, with and without mask and gradient, and report a target outside [0, 1].
    #[test]
    fn every_bce_kernel_variant_matches_f64() {
        let (width, rows) = (23, 3);
        let x: Vec<f32> = (0..width * rows - 2)
            .map(|k| (k as f32 - 33.0) * 0.7)
            .chain([1e4, -1e4])
            .collect();
        let n = x.len();
        let y: Vec<f32> = (0..n).map(|k| (k % 3) as f32 / 2.0).collect();
        let valid: Vec<u8> = (0..n).map(|k| u8::from(k % 7 != 3)).collect();
        let scale: Vec<f32> = (0..width)
            .map(|k| {
                if k % 5 == 0 {
                    0.0
                } else {
                    0.25 + k as f32 * 0.01
                }
            })
            .collect();
        let check = |f: BceKernel<'_>, what: &str| {
            for masked in [false, true] {
                let v = masked.then_some(&valid[..]);
                let keep = |k: usize| !masked || valid[k] != 0;
                for grad in [false, true] {
                    let mut d = vec![f32::NAN; n];
                    let mut sums = vec![0.0f64; width];
                    let ok = f(
                        width,
                        &x,
                        &y,
                        v,
                        &scale,
                        grad.then_some(&mut d[..]),
                        &mut sums,
                    );
                    assert!(ok, "{what}");
                    for c in 0..width {
                        let want: f64 = (0..rows)
                            .map(|r| r * width + c)
                            .filter(|&k| keep(k))
                            .map(|k| {
                                let (xv, yv) = (x[k] as f64, y[k] as f64);
                                xv.max(0.0) - xv * yv + (-xv.abs()).exp().ln_1p()
                            })
                            .sum();
                        assert!(
                            (sums[c] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                            "{what} masked={masked} grad={grad} sums[{c}] {} vs {want}",
                            sums[c]
                        );
                    }
                    for k in 0..n {
                        if !grad {
                            assert!(d[k].is_nan(), "{what}: d written without a gradient");
                            continue;
                        }
                        let (xv, yv) = (x[k] as f64, y[k] as f64);
                        let want = if keep(k) {
                            scale[k % width] as f64 * (1.0 / (1.0 + (-xv).exp()) - yv)
                        } else {
                            0.0
                        };
                        assert!(
                            (d[k] as f64 - want).abs() <= 1e-7,
                            "{what} masked={masked} d[{k}] {} vs {want}",
                            d[k]
                        );
                    }
                }
            }
            // In a whole vector and in the tail of a row.
            for (bad, col) in [(1.5f32, 4), (-0.25, 20), (f32::NAN, 4), (f32::NAN, 22)] {
                let mut yb = y.clone();
                yb[width + col] = bad;
                let mut sums = vec![0.0f64; width];
                let ok = f(width, &x, &yb, None, &scale, None, &mut sums);
                assert!(!ok, "{what}: target {bad} in column {col} not reported");
            }
        };
        check(
            &|w, x, y, v, s, d, l| bce_rows_body(w, x, y, v, s, d, l),
            "portable",
        );
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                // SAFETY: features checked.
                check(
                    &|w, x, y, v, s, d, l| unsafe { bce_rows_avx2(w, x, y, v, s, d, l) },
                    "avx2",
                );
            }
            if has!("avx512f") {
                // SAFETY: features checked.
                check(
                    &|w, x, y, v, s, d, l| unsafe { bce_rows_avx512(w, x, y, v, s, d, l) },
                    "avx512",
                );
            }
        }
    }

    /// The portable and AVX2 builds of the small-head tile against the f64 reference: heads of
    /// 1 to 16 classes, a partial last tile, ignored entries, extreme logits, with and without
    /// the gradient.
    #[test]
    fn small_row_tile_builds_match_f64() {
        type Build<'a> =
            &'a dyn Fn(&[usize], &[f32], &[f32], &[i8], Option<&mut [f32]>, &mut [f64]);
        let layout = TaskLayout::from_sizes(&[1, 3, 10, 16, 7]).unwrap();
        let (n, t, w) = (21, layout.num_tasks(), layout.width());
        let mut rng = Gen(17);
        let x: Vec<f32> = (0..n * w).map(|_| rng.logit()).collect();
        let targets: Vec<i64> = (0..n * t)
            .map(|k| {
                let c = layout.range(k % t).len();
                if rng.below(6) == 0 {
                    -100
                } else {
                    rng.below(c) as i64
                }
            })
            .collect();
        let weights = [0.5f32, 1.0, 0.25, 2.0, 0.75];
        let input = WeightedCeInput {
            layout: &layout,
            n,
            logits: &x,
            targets: &targets,
            mask: None,
            weights: &weights,
            ignore_index: -100,
        };
        let (want_loss, want_grad) = ce_f64(&input);
        let counts: Vec<usize> = (0..t)
            .map(|k| (0..n).filter(|&i| targets[i * t + k] >= 0).count())
            .collect();
        let scales = grad_scales(&weights, &counts, |_| 1);
        let codes: Vec<i8> = targets.iter().map(|&y| y.max(-1) as i8).collect();
        let check = |f: Build<'_>, what: &str| {
            for grad in [false, true] {
                let mut d = vec![f32::NAN; n * w];
                let mut sums = vec![0.0f64; t];
                f(
                    layout.offsets(),
                    &scales,
                    &x,
                    &codes,
                    grad.then_some(&mut d[..]),
                    &mut sums,
                );
                for k in 0..t {
                    let got = sums[k] / counts[k] as f64;
                    let err = (got - want_loss[k]).abs();
                    assert!(
                        err <= 1e-6 * (1.0 + want_loss[k].abs()),
                        "{what} loss {k}: {got} vs {}",
                        want_loss[k]
                    );
                }
                for (k, (&g, &want)) in d.iter().zip(&want_grad).enumerate() {
                    if grad {
                        assert!(
                            (g as f64 - want).abs() <= 1e-6,
                            "{what} d[{k}] {g} vs {want}"
                        );
                    } else {
                        assert!(g.is_nan(), "{what}: d written without a gradient");
                    }
                }
            }
        };
        check(
            &|o, sc, x, c, d, s| ce_small_rows_body(o, sc, x, c, d, s),
            "portable",
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: features checked.
            check(
                &|o, sc, x, c, d, s| unsafe { ce_small_rows_avx2(o, sc, x, c, d, s) },
                "avx2",
            );
        }
    }

    /// ln_sum against f64 on [1, 16] and beyond (dense grid and powers of two), and NaN.
    #[test]
    fn ln_sum_is_accurate() {
        let mut worst = 0.0f64;
        let grid = (0..=150_000).map(|k| 1.0 + k as f32 * 1e-4);
        let powers = (0..30).flat_map(|k| {
            let p = (1u64 << k) as f32;
            [p, p * (1.0 + f32::EPSILON), p * (1.0 - f32::EPSILON / 2.0)]
        });
        for s in grid.chain(powers).filter(|&s| s >= 1.0) {
            let err = (ln_sum(s) as f64 - (s as f64).ln()).abs() / (s as f64).ln().max(1.0);
            worst = worst.max(err);
        }
        assert!(worst < 3e-7, "worst error {worst:e}");
        assert!(ln_sum(f32::NAN).is_nan());
        assert_eq!(ln_sum(1.0), 0.0);
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

    /// Small deterministic generator for the path tests.
    struct Gen(u64);

    impl Gen {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn below(&mut self, n: usize) -> usize {
            (self.unit() * n as f64) as usize % n
        }
        /// A logit: uniform in [-8, 8), or +-1e4 one time in eight.
        fn logit(&mut self) -> f32 {
            match self.below(16) {
                0 => 1e4,
                1 => -1e4,
                _ => (self.unit() * 16.0 - 8.0) as f32,
            }
        }
    }

    /// The row kernels to test: portable always, AVX-512 where the CPU has it.
    fn paths() -> Vec<bool> {
        if has_avx512() {
            vec![false, true]
        } else {
            eprintln!("AVX-512 row kernels not tested: the CPU lacks AVX-512F");
            vec![false]
        }
    }

    /// CE through both row kernels against an f64 reference: heads of 1..=40 classes (one
    /// masked vector up to 16, vector loops with a masked tail above), layouts of only small
    /// heads (1 to 23 heads: the transposed group kernel, partial groups), extreme logits,
    /// ignore labels, a mask with one task never valid, loss-only calls.
    #[test]
    fn ce_row_kernels_match_f64_for_1_to_40_classes() {
        let mut rng = Gen(5);
        let mut layouts: Vec<Vec<usize>> = Vec::new();
        for c in 1..=40usize {
            layouts.push(vec![c, (c * 7) % 17 + 1, 16, 17, 1]);
            layouts.push((0..c % 23 + 1).map(|k| (c + 3 * k) % 16 + 1).collect());
        }
        // Heads all of one size: the small-head kernel's fixed-size builds (and 7, which has
        // none).
        layouts.extend([2, 3, 4, 5, 7, 8, 10, 16].map(|c| vec![c; 18]));
        for sizes in &layouts {
            let c = sizes[0];
            let layout = TaskLayout::from_sizes(sizes).unwrap();
            let (n, t, w) = (7, sizes.len(), layout.width());
            let x: Vec<f32> = (0..n * w).map(|_| rng.logit()).collect();
            let c = format!("{c} (sizes {sizes:?})");
            let ys: Vec<i64> = (0..n * t)
                .map(|k| {
                    if rng.below(8) == 0 {
                        -100
                    } else {
                        rng.below(sizes[k % t]) as i64
                    }
                })
                .collect();
            // Task 3 never counts (an empty task); the others 80% of the time.
            let mask: Vec<u8> = (0..n * t)
                .map(|k| u8::from(k % t != 3 && rng.below(5) != 0))
                .collect();
            let weights: Vec<f32> = (0..t).map(|k| 0.25 + k as f32 * 0.5).collect();
            let input = WeightedCeInput {
                layout: &layout,
                n,
                logits: &x,
                targets: &ys,
                mask: Some(&mask),
                weights: &weights,
                ignore_index: -100,
            };
            // f64 reference.
            let valid = |i: usize, k: usize| ys[i * t + k] != -100 && mask[i * t + k] != 0;
            let counts: Vec<usize> = (0..t)
                .map(|k| (0..n).filter(|&i| valid(i, k)).count())
                .collect();
            let mut want_loss = vec![0.0f64; t];
            let mut want_grad = vec![0.0f64; n * w];
            for i in 0..n {
                for k in 0..t {
                    if !valid(i, k) {
                        continue;
                    }
                    let r = layout.range(k);
                    let xs: Vec<f64> = x[i * w..][r.clone()].iter().map(|&v| v as f64).collect();
                    let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = xs.iter().map(|v| (v - m).exp()).sum();
                    let y = ys[i * t + k] as usize;
                    want_loss[k] += (m + s.ln() - xs[y]) / counts[k] as f64;
                    let scale = weights[k] as f64 / counts[k] as f64;
                    for (j, col) in r.enumerate() {
                        let onehot = if j == y { 1.0 } else { 0.0 };
                        want_grad[i * w + col] = scale * ((xs[j] - m).exp() / s - onehot);
                    }
                }
            }
            for vector in paths() {
                let mut grad = vec![f32::NAN; n * w];
                let out = weighted_ce_impl(&input, Some(&mut grad), vector).unwrap();
                assert_eq!(out.counts, counts);
                let what = format!("vector {vector} c={c}");
                assert_matches_f64(&out, &grad, &want_loss, &want_grad, 1e-6, &what);
                let only = weighted_ce_impl(&input, None, vector).unwrap();
                assert_eq!(only.task_loss, out.task_loss, "{what}");
            }
        }
    }

    /// Task losses within 1e-6 + 1e-5 relative and gradients within `grad_abs` + 1e-5 relative
    /// of the f64 reference.
    fn assert_matches_f64(
        out: &WeightedLossOutput,
        grad: &[f32],
        want_loss: &[f64],
        want_grad: &[f64],
        grad_abs: f64,
        what: &str,
    ) {
        for (k, (&got, &want)) in out.task_loss.iter().zip(want_loss).enumerate() {
            let got = got as f64;
            assert!(
                (got - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                "{what} task {k}: loss {got} want {want}"
            );
        }
        for (j, (&g, &wg)) in grad.iter().zip(want_grad).enumerate() {
            assert!(
                (g as f64 - wg).abs() <= grad_abs + 1e-5 * wg.abs(),
                "{what} grad[{j}] = {g}, want {wg}"
            );
        }
    }

    /// BCE through both row kernels against an f64 reference: 40 one-column tasks, tasks of
    /// 1..=40 columns (16-lane steps with a masked tail), soft and hard targets, extreme
    /// logits, with and without a mask.
    #[test]
    fn bce_row_kernels_match_f64_for_odd_widths() {
        let mut rng = Gen(9);
        let mut layouts: Vec<Vec<usize>> = vec![vec![1; 40], vec![3, 1, 6]];
        layouts.extend((1..=40).map(|c| vec![c, 2]));
        // Width 69: a period of 69 vectors, too long for the flat kernel (the row kernel).
        layouts.push(vec![67, 2]);
        for sizes in &layouts {
            let layout = TaskLayout::from_sizes(sizes).unwrap();
            let (n, t, w) = (5, sizes.len(), layout.width());
            let x: Vec<f32> = (0..n * w).map(|_| rng.logit()).collect();
            let ys: Vec<f32> = (0..n * w)
                .map(|_| match rng.below(3) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => rng.unit() as f32,
                })
                .collect();
            let mask: Vec<u8> = (0..n * t)
                .map(|k| u8::from(k % t != 0 && rng.below(4) != 0))
                .collect();
            let weights: Vec<f32> = (0..t).map(|k| 0.5 + k as f32 * 0.1).collect();
            for use_mask in [false, true] {
                let input = WeightedBceInput {
                    layout: &layout,
                    n,
                    logits: &x,
                    targets: &ys,
                    mask: use_mask.then_some(&mask[..]),
                    weights: &weights,
                };
                let valid = |i: usize, k: usize| !use_mask || mask[i * t + k] != 0;
                let mut want_loss = vec![0.0f64; t];
                let mut want_grad = vec![0.0f64; n * w];
                for k in 0..t {
                    let rows: Vec<usize> = (0..n).filter(|&i| valid(i, k)).collect();
                    let denom = (rows.len() * layout.range(k).len()) as f64;
                    for &i in &rows {
                        for col in layout.range(k) {
                            let (xv, yv) = (x[i * w + col] as f64, ys[i * w + col] as f64);
                            want_loss[k] +=
                                (xv.max(0.0) - xv * yv + (-xv.abs()).exp().ln_1p()) / denom;
                            want_grad[i * w + col] =
                                weights[k] as f64 / denom * (1.0 / (1.0 + (-xv).exp()) - yv);
                        }
                    }
                }
                for vector in paths() {
                    let mut grad = vec![f32::NAN; n * w];
                    let out = weighted_bce_impl(&input, Some(&mut grad), vector).unwrap();
                    let what = format!("vector {vector} sizes {sizes:?} mask {use_mask}");
                    assert_matches_f64(&out, &grad, &want_loss, &want_grad, 1e-7, &what);
                    let only = weighted_bce_impl(&input, None, vector).unwrap();
                    assert_eq!(only.task_loss, out.task_loss, "{what}");
                }
            }
        }
    }

    /// A NaN logit makes its task's loss and gradient NaN on both paths (no silent clamp).
    #[test]
    fn nan_logits_propagate() {
        let layout = TaskLayout::from_sizes(&[3, 20]).unwrap();
        let mut x = vec![0.5f32; 23];
        x[1] = f32::NAN;
        x[3 + 17] = f32::NAN;
        let input = WeightedCeInput {
            layout: &layout,
            n: 1,
            logits: &x,
            targets: &[0, 2],
            mask: None,
            weights: &[1.0, 1.0],
            ignore_index: -100,
        };
        let bce = WeightedBceInput {
            layout: &layout,
            n: 1,
            logits: &x,
            targets: &[0.5; 23],
            mask: None,
            weights: &[1.0, 1.0],
        };
        for vector in paths() {
            let mut grad = vec![0.0f32; 23];
            let out = weighted_ce_impl(&input, Some(&mut grad), vector).unwrap();
            assert!(out.task_loss.iter().all(|l| l.is_nan()), "vector {vector}");
            assert!(grad[0].is_nan() && grad[3].is_nan(), "vector {vector}");
            let out = weighted_bce_impl(&bce, Some(&mut grad), vector).unwrap();
            assert!(out.task_loss.iter().all(|l| l.is_nan()), "vector {vector}");
            assert!(grad[1].is_nan() && grad[20].is_nan(), "vector {vector}");
        }
    }

    /// The small-head tile (heads of at most 16 classes), with every head of one size (max and
    /// sum as trees) and of mixed sizes (chains): a NaN logit in any column of a head makes
    /// that head's loss and its gradient in that row NaN and leaves the other head alone; a
    /// -inf logit gets an exact zero gradient and a finite loss.
    #[test]
    fn small_head_tile_propagates_nan_from_any_column() {
        for sizes in [[10usize, 10], [5, 5], [10, 7]] {
            let layout = TaskLayout::from_sizes(&sizes).unwrap();
            let (w, c0) = (layout.width(), sizes[0]);
            // Row r < c0 has a NaN at column r of head 0; the last row a -inf there instead.
            let n = c0 + 1;
            let mut x: Vec<f32> = (0..n * w).map(|k| ((k * 7) % 11) as f32 * 0.3).collect();
            for r in 0..c0 {
                x[r * w + r] = f32::NAN;
            }
            x[c0 * w + 3] = f32::NEG_INFINITY;
            let targets: Vec<i64> = (0..n).flat_map(|r| [((r + 1) % c0) as i64, 2]).collect();
            for vector in paths() {
                for r in 0..=c0 {
                    // One row at a time, so that each NaN shows in the head's loss.
                    let input = WeightedCeInput {
                        layout: &layout,
                        n: 1,
                        logits: &x[r * w..(r + 1) * w],
                        targets: &targets[2 * r..2 * r + 2],
                        mask: None,
                        weights: &[1.0, 1.0],
                        ignore_index: -100,
                    };
                    let mut grad = vec![7.0f32; w];
                    let out = weighted_ce_impl(&input, Some(&mut grad), vector).unwrap();
                    let what = format!("sizes {sizes:?}, row {r}, vector {vector}");
                    assert!(out.task_loss[1].is_finite(), "{what}");
                    assert!(grad[c0..].iter().all(|g| g.is_finite()), "{what}");
                    if r < c0 {
                        assert!(out.task_loss[0].is_nan(), "{what}");
                        assert!(grad[..c0].iter().all(|g| g.is_nan()), "{what}");
                    } else {
                        assert!(out.task_loss[0].is_finite(), "{what}");
                        assert_eq!(grad[3], 0.0, "{what}");
                        assert!(grad[..c0].iter().all(|g| g.is_finite()), "{what}");
                    }
                }
            }
        }
    }

    /// The 16-lane exp, log and ln(1 + e) against f64, with their edge cases.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_math_matches_f64() {
        use std::arch::x86_64::*;
        if !has_avx512() {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let lanes = |f: &dyn Fn(__m512) -> __m512, xs: &[f32; 16]| -> [f32; 16] {
            let mut out = [0.0f32; 16];
            // SAFETY: AVX-512F checked above; 16-element arrays.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), f(_mm512_loadu_ps(xs.as_ptr()))) };
            out
        };
        // SAFETY (closures): AVX-512F checked above.
        let exp = |v| unsafe { avx512::exp16(v) };
        let ln = |v| unsafe { avx512::ln16(v) };
        let ln1p = |v| unsafe { avx512::ln1p_unit16n([v])[0] };
        let ln1p_poly = |v| unsafe { avx512::ln1p_unit16_plus_n([v], [_mm512_setzero_ps()])[0] };
        let (mut worst_exp, mut worst_ln, mut worst_ln1p) = (0.0f64, 0.0f64, 0.0f64);
        for step in 0..2000 {
            let xs: [f32; 16] = std::array::from_fn(|l| -87.0 + (step * 16 + l) as f32 * 0.0054);
            for (x, e) in xs.iter().zip(lanes(&exp, &xs)) {
                let want = (*x as f64).exp();
                worst_exp = worst_exp.max((e as f64 - want).abs() / want);
            }
            let ys: [f32; 16] = std::array::from_fn(|l| 1.0 + (step * 16 + l) as f32 * 0.031);
            for (y, l) in ys.iter().zip(lanes(&ln, &ys)) {
                let want = (*y as f64).ln();
                worst_ln = worst_ln.max((l as f64 - want).abs() / want.abs().max(1e-30));
            }
            let es: [f32; 16] = std::array::from_fn(|l| (step * 16 + l) as f32 / 32000.0);
            for (e, l) in es.iter().zip(lanes(&ln1p, &es)) {
                let want = (*e as f64).ln_1p();
                worst_ln1p = worst_ln1p.max((l as f64 - want).abs() / want.max(1e-30));
            }
            for (e, l) in es.iter().zip(lanes(&ln1p_poly, &es)) {
                let want = (*e as f64).ln_1p();
                worst_ln1p = worst_ln1p.max((l as f64 - want).abs() / want.max(1e-30));
            }
        }
        assert!(worst_exp <= 3e-7, "exp16 rel err {worst_exp}");
        assert!(worst_ln <= 2e-7, "ln16 rel err {worst_ln}");
        assert!(worst_ln1p <= 3e-7, "ln1p_unit16 rel err {worst_ln1p}");
        let edge = [
            f32::NEG_INFINITY,
            -1e4,
            -87.4,
            0.0,
            88.0,
            1e4,
            f32::NAN,
            1.0,
            -0.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        let e = lanes(&exp, &edge);
        assert_eq!(&e[..3], &[0.0, 0.0, 0.0]);
        assert_eq!(e[3], 1.0);
        assert!(e[4].is_finite() && e[5].is_finite() && e[5] > 1e38);
        assert!(e[6].is_nan());
        assert_eq!(lanes(&ln, &[1.0; 16]), [0.0; 16]);
        assert_eq!(lanes(&ln1p, &[0.0; 16]), [0.0; 16]);
        // exp_neg_abs16n is exp(-|x|): within 8e-7 for |x| <= 10.9 (see exp2_fms16), 0 for
        // infinite x, NaN kept.
        let exp_na = |v| unsafe { avx512::exp_neg_abs16n([v])[0] };
        let mut worst = 0.0f64;
        for step in 0..2000 {
            let xs: [f32; 16] = std::array::from_fn(|l| {
                let sign = if l % 2 == 0 { 1.0 } else { -1.0 };
                (step * 16 + l) as f32 * 0.00034 * sign
            });
            for (x, e) in xs.iter().zip(lanes(&exp_na, &xs)) {
                let want = (-(*x as f64).abs()).exp();
                worst = worst.max((e as f64 - want).abs() / want);
            }
        }
        assert!(worst <= 8e-7, "exp_neg_abs16n rel err {worst}");
        let e = lanes(&exp_na, &edge);
        assert_eq!(&e[..3], &[0.0, 0.0, 0.0]);
        assert!(e[4] < 1e-38 && e[5] == 0.0 && e[6].is_nan() && (e[8] - 1.0).abs() <= 2e-7);
        assert_eq!(lanes(&exp_na, &[f32::INFINITY; 16]), [0.0; 16]);
        // exp2_fms16 with b = 0 is exp: relative error within 8e-7 on [-10.9, 0] (the rounding
        // of t = x log2 e grows with |x|), 0 below, NaN kept.
        let exp2 = |v| unsafe { avx512::exp2_fms16(v, _mm512_setzero_ps()) };
        let mut worst = 0.0f64;
        for step in 0..2000 {
            let xs: [f32; 16] = std::array::from_fn(|l| (step * 16 + l) as f32 * -0.00034);
            for (x, e) in xs.iter().zip(lanes(&exp2, &xs)) {
                let want = (*x as f64).exp();
                worst = worst.max((e as f64 - want).abs() / want);
            }
        }
        assert!(worst <= 8e-7, "exp2_fms16 rel err {worst}");
        let e = lanes(&exp2, &edge);
        assert_eq!(&e[..3], &[0.0, 0.0, 0.0]);
        assert!((e[3] - 1.0).abs() <= 2e-7 && e[6].is_nan() && (e[8] - 1.0).abs() <= 2e-7);
        // With b = m log2 e rounded, the factor 2^(m log2 e - b) is common to every x: the
        // ratio of two results is exp(x1 - x2) even for m = 1e4.
        let m = 1e4f32;
        let b = m * std::f32::consts::LOG2_E;
        let pair = |x1: f32, x2: f32| {
            let v = unsafe { avx512::exp2_fms16(_mm512_set1_ps(x1), _mm512_set1_ps(b)) };
            let w = unsafe { avx512::exp2_fms16(_mm512_set1_ps(x2), _mm512_set1_ps(b)) };
            let (mut a, mut c) = ([0.0f32; 16], [0.0f32; 16]);
            unsafe {
                _mm512_storeu_ps(a.as_mut_ptr(), v);
                _mm512_storeu_ps(c.as_mut_ptr(), w);
            }
            a[0] as f64 / c[0] as f64
        };
        let (x1, x2) = (m - 3.5, m);
        let want = ((x1 - x2) as f64).exp();
        assert!((pair(x1, x2) / want - 1.0).abs() <= 1e-6);
    }

    /// f64 reference of a CE call: per-task mean losses and the gradient.
    fn ce_f64(input: &WeightedCeInput<'_>) -> (Vec<f64>, Vec<f64>) {
        let (layout, n) = (input.layout, input.n);
        let (t, w) = (layout.num_tasks(), layout.width());
        let valid = |i: usize, k: usize| {
            input.targets[i * t + k] != input.ignore_index
                && input.mask.is_none_or(|m| m[i * t + k] != 0)
        };
        let counts: Vec<usize> = (0..t)
            .map(|k| (0..n).filter(|&i| valid(i, k)).count())
            .collect();
        let (mut loss, mut grad) = (vec![0.0f64; t], vec![0.0f64; n * w]);
        for i in 0..n {
            for k in (0..t).filter(|&k| valid(i, k)) {
                let r = layout.range(k);
                let xs: Vec<f64> = input.logits[i * w..][r.clone()]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = xs.iter().map(|v| (v - m).exp()).sum();
                let y = input.targets[i * t + k] as usize;
                loss[k] += (m + s.ln() - xs[y]) / counts[k] as f64;
                let scale = input.weights[k] as f64 / counts[k] as f64;
                for (j, col) in r.enumerate() {
                    let onehot = if j == y { 1.0 } else { 0.0 };
                    grad[i * w + col] = scale * ((xs[j] - m).exp() / s - onehot);
                }
            }
        }
        (loss, grad)
    }

    /// f64 reference of a BCE call: per-task mean losses and the gradient.
    fn bce_f64(input: &WeightedBceInput<'_>) -> (Vec<f64>, Vec<f64>) {
        let (layout, n) = (input.layout, input.n);
        let (t, w) = (layout.num_tasks(), layout.width());
        let valid = |i: usize, k: usize| input.mask.is_none_or(|m| m[i * t + k] != 0);
        let (mut loss, mut grad) = (vec![0.0f64; t], vec![0.0f64; n * w]);
        for k in 0..t {
            let rows: Vec<usize> = (0..n).filter(|&i| valid(i, k)).collect();
            let denom = (rows.len() * layout.range(k).len()) as f64;
            for &i in &rows {
                for col in layout.range(k) {
                    let x = input.logits[i * w + col] as f64;
                    let y = input.targets[i * w + col] as f64;
                    loss[k] += (x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()) / denom;
                    grad[i * w + col] =
                        input.weights[k] as f64 / denom * (1.0 / (1.0 + (-x).exp()) - y);
                }
            }
        }
        (loss, grad)
    }

    /// Asserts losses and gradient within the tolerances of the row-kernel tests.
    fn assert_near(
        what: &str,
        out: &WeightedLossOutput,
        grad: &[f32],
        want: &(Vec<f64>, Vec<f64>),
    ) {
        for (k, (&got, &w)) in out.task_loss.iter().zip(&want.0).enumerate() {
            let got = got as f64;
            assert!(
                (got - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "{what} task {k}: {got} want {w}"
            );
        }
        for (j, (&g, &w)) in grad.iter().zip(&want.1).enumerate() {
            let g = g as f64;
            assert!(
                (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "{what} grad[{j}] = {g}, want {w}"
            );
        }
    }

    /// A CE problem with extreme logits, ignore labels and a mask with task 3 never valid.
    fn ce_problem(
        rng: &mut Gen,
        n: usize,
        sizes: &[usize],
    ) -> (TaskLayout, Vec<f32>, Vec<i64>, Vec<u8>, Vec<f32>) {
        let layout = TaskLayout::from_sizes(sizes).unwrap();
        let (t, w) = (sizes.len(), layout.width());
        let x = (0..n * w).map(|_| rng.logit()).collect();
        let ys = (0..n * t)
            .map(|k| {
                if rng.below(8) == 0 {
                    -100
                } else {
                    rng.below(sizes[k % t]) as i64
                }
            })
            .collect();
        let mask = (0..n * t)
            .map(|k| u8::from(k % t != 3 && rng.below(5) != 0))
            .collect();
        let weights = (0..t).map(|k| 0.25 + k as f32 * 0.5).collect();
        (layout, x, ys, mask, weights)
    }

    /// A BCE problem with extreme logits, soft and hard targets, and a mask.
    fn bce_problem(
        rng: &mut Gen,
        n: usize,
        sizes: &[usize],
    ) -> (TaskLayout, Vec<f32>, Vec<f32>, Vec<u8>, Vec<f32>) {
        let layout = TaskLayout::from_sizes(sizes).unwrap();
        let (t, w) = (sizes.len(), layout.width());
        let x = (0..n * w).map(|_| rng.logit()).collect();
        let ys = (0..n * w)
            .map(|_| match rng.below(3) {
                0 => 0.0,
                1 => 1.0,
                _ => rng.unit() as f32,
            })
            .collect();
        let mask = (0..n * t)
            .map(|k| u8::from(k % t != 0 && rng.below(4) != 0))
            .collect();
        let weights = (0..t).map(|k| 0.5 + k as f32 * 0.1).collect();
        (layout, x, ys, mask, weights)
    }

    /// Streaming and plain stores give bit-identical losses and gradients on every AVX-512
    /// kernel (small-head tile, row kernel with a large head, flat and row BCE), into an output
    /// that is not 64-byte aligned (partial lines at both ends of every staged block) and
    /// poisoned (every element must be written).
    #[test]
    fn streaming_and_plain_stores_give_identical_results() {
        if !has_avx512() {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let mut rng = Gen(21);
        let out_of = |buf: &mut Vec<f32>, len: usize| -> std::ops::Range<usize> {
            // An odd float offset from the allocation's start: never 64-byte aligned.
            *buf = vec![f32::NAN; len + 1];
            1..len + 1
        };
        for (n, sizes) in [
            (300, vec![10; 40]),
            (37, vec![3, 20, 1000]),
            (45, vec![7, 16, 1]),
        ] {
            let (layout, x, ys, mask, weights) = ce_problem(&mut rng, n, &sizes);
            let input = WeightedCeInput {
                layout: &layout,
                n,
                logits: &x,
                targets: &ys,
                mask: Some(&mask),
                weights: &weights,
                ignore_index: -100,
            };
            let mut outs = Vec::new();
            for store in [Store::Plain, Store::Stream] {
                let mut buf = Vec::new();
                let r = out_of(&mut buf, n * layout.width());
                let out = weighted_ce_with(&input, Some(&mut buf[r.clone()]), true, store).unwrap();
                assert_near(
                    &format!("ce {sizes:?} {store:?}"),
                    &out,
                    &buf[r.clone()],
                    &ce_f64(&input),
                );
                outs.push((out, buf[r].iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
            }
            assert!(
                outs[0] == outs[1],
                "ce {sizes:?}: streaming changed the results"
            );
        }
        for (n, sizes) in [(500, vec![1; 40]), (33, vec![67, 2]), (70, vec![3, 1, 6])] {
            let (layout, x, ys, mask, weights) = bce_problem(&mut rng, n, &sizes);
            let input = WeightedBceInput {
                layout: &layout,
                n,
                logits: &x,
                targets: &ys,
                mask: Some(&mask),
                weights: &weights,
            };
            let mut outs = Vec::new();
            for store in [Store::Plain, Store::Stream] {
                let mut buf = Vec::new();
                let r = out_of(&mut buf, n * layout.width());
                let out =
                    weighted_bce_with(&input, Some(&mut buf[r.clone()]), true, store).unwrap();
                assert_near(
                    &format!("bce {sizes:?} {store:?}"),
                    &out,
                    &buf[r.clone()],
                    &bce_f64(&input),
                );
                outs.push((out, buf[r].iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
            }
            assert!(
                outs[0] == outs[1],
                "bce {sizes:?}: streaming changed the results"
            );
        }
    }

    /// Streamed gradients at a size where the default would stream them (if
    /// [`STREAM_BY_DEFAULT`]): they match the f64 reference, and the default call's results
    /// exactly.
    #[test]
    fn large_streamed_gradients_match_f64_and_the_default() {
        if !has_avx512() {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let mut rng = Gen(33);
        let n = STREAM_MIN_BYTES / (4 * 400) + 3;
        assert_eq!(streams(Store::Auto, true, n * 400), STREAM_BY_DEFAULT);
        assert!(!streams(Store::Auto, true, 1000) && streams(Store::Stream, true, 1000));
        let bits = |g: &[f32]| g.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (layout, x, ys, mask, weights) = ce_problem(&mut rng, n, &[10; 40]);
        let input = WeightedCeInput {
            layout: &layout,
            n,
            logits: &x,
            targets: &ys,
            mask: Some(&mask),
            weights: &weights,
            ignore_index: -100,
        };
        let mut grad = vec![f32::NAN; n * 400];
        let out = weighted_ce_with(&input, Some(&mut grad), true, Store::Stream).unwrap();
        assert_near("ce streamed", &out, &grad, &ce_f64(&input));
        let mut default = vec![f32::NAN; n * 400];
        assert_eq!(out, weighted_ce_loss(&input, Some(&mut default)).unwrap());
        assert!(bits(&grad) == bits(&default));
        let n = STREAM_MIN_BYTES / (4 * 40) + 5;
        let (layout, x, ys, mask, weights) = bce_problem(&mut rng, n, &[1; 40]);
        let input = WeightedBceInput {
            layout: &layout,
            n,
            logits: &x,
            targets: &ys,
            mask: Some(&mask),
            weights: &weights,
        };
        let mut grad = vec![f32::NAN; n * 40];
        let out = weighted_bce_with(&input, Some(&mut grad), true, Store::Stream).unwrap();
        assert_near("bce streamed", &out, &grad, &bce_f64(&input));
        let mut default = vec![f32::NAN; n * 40];
        assert_eq!(out, weighted_bce_loss(&input, Some(&mut default)).unwrap());
        assert!(bits(&grad) == bits(&default));
    }

    /// The vector counting pass agrees with the scalar one: counts, the out-of-range flag
    /// (negative or too large, only where the entry is valid) and the per-entry codes (class
    /// index, -1 where invalid), for 1..=19 tasks (partial 8-task vectors), with and without
    /// a mask.
    #[test]
    fn vector_counts_match_scalar() {
        if !has_avx512() {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let mut rng = Gen(8);
        for t in 1..=19usize {
            let sizes: Vec<u64> = (0..t).map(|k| (k % 5 + 1) as u64).collect();
            for bad_at in [None, Some(3 * t + t / 2)] {
                let rows = 9;
                let mut ys: Vec<i64> = (0..rows * t)
                    .map(|k| match rng.below(6) {
                        0 => -100,
                        _ => rng.below(sizes[k % t] as usize) as i64,
                    })
                    .collect();
                let mask: Vec<u8> = (0..rows * t).map(|_| u8::from(rng.below(3) != 0)).collect();
                if let Some(k) = bad_at {
                    ys[k] = if t % 2 == 0 { -7 } else { sizes[k % t] as i64 };
                }
                for m in [None, Some(&mask[..])] {
                    // SAFETY: AVX-512F checked above.
                    let mut got_codes = vec![7i8; ys.len()];
                    let mut want_codes = vec![9i8; ys.len()];
                    let got =
                        unsafe { avx512::count_valid(&ys, m, &sizes, -100, Some(&mut got_codes)) };
                    let want = count_valid_scalar(&ys, m, &sizes, -100, Some(&mut want_codes));
                    assert_eq!(got, want, "t {t} bad {bad_at:?} mask {}", m.is_some());
                    // SAFETY: AVX-512F checked above.
                    let plain = unsafe { avx512::count_valid(&ys, m, &sizes, -100, None) };
                    assert_eq!(plain, want, "t {t} without codes");
                    if bad_at.is_none() {
                        assert_eq!(got_codes, want_codes, "t {t} mask {}", m.is_some());
                        for (k, &c) in want_codes.iter().enumerate() {
                            let ok = ys[k] != -100 && m.is_none_or(|m| m[k] != 0);
                            assert_eq!(c, if ok { ys[k] as i8 } else { -1 }, "t {t} entry {k}");
                        }
                    }
                    if m.is_none() {
                        assert_eq!(got.1, bad_at.is_some(), "t {t}");
                    }
                }
            }
        }
    }

    /// Blocks and tasks depend on the width only, tile whole 16-row groups, and cover the rows.
    #[test]
    fn block_plan_is_a_function_of_the_width() {
        for width in [1, 7, 16, 40, 400, 511, 512, 513, 1000, 9000, 100_000] {
            let (block, task) = block_plan(width);
            assert!(
                block >= 1 && task >= block && task % block == 0,
                "width {width}"
            );
            assert!(
                block < 16 || block % 16 == 0,
                "width {width}: block {block}"
            );
            assert!(block == 1 || block * width <= BLOCK_FLOATS, "width {width}");
        }
        assert_eq!(block_plan(400).0, 16);
        assert_eq!(block_plan(40).0, 192);
    }

    /// The 16 x 16 transpose used by the small-head CE kernel.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose16_transposes() {
        use std::arch::x86_64::*;
        if !has_avx512() {
            eprintln!("skipped: the CPU lacks AVX-512F");
            return;
        }
        let m: Vec<f32> = (0..256).map(|k| k as f32).collect();
        // SAFETY: AVX-512F checked above; 16 rows of 16 values.
        let rows: [__m512; 16] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(m[16 * i..].as_ptr()) });
        // SAFETY: as above.
        let cols = unsafe { avx512::transpose16(rows) };
        let mut out = [0.0f32; 256];
        for (j, c) in cols.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(out[16 * j..].as_mut_ptr(), *c) };
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * j + i], m[16 * i + j], "({i}, {j})");
            }
        }
    }

    /// A target outside [0, 1] (or NaN) is an error naming the first one, on both paths (the
    /// vector path checks inside its pass), also in a call large enough for the pool (several
    /// scan chunks of 2^16: the first bad one in row order wins whichever finishes first).
    #[test]
    fn bce_bad_targets_are_errors_on_both_paths() {
        let layout = TaskLayout::from_sizes(&[1; 21]).unwrap();
        const { assert!(30_001 * 21 >= LOSS_PAR_MIN_VALUES) };
        let cases = [
            (70, 69 * 21 + 20, f32::NAN),
            (70, 3 * 21 + 17, 1.5),
            (70, 5, -0.5),
            (30_001, 3 * (1 << 16) + 17, 1.5),
        ];
        for (n, at, bad) in cases {
            let x = vec![0.25f32; n * 21];
            let mut ys = vec![0.5f32; n * 21];
            ys[at] = bad;
            // A later bad one must not win.
            ys[n * 21 - 1] = if at == n * 21 - 1 { bad } else { 7.0 };
            let input = WeightedBceInput {
                layout: &layout,
                n,
                logits: &x,
                targets: &ys,
                mask: None,
                weights: &[1.0; 21],
            };
            for vector in paths() {
                let mut grad = vec![0.0f32; n * 21];
                let e = weighted_bce_impl(&input, Some(&mut grad), vector).unwrap_err();
                let want = format!("targets[row {}, column {}] = {bad}", at / 21, at % 21);
                assert!(e.to_string().contains(&want), "vector {vector}: {e}");
            }
        }
    }

    /// The mask counts (byte counters widened every 255 rows) against a plain count, for task
    /// counts around the vector widths and chunks ending inside and at a 255-row batch.
    #[test]
    fn mask_row_counts_match_a_plain_count() {
        let mut rng = Gen(7);
        for t_count in [1, 3, 16, 31, 32, 33, 40, 100] {
            for rows in [0, 1, 254, 255, 256, 600, 1024] {
                // Nonzero values of any size count, zeros do not; some tasks always on.
                let m: Vec<u8> = (0..rows * t_count)
                    .map(|i| {
                        if i % t_count == 0 || rng.below(3) != 0 {
                            1 + rng.below(255) as u8
                        } else {
                            0
                        }
                    })
                    .collect();
                let mut want = vec![0u32; t_count];
                for (i, &v) in m.iter().enumerate() {
                    want[i % t_count] += u32::from(v != 0);
                }
                assert_eq!(
                    count_mask_rows_body(&m, t_count),
                    want,
                    "T {t_count}, {rows} rows"
                );
                assert_eq!(
                    count_mask_rows(&m, t_count),
                    want,
                    "T {t_count}, {rows} rows"
                );
            }
        }
    }

    /// A CE call large enough for the pool (several counting chunks) still names the first
    /// bad target in row order, whichever chunk finishes first.
    #[test]
    fn first_bad_ce_target_wins_on_the_pool_path() {
        let layout = TaskLayout::from_sizes(&[100, 20]).unwrap();
        let n = 5_000;
        assert!(n * 120 >= LOSS_PAR_MIN_VALUES && n > 4 * COUNT_ROWS);
        let x = vec![0.25f32; n * 120];
        let mut ys = vec![1i64; n * 2];
        ys[2 * 3_500 + 1] = 20;
        ys[2 * (n - 1)] = 100;
        let input = WeightedCeInput {
            layout: &layout,
            n,
            logits: &x,
            targets: &ys,
            mask: None,
            weights: &[0.5, 0.5],
            ignore_index: -100,
        };
        for vector in paths() {
            let mut grad = vec![0.0f32; n * 120];
            let e = weighted_ce_impl(&input, Some(&mut grad), vector).unwrap_err();
            assert!(
                e.to_string().contains("targets[row 3500, task 1] = 20"),
                "vector {vector}: {e}"
            );
        }
    }

    /// Thread CPU time in seconds (Linux): unlike wall time, not inflated by other processes
    /// sharing the cores.
    #[cfg(target_os = "linux")]
    fn thread_cpu_secs() -> f64 {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: ts is a valid timespec (two 64-bit fields on 64-bit Linux).
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime failed");
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    }

    /// Per-core cost of the small-head losses in cache, measured with the thread's CPU time
    /// (reliable on a shared, loaded machine): one rayon thread, min over many calls. Not a
    /// check; run with `cargo test --release -p scalarize-kernels --lib cpu_time_small_heads
    /// -- --ignored --nocapture` and compare builds interleaved. `SCALARIZE_CPU_TIME_FULL=1`
    /// adds the benchmark's full sizes (from memory; use few reps); `SCALARIZE_CPU_TIME_THREADS=2`
    /// times that many threads by wall time (min over the reps).
    #[cfg(target_os = "linux")]
    #[test]
    #[ignore = "timing report, not a check"]
    fn cpu_time_small_heads() {
        let reps: usize = std::env::var("SCALARIZE_CPU_TIME_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        // More than one thread: wall time (the other threads' CPU time would be missed).
        let threads: usize = std::env::var("SCALARIZE_CPU_TIME_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let clock = || {
            if threads > 1 {
                std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64()
            } else {
                thread_cpu_secs()
            }
        };
        let min_secs = |f: &mut (dyn FnMut() + Send)| {
            pool.install(|| {
                f();
                (0..reps)
                    .map(|_| {
                        let t0 = clock();
                        f();
                        clock() - t0
                    })
                    .fold(f64::INFINITY, f64::min)
            })
        };
        let mut rng = Gen(5);
        let report = |what: &str, rows: usize, bytes: usize, secs: f64| {
            println!(
                "CPUTIME {what}: {:.2} ns/row, {:.2} GB/s on {threads} thread(s)",
                secs * 1e9 / rows as f64,
                bytes as f64 / secs / 1e9
            );
        };
        // CE, 40 heads x 10 classes, 1024 rows, 5% ignored labels, no mask.
        let (n, t, c) = (1024, 40, 10);
        let layout = TaskLayout::from_sizes(&[c; 40]).unwrap();
        let x: Vec<f32> = (0..n * t * c)
            .map(|_| (rng.unit() * 10.0 - 5.0) as f32)
            .collect();
        let ys: Vec<i64> = (0..n * t)
            .map(|_| {
                if rng.below(20) == 0 {
                    -100
                } else {
                    rng.below(c) as i64
                }
            })
            .collect();
        let weights: Vec<f32> = (0..t).map(|k| 0.1 + k as f32 * 0.02).collect();
        let input = WeightedCeInput {
            layout: &layout,
            n,
            logits: &x,
            targets: &ys,
            mask: None,
            weights: &weights,
            ignore_index: -100,
        };
        // Times the gradient and the loss-only pass of one input, reported under `label`.
        let time_ce = |label: &str, input: &WeightedCeInput, grad: &mut [f32]| {
            let rows = input.n;
            let cells = input.logits.len();
            let targets = input.targets.len() * 8;
            let secs = min_secs(&mut || {
                std::hint::black_box(weighted_ce_loss(input, Some(&mut *grad)).unwrap());
            });
            report(&format!("ce {label} grad"), rows, cells * 8 + targets, secs);
            let secs = min_secs(&mut || {
                std::hint::black_box(weighted_ce_loss(input, None).unwrap());
            });
            report(
                &format!("ce {label} loss-only"),
                rows,
                cells * 4 + targets,
                secs,
            );
        };
        time_ce("1024 x 40x10", &input, &mut vec![0.0f32; n * t * c]);
        if std::env::var_os("SCALARIZE_CPU_TIME_FULL").is_some() {
            let n = 65_536;
            let xf: Vec<f32> = (0..n * t * c).map(|k| x[k % x.len()]).collect();
            let yf: Vec<i64> = (0..n * t).map(|k| ys[k % ys.len()]).collect();
            let input = WeightedCeInput {
                n,
                logits: &xf,
                targets: &yf,
                ..input
            };
            time_ce(
                "65536 x 40x10 (full size)",
                &input,
                &mut vec![0.0f32; n * t * c],
            );
        }
        // BCE, 40 attributes, 16384 rows, hard targets, 10% masked out.
        let (n, t) = (16_384, 40);
        let layout = TaskLayout::from_sizes(&[1; 40]).unwrap();
        let x: Vec<f32> = (0..n * t)
            .map(|_| (rng.unit() * 12.0 - 6.0) as f32)
            .collect();
        let ys: Vec<f32> = (0..n * t).map(|_| rng.below(2) as f32).collect();
        let mask: Vec<u8> = (0..n * t).map(|_| u8::from(rng.below(10) != 0)).collect();
        let weights = vec![1.0f32 / 40.0; t];
        let input = WeightedBceInput {
            layout: &layout,
            n,
            logits: &x,
            targets: &ys,
            mask: Some(&mask),
            weights: &weights,
        };
        let mut grad = vec![0.0f32; n * t];
        let secs = min_secs(&mut || {
            std::hint::black_box(weighted_bce_loss(&input, Some(&mut grad)).unwrap());
        });
        report("bce 16384 x 40 grad", n, n * t * 13, secs);
        let n = 1024;
        let input = WeightedBceInput {
            n,
            logits: &x[..n * t],
            targets: &ys[..n * t],
            mask: Some(&mask[..n * t]),
            ..input
        };
        let secs = min_secs(&mut || {
            std::hint::black_box(weighted_bce_loss(&input, Some(&mut grad[..n * t])).unwrap());
        });
        report("bce 1024 x 40 grad", n, n * t * 13, secs);
        if std::env::var_os("SCALARIZE_CPU_TIME_FULL").is_some() {
            let n = 262_144;
            let xf: Vec<f32> = (0..n * t).map(|k| x[k % x.len()]).collect();
            let yf: Vec<f32> = (0..n * t).map(|k| ys[k % ys.len()]).collect();
            let mf: Vec<u8> = (0..n * t).map(|k| mask[k % mask.len()]).collect();
            let mut gf = vec![0.0f32; n * t];
            let input = WeightedBceInput {
                n,
                logits: &xf,
                targets: &yf,
                mask: Some(&mf),
                ..input
            };
            let secs = min_secs(&mut || {
                std::hint::black_box(weighted_bce_loss(&input, Some(&mut gf)).unwrap());
            });
            report("bce 262144 x 40 grad (full size)", n, n * t * 13, secs);
        }
    }
}
