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
    const OP: &str = "batch_norm_forward_train";
    let total = numel(OP, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(OP, "x", x.len(), n, c, hw)?;
    check_x(OP, "y", y.len(), n, c, hw)?;
    check_c(OP, "gamma", gamma.len(), c)?;
    check_c(OP, "beta", beta.len(), c)?;
    check_c(OP, "save_mean", save_mean.len(), c)?;
    check_c(OP, "save_invstd", save_invstd.len(), c)?;
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
        for (d, &v) in plane.iter_mut().zip(src) {
            *d = v * scale + shift;
        }
    });
    Ok(())
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
    const OP: &str = "batch_norm_forward_eval";
    numel(OP, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(OP, "x", x.len(), n, c, hw)?;
    check_x(OP, "y", y.len(), n, c, hw)?;
    check_c(OP, "gamma", gamma.len(), c)?;
    check_c(OP, "beta", beta.len(), c)?;
    check_c(OP, "running_mean", running_mean.len(), c)?;
    check_c(OP, "running_var", running_var.len(), c)?;
    if let Some(ch) = running_var
        .iter()
        .position(|&v| (v + eps).is_nan() || v + eps <= 0.0)
    {
        return Err(KernelError::new(
            OP,
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
        for (d, &v) in plane.iter_mut().zip(src) {
            *d = v * scale + shift;
        }
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
    const OP: &str = "batch_norm_backward";
    let total = numel(OP, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(OP, "x", x.len(), n, c, hw)?;
    check_x(OP, "dy", dy.len(), n, c, hw)?;
    check_x(OP, "dx", dx.len(), n, c, hw)?;
    check_c(OP, "gamma", gamma.len(), c)?;
    check_c(OP, "save_mean", save_mean.len(), c)?;
    check_c(OP, "save_invstd", save_invstd.len(), c)?;
    check_c(OP, "dgamma", dgamma.len(), c)?;
    check_c(OP, "dbeta", dbeta.len(), c)?;
    // Per channel: Σ dy and Σ dy·(x − mean); x̂ = (x − mean)·invstd.
    let sums = per_channel(total, c, |ch| {
        let m = save_mean[ch];
        let sdy = channel_sum(n, c, hw, ch, |_, o| {
            dy[o..o + hw].iter().map(|&v| v as f64).sum::<f64>()
        });
        let sdyx = channel_sum(n, c, hw, ch, |_, o| {
            dy[o..o + hw]
                .iter()
                .zip(&x[o..o + hw])
                .map(|(&g, &v)| g as f64 * (v - m) as f64)
                .sum::<f64>()
        });
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
        for ((d, &g), &v) in plane.iter_mut().zip(&dy[o..o + hw]).zip(&x[o..o + hw]) {
            *d = k * (g - mdy - (v - m) * coef);
        }
    });
    Ok(())
}
