//! CUDA twin of [`crate::cpu::weighted_loss`]: same meaning, inputs in device memory.
//!
//! Three launches (count valid samples, one warp per row for losses and gradients, a
//! fixed-order per-task reduction) and one synchronisation to read back the T losses and counts.

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

/// Fused softmax cross-entropy on the GPU; writes the gradient into `dlogits` when given.
/// On error the contents of `dlogits` are unspecified.
pub fn weighted_ce_loss(
    gpu: &Gpu,
    input: &CudaCeInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
) -> Result<WeightedLossOutput> {
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
    let offsets: Vec<i32> = layout.offsets().iter().map(|&o| o as i32).collect();
    let d_offsets = gpu.upload(&offsets)?;
    let d_weights = gpu.upload(input.weights)?;
    let mut counts = gpu.zeros::<i32>(t)?;
    let mut bad = gpu.zeros::<u64>(1)?;
    // row_loss is fully written by wl_ce_rows before wl_reduce reads it.
    let mut row_loss = gpu.alloc::<f32>(n * t)?;
    let mut task_sum = gpu.zeros::<f64>(t)?;
    let n64 = n as i64;

    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_ce_count",
        task_cfg(t)?,
        &[
            input.targets.arg(),
            input.mask.into(),
            d_offsets.arg(),
            Arg::i64(n64),
            Arg::i32(t32),
            Arg::i64(input.ignore_index),
            counts.arg_mut(),
            bad.arg_mut(),
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
            d_offsets.arg(),
            d_weights.arg(),
            counts.arg(),
            Arg::i64(n64),
            Arg::i32(w32),
            Arg::i32(t32),
            Arg::i64(input.ignore_index),
            row_loss.arg_mut(),
            dlogits.map_or_else(Arg::null, GpuBuffer::arg_mut),
        ],
    )?;

    reduce(gpu, &row_loss, n64, t32, &mut task_sum)?;
    let bad_idx = gpu.download(&bad)?[0];
    if bad_idx != 0 {
        let k = (bad_idx - 1) as usize;
        let (row, task) = (k / t, k % t);
        let c = layout.range(task).len();
        return Err(KernelError::new(
            OP,
            format!(
                "targets[row {row}, task {task}] is outside [0, {c}) and is not the \
                 ignore_index {}",
                input.ignore_index
            ),
        ));
    }
    finish(gpu, &counts, &task_sum, input.weights, |_| 1)
}

/// Fused sigmoid binary cross-entropy on the GPU; writes the gradient when `dlogits` is given.
/// On error the contents of `dlogits` are unspecified.
pub fn weighted_bce_loss(
    gpu: &Gpu,
    input: &CudaBceInput<'_>,
    dlogits: Option<&mut GpuBuffer<f32>>,
) -> Result<WeightedLossOutput> {
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
    let offsets: Vec<i32> = layout.offsets().iter().map(|&o| o as i32).collect();
    let d_offsets = gpu.upload(&offsets)?;
    let d_weights = gpu.upload(input.weights)?;
    let mut counts = gpu.zeros::<i32>(t)?;
    let mut bad = gpu.zeros::<u64>(1)?;
    // row_loss is fully written by wl_bce_rows before wl_reduce reads it.
    let mut row_loss = gpu.alloc::<f32>(n * t)?;
    let mut task_sum = gpu.zeros::<f64>(t)?;
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
            d_offsets.arg(),
            d_weights.arg(),
            counts.arg(),
            Arg::i64(n64),
            Arg::i32(w32),
            Arg::i32(t32),
            row_loss.arg_mut(),
            dlogits.map_or_else(Arg::null, GpuBuffer::arg_mut),
            bad.arg_mut(),
        ],
    )?;

    reduce(gpu, &row_loss, n64, t32, &mut task_sum)?;
    let bad_idx = gpu.download(&bad)?[0];
    if bad_idx != 0 {
        let k = (bad_idx - 1) as usize;
        let w = layout.width();
        return Err(KernelError::new(
            OP,
            format!("targets[row {}, column {}] is outside [0, 1]", k / w, k % w),
        ));
    }
    finish(gpu, &counts, &task_sum, input.weights, |t| {
        layout.range(t).len()
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

/// Per-task fixed-order sum of the row losses.
fn reduce(
    gpu: &Gpu,
    row_loss: &GpuBuffer<f32>,
    n64: i64,
    t32: i32,
    task_sum: &mut GpuBuffer<f64>,
) -> Result<()> {
    gpu.launch(
        &WEIGHTED_LOSS,
        "wl_reduce",
        task_cfg(t32 as usize)?,
        &[
            row_loss.arg(),
            Arg::i64(n64),
            Arg::i32(t32),
            task_sum.arg_mut(),
        ],
    )
}

/// Reads back counts and sums and forms the output exactly as the CPU side does.
fn finish(
    gpu: &Gpu,
    counts: &GpuBuffer<i32>,
    task_sum: &GpuBuffer<f64>,
    weights: &[f32],
    cols: impl Fn(usize) -> usize,
) -> Result<WeightedLossOutput> {
    let counts: Vec<usize> = gpu
        .download(counts)?
        .into_iter()
        .map(|c| c.max(0) as usize)
        .collect();
    let sums = gpu.download(task_sum)?;
    let task_loss: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(t, (&sum, &c))| {
            if c == 0 {
                0.0
            } else {
                sum / (c as f64 * cols(t) as f64)
            }
        })
        .collect();
    let total = task_loss
        .iter()
        .zip(weights)
        .map(|(&l, &w)| l * w as f64)
        .sum::<f64>() as f32;
    Ok(WeightedLossOutput {
        task_loss: task_loss.iter().map(|&l| l as f32).collect(),
        counts,
        total,
    })
}
