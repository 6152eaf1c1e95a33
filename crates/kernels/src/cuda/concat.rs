//! CUDA concatenation along one axis and its inverse, split (kernels/concat.cu): the twins of
//! [`crate::cpu::concat`]. Part i is viewed as [outer, inner_i]; the result is
//! [outer, Σ inner_i]. One strided copy per part (a plain device copy when the part's rows are
//! contiguous in the result).

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::{buf, i64_arg, numel, rows_cfg, threads_per_row};
use super::gpu::Gpu;
use super::sources::CONCAT;
use crate::cpu;
use crate::error::{KernelError, Result};

/// Checks the parts as the CPU does; returns the total width Σ inner_i.
fn check_parts(op: &'static str, outer: usize, lens: &[usize], inners: &[usize]) -> Result<usize> {
    let width = cpu::concat::check_parts(op, numel, outer, lens, inners)?;
    // The whole result must be addressable with i64 indices too.
    numel(op, &[("outer", outer), ("width", width)])?;
    Ok(width)
}

/// dst[r·dst_ld + dst_at + j] = src[r·src_ld + src_at + j] for r < rows, j < cols.
fn copy2d(
    gpu: &Gpu,
    src: &GpuBuffer<f32>,
    (src_at, src_ld): (usize, usize),
    dst: &mut GpuBuffer<f32>,
    (dst_at, dst_ld): (usize, usize),
    rows: usize,
    cols: usize,
) -> Result<()> {
    if rows == 1 || (src_ld == cols && dst_ld == cols) {
        // The block is one contiguous run on both sides.
        return gpu.copy(src, src_at, dst, dst_at, rows * cols);
    }
    gpu.launch(
        &CONCAT,
        "cc_copy2d",
        rows_cfg(rows, cols),
        &[
            src.arg_at(src_at),
            i64_arg(src_ld),
            dst.arg_mut_at(dst_at),
            i64_arg(dst_ld),
            i64_arg(rows),
            i64_arg(cols),
            Arg::i32(threads_per_row(cols) as i32),
        ],
    )
}

/// y [outer, Σ inner_i] = the parts [outer, inner_i] side by side.
pub fn concat(
    gpu: &Gpu,
    outer: usize,
    parts: &[&GpuBuffer<f32>],
    inners: &[usize],
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::concat";
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let width = check_parts(OP, outer, &lens, inners)?;
    buf(
        OP,
        "y",
        y.len(),
        outer * width,
        format_args!("[outer={outer}, {width}]"),
    )?;
    let mut at = 0;
    for (p, &inner) in parts.iter().zip(inners) {
        copy2d(gpu, p, (0, inner), y, (at, width), outer, inner)?;
        at += inner;
    }
    Ok(())
}

/// The inverse of `concat` (and its backward): cuts x [outer, Σ inner_i] into the parts.
pub fn split(
    gpu: &Gpu,
    outer: usize,
    x: &GpuBuffer<f32>,
    inners: &[usize],
    parts: &mut [&mut GpuBuffer<f32>],
) -> Result<()> {
    const OP: &str = "cuda::split";
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let width = check_parts(OP, outer, &lens, inners)?;
    buf(
        OP,
        "x",
        x.len(),
        outer * width,
        format_args!("[outer={outer}, {width}]"),
    )?;
    let mut at = 0;
    for (p, &inner) in parts.iter_mut().zip(inners) {
        copy2d(gpu, x, (at, width), p, (0, inner), outer, inner)?;
        at += inner;
    }
    Ok(())
}

/// Checks x [outer, width] and the column block `start..start + len` of it as `narrow` and
/// `narrow_backward` use them; returns the block's element count outer·len.
fn check_block(
    op: &'static str,
    outer: usize,
    width: usize,
    start: usize,
    len: usize,
    wide: (&str, usize),
    narrow: (&str, usize),
) -> Result<usize> {
    let total = numel(op, &[("outer", outer), ("width", width)])?;
    let block = numel(op, &[("outer", outer), ("len", len)])?;
    if start.checked_add(len).is_none_or(|end| end > width) {
        return Err(KernelError::new(
            op,
            format!(
                "columns {start}..{} are not within 0..{width}",
                start.saturating_add(len)
            ),
        ));
    }
    buf(
        op,
        wide.0,
        wide.1,
        total,
        format_args!("[outer={outer}, width={width}]"),
    )?;
    buf(
        op,
        narrow.0,
        narrow.1,
        block,
        format_args!("[outer={outer}, len={len}]"),
    )?;
    Ok(block)
}

/// y [outer, len] = the columns `start..start + len` of x [outer, width]: a slice along one
/// axis (one part of a split, without writing the others).
pub fn narrow(
    gpu: &Gpu,
    outer: usize,
    width: usize,
    start: usize,
    len: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::narrow";
    check_block(OP, outer, width, start, len, ("x", x.len()), ("y", y.len()))?;
    copy2d(gpu, x, (start, width), y, (0, len), outer, len)
}

/// Writes dy [outer, len] into the columns `start..start + len` of dx [outer, width], leaving
/// the other columns as they are: the backward of `narrow` into a zeroed dx.
pub fn narrow_backward(
    gpu: &Gpu,
    outer: usize,
    width: usize,
    start: usize,
    len: usize,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::narrow_backward";
    check_block(
        OP,
        outer,
        width,
        start,
        len,
        ("dx", dx.len()),
        ("dy", dy.len()),
    )?;
    copy2d(gpu, dy, (0, len), dx, (start, width), outer, len)
}
