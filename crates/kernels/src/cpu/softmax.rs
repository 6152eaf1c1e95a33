//! Softmax along the last axis of [rows, dim], forward and backward.

use super::accumulate as acc;
use super::checks::{Numel, PAR_MIN, numel, shaped};
use super::weighted_loss::exp_f32;
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

/// Max of a row in 8 lanes (a serial fold does not vectorise); NaN propagates.
pub(crate) fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l || v.is_nan() { v } else { *l };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        m = if v > m || v.is_nan() { v } else { m };
    }
    m
}

/// Sum of a row of exponentials (positive) in f64 lanes.
fn row_sum(x: &[f32]) -> f32 {
    acc::sum(x) as f32
}

/// Checks buffers `bufs` (name, length) of shape [rows, dim], counting with `count` (shared
/// with the CUDA twin); returns the element count.
pub(crate) fn check_rows(
    op: &'static str,
    count: Numel,
    rows: usize,
    dim: usize,
    bufs: &[(&str, usize)],
) -> Result<usize> {
    shaped(op, count, &[("rows", rows), ("dim", dim)], bufs)
}

/// y = softmax(x) per row (max-subtracted).
pub fn softmax_forward(rows: usize, dim: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "softmax_forward";
    check_rows(OP, numel, rows, dim, &[("x", x.len()), ("y", y.len())])?;
    per_row(y, dim, |yr, r| {
        let xr = &x[r * dim..(r + 1) * dim];
        let m = row_max(xr);
        for (d, &v) in yr.iter_mut().zip(xr) {
            *d = exp_f32(v - m);
        }
        let inv = 1.0 / row_sum(yr);
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
    check_rows(
        OP,
        numel,
        rows,
        dim,
        &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    per_row(dx, dim, |dr, r| {
        let yr = &y[r * dim..(r + 1) * dim];
        let gr = &dy[r * dim..(r + 1) * dim];
        let dot = acc::dot_dev(yr, gr, 0.0) as f32;
        for ((d, &yv), &g) in dr.iter_mut().zip(yr).zip(gr) {
            *d = yv * (g - dot);
        }
    });
    Ok(())
}
