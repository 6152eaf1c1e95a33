//! Elementwise arithmetic and broadcast biases (per channel of NCHW, per column of rows).

use super::accumulate;
use super::checks::{Numel, PAR_MIN, buf, numel, same_len, shaped};
use crate::error::Result;
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// y[i] = f(a[i], b[i]), in parallel chunks when large.
fn zip2(a: &[f32], b: &[f32], y: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) {
    let body = |(i, yc): (usize, &mut [f32])| {
        let o = i * CHUNK;
        for ((d, &u), &v) in yc.iter_mut().zip(&a[o..]).zip(&b[o..]) {
            *d = f(u, v);
        }
    };
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(CHUNK).enumerate().for_each(body);
    } else {
        y.chunks_mut(CHUNK).enumerate().for_each(body);
    }
}

/// y = a + b.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("add", &[("a", a.len()), ("b", b.len()), ("y", y.len())])?;
    zip2(a, b, y, |u, v| u + v);
    Ok(())
}

/// y = a − b.
pub fn sub(a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("sub", &[("a", a.len()), ("b", b.len()), ("y", y.len())])?;
    zip2(a, b, y, |u, v| u - v);
    Ok(())
}

/// y = a ⊙ b.
pub fn mul(a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("mul", &[("a", a.len()), ("b", b.len()), ("y", y.len())])?;
    zip2(a, b, y, |u, v| u * v);
    Ok(())
}

/// y = s·x.
pub fn scale(x: &[f32], s: f32, y: &mut [f32]) -> Result<()> {
    same_len("scale", &[("x", x.len()), ("y", y.len())])?;
    zip2(x, x, y, |u, _| s * u);
    Ok(())
}

/// y += alpha·x (accumulates into y).
pub fn axpy_acc(alpha: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("axpy_acc", &[("x", x.len()), ("y", y.len())])?;
    let body = |(i, yc): (usize, &mut [f32])| {
        for (d, &v) in yc.iter_mut().zip(&x[i * CHUNK..]) {
            *d += alpha * v;
        }
    };
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(CHUNK).enumerate().for_each(body);
    } else {
        y.chunks_mut(CHUNK).enumerate().for_each(body);
    }
    Ok(())
}

/// Checks the `full` buffers (name, length) of shape [n, c, hw] and the per-channel `bias`
/// [c] (x, y, bias forward; dy, dbias backward), counting with `count` (shared with the CUDA
/// twin); returns the element count.
pub(crate) fn check_bias_channels(
    op: &'static str,
    count: Numel,
    (n, c, hw): (usize, usize, usize),
    full: &[(&str, usize)],
    (bias, bias_len): (&str, usize),
) -> Result<usize> {
    let total = shaped(op, count, &[("n", n), ("c", c), ("hw", hw)], full)?;
    buf(op, bias, bias_len, c, format_args!("[c={c}]"))?;
    Ok(total)
}

/// Checks the `full` buffers (name, length) of shape [rows, dim] and the per-column `bias`
/// [dim] (x, y, bias forward; dy, dbias backward), counting with `count` (shared with the CUDA
/// twin); returns the element count.
pub(crate) fn check_bias_rows(
    op: &'static str,
    count: Numel,
    (rows, dim): (usize, usize),
    full: &[(&str, usize)],
    (bias, bias_len): (&str, usize),
) -> Result<usize> {
    let total = shaped(op, count, &[("rows", rows), ("dim", dim)], full)?;
    buf(op, bias, bias_len, dim, format_args!("[dim={dim}]"))?;
    Ok(total)
}

/// y [n, c, hw] = x + bias[c] (per channel).
pub fn add_bias_channels(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "add_bias_channels";
    let total = check_bias_channels(
        OP,
        numel,
        (n, c, hw),
        &[("x", x.len()), ("y", y.len())],
        ("bias", bias.len()),
    )?;
    let body = |(i, yp): (usize, &mut [f32])| {
        let b = bias[i % c];
        for (d, &v) in yp.iter_mut().zip(&x[i * hw..(i + 1) * hw]) {
            *d = v + b;
        }
    };
    if total >= PAR_MIN {
        y.par_chunks_mut(hw).enumerate().for_each(body);
    } else {
        y.chunks_mut(hw).enumerate().for_each(body);
    }
    Ok(())
}

/// dbias [c] = Σ over n and hw of dy [n, c, hw] (overwritten).
pub fn bias_grad_channels(
    n: usize,
    c: usize,
    hw: usize,
    dy: &[f32],
    dbias: &mut [f32],
) -> Result<()> {
    const OP: &str = "bias_grad_channels";
    check_bias_channels(
        OP,
        numel,
        (n, c, hw),
        &[("dy", dy.len())],
        ("dbias", dbias.len()),
    )?;
    let mut acc = vec![0.0f64; c];
    for (i, p) in dy.chunks(hw).enumerate() {
        acc[i % c] += accumulate::sum(p);
    }
    for (d, a) in dbias.iter_mut().zip(acc) {
        *d = a as f32;
    }
    Ok(())
}

/// y [rows, dim] = x + bias[dim] (per column; also a position embedding with dim =
/// tokens·width).
pub fn add_bias_rows(
    rows: usize,
    dim: usize,
    x: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "add_bias_rows";
    let total = check_bias_rows(
        OP,
        numel,
        (rows, dim),
        &[("x", x.len()), ("y", y.len())],
        ("bias", bias.len()),
    )?;
    let body = |(r, yr): (usize, &mut [f32])| {
        for ((d, &v), &b) in yr.iter_mut().zip(&x[r * dim..(r + 1) * dim]).zip(bias) {
            *d = v + b;
        }
    };
    if total >= PAR_MIN {
        y.par_chunks_mut(dim).enumerate().for_each(body);
    } else {
        y.chunks_mut(dim).enumerate().for_each(body);
    }
    Ok(())
}

/// dbias [dim] = Σ over rows of dy [rows, dim] (overwritten).
pub fn bias_grad_rows(rows: usize, dim: usize, dy: &[f32], dbias: &mut [f32]) -> Result<()> {
    const OP: &str = "bias_grad_rows";
    check_bias_rows(
        OP,
        numel,
        (rows, dim),
        &[("dy", dy.len())],
        ("dbias", dbias.len()),
    )?;
    let mut acc = vec![0.0f64; dim];
    for r in dy.chunks(dim) {
        for (a, &v) in acc.iter_mut().zip(r) {
            *a += v as f64;
        }
    }
    for (d, a) in dbias.iter_mut().zip(acc) {
        *d = a as f32;
    }
    Ok(())
}
