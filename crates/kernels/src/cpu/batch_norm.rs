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

/// The n planes of channel `ch` of a buffer [n, c, hw], in image order.
fn channel_planes(buf: &mut [f32], c: usize, hw: usize) -> Vec<Vec<&mut [f32]>> {
    let n = buf.len() / (c * hw);
    let mut groups: Vec<Vec<&mut [f32]>> = (0..c).map(|_| Vec::with_capacity(n)).collect();
    for (i, plane) in buf.chunks_mut(hw).enumerate() {
        groups[i % c].push(plane);
    }
    groups
}

/// Runs `f(channel, planes, extra_planes)` for every channel, where `planes` are that
/// channel's n planes of `out` [n, c, hw] (image order) and `extra_planes` those of the
/// optional second output, in parallel over channels when large. Reading the inputs and
/// writing the outputs of one channel in one task keeps its data in cache between passes.
fn per_channel_out<T: Send>(
    out: &mut [f32],
    extra: Option<&mut [f32]>,
    c: usize,
    hw: usize,
    f: impl Fn(usize, &mut [&mut [f32]], Option<&mut [&mut [f32]]>) -> T + Sync + Send,
) -> Vec<T> {
    let total = out.len();
    let main = channel_planes(out, c, hw);
    let mut extra: Vec<Option<Vec<&mut [f32]>>> = match extra {
        Some(e) => channel_planes(e, c, hw).into_iter().map(Some).collect(),
        None => (0..c).map(|_| None).collect(),
    };
    type Planes<'a> = Vec<&'a mut [f32]>;
    let jobs: Vec<(Planes<'_>, Option<Planes<'_>>)> =
        main.into_iter().zip(extra.drain(..)).collect();
    let run = |(ch, (mut g, mut e)): (usize, (Planes<'_>, Option<Planes<'_>>))| {
        f(ch, &mut g, e.as_deref_mut())
    };
    if total >= PAR_MIN && c > 1 {
        jobs.into_par_iter().enumerate().map(run).collect()
    } else {
        jobs.into_iter().enumerate().map(run).collect()
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
        (x, None),
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
        (x, None),
        (gamma, beta),
        eps,
        y,
        save_mean,
        save_invstd,
    )
}

/// Fused training-mode batch norm, residual add and ReLU: y = max(bn(x) + residual, 0), the
/// last block of a ResNet bottleneck in one pass (backward: `batch_norm_add_relu_backward`).
/// Statistics as in `batch_norm_forward_train` (of x alone).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_add_relu_forward_train(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_add_relu_forward_train";
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "residual", residual.len(), n, c, hw)?;
    forward_train(
        op,
        true,
        n,
        c,
        hw,
        (x, Some(residual)),
        (gamma, beta),
        eps,
        y,
        save_mean,
        save_invstd,
    )
}

/// One channel's share of a training forward (everything the per-channel task reads).
struct FwdChannel<'a> {
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    c: usize,
    hw: usize,
    ch: usize,
    gamma: f32,
    beta: f32,
    eps: f64,
    relu: bool,
}

/// Statistics of one channel (returned as (mean, invstd)), then its output planes. `sums` is
/// `acc::shifted_sums` or its AVX-512 twin.
#[inline(always)]
fn forward_channel<'a>(
    j: &FwdChannel<'a>,
    planes: &mut [&mut [f32]],
    sums: impl FnOnce(&mut dyn Iterator<Item = &'a [f32]>, f64) -> (f64, f64),
) -> (f32, f32) {
    let (c, hw, ch) = (j.c, j.hw, j.ch);
    let plane = |img: usize| &j.x[(img * c + ch) * hw..][..hw];
    // Sums of x − k for the channel's first value k: one pass, and no cancellation in
    // E[(x − k)²] − E[x − k]² when |mean| is large against the spread.
    let k = j.x[ch * hw] as f64;
    let (s, q) = sums(&mut (0..planes.len()).map(plane), k);
    let count = (planes.len() * hw) as f64;
    let d = s / count;
    let var = (q / count - d * d).max(0.0);
    let is = 1.0 / (var + j.eps).sqrt();
    let (m, isf) = ((k + d) as f32, is as f32);
    let scale = isf * j.gamma;
    let shift = j.beta - m * scale;
    for (img, out) in planes.iter_mut().enumerate() {
        let o = (img * c + ch) * hw;
        match j.residual {
            None => affine(out, plane(img), scale, shift, j.relu),
            Some(r) => affine_add(out, plane(img), &r[o..o + hw], scale, shift, j.relu),
        }
    }
    (m, isf)
}

#[allow(clippy::too_many_arguments)]
fn forward_train(
    op: &'static str,
    relu: bool,
    n: usize,
    c: usize,
    hw: usize,
    (x, residual): (&[f32], Option<&[f32]>),
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
    let wide = wide::available();
    let stats = per_channel_out(y, None, c, hw, |ch, planes, _| {
        let job = FwdChannel {
            x,
            residual,
            c,
            hw,
            ch,
            gamma: gamma[ch],
            beta: beta[ch],
            eps: eps as f64,
            relu,
        };
        if wide {
            // SAFETY: `wide::available()` checked the CPU features.
            unsafe { wide::forward_channel(&job, planes) }
        } else {
            forward_channel(&job, planes, |p, k| acc::shifted_sums(p, k))
        }
    });
    for (ch, &(m, is)) in stats.iter().enumerate() {
        save_mean[ch] = m;
        save_invstd[ch] = is;
    }
    Ok(())
}

/// plane = src·scale + shift, clamped at 0 when `relu`.
#[inline(always)]
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

/// plane = src·scale + shift + res, clamped at 0 when `relu`.
#[inline(always)]
fn affine_add(plane: &mut [f32], src: &[f32], res: &[f32], scale: f32, shift: f32, relu: bool) {
    if relu {
        for ((d, &v), &r) in plane.iter_mut().zip(src).zip(res) {
            *d = (v * scale + shift + r).max(0.0);
        }
    } else {
        for ((d, &v), &r) in plane.iter_mut().zip(src).zip(res) {
            *d = v * scale + shift + r;
        }
    }
}

/// The per-channel bodies compiled for AVX-512 (the crate's baseline target is SSE2, which
/// runs the f64 sums 2 lanes wide). Rust never contracts mul + add into FMA, so both versions
/// give the same bits.
mod wide {
    use super::{BwdChannel, FwdChannel, acc};

    /// Whether the AVX-512 bodies can run on this CPU.
    #[inline]
    pub(super) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) fn forward_channel(j: &FwdChannel<'_>, planes: &mut [&mut [f32]]) -> (f32, f32) {
        super::forward_channel(j, planes, |p, k| acc::avx512::shifted_sums(p, k))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) fn backward_channel(
        j: &BwdChannel<'_>,
        dx: &mut [&mut [f32]],
        dres: Option<&mut [&mut [f32]]>,
    ) -> (f64, f64) {
        super::backward_channel(j, dx, dres, |p, m, a| acc::avx512::grad_sums(p, m, a))
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn forward_channel(
        j: &FwdChannel<'_>,
        planes: &mut [&mut [f32]],
    ) -> (f32, f32) {
        super::forward_channel(j, planes, |p, k| acc::shifted_sums(p, k))
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn backward_channel(
        j: &BwdChannel<'_>,
        dx: &mut [&mut [f32]],
        dres: Option<&mut [&mut [f32]]>,
    ) -> (f64, f64) {
        super::backward_channel(j, dx, dres, acc::grad_sums)
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
    backward(
        op,
        (n, c, hw),
        x,
        Gate::None,
        dy,
        gamma,
        stats,
        (dx, None),
        dgamma,
        dbeta,
    )
}

/// Backward of `batch_norm_relu_forward_train`: the same results as `relu_backward` then
/// `batch_norm_backward`, without the intermediate buffer. The ReLU gate (y > 0) is
/// recomputed from x with the forward's exact f32 arithmetic (x·scale + shift > 0, scale =
/// invstd·gamma, shift = beta − mean·scale), so y is not read: one stream less per pass.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f32],
    dy: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    save_mean: &[f32],
    save_invstd: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_relu_backward";
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_c(op, "beta", beta.len(), c)?;
    let stats = (save_mean, save_invstd);
    backward(
        op,
        (n, c, hw),
        x,
        Gate::Recompute(beta),
        dy,
        gamma,
        stats,
        (dx, None),
        dgamma,
        dbeta,
    )
}

/// Backward of `batch_norm_add_relu_forward_train` from its output y: with g = dy where
/// y > 0, dresidual = g and dx, dgamma, dbeta are the batch-norm backward of g (all
/// overwritten).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_add_relu_backward(
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
    dresidual: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let op = "batch_norm_add_relu_backward";
    numel(op, &[("n", n), ("c", c), ("hw", hw)])?;
    check_x(op, "y", y.len(), n, c, hw)?;
    check_x(op, "dresidual", dresidual.len(), n, c, hw)?;
    let stats = (save_mean, save_invstd);
    backward(
        op,
        (n, c, hw),
        x,
        Gate::Output(y),
        dy,
        gamma,
        stats,
        (dx, Some(dresidual)),
        dgamma,
        dbeta,
    )
}

/// Which ReLU gate a backward applies to dy.
#[derive(Clone, Copy)]
enum Gate<'a> {
    /// No ReLU.
    None,
    /// The fused output y: dy passes where y > 0.
    Output(&'a [f32]),
    /// Recomputed from x: x·scale + shift > 0 with scale = invstd·gamma and shift =
    /// beta − mean·scale, as the forward computed them (this is beta).
    Recompute(&'a [f32]),
}

/// One channel's share of a training backward.
struct BwdChannel<'a> {
    x: &'a [f32],
    y: Option<&'a [f32]>,
    /// (scale, shift) of a gate recomputed from x.
    affine_gate: Option<(f32, f32)>,
    dy: &'a [f32],
    c: usize,
    hw: usize,
    ch: usize,
    gamma: f32,
    mean: f32,
    invstd: f32,
}

/// The planes (dy, x, y) of one channel, as `grad_sums` reads them.
type GradPlanes<'d, 'a> = &'d mut dyn Iterator<Item = (&'a [f32], &'a [f32], Option<&'a [f32]>)>;

/// Σ g and Σ g·(x − mean) of one channel (g = dy, gated by y > 0 when y is given), then its
/// dx planes (and dresidual = g). `sums` is `acc::grad_sums` or its AVX-512 twin.
#[inline(always)]
fn backward_channel<'a>(
    j: &BwdChannel<'a>,
    dx: &mut [&mut [f32]],
    mut dres: Option<&mut [&mut [f32]]>,
    sums: impl FnOnce(GradPlanes<'_, 'a>, f32, Option<(f32, f32)>) -> (f64, f64),
) -> (f64, f64) {
    let (c, hw, ch, n) = (j.c, j.hw, j.ch, dx.len());
    let at = |img: usize| (img * c + ch) * hw..(img * c + ch + 1) * hw;
    let m = j.mean;
    let (x, dy, y) = (j.x, j.dy, j.y);
    let (sdy, sdyx) = sums(
        &mut (0..n).map(|i| (&dy[at(i)], &x[at(i)], y.map(|y| &y[at(i)]))),
        m,
        j.affine_gate,
    );
    // dx = gamma·invstd·(g − mean(g) − (x − mean)·invstd²·mean(g·(x − mean))).
    let count = (n * hw) as f64;
    let is = j.invstd as f64;
    let k = (j.gamma as f64 * is) as f32;
    let mdy = (sdy / count) as f32;
    let coef = (sdyx / count * is * is) as f32;
    for (img, plane) in dx.iter_mut().enumerate() {
        let (g, v) = (&j.dy[at(img)], &j.x[at(img)]);
        match (j.y, j.affine_gate) {
            (None, None) => {
                for ((d, &g), &v) in plane.iter_mut().zip(g).zip(v) {
                    *d = k * (g - mdy - (v - m) * coef);
                }
            }
            (None, Some((a, b))) => {
                for ((d, &g), &v) in plane.iter_mut().zip(g).zip(v) {
                    let g = if v * a + b > 0.0 { g } else { 0.0 };
                    *d = k * (g - mdy - (v - m) * coef);
                }
            }
            (Some(y), _) => {
                let yr = &y[at(img)];
                for (((d, &g), &v), &u) in plane.iter_mut().zip(g).zip(v).zip(yr) {
                    let g = if u > 0.0 { g } else { 0.0 };
                    *d = k * (g - mdy - (v - m) * coef);
                }
                if let Some(dr) = dres.as_deref_mut() {
                    for ((d, &g), &u) in dr[img].iter_mut().zip(&j.dy[at(img)]).zip(yr) {
                        *d = if u > 0.0 { g } else { 0.0 };
                    }
                }
            }
        }
    }
    (sdy, sdyx)
}

#[allow(clippy::too_many_arguments)]
fn backward(
    op: &'static str,
    (n, c, hw): (usize, usize, usize),
    x: &[f32],
    gate: Gate<'_>,
    dy: &[f32],
    gamma: &[f32],
    (save_mean, save_invstd): (&[f32], &[f32]),
    (dx, dres): (&mut [f32], Option<&mut [f32]>),
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
    let y = match gate {
        Gate::Output(y) => {
            check_x(op, "y", y.len(), n, c, hw)?;
            Some(y)
        }
        _ => None,
    };
    let wide = wide::available();
    let sums = per_channel_out(dx, dres, c, hw, |ch, planes, extra| {
        let affine_gate = match gate {
            Gate::Recompute(beta) => {
                // Exactly the forward's f32 operations (forward_channel).
                let scale = save_invstd[ch] * gamma[ch];
                Some((scale, beta[ch] - save_mean[ch] * scale))
            }
            _ => None,
        };
        let job = BwdChannel {
            x,
            y,
            affine_gate,
            dy,
            c,
            hw,
            ch,
            gamma: gamma[ch],
            mean: save_mean[ch],
            invstd: save_invstd[ch],
        };
        if wide {
            // SAFETY: `wide::available()` checked the CPU features.
            unsafe { wide::backward_channel(&job, planes, extra) }
        } else {
            backward_channel(&job, planes, extra, acc::grad_sums)
        }
    });
    for ch in 0..c {
        dbeta[ch] = sums[ch].0 as f32;
        dgamma[ch] = (sums[ch].1 * save_invstd[ch] as f64) as f32;
    }
    Ok(())
}
