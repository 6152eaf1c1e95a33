//! CUDA twin of [`crate::cpu::pool`]: average (count_include_pad = true), max (with argmax)
//! and global-average pooling over NCHW images, forward and backward (kernels/pool.cu).
//!
//! One thread per written element; the backward passes are gathers (each input pixel sums
//! its outputs in the CPU's order), so results are reproducible and, apart from the global
//! average's f64 sum order, equal to the CPU's bit for bit.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::{MAX_BLOCKS, THREADS, flat_cfg_max, grid_cfg};
use super::gpu::Gpu;
use super::sources::POOL;
use crate::cpu::Pool2dShape;
use crate::cpu::pool::check_global;
use crate::error::{KernelError, Result};

/// The grid cap: a real GPU's, or 3 blocks on the emulator, so that the tests' small
/// inputs still take several blocks and several trips round the grid-stride loops.
fn max_blocks(gpu: &Gpu) -> usize {
    if gpu.is_emulated() { 3 } else { MAX_BLOCKS }
}

/// A grid-stride launch over `total` elements (also conv's and upsample's).
pub(crate) fn elems(gpu: &Gpu, total: usize) -> LaunchConfig {
    flat_cfg_max(total, max_blocks(gpu))
}

/// Validates `s` as the CPU twin does (its messages, this op's name); the kernels index a
/// plane with `int`, so h·w and out_h·out_w must fit in i32.
fn validate(op: &'static str, s: &Pool2dShape) -> Result<()> {
    s.validate_for(op)?;
    let (hw, ohw) = (s.h * s.w, s.out_h() * s.out_w());
    if hw.max(ohw) > i32::MAX as usize {
        return Err(KernelError::new(
            op,
            format!(
                "a plane of {}x{} does not fit i32 indices (shape {s:?})",
                s.h, s.w
            ),
        ));
    }
    Ok(())
}

/// Checks an input-shaped ([n, c, h, w]) buffer.
fn check_in(op: &'static str, s: &Pool2dShape, name: &str, len: usize) -> Result<()> {
    s.check(op, name, len, true)
}

/// Checks an output-shaped ([n, c, out_h, out_w]) buffer.
fn check_out(op: &'static str, s: &Pool2dShape, name: &str, len: usize) -> Result<()> {
    s.check(op, name, len, false)
}

/// The (planes, h, w, kh, kw, stride, pad, oh, ow) arguments every window kernel takes.
fn geometry(s: &Pool2dShape) -> [Arg<'static>; 9] {
    [
        Arg::i64((s.n * s.c) as i64),
        Arg::i32(s.h as i32),
        Arg::i32(s.w as i32),
        Arg::i32(s.kh as i32),
        Arg::i32(s.kw as i32),
        Arg::i32(s.stride as i32),
        Arg::i32(s.pad as i32),
        Arg::i32(s.out_h() as i32),
        Arg::i32(s.out_w() as i32),
    ]
}

/// 1/(kh·kw) rounded to f32 on the host, as the CPU computes it.
fn inv_window(s: &Pool2dShape) -> f32 {
    1.0 / (s.kh * s.kw) as f32
}

/// Average pooling, dividing by kh·kw everywhere (count_include_pad = true).
pub fn avg_pool2d_forward(
    gpu: &Gpu,
    s: &Pool2dShape,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::avg_pool2d_forward";
    validate(OP, s)?;
    check_in(OP, s, "x", x.len())?;
    check_out(OP, s, "y", y.len())?;
    let cfg = elems(gpu, y.len());
    let mut args = vec![x.arg()];
    args.extend(geometry(s));
    args.push(Arg::f32(inv_window(s)));
    args.push(y.arg_mut());
    gpu.launch(&POOL, "pool_avg_forward", cfg, &args)
}

/// Backward of `avg_pool2d_forward`: dx (overwritten) from dy.
pub fn avg_pool2d_backward(
    gpu: &Gpu,
    s: &Pool2dShape,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::avg_pool2d_backward";
    validate(OP, s)?;
    check_out(OP, s, "dy", dy.len())?;
    check_in(OP, s, "dx", dx.len())?;
    let cfg = elems(gpu, dx.len());
    let mut args = vec![dy.arg()];
    args.extend(geometry(s));
    args.push(Arg::f32(inv_window(s)));
    args.push(dx.arg_mut());
    gpu.launch(&POOL, "pool_avg_backward", cfg, &args)
}

/// Max pooling (padding counts as −∞, NaN propagates); `argmax` [n, c, out_h, out_w] gets the
/// index iy·w + ix of the chosen input inside its plane.
pub fn max_pool2d_forward(
    gpu: &Gpu,
    s: &Pool2dShape,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
    argmax: &mut GpuBuffer<u32>,
) -> Result<()> {
    const OP: &str = "cuda::max_pool2d_forward";
    validate(OP, s)?;
    check_in(OP, s, "x", x.len())?;
    check_out(OP, s, "y", y.len())?;
    check_out(OP, s, "argmax", argmax.len())?;
    let cfg = elems(gpu, argmax.len());
    let mut args = vec![x.arg()];
    args.extend(geometry(s));
    args.push(y.arg_mut());
    args.push(argmax.arg_mut());
    gpu.launch(&POOL, "pool_max_forward", cfg, &args)
}

/// Backward of `max_pool2d_forward`: routes each dy to its argmax; dx is overwritten.
///
/// The routing is a gather over the windows covering each input, so it assumes every argmax
/// lies inside its own output's window, as `max_pool2d_forward` writes them. That is not
/// checked here: the argmax come from our own forward kernel, not from the user, and a check
/// would read a verdict back (a synchronisation in every training step). An argmax outside
/// its window drops that dy (it never reads or writes out of bounds); callers holding argmax
/// of other origin can run [`check_max_pool2d_argmax`] first.
pub fn max_pool2d_backward(
    gpu: &Gpu,
    s: &Pool2dShape,
    argmax: &GpuBuffer<u32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::max_pool2d_backward";
    validate(OP, s)?;
    check_out(OP, s, "argmax", argmax.len())?;
    check_out(OP, s, "dy", dy.len())?;
    check_in(OP, s, "dx", dx.len())?;
    let cfg = elems(gpu, dx.len());
    let mut args = vec![argmax.arg(), dy.arg()];
    args.extend(geometry(s));
    args.push(dx.arg_mut());
    gpu.launch(&POOL, "pool_max_backward", cfg, &args)
}

/// Checks that every argmax lies inside its own output's window (what
/// [`max_pool2d_backward`] assumes), naming the first one that does not; reads the verdict
/// back (one synchronisation), so it is for argmax that did not come from
/// `max_pool2d_forward`, not for a training step.
pub fn check_max_pool2d_argmax(gpu: &Gpu, s: &Pool2dShape, argmax: &GpuBuffer<u32>) -> Result<()> {
    const OP: &str = "cuda::check_max_pool2d_argmax";
    validate(OP, s)?;
    check_out(OP, s, "argmax", argmax.len())?;
    let mut bad = gpu.upload(&[u64::MAX])?;
    let cfg = elems(gpu, argmax.len());
    let mut args = vec![argmax.arg()];
    args.extend(geometry(s));
    args.push(bad.arg_mut());
    gpu.launch(&POOL, "pool_max_check", cfg, &args)?;
    let pos = gpu.download(&bad)?[0];
    if pos == u64::MAX {
        return Ok(());
    }
    let pos = pos as usize;
    let a = gpu.download(argmax)?[pos] as usize;
    let (ohw, hw) = (s.out_h() * s.out_w(), s.h * s.w);
    let msg = if a >= hw {
        format!("argmax[{pos}] = {a} is outside the {}x{} plane", s.h, s.w)
    } else {
        let (oy, ox) = ((pos % ohw) / s.out_w(), pos % s.out_w());
        format!(
            "argmax[{pos}] = {a} (row {}, column {}) is outside the {}x{} window of output \
             ({oy}, {ox})",
            a / s.w,
            a % s.w,
            s.kh,
            s.kw
        )
    };
    Err(KernelError::new(OP, msg))
}

/// Global average pooling: y [n·c] = mean over hw of x [n, c, hw].
pub fn global_avg_pool_forward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::global_avg_pool_forward";
    check_global(OP, (n, c, hw), true, x.len(), y.len())?;
    let planes = n * c;
    let warps = (THREADS / 32) as usize;
    gpu.launch(
        &POOL,
        "gap_forward",
        grid_cfg(planes.div_ceil(warps), max_blocks(gpu), (THREADS, 1, 1)),
        &[
            x.arg(),
            Arg::i64(planes as i64),
            Arg::i64(hw as i64),
            Arg::f64(1.0 / hw as f64),
            y.arg_mut(),
        ],
    )
}

/// Backward of global average pooling: dx [n, c, hw] = dy [n·c] / hw (overwritten).
pub fn global_avg_pool_backward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::global_avg_pool_backward";
    let total = check_global(OP, (n, c, hw), false, dx.len(), dy.len())?;
    gpu.launch(
        &POOL,
        "gap_backward",
        elems(gpu, total),
        &[
            dy.arg(),
            Arg::i64(total as i64),
            Arg::i64(hw as i64),
            Arg::f32(1.0 / hw as f32),
            dx.arg_mut(),
        ],
    )
}
