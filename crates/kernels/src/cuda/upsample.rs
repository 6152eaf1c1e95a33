//! CUDA twin of [`crate::cpu::upsample`]: bilinear (align_corners = false) and nearest 2-D
//! upsampling of NCHW images, forward and backward (kernels/upsample.cu).
//!
//! The taps come from the host with the CPU's own f32 index arithmetic and are uploaded once
//! per handle and shape ([`Gpu::constant`]: a training step uploads none); the backward passes gather over the output ranges that
//! touch each input, so there are no atomics and the results equal the CPU's bit for bit.

use std::sync::Arc;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::pool::elems;
use super::sources::UPSAMPLE;
use crate::cpu::upsample::{self as cpu, bilinear_taps, nearest_taps};
use crate::error::{KernelError, Result};

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

/// A shared device table.
type Table<T> = Arc<GpuBuffer<T>>;

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
        cpu::check(op, n, c, h, w, oh, ow, small, big)?;
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

    /// The sizes the tables depend on (the cache key).
    fn table_key(&self) -> [usize; 4] {
        [self.h, self.w, self.oh, self.ow]
    }

    /// The bilinear tables (see kernels/upsample.cu): index pairs and input ranges, weights;
    /// built and uploaded on the first call for these sizes.
    fn bilinear_tables(&self, gpu: &Gpu) -> Result<(Table<i32>, Table<f32>)> {
        let key = self.table_key();
        let idx = gpu.constant("upsample bilinear taps", &key, || self.bilinear_host().0)?;
        let wts = gpu.constant("upsample bilinear weights", &key, || self.bilinear_host().1)?;
        Ok((idx, wts))
    }

    /// The host side of [`Dims::bilinear_tables`].
    fn bilinear_host(&self) -> (Vec<i32>, Vec<f32>) {
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
        (idx, wts)
    }

    /// The nearest table (see kernels/upsample.cu): taps, then input ranges; built and uploaded
    /// on the first call for these sizes.
    fn nearest_table(&self, gpu: &Gpu) -> Result<Table<i32>> {
        gpu.constant("upsample nearest taps", &self.table_key(), || {
            self.nearest_host()
        })
    }

    /// The host side of [`Dims::nearest_table`].
    fn nearest_host(&self) -> Vec<i32> {
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
        idx
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
    let op = "cuda::upsample_bilinear2d_forward";
    run(
        gpu,
        op,
        (n, c, h, w, oh, ow),
        Mode::Bilinear,
        Pass::Forward,
        x,
        y,
    )
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
    let op = "cuda::upsample_bilinear2d_backward";
    run(
        gpu,
        op,
        (n, c, h, w, oh, ow),
        Mode::Bilinear,
        Pass::Backward,
        dy,
        dx,
    )
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
    let op = "cuda::upsample_nearest2d_forward";
    run(
        gpu,
        op,
        (n, c, h, w, oh, ow),
        Mode::Nearest,
        Pass::Forward,
        x,
        y,
    )
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
    let op = "cuda::upsample_nearest2d_backward";
    run(
        gpu,
        op,
        (n, c, h, w, oh, ow),
        Mode::Nearest,
        Pass::Backward,
        dy,
        dx,
    )
}

/// The interpolation of a call.
#[derive(Clone, Copy)]
enum Mode {
    Bilinear,
    Nearest,
}

/// Which way a call goes: x → y, or dy → dx.
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    Backward,
}

/// The body of all four entry points: the checks (the smaller buffer first, as on the CPU),
/// the tables, then one grid-stride launch over `dst` reading `src`.
fn run(
    gpu: &Gpu,
    op: &'static str,
    dims: (usize, usize, usize, usize, usize, usize),
    mode: Mode,
    pass: Pass,
    src: &GpuBuffer<f32>,
    dst: &mut GpuBuffer<f32>,
) -> Result<()> {
    let (small, big) = match pass {
        Pass::Forward => (("x", src.len()), ("y", dst.len())),
        Pass::Backward => (("dx", dst.len()), ("dy", src.len())),
    };
    let d = Dims::check(op, dims, small, big)?;
    let (idx, wts) = match mode {
        Mode::Bilinear => {
            let (idx, wts) = d.bilinear_tables(gpu)?;
            (idx, Some(wts))
        }
        Mode::Nearest => (d.nearest_table(gpu)?, None),
    };
    let kernel = match (mode, pass) {
        (Mode::Bilinear, Pass::Forward) => "ups_bilinear_forward",
        (Mode::Bilinear, Pass::Backward) => "ups_bilinear_backward",
        (Mode::Nearest, Pass::Forward) => "ups_nearest_forward",
        (Mode::Nearest, Pass::Backward) => "ups_nearest_backward",
    };
    let cfg = elems(gpu, dst.len());
    let mut args = vec![src.arg()];
    args.extend(d.args());
    args.push(idx.arg());
    args.extend(wts.as_ref().map(|w| w.arg()));
    args.push(dst.arg_mut());
    gpu.launch(&UPSAMPLE, kernel, cfg, &args)
}
