//! Reductions: whole-buffer sum and mean, and sum / mean over the middle axis of
//! [outer, len, inner]. Accumulation is in f64.

use super::accumulate as acc;
use super::checks::{Numel, buf, numel};
use crate::error::{KernelError, Result};

/// Σ x, accumulated in f64.
pub fn sum(x: &[f32]) -> Result<f32> {
    if x.is_empty() {
        return Err(KernelError::new("sum", "empty tensor: x has 0 elements"));
    }
    Ok(acc::sum(x) as f32)
}

/// Mean of x, accumulated in f64.
pub fn mean(x: &[f32]) -> Result<f32> {
    if x.is_empty() {
        return Err(KernelError::new("mean", "empty tensor: x has 0 elements"));
    }
    Ok((acc::sum(x) / x.len() as f64) as f32)
}

/// Checks x [outer, len, inner] and y [outer, inner], counting with `count` (shared with the
/// CUDA twin).
pub(crate) fn check_mid(
    op: &'static str,
    count: Numel,
    (outer, len, inner): (usize, usize, usize),
    x_len: usize,
    y_len: usize,
) -> Result<()> {
    let total = count(op, &[("outer", outer), ("len", len), ("inner", inner)])?;
    buf(
        op,
        "x",
        x_len,
        total,
        format_args!("[outer={outer}, len={len}, inner={inner}]"),
    )?;
    buf(
        op,
        "y",
        y_len,
        outer * inner,
        format_args!("[outer={outer}, inner={inner}]"),
    )
}

fn reduce_mid(
    op: &'static str,
    outer: usize,
    len: usize,
    inner: usize,
    x: &[f32],
    y: &mut [f32],
    factor: f64,
) -> Result<()> {
    check_mid(op, numel, (outer, len, inner), x.len(), y.len())?;
    let mut acc = vec![0.0f64; inner];
    for (o, yo) in y.chunks_mut(inner).enumerate() {
        acc.fill(0.0);
        for l in 0..len {
            let row = &x[(o * len + l) * inner..][..inner];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as f64;
            }
        }
        for (d, &a) in yo.iter_mut().zip(&acc) {
            *d = (a * factor) as f32;
        }
    }
    Ok(())
}

/// y [outer, inner] = Σ over the middle axis of x [outer, len, inner].
pub fn sum_axis(outer: usize, len: usize, inner: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    reduce_mid("sum_axis", outer, len, inner, x, y, 1.0)
}

/// y [outer, inner] = mean over the middle axis of x [outer, len, inner].
pub fn mean_axis(outer: usize, len: usize, inner: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    reduce_mid(
        "mean_axis",
        outer,
        len,
        inner,
        x,
        y,
        1.0 / len.max(1) as f64,
    )
}
