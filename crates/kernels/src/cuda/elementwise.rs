//! CUDA elementwise arithmetic and bias broadcasts (kernels/elementwise.cu): the twins of
//! [`crate::cpu::elementwise`], same names, argument order and checks, buffers on the device.
//!
//! Also home of the launch shapes shared by the CUDA twins of the simple families
//! (activation, reduce, concat, permute), and the door through which they use the CPU's shape
//! checks, so that both sides fail alike.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::reduce;
use super::sources::ELEMENTWISE;
use crate::cpu::elementwise::{check_bias_channels, check_bias_rows};
use crate::error::Result;

// The CPU's checks (device kernels index with i64, hence `numel_i64`): same messages.
pub(crate) use crate::cpu::checks::{buf, numel_i64 as numel, same_len};

/// Threads per block of the flat and row kernels (a multiple of 32).
pub(crate) const THREADS: u32 = 256;
/// Most blocks of a grid-stride launch: far more than a GPU keeps resident (132 SMs x 8 blocks
/// of 256 on an H100), and the grid-stride loops cover any size past it.
pub(crate) const MAX_BLOCKS: usize = 8192;

/// `blocks` blocks of `block` threads, at least one and at most `max_blocks` (the kernels'
/// grid-stride loops cover the rest); the 1-D grids of the simple families' CUDA twins.
pub(crate) fn grid_cfg(blocks: usize, max_blocks: usize, block: (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.clamp(1, max_blocks) as u32, 1, 1),
        block_dim: block,
        shared_mem_bytes: 0,
    }
}

/// One thread per element in a grid-stride loop over `n` elements, at most `max_blocks`
/// blocks of [`THREADS`].
pub(crate) fn flat_cfg_max(n: usize, max_blocks: usize) -> LaunchConfig {
    grid_cfg(n.div_ceil(THREADS as usize), max_blocks, (THREADS, 1, 1))
}

/// One thread per element in a grid-stride loop over `n` elements.
pub(crate) fn flat_cfg(n: usize) -> LaunchConfig {
    flat_cfg_max(n, MAX_BLOCKS)
}

/// Threads per row of a row kernel: the smallest power of two covering `len`, at most a block.
pub(crate) fn threads_per_row(len: usize) -> u32 {
    len.next_power_of_two().min(THREADS as usize) as u32
}

/// `rows` rows of `len` elements, one group of `threads_per_row(len)` threads per row.
pub(crate) fn rows_cfg(rows: usize, len: usize) -> LaunchConfig {
    let per_block = (THREADS / threads_per_row(len)) as usize;
    grid_cfg(rows.div_ceil(per_block), MAX_BLOCKS, (THREADS, 1, 1))
}

/// A size as a kernel `i64` (sizes were checked to fit by `numel` / `same_len` callers).
pub(crate) fn i64_arg(v: usize) -> Arg<'static> {
    Arg::i64(v as i64)
}

/// y[i] = f(a[i], b[i]) by the binary kernel `kernel`.
fn binary(
    gpu: &Gpu,
    op: &'static str,
    kernel: &str,
    a: &GpuBuffer<f32>,
    b: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let n = same_len(op, &[("a", a.len()), ("b", b.len()), ("y", y.len())])?;
    gpu.launch(
        &ELEMENTWISE,
        kernel,
        flat_cfg(n),
        &[a.arg(), b.arg(), y.arg_mut(), i64_arg(n)],
    )
}

/// y = a + b.
pub fn add(
    gpu: &Gpu,
    a: &GpuBuffer<f32>,
    b: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    binary(gpu, "cuda::add", "ew_add", a, b, y)
}

/// y = a − b.
pub fn sub(
    gpu: &Gpu,
    a: &GpuBuffer<f32>,
    b: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    binary(gpu, "cuda::sub", "ew_sub", a, b, y)
}

/// y = a ⊙ b.
pub fn mul(
    gpu: &Gpu,
    a: &GpuBuffer<f32>,
    b: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    binary(gpu, "cuda::mul", "ew_mul", a, b, y)
}

/// y = s·x.
pub fn scale(gpu: &Gpu, x: &GpuBuffer<f32>, s: f32, y: &mut GpuBuffer<f32>) -> Result<()> {
    let n = same_len("cuda::scale", &[("x", x.len()), ("y", y.len())])?;
    gpu.launch(
        &ELEMENTWISE,
        "ew_scale",
        flat_cfg(n),
        &[x.arg(), Arg::f32(s), y.arg_mut(), i64_arg(n)],
    )
}

/// y += alpha·x (accumulates into y; rounded like the CPU, without FMA contraction).
pub fn axpy_acc(gpu: &Gpu, alpha: f32, x: &GpuBuffer<f32>, y: &mut GpuBuffer<f32>) -> Result<()> {
    let n = same_len("cuda::axpy_acc", &[("x", x.len()), ("y", y.len())])?;
    gpu.launch(
        &ELEMENTWISE,
        "ew_axpy_acc",
        flat_cfg(n),
        &[Arg::f32(alpha), x.arg(), y.arg_mut(), i64_arg(n)],
    )
}

/// y [n, c, hw] = x + bias[c] (per channel).
pub fn add_bias_channels(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    bias: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::add_bias_channels";
    check_bias_channels(
        OP,
        numel,
        (n, c, hw),
        &[("x", x.len()), ("y", y.len())],
        ("bias", bias.len()),
    )?;
    // Rows are the n·c planes; the plane's channel picks the bias.
    gpu.launch(
        &ELEMENTWISE,
        "ew_add_bias_rows",
        rows_cfg(n * c, hw),
        &[
            x.arg(),
            bias.arg(),
            y.arg_mut(),
            i64_arg(n * c),
            i64_arg(hw),
            i64_arg(c),
            Arg::i32(threads_per_row(hw) as i32),
        ],
    )
}

/// dbias [c] = Σ over n and hw of dy [n, c, hw] (overwritten; fixed-order f64 sums).
pub fn bias_grad_channels(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    dy: &GpuBuffer<f32>,
    dbias: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::bias_grad_channels";
    check_bias_channels(
        OP,
        numel,
        (n, c, hw),
        &[("dy", dy.len())],
        ("dbias", dbias.len()),
    )?;
    reduce::keep_mid(gpu, n, c, hw, dy, dbias)
}

/// y [rows, dim] = x + bias[dim] (per column; also a position embedding with dim =
/// tokens·width).
pub fn add_bias_rows(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    x: &GpuBuffer<f32>,
    bias: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::add_bias_rows";
    check_bias_rows(
        OP,
        numel,
        (rows, dim),
        &[("x", x.len()), ("y", y.len())],
        ("bias", bias.len()),
    )?;
    gpu.launch(
        &ELEMENTWISE,
        "ew_add_bias_rows",
        rows_cfg(rows, dim),
        &[
            x.arg(),
            bias.arg(),
            y.arg_mut(),
            i64_arg(rows),
            i64_arg(dim),
            i64_arg(0),
            Arg::i32(threads_per_row(dim) as i32),
        ],
    )
}

/// dbias [dim] = Σ over rows of dy [rows, dim] (overwritten; fixed-order f64 sums).
pub fn bias_grad_rows(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    dy: &GpuBuffer<f32>,
    dbias: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::bias_grad_rows";
    check_bias_rows(
        OP,
        numel,
        (rows, dim),
        &[("dy", dy.len())],
        ("dbias", dbias.len()),
    )?;
    reduce::over_mid(gpu, 1, rows, dim, dy, dbias, 1.0)
}
