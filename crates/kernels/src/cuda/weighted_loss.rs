//! CUDA twin of [`crate::cpu::weighted_loss`]: same meaning, inputs in device memory.
//!
//! Four launches (count valid samples, one warp per row for losses and gradients, a
//! fixed-order per-task reduction, the task means and weighted total) and one small upload
//! (the head offsets and task weights in one table).
//!
//! Two entry points: [`weighted_ce_loss_device`] / [`weighted_bce_loss_device`] leave the
//! losses on the device and read nothing back (a read-back is a full stream synchronisation):
//! the training path, whose caller checks and counts the host targets first
//! ([`check_ce_targets`], [`check_bce_targets`]). [`weighted_ce_loss`] / [`weighted_bce_loss`]
//! check device targets on the device and read the verdict and the results back (tests,
//! benchmarks, callers that want host numbers).

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::WEIGHTED_LOSS;
use crate::cpu::{TaskLayout, WeightedLossOutput};
use crate::error::{KernelError, Result, check_len};

/// Device-side inputs of the softmax cross-entropy variant (see [`crate::cpu::WeightedCeInput`]).
#[derive(Clone, Copy, Debug)]
pub struct CudaCeInput<'a> {
    /// Column layout of the heads.
    pub layout: &'a TaskLayout,
    /// Number of samples (rows).
    pub n: usize,
    /// Logits, n x width row-major.
    pub logits: &'a GpuBuffer<f32>,
    /// Class index per sample and task, n x T; `ignore_index` skips.
    pub targets: &'a GpuBuffer<i64>,
    /// Optional n x T mask: a sample counts for task t only where it is nonzero.
    pub mask: Option<&'a GpuBuffer<u8>>,
    /// Task weights p_t (host memory), length T.
    pub weights: &'a [f32],
    /// Target value meaning "no label".
    pub ignore_index: i64,
}

/// Device-side inputs of the sigmoid BCE variant (see [`crate::cpu::WeightedBceInput`]).
#[derive(Clone, Copy, Debug)]
pub struct CudaBceInput<'a> {
    /// Column layout of the heads.
    pub layout: &'a TaskLayout,
    /// Number of samples (rows).
    pub n: usize,
    /// Logits, n x width row-major.
    pub logits: &'a GpuBuffer<f32>,
    /// Targets in [0, 1], n x width.
    pub targets: &'a GpuBuffer<f32>,
    /// Optional n x T mask.
    pub mask: Option<&'a GpuBuffer<u8>>,
    /// Task weights p_t (host memory), length T.
    pub weights: &'a [f32],
}

/// Warps (rows) per block of the row kernels.
const ROWS_PER_BLOCK: usize = 8;
/// Threads of the per-task count and reduce kernels.
const TASK_THREADS: u32 = 512;

/// Shape checks shared by both variants; returns (T, width) as kernel integers.
fn check_shapes(
    op: &'static str,
    layout: &TaskLayout,
    n: usize,
    logits_len: usize,
    mask: Option<&GpuBuffer<u8>>,
    weights: &[f32],
    dlogits: Option<&GpuBuffer<f32>>,
) -> Result<(i32, i32)> {
    if n == 0 {
        return Err(KernelError::new(op, "empty batch: n = 0, expected n >= 1"));
    }
    let (t, w) = (layout.num_tasks(), layout.width());
    let too_big = |what: &str| KernelError::new(op, format!("{what} does not fit in i32"));
    let t32 = i32::try_from(t).map_err(|_| too_big("T"))?;
    let w32 = i32::try_from(w).map_err(|_| too_big("row width"))?;
    let len = n
        .checked_mul(w)
        .ok_or_else(|| KernelError::new(op, "n * width overflows"))?;
    check_len(op, "logits", logits_len, len)?;
    check_len(op, "weights", weights.len(), t)?;
    if let Some(m) = mask {
        check_len(op, "mask", m.len(), n * t)?;
    }
    if let Some(d) = dlogits {
        check_len(op, "dlogits", d.len(), len)?;
    }
    if let Some(k) = weights.iter().position(|x| !x.is_finite()) {
        return Err(KernelError::new(
            op,
            format!("weights[{k}] = {} is not finite", weights[k]),
        ));
    }
    Ok((t32, w32))
}

fn blocks(n: usize, per: usize, op: &'static str) -> Result<u32> {
    u32::try_from(n.div_ceil(per))
        .map_err(|_| KernelError::new(op, format!("{n} rows need too many blocks")))
}

/// The device results of a fused weighted loss: nothing has been read back.
#[derive(Debug)]
pub struct DeviceLossOutput {
    /// Mean loss of each task over its valid samples (0 for a task with none), [T].
    pub task_loss: GpuBuffer<f32>,
    /// The weighted loss Σ_t p_t · task_loss_t, [1].
    pub total: GpuBuffer<f32>,
    /// Number of valid samples n_t of each task, [T] (counted by the device).
    pub counts: GpuBuffer<i32>,
}

/// The host's CE target check and count: the valid samples n_t of each task (target not
/// `ignore_index`, mask nonzero), or the CPU's error for the first (row, task) whose valid
/// target lies outside its head. Run it on the host targets before uploading them for
/// [`weighted_ce_loss_device`]; it reads nothing from the device.
pub fn check_ce_targets(
    layout: &TaskLayout,
    n: usize,
    targets: &[i64],
    mask: Option<&[u8]>,
    ignore_index: i64,
) -> Result<Vec<usize>> {
    const OP: &str = "weighted_ce_loss";
    let t_count = layout.num_tasks();
    check_len(OP, "targets", targets.len(), n * t_count)?;
    if let Some(m) = mask {
        check_len(OP, "mask", m.len(), n * t_count)?;
    }
    let mut counts = vec![0usize; t_count];
    for (i, row) in targets.chunks_exact(t_count.max(1)).enumerate() {
        for (t, &y) in row.iter().enumerate() {
            let k = i * t_count + t;
            if y == ignore_index || mask.is_some_and(|m| m[k] == 0) {
                continue;
            }
            let c = layout.range(t).len();
            if y < 0 || y as u64 >= c as u64 {
                return Err(KernelError::new(
                    OP,
                    format!(
                        "targets[row {i}, task {t}] = {y} is outside [0, {c}) and is not the \
                         ignore_index {ignore_index}"
                    ),
                ));
            }
            counts[t] += 1;
        }
    }
    Ok(counts)
}

/// The host's BCE target check and count: the samples of each task with a nonzero mask entry
/// (all n without a mask), or the CPU's error for the first target outside [0, 1] (NaN
/// included). Run it before uploading the targets for [`weighted_bce_loss_device`].
pub fn check_bce_targets(
    layout: &TaskLayout,
    n: usize,
    targets: &[f32],
    mask: Option<&[u8]>,
) -> Result<Vec<usize>> {
    const OP: &str = "weighted_bce_loss";
    let (t_count, width) = (layout.num_tasks(), layout.width());
    check_len(OP, "targets", targets.len(), n * width)?;
    if let Some(m) = mask {
        check_len(OP, "mask", m.len(), n * t_count)?;
    }
    if let Some(k) = targets.iter().position(|y| !(0.0..=1.0).contains(y)) {
        return Err(KernelError::new(
            OP,
            format!(
                "targets[row {}, column {}] = {} is outside [0, 1]",
                k / width,
                k % width,
                targets[k]
            ),
        ));
    }
    let mut counts = vec![0usize; t_count];
    for i in 0..n {
        for (t, c) in counts.iter_mut().enumerate() {
            *c += usize::from(mask.is_none_or(|m| m[i * t_count + t] != 0));
        }
    }
    Ok(counts)
}

/// The head offsets and the task weights (their f32 bits) in one i32 table: one upload per
/// call instead of two. The kernels get `offsets` at 0 and `weights` at T + 1.
fn upload_table(gpu: &Gpu, layout: &TaskLayout, weights: &[f32]) -> Result<GpuBuffer<i32>> {
    let table: Vec<i32> = (layout.offsets().iter().map(|&o| o as i32))
        .chain(weights.iter().map(|w| w.to_bits() as i32))
        .collect();
    gpu.upload(&table)
}

/// Fused softmax cross-entropy on the GPU, results left on the device; writes the gradient
/// into `dlogits` when given. The targets are not checked here (the caller checked the host
/// copy with [`check_ce_targets`]); one outside its head would count as not valid.
pub fn weighted_ce_loss_device(
    gpu: &Gpu,
    input: &CudaCeInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
) -> Result<DeviceLossOutput> {
    ce_launches(gpu, input, dlogits, None)
}

/// Checks, then the launches of the CE variant; `bad` gets the device target check's flag.
fn ce_launches(
    gpu: &Gpu,
    input: &CudaCeInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
    bad: Option<&mut GpuBuffer<u64>>,
) -> Result<DeviceLossOutput> {
    const OP: &str = "cuda::weighted_ce_loss";
    let layout = input.layout;
    let n = input.n;
    let (t32, w32) = check_shapes(
        OP,
        layout,
        n,
        input.logits.len(),
        input.mask,
        input.weights,
        dlogits.as_deref(),
    )?;
    let t = layout.num_tasks();
    check_len(OP, "targets", input.targets.len(), n * t)?;
    let table = upload_table(gpu, layout, input.weights)?;
    let mut counts = gpu.zeros::<i32>(t)?;
    // row_loss is fully written by wl_ce_rows before wl_reduce reads it.
    let mut row_loss = gpu.alloc::<f32>(n * t)?;
    let n64 = n as i64;

    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_ce_count",
        task_cfg(t)?,
        &[
            input.targets.arg(),
            input.mask.into(),
            table.arg(),
            Arg::i64(n64),
            Arg::i32(t32),
            Arg::i64(input.ignore_index),
            counts.arg_mut(),
            bad.map_or_else(Arg::null, GpuBuffer::arg_mut),
        ],
    )?;
    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_ce_rows",
        row_cfg(n, OP)?,
        &[
            input.logits.arg(),
            input.targets.arg(),
            input.mask.into(),
            table.arg(),
            table.arg_at(t + 1),
            counts.arg(),
            Arg::i64(n64),
            Arg::i32(w32),
            Arg::i32(t32),
            Arg::i64(input.ignore_index),
            row_loss.arg_mut(),
            dlogits.map_or_else(Arg::null, GpuBuffer::arg_mut),
        ],
    )?;
    reduce_and_finish(gpu, &row_loss, n64, t32, &table, counts, false)
}

/// Fused softmax cross-entropy on the GPU; writes the gradient into `dlogits` when given.
/// Checks the device targets on the device and reads the verdict and the T losses and counts
/// back (one synchronisation). On error the contents of `dlogits` are unspecified.
pub fn weighted_ce_loss(
    gpu: &Gpu,
    input: &CudaCeInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
) -> Result<WeightedLossOutput> {
    const OP: &str = "cuda::weighted_ce_loss";
    let mut bad = gpu.zeros::<u64>(1)?;
    let out = ce_launches(gpu, input, dlogits, Some(&mut bad))?;
    let bad_idx = gpu.download(&bad)?[0];
    if bad_idx != 0 {
        let t = input.layout.num_tasks();
        let k = (bad_idx - 1) as usize;
        let (row, task) = (k / t, k % t);
        let c = input.layout.range(task).len();
        return Err(KernelError::new(
            OP,
            format!(
                "targets[row {row}, task {task}] is outside [0, {c}) and is not the \
                 ignore_index {}",
                input.ignore_index
            ),
        ));
    }
    to_host(gpu, &out)
}

/// Fused sigmoid binary cross-entropy on the GPU, results left on the device; writes the
/// gradient when `dlogits` is given. The targets are not checked here (the caller checked the
/// host copy with [`check_bce_targets`]).
pub fn weighted_bce_loss_device(
    gpu: &Gpu,
    input: &CudaBceInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
) -> Result<DeviceLossOutput> {
    bce_launches(gpu, input, dlogits, None)
}

/// Checks, then the launches of the BCE variant; `bad` gets the device target check's flag.
fn bce_launches(
    gpu: &Gpu,
    input: &CudaBceInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
    bad: Option<&mut GpuBuffer<u64>>,
) -> Result<DeviceLossOutput> {
    const OP: &str = "cuda::weighted_bce_loss";
    let layout = input.layout;
    let n = input.n;
    let (t32, w32) = check_shapes(
        OP,
        layout,
        n,
        input.logits.len(),
        input.mask,
        input.weights,
        dlogits.as_deref(),
    )?;
    let t = layout.num_tasks();
    check_len(OP, "targets", input.targets.len(), n * layout.width())?;
    let table = upload_table(gpu, layout, input.weights)?;
    let mut counts = gpu.zeros::<i32>(t)?;
    // row_loss is fully written by wl_bce_rows before wl_reduce reads it.
    let mut row_loss = gpu.alloc::<f32>(n * t)?;
    let n64 = n as i64;

    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_bce_count",
        task_cfg(t)?,
        &[
            input.mask.into(),
            Arg::i64(n64),
            Arg::i32(t32),
            counts.arg_mut(),
        ],
    )?;
    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_bce_rows",
        row_cfg(n, OP)?,
        &[
            input.logits.arg(),
            input.targets.arg(),
            input.mask.into(),
            table.arg(),
            table.arg_at(t + 1),
            counts.arg(),
            Arg::i64(n64),
            Arg::i32(w32),
            Arg::i32(t32),
            row_loss.arg_mut(),
            dlogits.map_or_else(Arg::null, GpuBuffer::arg_mut),
            bad.map_or_else(Arg::null, GpuBuffer::arg_mut),
        ],
    )?;
    reduce_and_finish(gpu, &row_loss, n64, t32, &table, counts, true)
}

/// Fused sigmoid binary cross-entropy on the GPU; writes the gradient when `dlogits` is given.
/// Checks the device targets on the device and reads the verdict and the results back. On
/// error the contents of `dlogits` are unspecified.
pub fn weighted_bce_loss(
    gpu: &Gpu,
    input: &CudaBceInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
) -> Result<WeightedLossOutput> {
    const OP: &str = "cuda::weighted_bce_loss";
    let mut bad = gpu.zeros::<u64>(1)?;
    let out = bce_launches(gpu, input, dlogits, Some(&mut bad))?;
    let bad_idx = gpu.download(&bad)?[0];
    if bad_idx != 0 {
        let k = (bad_idx - 1) as usize;
        let w = input.layout.width();
        return Err(KernelError::new(
            OP,
            format!("targets[row {}, column {}] is outside [0, 1]", k / w, k % w),
        ));
    }
    to_host(gpu, &out)
}

/// Reads device results back into the host output.
fn to_host(gpu: &Gpu, out: &DeviceLossOutput) -> Result<WeightedLossOutput> {
    Ok(WeightedLossOutput {
        task_loss: gpu.download(&out.task_loss)?,
        counts: (gpu.download(&out.counts)?.into_iter())
            .map(|c| c.max(0) as usize)
            .collect(),
        total: gpu.download(&out.total)?[0],
    })
}

/// One block per task.
fn task_cfg(t: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (blocks(t, 1, "weighted_loss")?, 1, 1),
        block_dim: (TASK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// One warp per row.
fn row_cfg(n: usize, op: &'static str) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (blocks(n, ROWS_PER_BLOCK, op)?, 1, 1),
        block_dim: ((ROWS_PER_BLOCK * 32) as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Per-task fixed-order sum of the row losses, then the task means and the weighted total
/// on the device (BCE divides each task's sum by its head's width too).
fn reduce_and_finish(
    gpu: &Gpu,
    row_loss: &GpuBuffer<f32>,
    n64: i64,
    t32: i32,
    table: &GpuBuffer<i32>,
    counts: GpuBuffer<i32>,
    per_column: bool,
) -> Result<DeviceLossOutput> {
    let t = t32 as usize;
    // Fully written by wl_reduce (one block per task) and wl_finish before anyone reads them.
    let mut task_sum = gpu.alloc::<f64>(t)?;
    let mut task_loss = gpu.alloc::<f32>(t)?;
    let mut total = gpu.alloc::<f32>(1)?;
    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_reduce",
        task_cfg(t)?,
        &[
            row_loss.arg(),
            Arg::i64(n64),
            Arg::i32(t32),
            task_sum.arg_mut(),
        ],
    )?;
    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_finish",
        LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        },
        &[
            task_sum.arg(),
            counts.arg(),
            table.arg(),
            table.arg_at(t + 1),
            Arg::i32(t32),
            Arg::i32(i32::from(per_column)),
            task_loss.arg_mut(),
            total.arg_mut(),
        ],
    )?;
    Ok(DeviceLossOutput {
        task_loss,
        total,
        counts,
    })
}
