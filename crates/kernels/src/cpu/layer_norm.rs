//! Layer normalisation of x [rows, dim] over `dim`, with affine gamma, beta [dim].

use super::accumulate as acc;
use super::checks::{PAR_MIN, buf, numel};
use crate::error::Result;
use rayon::prelude::*;

/// Rows handled by one rayon task.
fn rows_per_task(rows: usize, dim: usize) -> usize {
    (PAR_MIN / dim).clamp(1, rows)
}

/// The shape a buffer of a layer-norm call has.
#[derive(Clone, Copy)]
pub(crate) enum Size {
    /// [rows, dim], like x.
    Full,
    /// [dim], like gamma.
    Dim,
    /// [rows], like save_mean.
    Rows,
}

/// Checks, in order, that each (name, length, size) buffer has its size: the buffer checks of
/// the entry points, CPU and CUDA alike (each with its own op name).
pub(crate) fn check_bufs(
    op: &'static str,
    (rows, dim): (usize, usize),
    bufs: &[(&str, usize, Size)],
) -> Result<()> {
    for &(name, len, size) in bufs {
        match size {
            Size::Full => buf(
                op,
                name,
                len,
                rows * dim,
                format_args!("[rows={rows}, dim={dim}]"),
            ),
            Size::Dim => buf(op, name, len, dim, format_args!("[dim={dim}]")),
            Size::Rows => buf(op, name, len, rows, format_args!("[rows={rows}]")),
        }?;
    }
    Ok(())
}

/// Forward: y = (x − mean)·invstd·gamma + beta per row, storing save_mean and
/// save_invstd = 1/sqrt(var + eps) (biased variance), each [rows].
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    rows: usize,
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
) -> Result<()> {
    const OP: &str = "layer_norm_forward";
    let total = numel(OP, &[("rows", rows), ("dim", dim)])?;
    check_bufs(
        OP,
        (rows, dim),
        &[
            ("x", x.len(), Size::Full),
            ("y", y.len(), Size::Full),
            ("gamma", gamma.len(), Size::Dim),
            ("beta", beta.len(), Size::Dim),
            ("save_mean", save_mean.len(), Size::Rows),
            ("save_invstd", save_invstd.len(), Size::Rows),
        ],
    )?;
    let rpt = rows_per_task(rows, dim);
    type Task<'a> = ((&'a mut [f32], &'a [f32]), (&'a mut [f32], &'a mut [f32]));
    let body = |((yc, xc), (mc, ic)): Task<'_>| {
        for (r, (yr, xr)) in yc.chunks_mut(dim).zip(xc.chunks(dim)).enumerate() {
            let mean = acc::sum(xr) / dim as f64;
            let var = acc::sum_sq_dev(xr, mean) / dim as f64;
            let is = 1.0 / (var + eps as f64).sqrt();
            mc[r] = mean as f32;
            ic[r] = is as f32;
            let (m, is) = (mean as f32, is as f32);
            for (((d, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                *d = (v - m) * is * g + b;
            }
        }
    };
    if total >= PAR_MIN && rows > 1 {
        y.par_chunks_mut(rpt * dim)
            .zip(x.par_chunks(rpt * dim))
            .zip(
                save_mean
                    .par_chunks_mut(rpt)
                    .zip(save_invstd.par_chunks_mut(rpt)),
            )
            .for_each(body);
    } else {
        body(((y, x), (save_mean, save_invstd)));
    }
    Ok(())
}

/// Backward: dx, dgamma = Σ_rows dy·x̂, dbeta = Σ_rows dy (all overwritten), with the
/// statistics saved by `layer_norm_forward`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    rows: usize,
    dim: usize,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    save_mean: &[f32],
    save_invstd: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    const OP: &str = "layer_norm_backward";
    let total = numel(OP, &[("rows", rows), ("dim", dim)])?;
    check_bufs(
        OP,
        (rows, dim),
        &[
            ("x", x.len(), Size::Full),
            ("dy", dy.len(), Size::Full),
            ("dx", dx.len(), Size::Full),
            ("gamma", gamma.len(), Size::Dim),
            ("save_mean", save_mean.len(), Size::Rows),
            ("save_invstd", save_invstd.len(), Size::Rows),
            ("dgamma", dgamma.len(), Size::Dim),
            ("dbeta", dbeta.len(), Size::Dim),
        ],
    )?;
    let rpt = rows_per_task(rows, dim);
    // Each task returns its partial (dgamma, dbeta) in f64.
    let body = |(ti, dxc): (usize, &mut [f32])| -> (Vec<f64>, Vec<f64>) {
        let mut dg = vec![0.0f64; dim];
        let mut db = vec![0.0f64; dim];
        let r0 = ti * rpt;
        for (r, dxr) in dxc.chunks_mut(dim).enumerate() {
            let row = r0 + r;
            let xr = &x[row * dim..(row + 1) * dim];
            let gr = &dy[row * dim..(row + 1) * dim];
            let (m, is) = (save_mean[row], save_invstd[row]);
            // g = dy·gamma; dx = invstd·(g − mean(g) − x̂·mean(g·x̂)).
            let sg = acc::fold3(gr, gamma, xr, |g, w, _| (g * w) as f64);
            let sgx = acc::fold3(gr, gamma, xr, |g, w, v| (g * w * ((v - m) * is)) as f64);
            for (((a, b), &g), &v) in dg.iter_mut().zip(db.iter_mut()).zip(gr).zip(xr) {
                *a += (g * ((v - m) * is)) as f64;
                *b += g as f64;
            }
            let mg = (sg / dim as f64) as f32;
            let mgx = (sgx / dim as f64) as f32;
            for (((d, &g), &w), &v) in dxr.iter_mut().zip(gr).zip(gamma).zip(xr) {
                *d = is * (g * w - mg - (v - m) * is * mgx);
            }
        }
        (dg, db)
    };
    // Partials of fixed row blocks, added in block order: the result does not depend on
    // rayon's scheduling.
    let parts: Vec<(Vec<f64>, Vec<f64>)> = if total >= PAR_MIN && rows > 1 {
        dx.par_chunks_mut(rpt * dim).enumerate().map(body).collect()
    } else {
        vec![body((0, dx))]
    };
    let (mut dg, mut db) = (vec![0.0f64; dim], vec![0.0f64; dim]);
    for (pg, pb) in &parts {
        dg.iter_mut().zip(pg).for_each(|(u, v)| *u += v);
        db.iter_mut().zip(pb).for_each(|(u, v)| *u += v);
    }
    for j in 0..dim {
        dgamma[j] = dg[j] as f32;
        dbeta[j] = db[j] as f32;
    }
    Ok(())
}
