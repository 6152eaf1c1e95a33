//! CUDA softmax over the last axis, forward and backward (kernels/softmax.cu): the twin of
//! [`crate::cpu::softmax`], with inputs and outputs in device memory.
//!
//! Short rows get one warp each, long rows a whole block (see [`WARP_MAX_DIM`]); both are
//! deterministic (fixed-order reductions, no atomics).

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::grid_cfg;
use super::gpu::Gpu;
use super::sources::SOFTMAX;
use crate::cpu::checks::numel_i64;
use crate::cpu::softmax::check_rows;
use crate::error::Result;

/// Rows up to this length get one warp each (at most 32 elements per lane, held in registers
/// by the softmax kernels); longer rows a whole block, so that a 50 000-class row is not
/// serialised on 32 lanes.
pub const WARP_MAX_DIM: usize = 1024;
/// Threads per block of the warp-per-row launches (8 rows per block).
const WARP_BLOCK: u32 = 256;
/// Grid-stride loops cover any row count; more blocks than this only add scheduling cost.
const MAX_BLOCKS: usize = 1 << 16;

/// Launch shape for `rows` rows of `dim` elements: (config, block_per_row flag).
pub(crate) fn row_launch(rows: usize, dim: usize) -> (LaunchConfig, i32) {
    if dim <= WARP_MAX_DIM {
        let per = (WARP_BLOCK / 32) as usize;
        let cfg = grid_cfg(rows.div_ceil(per), MAX_BLOCKS, (WARP_BLOCK, 1, 1));
        (cfg, 0)
    } else {
        // 256 threads keep at least 4 elements per thread; 1024 for very long rows.
        let threads = if dim <= 16 * 1024 { 256 } else { 1024 };
        (grid_cfg(rows, MAX_BLOCKS, (threads, 1, 1)), 1)
    }
}

/// Launches the forward on raw arguments; `x` and `y` may be the same buffer (in place).
pub(crate) fn launch_forward(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    x: Arg<'_>,
    y: Arg<'_>,
) -> Result<()> {
    let (cfg, blk) = row_launch(rows, dim);
    let rows = Arg::i64(rows as i64);
    if blk == 0 {
        // dim <= WARP_MAX_DIM fits the warp kernel's `int`.
        let dim = Arg::i32(dim as i32);
        gpu.launch(&SOFTMAX, "softmax_fwd_warp", cfg, &[x, y, rows, dim])
    } else {
        let dim = Arg::i64(dim as i64);
        gpu.launch(&SOFTMAX, "softmax_fwd_block", cfg, &[x, y, rows, dim])
    }
}

/// Launches dx = scale·y⊙(dy − Σ dy⊙y) on raw arguments; `dx` may be `dy` (in place).
pub(crate) fn launch_backward(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    scale: f32,
    (y, dy, dx): (Arg<'_>, Arg<'_>, Arg<'_>),
) -> Result<()> {
    let (cfg, blk) = row_launch(rows, dim);
    let (rows, scale) = (Arg::i64(rows as i64), Arg::f32(scale));
    if blk == 0 {
        let dim = Arg::i32(dim as i32);
        gpu.launch(
            &SOFTMAX,
            "softmax_bwd_warp",
            cfg,
            &[y, dy, dx, rows, dim, scale],
        )
    } else {
        let dim = Arg::i64(dim as i64);
        gpu.launch(
            &SOFTMAX,
            "softmax_bwd_block",
            cfg,
            &[y, dy, dx, rows, dim, scale],
        )
    }
}

/// y = softmax(x) per row of `[rows, dim]` (max-subtracted); `y` is overwritten.
pub fn softmax_forward(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::softmax_forward";
    check_rows(OP, numel_i64, rows, dim, &[("x", x.len()), ("y", y.len())])?;
    launch_forward(gpu, rows, dim, x.arg(), y.arg_mut())
}

/// dx = y ⊙ (dy − Σ dy⊙y) per row, from the forward output `y`; `dx` is overwritten.
pub fn softmax_backward(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    y: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::softmax_backward";
    let bufs = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check_rows(OP, numel_i64, rows, dim, &bufs)?;
    launch_backward(gpu, rows, dim, 1.0, (y.arg(), dy.arg(), dx.arg_mut()))
}
