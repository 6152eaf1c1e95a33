//! 2-D upsampling of NCHW images (bilinear with align_corners = false, and nearest), with
//! PyTorch's index arithmetic (f32 scale = in/out).

use super::checks::{PAR_MIN, buf, numel};
use crate::error::Result;
use rayon::prelude::*;

/// For each output index: (i0, i1, lambda0, lambda1) of the two input taps (also the CUDA
/// twin's host-side tables).
pub(crate) fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
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

/// For each output index: the nearest input index (PyTorch's legacy "nearest").
pub(crate) fn nearest_taps(input: usize, output: usize) -> Vec<usize> {
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

/// Non-zero dimensions without overflow, then the lengths of the smaller ([n, c, h, w]) and
/// the bigger ([n, c, oh, ow]) buffer; the CUDA twin calls it with its own op names.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    op: &'static str,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    small: (&str, usize),
    big: (&str, usize),
) -> Result<()> {
    numel(op, &[("n", n), ("c", c), ("h", h), ("w", w)])?;
    numel(op, &[("n", n), ("c", c), ("oh", oh), ("ow", ow)])?;
    buf(
        op,
        small.0,
        small.1,
        n * c * h * w,
        format_args!("[n={n}, c={c}, h={h}, w={w}]"),
    )?;
    buf(
        op,
        big.0,
        big.1,
        n * c * oh * ow,
        format_args!("[n={n}, c={c}, oh={oh}, ow={ow}]"),
    )
}

/// Runs `f(plane_index, plane)` over the planes of `out`, in parallel when large.
fn planes(out: &mut [f32], plane: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(plane).enumerate().for_each(|(i, p)| f(i, p));
    }
}

/// Bilinear upsampling (align_corners = false) of x [n, c, h, w] to y [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_bilinear2d_forward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check(
        "upsample_bilinear2d_forward",
        n,
        c,
        h,
        w,
        oh,
        ow,
        ("x", x.len()),
        ("y", y.len()),
    )?;
    let (ty, tx) = (bilinear_taps(h, oh), bilinear_taps(w, ow));
    planes(y, oh * ow, |i, yp| {
        let xp = &x[i * h * w..(i + 1) * h * w];
        for (oy, &(y0, y1, a0, a1)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, b0, b1)) in tx.iter().enumerate() {
                yp[oy * ow + ox] = a0 * (b0 * xp[y0 * w + x0] + b1 * xp[y0 * w + x1])
                    + a1 * (b0 * xp[y1 * w + x0] + b1 * xp[y1 * w + x1]);
            }
        }
    });
    Ok(())
}

/// Backward of bilinear upsampling: dx [n, c, h, w] (overwritten) from dy [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_bilinear2d_backward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    check(
        "upsample_bilinear2d_backward",
        n,
        c,
        h,
        w,
        oh,
        ow,
        ("dx", dx.len()),
        ("dy", dy.len()),
    )?;
    let (ty, tx) = (bilinear_taps(h, oh), bilinear_taps(w, ow));
    planes(dx, h * w, |i, dp| {
        dp.fill(0.0);
        let gp = &dy[i * oh * ow..(i + 1) * oh * ow];
        for (oy, &(y0, y1, a0, a1)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, b0, b1)) in tx.iter().enumerate() {
                let g = gp[oy * ow + ox];
                dp[y0 * w + x0] += a0 * b0 * g;
                dp[y0 * w + x1] += a0 * b1 * g;
                dp[y1 * w + x0] += a1 * b0 * g;
                dp[y1 * w + x1] += a1 * b1 * g;
            }
        }
    });
    Ok(())
}

/// Nearest-neighbour upsampling of x [n, c, h, w] to y [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2d_forward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check(
        "upsample_nearest2d_forward",
        n,
        c,
        h,
        w,
        oh,
        ow,
        ("x", x.len()),
        ("y", y.len()),
    )?;
    let (ty, tx) = (nearest_taps(h, oh), nearest_taps(w, ow));
    planes(y, oh * ow, |i, yp| {
        let xp = &x[i * h * w..(i + 1) * h * w];
        for (oy, &iy) in ty.iter().enumerate() {
            for (ox, &ix) in tx.iter().enumerate() {
                yp[oy * ow + ox] = xp[iy * w + ix];
            }
        }
    });
    Ok(())
}

/// Backward of nearest upsampling: dx [n, c, h, w] (overwritten) from dy [n, c, oh, ow].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2d_backward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    check(
        "upsample_nearest2d_backward",
        n,
        c,
        h,
        w,
        oh,
        ow,
        ("dx", dx.len()),
        ("dy", dy.len()),
    )?;
    let (ty, tx) = (nearest_taps(h, oh), nearest_taps(w, ow));
    planes(dx, h * w, |i, dp| {
        dp.fill(0.0);
        let gp = &dy[i * oh * ow..(i + 1) * oh * ow];
        for (oy, &iy) in ty.iter().enumerate() {
            for (ox, &ix) in tx.iter().enumerate() {
                dp[iy * w + ix] += gp[oy * ow + ox];
            }
        }
    });
    Ok(())
}
