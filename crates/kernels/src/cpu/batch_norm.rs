//! Batch normalisation over x [n, c, hw]: statistics per channel over n·hw (PyTorch
//! semantics: biased variance in the forward pass, unbiased in the running variance).

use super::accumulate as acc;
use super::checks::{PAR_MIN, buf, numel};
use crate::error::{KernelError, Result};
use rayon::prelude::*;

fn check_x(op: &'static str, name: &str, len: usize, n: usize, c: usize, hw: usize) -> Result<()> {
    buf(
        op,
        name,
        len,
        n * c * hw,
        format_args!("[n={n}, c={c}, hw={hw}]"),
    )
}

fn check_c(op: &'static str, name: &str, len: usize, c: usize) -> Result<()> {
    buf(op, name, len, c, format_args!("[c={c}]"))
}

/// Σ over the n planes of channel `ch` of f(offset of the plane).
fn channel_sum(n: usize, c: usize, hw: usize, ch: usize, f: impl Fn(usize) -> f64) -> f64 {
    (0..n).map(|img| f((img * c + ch) * hw)).sum()
}

/// Runs `f(channel, planes)` for every channel, where `planes` are that channel's n planes of
/// `out` [n, c, hw] (image order), in parallel over channels when large. Reading the inputs
/// and writing the output of one channel in one task keeps its data in cache between passes.
fn per_channel_out<T: Send>(
    out: &mut [f32],
    c: usize,
    hw: usize,
    f: impl Fn(usize, &mut [&mut [f32]]) -> T + Sync + Send,
) -> Vec<T> {
    let total = out.len();
    let n = total / (c * hw);
    let mut groups: Vec<Vec<&mut [f32]>> = (0..c).map(|_| Vec::with_capacity(n)).collect();
    for (i, plane) in out.chunks_mut(hw).enumerate() {
        groups[i % c].push(plane);
    }
    if total >= PAR_MIN && c > 1 {
        groups
            .into_par_iter()
            .enumerate()
            .map(|(ch, mut g)| f(ch, &mut g))
            .collect()
    } else {
        groups
            .into_iter()
            .enumerate()
            .map(|(ch, mut g)| f(ch, &mut g))
            .collect()
    }
}

/// Applies `f(channel, plane)` to every [hw] plane of y [n, c, hw], in parallel when large.
fn per_plane(
    y: &mut [f32],
    c: usize,
    hw: usize,
    f: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) {
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(hw)
            .enumerate()
            .for_each(|(i, plane)| f(i % c, i, plane));
    } else {
        y.chunks_mut(hw)
            .enumerate()
            .for_each(|(i, plane)| f(i % c, i, plane));
    }
}

/// Training-mode forward: y = (x − mean)·invstd·gamma + beta with the batch statistics, which
/// it also stores (save_mean, save_invstd = 1/sqrt(var + eps), biased variance; each [c]).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_forward_train";
    forward_train(
        op,
        false,
        n,
        c,
        hw,
        x,
        (gamma, beta),
        eps,
        y,
        save_mean,
        save_invstd,
    )
}

/// Fused training-mode batch norm + ReLU: y = max(bn(x), 0) in the same pass; statistics as in
/// `batch_norm_forward_train` (backward: `batch_norm_relu_backward`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_forward_train(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_relu_forward_train";
    forward_train(
        op,
        true,
        n,
        c,
        hw,
        x,
        (gamma, beta),
        eps,
        y,
        save_mean,
        save_invstd,
    )
}

#[allow(clippy::too_many_arguments)]
fn forward_train(
    op: &'static str,
    relu: bool,
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
) -> Result<()> {
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "x", x.len(), n, c, hw)?;
    check_x(op, "y", y.len(), n, c, hw)?;
    check_c(op, "gamma", gamma.len(), c)?;
    check_c(op, "beta", beta.len(), c)?;
    check_c(op, "save_mean", save_mean.len(), c)?;
    check_c(op, "save_invstd", save_invstd.len(), c)?;
    let count = (n * hw) as f64;
    let stats = per_channel_out(y, c, hw, |ch, planes| {
        let mean = channel_sum(n, c, hw, ch, |o| acc::sum(&x[o..o + hw])) / count;
        let var = channel_sum(n, c, hw, ch, |o| acc::sum_sq_dev(&x[o..o + hw], mean)) / count;
        let is = 1.0 / (var + eps as f64).sqrt();
        let (m, isf) = (mean as f32, is as f32);
        let scale = isf * gamma[ch];
        let shift = beta[ch] - m * scale;
        for (img, plane) in planes.iter_mut().enumerate() {
            let o = (img * c + ch) * hw;
            affine(plane, &x[o..o + hw], scale, shift, relu);
        }
        (m, isf)
    });
    for (ch, &(m, is)) in stats.iter().enumerate() {
        save_mean[ch] = m;
        save_invstd[ch] = is;
    }
    Ok(())
}

/// plane = src·scale + shift, clamped at 0 when `relu`.
fn affine(plane: &mut [f32], src: &[f32], scale: f32, shift: f32, relu: bool) {
    if relu {
        for (d, &v) in plane.iter_mut().zip(src) {
            *d = (v * scale + shift).max(0.0);
        }
    } else {
        for (d, &v) in plane.iter_mut().zip(src) {
            *d = v * scale + shift;
        }
    }
}

/// Updates running statistics: running = (1 − momentum)·running + momentum·batch, where the
/// batch variance is made unbiased with `count` = n·hw (PyTorch's default momentum is 0.1).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_update_running(
    c: usize,
    count: usize,
    save_mean: &[f32],
    save_invstd: &[f32],
    eps: f32,
    momentum: f32,
    running_mean: &mut [f32],
    running_var: &mut [f32],
) -> Result<()> {
    const OP: &str = "batch_norm_update_running";
    numel(OP, &[("c", c)])?;
    if count < 2 {
        return Err(KernelError::new(
            OP,
            format!("expected more than 1 value per channel (count = n·hw = {count})"),
        ));
    }
    check_c(OP, "save_mean", save_mean.len(), c)?;
    check_c(OP, "save_invstd", save_invstd.len(), c)?;
    check_c(OP, "running_mean", running_mean.len(), c)?;
    check_c(OP, "running_var", running_var.len(), c)?;
    let unbias = count as f64 / (count - 1) as f64;
    let mo = momentum as f64;
    for ch in 0..c {
        let is = save_invstd[ch] as f64;
        let var = (1.0 / (is * is) - eps as f64).max(0.0) * unbias;
        running_mean[ch] =
            ((1.0 - mo) * running_mean[ch] as f64 + mo * save_mean[ch] as f64) as f32;
        running_var[ch] = ((1.0 - mo) * running_var[ch] as f64 + mo * var) as f32;
    }
    Ok(())
}

/// Eval-mode forward with the running statistics:
/// y = (x − running_mean)/sqrt(running_var + eps)·gamma + beta.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_eval(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    y: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_forward_eval";
    let stats = (running_mean, running_var);
    forward_eval(op, false, n, c, hw, x, (gamma, beta), stats, eps, y)
}

/// Fused eval-mode batch norm + ReLU: y = max(bn_eval(x), 0) in one pass.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_forward_eval(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    y: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_relu_forward_eval";
    let stats = (running_mean, running_var);
    forward_eval(op, true, n, c, hw, x, (gamma, beta), stats, eps, y)
}

#[allow(clippy::too_many_arguments)]
fn forward_eval(
    op: &'static str,
    relu: bool,
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    (running_mean, running_var): (&[f32], &[f32]),
    eps: f32,
    y: &mut [f32],
) -> Result<()> {
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "x", x.len(), n, c, hw)?;
    check_x(op, "y", y.len(), n, c, hw)?;
    check_c(op, "gamma", gamma.len(), c)?;
    check_c(op, "beta", beta.len(), c)?;
    check_c(op, "running_mean", running_mean.len(), c)?;
    check_c(op, "running_var", running_var.len(), c)?;
    if let Some(ch) = running_var
        .iter()
        .position(|&v| (v + eps).is_nan() || v + eps <= 0.0)
    {
        return Err(KernelError::new(
            op,
            format!(
                "running_var[{ch}] + eps = {} is not positive",
                running_var[ch] + eps
            ),
        ));
    }
    per_plane(y, c, hw, |ch, i, plane| {
        let scale = gamma[ch] / (running_var[ch] + eps).sqrt();
        let shift = beta[ch] - running_mean[ch] * scale;
        let src = &x[i * hw..(i + 1) * hw];
        affine(plane, src, scale, shift, relu);
    });
    Ok(())
}

/// Training-mode backward: dx, dgamma = Σ dy·x̂, dbeta = Σ dy (all overwritten), with the
/// statistics saved by `batch_norm_forward_train`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    save_mean: &[f32],
    save_invstd: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_backward";
    let stats = (save_mean, save_invstd);
    backward(op, n, c, hw, x, None, dy, gamma, stats, dx, dgamma, dbeta)
}

/// Backward of `batch_norm_relu_forward_train` from its output y (the ReLU passes dy where
/// y > 0): the same results as `relu_backward` then `batch_norm_backward`, without the
/// intermediate buffer.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    gamma: &[f32],
    save_mean: &[f32],
    save_invstd: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_relu_backward";
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "y", y.len(), n, c, hw)?;
    let stats = (save_mean, save_invstd);
    backward(
        op,
        n,
        c,
        hw,
        x,
        Some(y),
        dy,
        gamma,
        stats,
        dx,
        dgamma,
        dbeta,
    )
}

#[allow(clippy::too_many_arguments)]
fn backward(
    op: &'static str,
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    gamma: &[f32],
    (save_mean, save_invstd): (&[f32], &[f32]),
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "x", x.len(), n, c, hw)?;
    check_x(op, "dy", dy.len(), n, c, hw)?;
    check_x(op, "dx", dx.len(), n, c, hw)?;
    check_c(op, "gamma", gamma.len(), c)?;
    check_c(op, "save_mean", save_mean.len(), c)?;
    check_c(op, "save_invstd", save_invstd.len(), c)?;
    check_c(op, "dgamma", dgamma.len(), c)?;
    check_c(op, "dbeta", dbeta.len(), c)?;
    // Per channel: Σ dy and Σ dy·(x − mean) (x̂ = (x − mean)·invstd), then
    // dx = gamma·invstd·(dy − mean(dy) − (x − mean)·invstd²·mean(dy·(x − mean))).
    let count = (n * hw) as f64;
    let sums = per_channel_out(dx, c, hw, |ch, planes| {
        let m = save_mean[ch];
        let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
        for img in 0..n {
            let o = (img * c + ch) * hw;
            let (g, v) = (&dy[o..o + hw], &x[o..o + hw]);
            let (a, b) = match y {
                None => (acc::sum(g), acc::dot_dev(g, v, m)),
                Some(y) => acc::gated_sums(g, v, &y[o..o + hw], m),
            };
            sdy += a;
            sdyx += b;
        }
        let is = save_invstd[ch] as f64;
        let k = (gamma[ch] as f64 * is) as f32;
        let mdy = (sdy / count) as f32;
        let coef = (sdyx / count * is * is) as f32;
        for (img, plane) in planes.iter_mut().enumerate() {
            let o = (img * c + ch) * hw;
            let (g, v) = (&dy[o..o + hw], &x[o..o + hw]);
            match y {
                None => {
                    for ((d, &g), &v) in plane.iter_mut().zip(g).zip(v) {
                        *d = k * (g - mdy - (v - m) * coef);
                    }
                }
                Some(y) => {
                    let yr = &y[o..o + hw];
                    for (((d, &g), &v), &u) in plane.iter_mut().zip(g).zip(v).zip(yr) {
                        let g = if u > 0.0 { g } else { 0.0 };
                        *d = k * (g - mdy - (v - m) * coef);
                    }
                }
            }
        }
        (sdy, sdyx)
    });
    for ch in 0..c {
        dbeta[ch] = sums[ch].0 as f32;
        dgamma[ch] = (sums[ch].1 * save_invstd[ch] as f64) as f32;
    }
    Ok(())
}
