//! CUDA twin of [`crate::cpu::layer_norm`] (kernels/layer_norm.cu): layer norm of
//! x [rows, dim] over `dim` with affine gamma, beta [dim]. Same names, argument order and
//! meaning as the CPU functions, with the [`Gpu`] first and the tensors in device memory.
//!
//! One warp per row with f64 sums (as the CPU); dgamma and dbeta, sums over rows, are two-pass
//! partials over fixed row chunks added in chunk order: no float atomics, so results are
//! bit-for-bit reproducible.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::LAYER_NORM;
use crate::cpu::layer_norm::{Size, check_bufs};
use crate::error::{KernelError, Result};

/// Rows (warps) per block of the row kernels.
const ROWS_PER_BLOCK: usize = 8;
/// Threads per block of the column kernels (one column each).
const COL_THREADS: usize = 256;
/// At least this many rows per chunk of the dgamma / dbeta partials.
const MIN_CHUNK_ROWS: usize = 16;
/// At most this many chunks (a grid dimension y, and the finishing loop's length).
const MAX_CHUNKS: usize = 1024;

/// Refuses a zero dimension, as the CPU does, and a `dim` the kernels' `int` column index
/// cannot address.
fn check_shape(op: &'static str, rows: usize, dim: usize) -> Result<()> {
    let show = format!("[rows={rows}, dim={dim}]");
    if let Some(name) = [("rows", rows), ("dim", dim)]
        .iter()
        .find(|d| d.1 == 0)
        .map(|d| d.0)
    {
        return Err(KernelError::new(
            op,
            format!("empty tensor: dimension `{name}` is 0 (shape {show})"),
        ));
    }
    if dim > i32::MAX as usize || rows.checked_mul(dim).is_none_or(|t| t > i64::MAX as usize) {
        return Err(KernelError::new(
            op,
            format!(
                "shape {show} is too large (dim must be at most {})",
                i32::MAX
            ),
        ));
    }
    Ok(())
}

/// One warp per row.
fn row_cfg(op: &'static str, rows: usize) -> Result<LaunchConfig> {
    // A grid's x dimension holds at most 2^31 − 1 blocks.
    let blocks = u32::try_from(rows.div_ceil(ROWS_PER_BLOCK))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| KernelError::new(op, format!("rows = {rows} needs too many blocks")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: ((ROWS_PER_BLOCK * 32) as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Forward: y = (x − mean)·invstd·gamma + beta per row, storing save_mean and
/// save_invstd = 1/sqrt(var + eps) (biased variance), each [rows].
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    eps: f32,
    y: &mut GpuBuffer<f32>,
    save_mean: &mut GpuBuffer<f32>,
    save_invstd: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::layer_norm_forward";
    check_shape(OP, rows, dim)?;
    check_bufs(
        OP,
        (rows, dim),
        &[
            ("x", x.len(), Size::Full),
            ("y", y.len(), Size::Full),
            ("gamma", gamma.len(), Size::Dim),
            ("beta", beta.len(), Size::Dim),
            ("save_mean", save_mean.len(), Size::Rows),
            ("save_invstd", save_invstd.len(), Size::Rows),
        ],
    )?;
    gpu.launch(
        &LAYER_NORM,
        "ln_forward",
        row_cfg(OP, rows)?,
        &[
            x.arg(),
            gamma.arg(),
            beta.arg(),
            Arg::i64(rows as i64),
            Arg::i32(dim as i32),
            Arg::f32(eps),
            y.arg_mut(),
            save_mean.arg_mut(),
            save_invstd.arg_mut(),
        ],
    )
}

/// Backward: dx, dgamma = Σ_rows dy·x̂, dbeta = Σ_rows dy (all overwritten), with the
/// statistics saved by `layer_norm_forward`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    save_mean: &GpuBuffer<f32>,
    save_invstd: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
    dgamma: &mut GpuBuffer<f32>,
    dbeta: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::layer_norm_backward";
    check_shape(OP, rows, dim)?;
    check_bufs(
        OP,
        (rows, dim),
        &[
            ("x", x.len(), Size::Full),
            ("dy", dy.len(), Size::Full),
            ("dx", dx.len(), Size::Full),
            ("gamma", gamma.len(), Size::Dim),
            ("save_mean", save_mean.len(), Size::Rows),
            ("save_invstd", save_invstd.len(), Size::Rows),
            ("dgamma", dgamma.len(), Size::Dim),
            ("dbeta", dbeta.len(), Size::Dim),
        ],
    )?;
    gpu.launch(
        &LAYER_NORM,
        "ln_backward_rows",
        row_cfg(OP, rows)?,
        &[
            x.arg(),
            dy.arg(),
            gamma.arg(),
            save_mean.arg(),
            save_invstd.arg(),
            Arg::i64(rows as i64),
            Arg::i32(dim as i32),
            dx.arg_mut(),
        ],
    )?;
    // Row chunks of the column sums: a fixed function of the shape, so the order of the sums
    // is too.
    let rows_per = rows.div_ceil(MAX_CHUNKS).max(MIN_CHUNK_ROWS);
    let chunks = rows.div_ceil(rows_per);
    let tiles = u32::try_from(dim.div_ceil(COL_THREADS))
        .map_err(|_| KernelError::new(OP, format!("dim = {dim} needs too many blocks")))?;
    // Every (chunk, column) partial is written by its thread before the finish reads it.
    let mut part = gpu.alloc::<f64>(2 * chunks * dim)?;
    gpu.launch(
        &LAYER_NORM,
        "ln_backward_cols",
        LaunchConfig {
            grid_dim: (tiles, chunks as u32, 1),
            block_dim: (COL_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        },
        &[
            x.arg(),
            dy.arg(),
            save_mean.arg(),
            save_invstd.arg(),
            Arg::i64(rows as i64),
            Arg::i32(dim as i32),
            Arg::i64(rows_per as i64),
            Arg::i32(chunks as i32),
            part.arg_mut(),
        ],
    )?;
    gpu.launch(
        &LAYER_NORM,
        "ln_backward_cols_finish",
        LaunchConfig {
            grid_dim: (tiles, 1, 1),
            block_dim: (COL_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        },
        &[
            part.arg(),
            Arg::i32(chunks as i32),
            Arg::i32(dim as i32),
            dgamma.arg_mut(),
            dbeta.arg_mut(),
        ],
    )
}
