//! CUDA cross-entropy with logits (softmax over classes, integer targets, ignore_index) and
//! binary cross-entropy with logits (kernels/cross_entropy.cu): the twin of
//! [`crate::cpu::cross_entropy`], with inputs and outputs in device memory.
//!
//! The targets come from the host: [`CeTargets::upload`] checks and counts them there (the
//! CPU's error for a bad target, the number of valid rows the forward returns) and uploads them
//! once for the forward and the backward, so neither op reads anything back from the device (a
//! read-back is a full stream synchronisation that stops the host from queuing work ahead).
//! The kernels take only [`CeTargets`], so every target they index with has been checked.

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

/// Class targets on the device, checked on the host before the upload: every one is
/// `ignore_index` or lies in `[0, classes)`.
#[derive(Debug)]
pub struct CeTargets {
    buf: GpuBuffer<i64>,
    classes: usize,
    ignore_index: i64,
    valid: usize,
}

impl CeTargets {
    /// Checks `targets` against `classes` as the CPU does (the same error for the first bad
    /// row), counts the rows that are not `ignore_index` and uploads them (one host->device
    /// copy, no synchronisation).
    pub fn upload(gpu: &Gpu, classes: usize, targets: &[i64], ignore_index: i64) -> Result<Self> {
        let valid = crate::cpu::cross_entropy::check_targets(
            "cuda::cross_entropy",
            classes,
            targets,
            ignore_index,
        )?;
        Ok(Self {
            buf: gpu.upload(targets)?,
            classes,
            ignore_index,
            valid,
        })
    }

    /// Number of rows whose target is not `ignore_index`.
    pub fn valid(&self) -> usize {
        self.valid
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The target meaning "no label".
    pub fn ignore_index(&self) -> i64 {
        self.ignore_index
    }

    /// Number of classes the targets were checked against.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The device copy of the targets.
    pub fn buffer(&self) -> &GpuBuffer<i64> {
        &self.buf
    }
}

/// The targets must have been checked against the op's own number of classes.
fn check_classes(op: &'static str, classes: usize, targets: &CeTargets) -> Result<()> {
    if targets.classes != classes {
        return Err(KernelError::new(
            op,
            format!(
                "targets were checked against {} classes, the logits have {classes}",
                targets.classes
            ),
        ));
    }
    Ok(())
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
/// `ignore_index`); returns the number of rows that were not ignored (counted on the host).
pub fn cross_entropy_forward(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    logits: &GpuBuffer<f32>,
    targets: &CeTargets,
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
    check_classes(OP, classes, targets)?;
    let (cfg, blk) = row_launch(rows, classes);
    let (kernel, classes) = class_arg(blk, classes, "ce_forward_warp", "ce_forward_block");
    gpu.launch(
        &CROSS_ENTROPY,
        kernel,
        cfg,
        &[
            logits.arg(),
            targets.buf.arg(),
            Arg::i64(rows as i64),
            classes,
            Arg::i64(targets.ignore_index),
            losses.arg_mut(),
        ],
    )?;
    Ok(targets.valid)
}

/// dlogits = scale·(softmax − onehot(target)), zero rows for ignored targets (overwritten).
/// For mean reduction pass scale = dL/valid.
pub fn cross_entropy_backward(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    logits: &GpuBuffer<f32>,
    targets: &CeTargets,
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
    check_classes(OP, classes, targets)?;
    let (cfg, blk) = row_launch(rows, classes);
    let (kernel, classes) = class_arg(blk, classes, "ce_backward_warp", "ce_backward_block");
    gpu.launch(
        &CROSS_ENTROPY,
        kernel,
        cfg,
        &[
            logits.arg(),
            targets.buf.arg(),
            Arg::i64(rows as i64),
            classes,
            Arg::i64(targets.ignore_index),
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
