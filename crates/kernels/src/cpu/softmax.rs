//! Softmax along the last axis of [rows, dim], forward and backward.

use super::checks::{PAR_MIN, buf, numel};
use crate::error::Result;
use rayon::prelude::*;

/// Applies `f(out_row, row_index)` to each row of `out`, in parallel when large.
pub(crate) fn per_row(out: &mut [f32], dim: usize, f: impl Fn(&mut [f32], usize) + Sync + Send) {
    if out.len() >= PAR_MIN && out.len() > dim {
        let rpt = (PAR_MIN / 4 / dim).max(1);
        out.par_chunks_mut(rpt * dim)
            .enumerate()
            .for_each(|(t, c)| {
                for (r, row) in c.chunks_mut(dim).enumerate() {
                    f(row, t * rpt + r);
                }
            });
    } else {
        for (r, row) in out.chunks_mut(dim).enumerate() {
            f(row, r);
        }
    }
}

/// y = softmax(x) per row (max-subtracted).
pub fn softmax_forward(rows: usize, dim: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "softmax_forward";
    let total = numel(OP, &[("rows", rows), ("dim", dim)])?;
    buf(
        OP,
        "x",
        x.len(),
        total,
        format_args!("[rows={rows}, dim={dim}]"),
    )?;
    buf(
        OP,
        "y",
        y.len(),
        total,
        format_args!("[rows={rows}, dim={dim}]"),
    )?;
    per_row(y, dim, |yr, r| {
        let xr = &x[r * dim..(r + 1) * dim];
        let m = xr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0f32;
        for (d, &v) in yr.iter_mut().zip(xr) {
            *d = (v - m).exp();
            s += *d;
        }
        let inv = 1.0 / s;
        yr.iter_mut().for_each(|v| *v *= inv);
    });
    Ok(())
}

/// dx = y ⊙ (dy − Σ dy⊙y) per row, from the forward output y.
pub fn softmax_backward(
    rows: usize,
    dim: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    const OP: &str = "softmax_backward";
    let total = numel(OP, &[("rows", rows), ("dim", dim)])?;
    buf(
        OP,
        "y",
        y.len(),
        total,
        format_args!("[rows={rows}, dim={dim}]"),
    )?;
    buf(
        OP,
        "dy",
        dy.len(),
        total,
        format_args!("[rows={rows}, dim={dim}]"),
    )?;
    buf(
        OP,
        "dx",
        dx.len(),
        total,
        format_args!("[rows={rows}, dim={dim}]"),
    )?;
    per_row(dx, dim, |dr, r| {
        let yr = &y[r * dim..(r + 1) * dim];
        let gr = &dy[r * dim..(r + 1) * dim];
        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
        for ((d, &yv), &g) in dr.iter_mut().zip(yr).zip(gr) {
            *d = yv * (g - dot);
        }
    });
    Ok(())
}
