//! Batch normalisation over x [n, c, hw]: statistics per channel over n·hw (PyTorch
//! semantics: biased variance in the forward pass, unbiased in the running variance).

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

/// Per-channel sums over the n planes of channel `ch`: (Σ f(plane values)) in f64.
fn channel_sum(n: usize, c: usize, hw: usize, ch: usize, f: impl Fn(usize, usize) -> f64) -> f64 {
    let mut acc = 0.0f64;
    for img in 0..n {
        acc += f(img, (img * c + ch) * hw);
    }
    acc
}

/// Maps channels to per-channel results, in parallel when the tensor is large.
fn per_channel<T: Send>(total: usize, c: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if total >= PAR_MIN && c > 1 {
        (0..c).into_par_iter().map(f).collect()
    } else {
        (0..c).map(f).collect()
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
    let total = numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "x", x.len(), n, c, hw)?;
    check_x(op, "y", y.len(), n, c, hw)?;
    check_c(op, "gamma", gamma.len(), c)?;
    check_c(op, "beta", beta.len(), c)?;
    check_c(op, "save_mean", save_mean.len(), c)?;
    check_c(op, "save_invstd", save_invstd.len(), c)?;
    let count = (n * hw) as f64;
    let stats = per_channel(total, c, |ch| {
        let mean = channel_sum(n, c, hw, ch, |_, o| {
            x[o..o + hw].iter().map(|&v| v as f64).sum::<f64>()
        }) / count;
        let var = channel_sum(n, c, hw, ch, |_, o| {
            x[o..o + hw]
                .iter()
                .map(|&v| {
                    let d = v as f64 - mean;
                    d * d
                })
                .sum::<f64>()
        }) / count;
        (mean, 1.0 / (var + eps as f64).sqrt())
    });
    for (ch, &(m, is)) in stats.iter().enumerate() {
        save_mean[ch] = m as f32;
        save_invstd[ch] = is as f32;
    }
    per_plane(y, c, hw, |ch, i, plane| {
        let (m, is) = (stats[ch].0 as f32, stats[ch].1 as f32);
        let scale = is * gamma[ch];
        let shift = beta[ch] - m * scale;
        let src = &x[i * hw..(i + 1) * hw];
        affine(plane, src, scale, shift, relu);
    });
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
    let total = numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "x", x.len(), n, c, hw)?;
    check_x(op, "dy", dy.len(), n, c, hw)?;
    check_x(op, "dx", dx.len(), n, c, hw)?;
    check_c(op, "gamma", gamma.len(), c)?;
    check_c(op, "save_mean", save_mean.len(), c)?;
    check_c(op, "save_invstd", save_invstd.len(), c)?;
    check_c(op, "dgamma", dgamma.len(), c)?;
    check_c(op, "dbeta", dbeta.len(), c)?;
    // Per channel: Σ dy and Σ dy·(x − mean); x̂ = (x − mean)·invstd.
    let sums = per_channel(total, c, |ch| {
        let m = save_mean[ch];
        let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
        for img in 0..n {
            let o = (img * c + ch) * hw;
            let (g, v) = (&dy[o..o + hw], &x[o..o + hw]);
            match y {
                None => {
                    sdy += g.iter().map(|&a| a as f64).sum::<f64>();
                    sdyx += g
                        .iter()
                        .zip(v)
                        .map(|(&a, &b)| a as f64 * (b - m) as f64)
                        .sum::<f64>();
                }
                Some(y) => {
                    for ((&a, &b), &u) in g.iter().zip(v).zip(&y[o..o + hw]) {
                        let a = if u > 0.0 { a as f64 } else { 0.0 };
                        sdy += a;
                        sdyx += a * (b - m) as f64;
                    }
                }
            }
        }
        (sdy, sdyx)
    });
    let count = (n * hw) as f64;
    for ch in 0..c {
        dbeta[ch] = sums[ch].0 as f32;
        dgamma[ch] = (sums[ch].1 * save_invstd[ch] as f64) as f32;
    }
    // dx = gamma·invstd·(dy − mean(dy) − (x − mean)·invstd²·mean(dy·(x − mean))).
    per_plane(dx, c, hw, |ch, i, plane| {
        let is = save_invstd[ch] as f64;
        let k = (gamma[ch] as f64 * is) as f32;
        let mdy = (sums[ch].0 / count) as f32;
        let coef = (sums[ch].1 / count * is * is) as f32;
        let m = save_mean[ch];
        let o = i * hw;
        let (g, v) = (&dy[o..o + hw], &x[o..o + hw]);
        match y {
            None => {
                for ((d, &g), &v) in plane.iter_mut().zip(g).zip(v) {
                    *d = k * (g - mdy - (v - m) * coef);
                }
            }
            Some(y) => {
                for (((d, &g), &v), &u) in plane.iter_mut().zip(g).zip(v).zip(&y[o..o + hw]) {
                    let g = if u > 0.0 { g } else { 0.0 };
                    *d = k * (g - mdy - (v - m) * coef);
                }
            }
        }
    });
    Ok(())
}
