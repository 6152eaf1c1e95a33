//! CUDA cross-entropy with logits (softmax over classes, integer targets, ignore_index) and
//! binary cross-entropy with logits (kernels/cross_entropy.cu): the twin of
//! [`crate::cpu::cross_entropy`], with inputs and outputs in device memory.
//!
//! The cross-entropy ops first check the targets on the device and read back the verdict (one
//! synchronisation), so that bad targets are refused before any output is written, as on the
//! CPU; the forward needs that read-back anyway for the count of valid rows it returns.

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::flat_cfg_max;
use super::gpu::Gpu;
use super::softmax::row_launch;
use super::sources::CROSS_ENTROPY;
use crate::cpu::checks::{numel_i64, same_len};
use crate::cpu::cross_entropy::check_ce;
use crate::error::{KernelError, Result};

/// Grid-stride loops cover any length; more blocks than this only add scheduling cost.
const MAX_BLOCKS: usize = 4096;

/// Checks the targets on the device: the number of rows that are not `ignore_index`, or the
/// CPU's error for the first row whose target is outside `[0, classes)`.
fn check_targets(
    gpu: &Gpu,
    op: &'static str,
    rows: usize,
    classes: usize,
    targets: &GpuBuffer<i64>,
    ignore_index: i64,
) -> Result<usize> {
    let mut valid = gpu.zeros::<u64>(1)?;
    let mut bad = gpu.zeros::<u64>(1)?;
    gpu.launch(
        &CROSS_ENTROPY,
        "ce_check",
        flat_cfg_max(rows, MAX_BLOCKS),
        &[
            targets.arg(),
            Arg::i64(rows as i64),
            Arg::i64(classes as i64),
            Arg::i64(ignore_index),
            valid.arg_mut(),
            bad.arg_mut(),
        ],
    )?;
    let bad = gpu.download(&bad)?[0];
    if bad != 0 {
        // The kernel keeps the largest rows − row, i.e. the first bad row, as the CPU reports.
        let row = rows - bad as usize;
        let mut one = gpu.alloc::<i64>(1)?;
        gpu.copy(targets, row, &mut one, 0, 1)?;
        let t = gpu.download(&one)?[0];
        return Err(KernelError::new(
            op,
            format!(
                "target {t} of row {row} is outside [0, {classes}) and is not ignore_index {ignore_index}"
            ),
        ));
    }
    Ok(gpu.download(&valid)?[0] as usize)
}

/// The kernel for `row_launch`'s choice and its `classes` argument: an `int` for the warp
/// kernels (classes <= WARP_MAX_DIM), an `i64` for the block ones.
fn class_arg(
    blk: i32,
    classes: usize,
    warp: &'static str,
    block: &'static str,
) -> (&'static str, Arg<'static>) {
    if blk == 0 {
        (warp, Arg::i32(classes as i32))
    } else {
        (block, Arg::i64(classes as i64))
    }
}

/// losses[r] = −log softmax(logits[r])[targets[r]] (0 for rows whose target is
/// `ignore_index`); returns the number of rows that were not ignored.
pub fn cross_entropy_forward(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    logits: &GpuBuffer<f32>,
    targets: &GpuBuffer<i64>,
    ignore_index: i64,
    losses: &mut GpuBuffer<f32>,
) -> Result<usize> {
    const OP: &str = "cuda::cross_entropy_forward";
    let out = ("losses", losses.len(), true);
    check_ce(
        OP,
        numel_i64,
        rows,
        classes,
        logits.len(),
        targets.len(),
        out,
    )?;
    let valid = check_targets(gpu, OP, rows, classes, targets, ignore_index)?;
    let (cfg, blk) = row_launch(rows, classes);
    let (kernel, classes) = class_arg(blk, classes, "ce_forward_warp", "ce_forward_block");
    gpu.launch(
        &CROSS_ENTROPY,
        kernel,
        cfg,
        &[
            logits.arg(),
            targets.arg(),
            Arg::i64(rows as i64),
            classes,
            Arg::i64(ignore_index),
            losses.arg_mut(),
        ],
    )?;
    Ok(valid)
}

/// dlogits = scale·(softmax − onehot(target)), zero rows for ignored targets (overwritten).
/// For mean reduction pass scale = dL/valid.
#[allow(clippy::too_many_arguments)] // the CPU twin's arguments plus the device
pub fn cross_entropy_backward(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    logits: &GpuBuffer<f32>,
    targets: &GpuBuffer<i64>,
    ignore_index: i64,
    scale: f32,
    dlogits: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::cross_entropy_backward";
    let out = ("dlogits", dlogits.len(), false);
    check_ce(
        OP,
        numel_i64,
        rows,
        classes,
        logits.len(),
        targets.len(),
        out,
    )?;
    check_targets(gpu, OP, rows, classes, targets, ignore_index)?;
    let (cfg, blk) = row_launch(rows, classes);
    let (kernel, classes) = class_arg(blk, classes, "ce_backward_warp", "ce_backward_block");
    gpu.launch(
        &CROSS_ENTROPY,
        kernel,
        cfg,
        &[
            logits.arg(),
            targets.arg(),
            Arg::i64(rows as i64),
            classes,
            Arg::i64(ignore_index),
            Arg::f32(scale),
            dlogits.arg_mut(),
        ],
    )
}

/// Elementwise BCE with logits: losses = max(x, 0) − x·t + log(1 + e^{−|x|}).
pub fn bce_with_logits_forward(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    targets: &GpuBuffer<f32>,
    losses: &mut GpuBuffer<f32>,
) -> Result<()> {
    let n = same_len(
        "cuda::bce_with_logits_forward",
        &[
            ("x", x.len()),
            ("targets", targets.len()),
            ("losses", losses.len()),
        ],
    )?;
    gpu.launch(
        &CROSS_ENTROPY,
        "bce_forward",
        flat_cfg_max(n, MAX_BLOCKS),
        &[x.arg(), targets.arg(), losses.arg_mut(), Arg::i64(n as i64)],
    )
}

/// Backward of BCE with logits: dx = scale·(σ(x) − t) (overwritten).
pub fn bce_with_logits_backward(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    targets: &GpuBuffer<f32>,
    scale: f32,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    let n = same_len(
        "cuda::bce_with_logits_backward",
        &[("x", x.len()), ("targets", targets.len()), ("dx", dx.len())],
    )?;
    gpu.launch(
        &CROSS_ENTROPY,
        "bce_backward",
        flat_cfg_max(n, MAX_BLOCKS),
        &[
            x.arg(),
            targets.arg(),
            Arg::f32(scale),
            dx.arg_mut(),
            Arg::i64(n as i64),
        ],
    )
}
