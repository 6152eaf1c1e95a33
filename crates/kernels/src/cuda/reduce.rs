//! CUDA sums and means, whole and along an axis (kernels/reduce.cu): the twins of
//! [`crate::cpu::reduce`]. Accumulation is in f64 like the CPU, in a fixed order (per-chunk
//! partials, then one pass adding them in chunk order), so two runs give the same bits.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::{MAX_BLOCKS, THREADS, flat_cfg, i64_arg, numel};
use super::gpu::Gpu;
use super::sources::REDUCE;
use crate::cpu::reduce::check_mid;
use crate::error::{KernelError, Result};

/// Blocks a reduction aims for (several per SM of an H100), reached by cutting the reduced
/// range into chunks when there are few outputs.
const TARGET_BLOCKS: usize = 1024;
/// Fewest elements per chunk of a row or keep-mid reduction (32 per thread of a block): below
/// this the second pass costs more than the parallelism gains.
const MIN_CHUNK_ELEMS: usize = 8192;
/// Fewest rows per chunk of a column reduction (32 per row lane of a 32 x 8 block).
const MIN_CHUNK_ROWS: usize = 256;
/// `rd_rows` serves contiguous reductions at least this long; shorter ones go to `rd_cols`,
/// whose thread per output wastes no lanes on short rows.
const MIN_ROW_LEN: usize = 256;

/// (chunk length, number of chunks) for `len` reduced elements over `out_blocks` blocks of
/// outputs.
fn chunking(len: usize, out_blocks: usize, min_chunk: usize) -> (usize, usize) {
    let max_chunks = (TARGET_BLOCKS / out_blocks.max(1)).clamp(1, 65_535);
    let chunk = len.div_ceil(max_chunks).max(min_chunk);
    (chunk, len.div_ceil(chunk))
}

/// Grid of `out_blocks` (capped; the kernels loop) by `chunks` blocks.
fn grid(out_blocks: usize, chunks: usize, block: (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (out_blocks.clamp(1, MAX_BLOCKS) as u32, chunks as u32, 1),
        block_dim: block,
        shared_mem_bytes: 0,
    }
}

/// Adds the `chunks` partials of each of the `m` outputs in chunk order: y = sum·factor (f32)
/// and/or yd = sum (f64).
fn finish(
    gpu: &Gpu,
    partial: &GpuBuffer<f64>,
    m: usize,
    chunks: usize,
    factor: f64,
    y: Option<&mut GpuBuffer<f32>>,
    yd: Option<&mut GpuBuffer<f64>>,
) -> Result<()> {
    gpu.launch(
        &REDUCE,
        "rd_finish",
        flat_cfg(m),
        &[
            partial.arg(),
            i64_arg(m),
            Arg::i32(chunks as i32),
            Arg::f64(factor),
            y.map_or_else(Arg::null, GpuBuffer::arg_mut),
            yd.map_or_else(Arg::null, GpuBuffer::arg_mut),
        ],
    )
}

/// Per-chunk f64 partial sums of the rows of x [outer, len]; returns (partials, chunks).
fn row_partials(
    gpu: &Gpu,
    outer: usize,
    len: usize,
    x: &GpuBuffer<f32>,
) -> Result<(GpuBuffer<f64>, usize)> {
    let (chunk, chunks) = chunking(len, outer, MIN_CHUNK_ELEMS);
    // Every (chunk, row) slot is written by rd_rows before rd_finish reads it.
    let mut partial = gpu.alloc::<f64>(chunks * outer)?;
    gpu.launch(
        &REDUCE,
        "rd_rows",
        grid(outer, chunks, (THREADS, 1, 1)),
        &[
            x.arg(),
            i64_arg(outer),
            i64_arg(len),
            i64_arg(chunk),
            partial.arg_mut(),
        ],
    )?;
    Ok((partial, chunks))
}

/// y [outer, inner] = factor · Σ over the middle axis of x [outer, len, inner] (shapes checked
/// by the caller).
pub(crate) fn over_mid(
    gpu: &Gpu,
    outer: usize,
    len: usize,
    inner: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
    factor: f64,
) -> Result<()> {
    let m = outer * inner;
    if inner == 1 && len >= MIN_ROW_LEN {
        let (partial, chunks) = row_partials(gpu, outer, len, x)?;
        return finish(gpu, &partial, m, chunks, factor, Some(y), None);
    }
    let tiles = m.div_ceil(32);
    let (chunk, chunks) = chunking(len, tiles, MIN_CHUNK_ROWS);
    // Every (chunk, column) slot is written by rd_cols before rd_finish reads it.
    let mut partial = gpu.alloc::<f64>(chunks * m)?;
    gpu.launch(
        &REDUCE,
        "rd_cols",
        grid(tiles, chunks, (32, 8, 1)),
        &[
            x.arg(),
            i64_arg(outer),
            i64_arg(len),
            i64_arg(inner),
            i64_arg(chunk),
            partial.arg_mut(),
        ],
    )?;
    finish(gpu, &partial, m, chunks, factor, Some(y), None)
}

/// y [mid] = Σ over the outer and inner axes of x [outer, mid, inner] (shapes checked by the
/// caller): the per-channel bias gradient.
pub(crate) fn keep_mid(
    gpu: &Gpu,
    outer: usize,
    mid: usize,
    inner: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let (chunk, chunks) = chunking(outer * inner, mid, MIN_CHUNK_ELEMS);
    // Every (chunk, channel) slot is written by rd_keep_mid before rd_finish reads it.
    let mut partial = gpu.alloc::<f64>(chunks * mid)?;
    gpu.launch(
        &REDUCE,
        "rd_keep_mid",
        grid(mid, chunks, (THREADS, 1, 1)),
        &[
            x.arg(),
            i64_arg(outer),
            i64_arg(mid),
            i64_arg(inner),
            i64_arg(chunk),
            partial.arg_mut(),
        ],
    )?;
    finish(gpu, &partial, mid, chunks, 1.0, Some(y), None)
}

/// Σ x in f64 (one value read back to the host: a synchronisation). For callers that want a
/// host number, as the CPU twin returns one; nothing in a training step calls it (autograd's
/// sum and mean, and the losses, reduce with `sum_axis` / `mean_axis` into device buffers).
fn total(gpu: &Gpu, op: &'static str, x: &GpuBuffer<f32>) -> Result<f64> {
    if x.is_empty() {
        return Err(KernelError::new(op, "empty tensor: x has 0 elements"));
    }
    numel(op, &[("x", x.len())])?;
    let (partial, chunks) = row_partials(gpu, 1, x.len(), x)?;
    let mut s = gpu.alloc::<f64>(1)?;
    finish(gpu, &partial, 1, chunks, 1.0, None, Some(&mut s))?;
    Ok(gpu.download(&s)?[0])
}

/// Σ x, accumulated in f64.
pub fn sum(gpu: &Gpu, x: &GpuBuffer<f32>) -> Result<f32> {
    Ok(total(gpu, "cuda::sum", x)? as f32)
}

/// Mean of x, accumulated in f64.
pub fn mean(gpu: &Gpu, x: &GpuBuffer<f32>) -> Result<f32> {
    Ok((total(gpu, "cuda::mean", x)? / x.len() as f64) as f32)
}

/// Checks x [outer, len, inner] and y [outer, inner] as the CPU does, then y = factor·Σ over
/// the middle axis.
fn reduce_mid(
    gpu: &Gpu,
    op: &'static str,
    (outer, len, inner): (usize, usize, usize),
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
    factor: f64,
) -> Result<()> {
    check_mid(op, numel, (outer, len, inner), x.len(), y.len())?;
    over_mid(gpu, outer, len, inner, x, y, factor)
}

/// y [outer, inner] = Σ over the middle axis of x [outer, len, inner].
pub fn sum_axis(
    gpu: &Gpu,
    outer: usize,
    len: usize,
    inner: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    reduce_mid(gpu, "cuda::sum_axis", (outer, len, inner), x, y, 1.0)
}

/// y [outer, inner] = mean over the middle axis of x [outer, len, inner].
pub fn mean_axis(
    gpu: &Gpu,
    outer: usize,
    len: usize,
    inner: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    // The CPU multiplies by the f64 reciprocal; so does rd_finish (len = 0 is refused first).
    let factor = 1.0 / len as f64;
    reduce_mid(gpu, "cuda::mean_axis", (outer, len, inner), x, y, factor)
}
