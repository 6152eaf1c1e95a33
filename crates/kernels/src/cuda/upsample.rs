//! CUDA twin of [`crate::cpu::upsample`]: bilinear (align_corners = false) and nearest 2-D
//! upsampling of NCHW images, forward and backward (kernels/upsample.cu).
//!
//! The taps come from the host with the CPU's own f32 index arithmetic and are uploaded with
//! each call (a few hundred bytes); the backward passes gather over the output ranges that
//! touch each input, so there are no atomics and the results equal the CPU's bit for bit.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::UPSAMPLE;
use crate::error::{KernelError, Result};

/// Threads per block.
const THREADS: u32 = 256;
/// Grid cap of the grid-stride kernels (enough to fill any current GPU).
const MAX_BLOCKS: usize = 8192;

/// The grid cap: a real GPU's, or 3 blocks on the emulator, so that the tests' small
/// inputs still take several blocks and several trips round the grid-stride loops.
fn max_blocks(gpu: &Gpu) -> usize {
    if gpu.is_emulated() { 3 } else { MAX_BLOCKS }
}

/// A grid-stride launch over `total` elements.
fn elems(gpu: &Gpu, total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            total.div_ceil(THREADS as usize).clamp(1, max_blocks(gpu)) as u32,
            1,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// For each output index: (i0, i1, lambda0, lambda1) of the two input taps (the CPU's code).
fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = if input == output {
                o as f32
            } else {
                (scale * (o as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// For each output index: the nearest input index (the CPU's code, PyTorch's legacy rule).
fn nearest_taps(input: usize, output: usize) -> Vec<usize> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            if input == output {
                o
            } else if output == 2 * input {
                o >> 1
            } else {
                ((o as f32 * scale).floor() as usize).min(input - 1)
            }
        })
        .collect()
}

/// For each input index, [first, end) of the outputs whose taps include it (empty: 0, 0).
fn ranges<'a>(input: usize, taps: impl Iterator<Item = (usize, &'a [usize])>) -> Vec<i32> {
    let mut r = vec![(usize::MAX, 0usize); input];
    for (o, ts) in taps {
        for &t in ts {
            r[t] = (r[t].0.min(o), r[t].1.max(o + 1));
        }
    }
    r.iter()
        .flat_map(|&(lo, hi)| {
            if lo < hi {
                [lo as i32, hi as i32]
            } else {
                [0, 0]
            }
        })
        .collect()
}

/// The validated sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Dims {
    /// The CPU twin's checks (non-zero dimensions, no overflow, buffer lengths, the smaller
    /// buffer first), plus int-sized planes for the kernels' indices.
    fn check(
        op: &'static str,
        (n, c, h, w, oh, ow): (usize, usize, usize, usize, usize, usize),
        small: (&str, usize),
        big: (&str, usize),
    ) -> Result<Self> {
        let show = |dims: &[(&str, usize)]| {
            let inner: Vec<String> = dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("[{}]", inner.join(", "))
        };
        for dims in [
            [("n", n), ("c", c), ("h", h), ("w", w)],
            [("n", n), ("c", c), ("oh", oh), ("ow", ow)],
        ] {
            let mut total = 1usize;
            for (name, d) in dims {
                if d == 0 {
                    return Err(KernelError::new(
                        op,
                        format!(
                            "empty tensor: dimension `{name}` is 0 (shape {})",
                            show(&dims)
                        ),
                    ));
                }
                total = total.checked_mul(d).ok_or_else(|| {
                    KernelError::new(op, format!("shape {} has too many elements", show(&dims)))
                })?;
            }
        }
        for (name, got, want, shape) in [
            (
                small.0,
                small.1,
                n * c * h * w,
                format!("[n={n}, c={c}, h={h}, w={w}]"),
            ),
            (
                big.0,
                big.1,
                n * c * oh * ow,
                format!("[n={n}, c={c}, oh={oh}, ow={ow}]"),
            ),
        ] {
            if got != want {
                return Err(KernelError::new(
                    op,
                    format!("buffer `{name}` has {got} elements, expected {want} (shape {shape})"),
                ));
            }
        }
        if (h * w).max(oh * ow) > i32::MAX as usize {
            return Err(KernelError::new(
                op,
                format!("a plane of {h}x{w} or {oh}x{ow} does not fit i32 indices"),
            ));
        }
        Ok(Self { n, c, h, w, oh, ow })
    }

    /// The (planes, h, w, oh, ow) kernel arguments.
    fn args(&self) -> [Arg<'static>; 5] {
        [
            Arg::i64((self.n * self.c) as i64),
            Arg::i32(self.h as i32),
            Arg::i32(self.w as i32),
            Arg::i32(self.oh as i32),
            Arg::i32(self.ow as i32),
        ]
    }

    /// The bilinear tables (see kernels/upsample.cu): index pairs and input ranges, weights.
    fn bilinear_tables(&self, gpu: &Gpu) -> Result<(GpuBuffer<i32>, GpuBuffer<f32>)> {
        let (ty, tx) = (
            bilinear_taps(self.h, self.oh),
            bilinear_taps(self.w, self.ow),
        );
        let pairs = |t: &[(usize, usize, f32, f32)]| -> Vec<[usize; 2]> {
            t.iter().map(|&(a, b, _, _)| [a, b]).collect()
        };
        let (py, px) = (pairs(&ty), pairs(&tx));
        let mut idx: Vec<i32> = py.iter().chain(&px).flatten().map(|&i| i as i32).collect();
        idx.extend(ranges(self.h, py.iter().map(|p| &p[..]).enumerate()));
        idx.extend(ranges(self.w, px.iter().map(|p| &p[..]).enumerate()));
        let wts: Vec<f32> = ty
            .iter()
            .chain(&tx)
            .flat_map(|&(_, _, l0, l1)| [l0, l1])
            .collect();
        Ok((gpu.upload(&idx)?, gpu.upload(&wts)?))
    }

    /// The nearest table (see kernels/upsample.cu): taps, then input ranges.
    fn nearest_table(&self, gpu: &Gpu) -> Result<GpuBuffer<i32>> {
        let (ty, tx) = (nearest_taps(self.h, self.oh), nearest_taps(self.w, self.ow));
        let mut idx: Vec<i32> = ty.iter().chain(&tx).map(|&i| i as i32).collect();
        idx.extend(ranges(
            self.h,
            ty.iter().map(std::slice::from_ref).enumerate(),
        ));
        idx.extend(ranges(
            self.w,
            tx.iter().map(std::slice::from_ref).enumerate(),
        ));
        gpu.upload(&idx)
    }
}

/// Bilinear upsampling (align_corners = false) of x [n, c, h, w] to y [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_bilinear2d_forward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let d = Dims::check(
        "cuda::upsample_bilinear2d_forward",
        (n, c, h, w, oh, ow),
        ("x", x.len()),
        ("y", y.len()),
    )?;
    let (idx, wts) = d.bilinear_tables(gpu)?;
    let cfg = elems(gpu, y.len());
    let mut args = vec![x.arg()];
    args.extend(d.args());
    args.extend([idx.arg(), wts.arg(), y.arg_mut()]);
    gpu.launch(&UPSAMPLE, "ups_bilinear_forward", cfg, &args)
}

/// Backward of bilinear upsampling: dx [n, c, h, w] (overwritten) from dy [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_bilinear2d_backward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    let d = Dims::check(
        "cuda::upsample_bilinear2d_backward",
        (n, c, h, w, oh, ow),
        ("dx", dx.len()),
        ("dy", dy.len()),
    )?;
    let (idx, wts) = d.bilinear_tables(gpu)?;
    let cfg = elems(gpu, dx.len());
    let mut args = vec![dy.arg()];
    args.extend(d.args());
    args.extend([idx.arg(), wts.arg(), dx.arg_mut()]);
    gpu.launch(&UPSAMPLE, "ups_bilinear_backward", cfg, &args)
}

/// Nearest-neighbour upsampling of x [n, c, h, w] to y [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2d_forward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let d = Dims::check(
        "cuda::upsample_nearest2d_forward",
        (n, c, h, w, oh, ow),
        ("x", x.len()),
        ("y", y.len()),
    )?;
    let idx = d.nearest_table(gpu)?;
    let cfg = elems(gpu, y.len());
    let mut args = vec![x.arg()];
    args.extend(d.args());
    args.extend([idx.arg(), y.arg_mut()]);
    gpu.launch(&UPSAMPLE, "ups_nearest_forward", cfg, &args)
}

/// Backward of nearest upsampling: dx [n, c, h, w] (overwritten) from dy [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2d_backward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    let d = Dims::check(
        "cuda::upsample_nearest2d_backward",
        (n, c, h, w, oh, ow),
        ("dx", dx.len()),
        ("dy", dy.len()),
    )?;
    let idx = d.nearest_table(gpu)?;
    let cfg = elems(gpu, dx.len());
    let mut args = vec![dy.arg()];
    args.extend(d.args());
    args.extend([idx.arg(), dx.arg_mut()]);
    gpu.launch(&UPSAMPLE, "ups_nearest_backward", cfg, &args)
}
