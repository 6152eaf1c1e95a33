//! 2-D pooling over NCHW images: average (count_include_pad = true), max (with argmax), and
//! global average.

use super::accumulate as acc;
use super::checks::{PAR_MIN, buf, numel};
use crate::error::{KernelError, Result};
use rayon::prelude::*;

/// Shape of a 2-D pooling: input [n, c, h, w], window kh×kw, one stride and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Padding (both axes).
    pub pad: usize,
}

impl Pool2dShape {
    /// Output height, (h + 2·pad − kh) / stride + 1 (meaningful once `validate` passed).
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad).saturating_sub(self.kh) / self.stride.max(1) + 1
    }

    /// Output width, (w + 2·pad − kw) / stride + 1 (meaningful once `validate` passed).
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad).saturating_sub(self.kw) / self.stride.max(1) + 1
    }

    /// Checks non-zero dimensions, a window that fits the padded input, and
    /// pad ≤ half the window (as PyTorch requires).
    pub fn validate(&self) -> Result<()> {
        self.validate_for("pool2d")
    }

    /// `validate` under the name `op` (the entry points' own names, CPU and CUDA).
    pub(crate) fn validate_for(&self, op: &'static str) -> Result<()> {
        numel(
            op,
            &[
                ("n", self.n),
                ("c", self.c),
                ("h", self.h),
                ("w", self.w),
                ("kh", self.kh),
                ("kw", self.kw),
                ("stride", self.stride),
            ],
        )?;
        if 2 * self.pad > self.kh || 2 * self.pad > self.kw {
            return Err(KernelError::new(
                op,
                format!(
                    "pad {} must be at most half the window {}x{} (shape {self:?})",
                    self.pad, self.kh, self.kw
                ),
            ));
        }
        if self.kh > self.h + 2 * self.pad || self.kw > self.w + 2 * self.pad {
            return Err(KernelError::new(
                op,
                format!(
                    "window {}x{} is larger than the padded input {}x{} (shape {self:?})",
                    self.kh,
                    self.kw,
                    self.h + 2 * self.pad,
                    self.w + 2 * self.pad
                ),
            ));
        }
        numel(
            op,
            &[("n", self.n), ("c", self.c), ("h", self.h), ("w", self.w)],
        )?;
        Ok(())
    }

    /// Checks the length of an input-shaped (`input`) or output-shaped buffer.
    pub(crate) fn check(
        &self,
        op: &'static str,
        name: &str,
        len: usize,
        input: bool,
    ) -> Result<()> {
        let s = self;
        if input {
            buf(
                op,
                name,
                len,
                s.n * s.c * s.h * s.w,
                format_args!("[n={}, c={}, h={}, w={}]", s.n, s.c, s.h, s.w),
            )
        } else {
            buf(
                op,
                name,
                len,
                s.n * s.c * s.out_h() * s.out_w(),
                format_args!(
                    "[n={}, c={}, out_h={}, out_w={}]",
                    s.n,
                    s.c,
                    s.out_h(),
                    s.out_w()
                ),
            )
        }
    }

    /// Input rows (or columns) covered by output index `o`: clipped to the image.
    fn span(&self, o: usize, k: usize, size: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.pad as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize).max(0) as usize).min(size);
        (lo, hi.max(lo))
    }
}

/// Runs `f(plane_index, plane)` over the planes of `out`, in parallel when `total` is large.
fn planes(
    out: &mut [f32],
    out_plane: usize,
    total: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if total >= PAR_MIN {
        out.par_chunks_mut(out_plane)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(out_plane)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    }
}

/// Average pooling, dividing by kh·kw everywhere (count_include_pad = true).
pub fn avg_pool2d_forward(s: &Pool2dShape, x: &[f32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "avg_pool2d_forward";
    s.validate_for(OP)?;
    s.check(OP, "x", x.len(), true)?;
    s.check(OP, "y", y.len(), false)?;
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let inv = 1.0 / (s.kh * s.kw) as f32;
    planes(y, oh * ow, x.len(), |i, yp| {
        let xp = &x[i * hw..(i + 1) * hw];
        for oy in 0..oh {
            let (y0, y1) = s.span(oy, s.kh, s.h);
            for ox in 0..ow {
                let (x0, x1) = s.span(ox, s.kw, s.w);
                let mut acc = 0.0f32;
                for iy in y0..y1 {
                    acc += xp[iy * s.w + x0..iy * s.w + x1].iter().sum::<f32>();
                }
                yp[oy * ow + ox] = acc * inv;
            }
        }
    });
    Ok(())
}

/// Backward of `avg_pool2d_forward`: dx (overwritten) from dy.
pub fn avg_pool2d_backward(s: &Pool2dShape, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    const OP: &str = "avg_pool2d_backward";
    s.validate_for(OP)?;
    s.check(OP, "dy", dy.len(), false)?;
    s.check(OP, "dx", dx.len(), true)?;
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let inv = 1.0 / (s.kh * s.kw) as f32;
    let total = dx.len();
    planes(dx, hw, total, |i, dp| {
        dp.fill(0.0);
        let gp = &dy[i * oh * ow..(i + 1) * oh * ow];
        for oy in 0..oh {
            let (y0, y1) = s.span(oy, s.kh, s.h);
            for ox in 0..ow {
                let (x0, x1) = s.span(ox, s.kw, s.w);
                let g = gp[oy * ow + ox] * inv;
                for iy in y0..y1 {
                    dp[iy * s.w + x0..iy * s.w + x1]
                        .iter_mut()
                        .for_each(|v| *v += g);
                }
            }
        }
    });
    Ok(())
}

/// Max pooling (padding counts as −∞, NaN propagates); `argmax` [n, c, out_h, out_w] gets the
/// index iy·w + ix of the chosen input inside its plane.
pub fn max_pool2d_forward(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    const OP: &str = "max_pool2d_forward";
    s.validate_for(OP)?;
    s.check(OP, "x", x.len(), true)?;
    s.check(OP, "y", y.len(), false)?;
    s.check(OP, "argmax", argmax.len(), false)?;
    if s.h * s.w > u32::MAX as usize {
        return Err(KernelError::new(
            OP,
            format!("plane of {}x{} does not fit u32 indices", s.h, s.w),
        ));
    }
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let ohw = oh * ow;
    let body = |(i, (yp, ap)): (usize, (&mut [f32], &mut [u32]))| {
        let xp = &x[i * hw..(i + 1) * hw];
        for oy in 0..oh {
            let (y0, y1) = s.span(oy, s.kh, s.h);
            for ox in 0..ow {
                let (x0, x1) = s.span(ox, s.kw, s.w);
                // pad ≤ k/2 guarantees a non-empty window.
                let mut best = y0 * s.w + x0;
                let mut bv = xp[best];
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let v = xp[iy * s.w + ix];
                        if v > bv || v.is_nan() && !bv.is_nan() {
                            bv = v;
                            best = iy * s.w + ix;
                        }
                    }
                }
                yp[oy * ow + ox] = bv;
                ap[oy * ow + ox] = best as u32;
            }
        }
    };
    if x.len() >= PAR_MIN {
        y.par_chunks_mut(ohw)
            .zip(argmax.par_chunks_mut(ohw))
            .enumerate()
            .for_each(body);
    } else {
        y.chunks_mut(ohw)
            .zip(argmax.chunks_mut(ohw))
            .enumerate()
            .for_each(body);
    }
    Ok(())
}

/// Backward of `max_pool2d_forward`: routes each dy to its argmax; dx is overwritten.
pub fn max_pool2d_backward(
    s: &Pool2dShape,
    argmax: &[u32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    const OP: &str = "max_pool2d_backward";
    s.validate_for(OP)?;
    s.check(OP, "argmax", argmax.len(), false)?;
    s.check(OP, "dy", dy.len(), false)?;
    s.check(OP, "dx", dx.len(), true)?;
    let hw = s.h * s.w;
    let ohw = s.out_h() * s.out_w();
    if let Some(pos) = argmax.iter().position(|&a| a as usize >= hw) {
        return Err(KernelError::new(
            OP,
            format!(
                "argmax[{pos}] = {} is outside the {}x{} plane",
                argmax[pos], s.h, s.w
            ),
        ));
    }
    let total = dx.len();
    planes(dx, hw, total, |i, dp| {
        dp.fill(0.0);
        let (ap, gp) = (&argmax[i * ohw..(i + 1) * ohw], &dy[i * ohw..(i + 1) * ohw]);
        for (&a, &g) in ap.iter().zip(gp) {
            dp[a as usize] += g;
        }
    });
    Ok(())
}

/// The checks of global average pooling (CPU and CUDA): non-zero dimensions without
/// overflow, then the lengths of x and y (`forward`) or dy and dx; `planes_len` is that of the
/// [n, c, hw] buffer, `means_len` that of the [n·c] one. Returns n·c·hw.
pub(crate) fn check_global(
    op: &'static str,
    (n, c, hw): (usize, usize, usize),
    forward: bool,
    planes_len: usize,
    means_len: usize,
) -> Result<usize> {
    let total = numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    let planes = |name| {
        buf(
            op,
            name,
            planes_len,
            total,
            format_args!("[n={n}, c={c}, hw={hw}]"),
        )
    };
    let means = |name| buf(op, name, means_len, n * c, format_args!("[n={n}, c={c}]"));
    if forward {
        planes("x")?;
        means("y")?;
    } else {
        means("dy")?;
        planes("dx")?;
    }
    Ok(total)
}

/// Global average pooling: y [n·c] = mean over hw of x [n, c, hw].
pub fn global_avg_pool_forward(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "global_avg_pool_forward";
    check_global(OP, (n, c, hw), true, x.len(), y.len())?;
    let inv = 1.0 / hw as f64;
    for (d, p) in y.iter_mut().zip(x.chunks(hw)) {
        *d = (acc::sum(p) * inv) as f32;
    }
    Ok(())
}

/// Backward of global average pooling: dx [n, c, hw] = dy [n·c] / hw (overwritten).
pub fn global_avg_pool_backward(
    n: usize,
    c: usize,
    hw: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    const OP: &str = "global_avg_pool_backward";
    check_global(OP, (n, c, hw), false, dx.len(), dy.len())?;
    let inv = 1.0 / hw as f32;
    for (p, &g) in dx.chunks_mut(hw).zip(dy) {
        p.fill(g * inv);
    }
    Ok(())
}
