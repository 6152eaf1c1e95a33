//! Batch normalisation over x [n, c, hw]: statistics per channel over n·hw (PyTorch
//! semantics: biased variance in the forward pass, unbiased in the running variance).

use super::accumulate as acc;
use super::checks::{PAR_MIN, buf, numel};
use crate::error::{KernelError, Result};
use rayon::prelude::*;

/// Checks that buffer `name` holds n·c·hw values (shared with the CUDA twin, which passes its
/// own op names).
pub(crate) fn check_x(
    op: &'static str,
    name: &str,
    len: usize,
    n: usize,
    c: usize,
    hw: usize,
) -> Result<()> {
    buf(
        op,
        name,
        len,
        n * c * hw,
        format_args!("[n={n}, c={c}, hw={hw}]"),
    )
}

/// Checks that per-channel buffer `name` holds c values.
pub(crate) fn check_c(op: &'static str, name: &str, len: usize, c: usize) -> Result<()> {
    buf(op, name, len, c, format_args!("[c={c}]"))
}

/// Checks, in order, that each `xs` buffer (name, length) holds n·c·hw values and each `cs`
/// buffer c values: the buffer checks of every entry point, CPU and CUDA alike.
pub(crate) fn check_bufs(
    op: &'static str,
    (n, c, hw): (usize, usize, usize),
    xs: &[(&str, usize)],
    cs: &[(&str, usize)],
) -> Result<()> {
    for &(name, len) in xs {
        check_x(op, name, len, n, c, hw)?;
    }
    for &(name, len) in cs {
        check_c(op, name, len, c)?;
    }
    Ok(())
}

/// The buffer checks of `batch_norm_update_running` (CPU and CUDA): the lengths of save_mean,
/// save_invstd, running_mean and running_var, in that order.
pub(crate) fn check_running(op: &'static str, c: usize, lens: [usize; 4]) -> Result<()> {
    let names = ["save_mean", "save_invstd", "running_mean", "running_var"];
    for (name, len) in names.into_iter().zip(lens) {
        check_c(op, name, len, c)?;
    }
    Ok(())
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

/// Channels per task: enough that one image's planes of the group span >= 1 KiB of
/// contiguous memory (a 4x4 plane alone is one cache line, 2-32 KiB away from the next one of
/// its channel, which defeats the prefetchers), one channel for planes of >= 256 values.
fn group_size(c: usize, hw: usize) -> usize {
    #[cfg(test)]
    if let Some(g) = tests::GROUP.get() {
        return g.clamp(1, c.max(1));
    }
    (256 / hw.max(1)).clamp(1, c.max(1))
}

/// The planes of one group of channels: `[channel in group][image]`.
type GroupPlanes<'a> = Vec<Vec<&'a mut [f32]>>;

/// Runs `f(first_channel, planes, extra_planes)` for every group of `group` consecutive
/// channels, where `planes[i]` are channel (first + i)'s n planes of `out` [n, c, hw] (image
/// order) and `extra_planes` those of the optional second output, in parallel over groups
/// when large; returns f's per-channel results in channel order. Reading the inputs and
/// writing the outputs of one group in one task keeps its data in cache between passes.
fn per_group_out<T: Send>(
    out: &mut [f32],
    extra: Option<&mut [f32]>,
    (c, hw, group): (usize, usize, usize),
    f: impl Fn(usize, &mut [Vec<&mut [f32]>], Option<&mut [Vec<&mut [f32]>]>) -> Vec<T> + Sync + Send,
) -> Vec<T> {
    let total = out.len();
    fn group_of(planes: Vec<Vec<&mut [f32]>>, group: usize) -> Vec<GroupPlanes<'_>> {
        let mut groups = Vec::with_capacity(planes.len().div_ceil(group));
        let mut it = planes.into_iter().peekable();
        while it.peek().is_some() {
            groups.push(it.by_ref().take(group).collect());
        }
        groups
    }
    let main = group_of(channel_planes(out, c, hw), group);
    let extra: Vec<Option<GroupPlanes<'_>>> = match extra {
        Some(e) => group_of(channel_planes(e, c, hw), group)
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..main.len()).map(|_| None).collect(),
    };
    let jobs: Vec<(GroupPlanes<'_>, Option<GroupPlanes<'_>>)> =
        main.into_iter().zip(extra).collect();
    let run = |(gi, (mut g, mut e)): (usize, (GroupPlanes<'_>, Option<GroupPlanes<'_>>))| {
        f(gi * group, &mut g, e.as_deref_mut())
    };
    let per_group: Vec<Vec<T>> = if total >= PAR_MIN && jobs.len() > 1 {
        jobs.into_par_iter().enumerate().map(run).collect()
    } else {
        jobs.into_iter().enumerate().map(run).collect()
    };
    per_group.into_iter().flatten().collect()
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

/// What the training forward of a group of channels reads.
struct FwdGroup<'a> {
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    c: usize,
    hw: usize,
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f64,
    relu: bool,
}

/// Statistics of the channels first.. (returned as (mean, invstd) each), then their output
/// planes. Images are the outer loop, so each image's planes of the group are read as one
/// contiguous run. `sums_into` is `acc::shifted_sums_into` or its AVX-512 twin; each channel's
/// lanes see its planes in image order, whatever the group size, so the bits do not depend on
/// it.
#[inline(always)]
fn forward_group(
    j: &FwdGroup<'_>,
    first: usize,
    planes: &mut [Vec<&mut [f32]>],
    sums_into: impl Fn(&mut acc::Lanes, &[f32], f64),
) -> Vec<(f32, f32)> {
    let (c, hw) = (j.c, j.hw);
    let n = planes.first().map_or(0, Vec::len);
    let plane = |img: usize, ch: usize| &j.x[(img * c + ch) * hw..][..hw];
    // Sums of x − k for each channel's first value k: one pass, and no cancellation in
    // E[(x − k)²] − E[x − k]² when |mean| is large against the spread.
    let ks: Vec<f64> = (0..planes.len())
        .map(|i| j.x[(first + i) * hw] as f64)
        .collect();
    let mut lanes = vec![acc::Lanes::default(); planes.len()];
    for img in 0..n {
        for (i, l) in lanes.iter_mut().enumerate() {
            sums_into(l, plane(img, first + i), ks[i]);
        }
    }
    let count = (n * hw) as f64;
    let stats: Vec<(f32, f32, f32, f32)> = lanes
        .iter()
        .zip(&ks)
        .enumerate()
        .map(|(i, (l, &k))| {
            let (s, q) = l.finish();
            let d = s / count;
            let var = (q / count - d * d).max(0.0);
            let is = 1.0 / (var + j.eps).sqrt();
            let (m, isf) = ((k + d) as f32, is as f32);
            let scale = isf * j.gamma[first + i];
            let shift = j.beta[first + i] - m * scale;
            (m, isf, scale, shift)
        })
        .collect();
    for img in 0..n {
        for (i, chan) in planes.iter_mut().enumerate() {
            let (ch, (_, _, scale, shift)) = (first + i, stats[i]);
            let o = (img * c + ch) * hw;
            let out = &mut *chan[img];
            match j.residual {
                None => affine(out, plane(img, ch), scale, shift, j.relu),
                Some(r) => affine_add(out, plane(img, ch), &r[o..o + hw], scale, shift, j.relu),
            }
        }
    }
    stats.iter().map(|&(m, is, _, _)| (m, is)).collect()
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
    check_bufs(
        op,
        (n, c, hw),
        &[("x", x.len()), ("y", y.len())],
        &[
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("save_mean", save_mean.len()),
            ("save_invstd", save_invstd.len()),
        ],
    )?;
    let wide = super::has_avx512();
    let job = FwdGroup {
        x,
        residual,
        c,
        hw,
        gamma,
        beta,
        eps: eps as f64,
        relu,
    };
    let shape = (c, hw, group_size(c, hw));
    let stats = per_group_out(y, None, shape, |first, planes, _| {
        if wide {
            // SAFETY: `has_avx512()` checked the CPU features.
            unsafe { wide::forward_group(&job, first, planes) }
        } else {
            forward_group(&job, first, planes, acc::shifted_sums_into)
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

/// The per-group bodies compiled for AVX-512, with the explicit AVX-512 sums (the crate's
/// baseline target is SSE2). Rust never contracts mul + add into FMA, so both versions give
/// the same bits.
mod wide {
    use super::{BwdGroup, FwdGroup};

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) fn forward_group(
        j: &FwdGroup<'_>,
        first: usize,
        planes: &mut [Vec<&mut [f32]>],
    ) -> Vec<(f32, f32)> {
        use super::acc::avx512::shifted_sums_into as sums;
        // The closure inherits this function's target features.
        super::forward_group(j, first, planes, |l, p, k| sums(l, p, k))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) fn backward_group(
        j: &BwdGroup<'_>,
        first: usize,
        dx: &mut [Vec<&mut [f32]>],
        dres: Option<&mut [Vec<&mut [f32]>]>,
    ) -> Vec<(f64, f64)> {
        use super::acc::avx512::grad_sums_into as sums;
        // The closure inherits this function's target features.
        super::backward_group(j, first, dx, dres, |l, p, m, a| sums(l, p, m, a))
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn forward_group(
        j: &FwdGroup<'_>,
        first: usize,
        planes: &mut [Vec<&mut [f32]>],
    ) -> Vec<(f32, f32)> {
        super::forward_group(j, first, planes, super::acc::shifted_sums_into)
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn backward_group(
        j: &BwdGroup<'_>,
        first: usize,
        dx: &mut [Vec<&mut [f32]>],
        dres: Option<&mut [Vec<&mut [f32]>]>,
    ) -> Vec<(f64, f64)> {
        super::backward_group(j, first, dx, dres, super::acc::grad_sums_into)
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
    check_running(
        OP,
        c,
        [
            save_mean.len(),
            save_invstd.len(),
            running_mean.len(),
            running_var.len(),
        ],
    )?;
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
    check_bufs(
        op,
        (n, c, hw),
        &[("x", x.len()), ("y", y.len())],
        &[
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("running_mean", running_mean.len()),
            ("running_var", running_var.len()),
        ],
    )?;
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

/// What the training backward of a group of channels reads.
struct BwdGroup<'a> {
    x: &'a [f32],
    y: Option<&'a [f32]>,
    /// beta of a gate recomputed from x.
    gate_beta: Option<&'a [f32]>,
    dy: &'a [f32],
    c: usize,
    hw: usize,
    gamma: &'a [f32],
    mean: &'a [f32],
    invstd: &'a [f32],
}

/// Σ g and Σ g·(x − mean) of the channels first.. (g = dy, gated by the ReLU when there is
/// one), then their dx planes (and dresidual = g). Images are the outer loop, as in
/// `forward_group`. `sums_into` is `acc::grad_sums_into` or its AVX-512 twin.
#[inline(always)]
fn backward_group(
    j: &BwdGroup<'_>,
    first: usize,
    dx: &mut [Vec<&mut [f32]>],
    mut dres: Option<&mut [Vec<&mut [f32]>]>,
    sums_into: impl Fn(&mut acc::Lanes, (&[f32], &[f32], Option<&[f32]>), f32, Option<(f32, f32)>),
) -> Vec<(f64, f64)> {
    let (c, hw) = (j.c, j.hw);
    let n = dx.first().map_or(0, Vec::len);
    let at = |img: usize, ch: usize| (img * c + ch) * hw..(img * c + ch + 1) * hw;
    // (scale, shift) of a gate recomputed from x: exactly the forward's f32 operations.
    let gates: Vec<Option<(f32, f32)>> = (first..first + dx.len())
        .map(|ch| {
            j.gate_beta.map(|beta| {
                let scale = j.invstd[ch] * j.gamma[ch];
                (scale, beta[ch] - j.mean[ch] * scale)
            })
        })
        .collect();
    let mut lanes = vec![acc::Lanes::default(); dx.len()];
    for img in 0..n {
        for (i, l) in lanes.iter_mut().enumerate() {
            let r = at(img, first + i);
            let y = j.y.map(|y| &y[r.clone()]);
            sums_into(
                l,
                (&j.dy[r.clone()], &j.x[r], y),
                j.mean[first + i],
                gates[i],
            );
        }
    }
    // dx = gamma·invstd·(g − mean(g) − (x − mean)·invstd²·mean(g·(x − mean))).
    let count = (n * hw) as f64;
    let sums: Vec<(f64, f64)> = lanes.iter().map(acc::Lanes::finish).collect();
    let coefs: Vec<(f32, f32, f32)> = sums
        .iter()
        .enumerate()
        .map(|(i, &(sdy, sdyx))| {
            let is = j.invstd[first + i] as f64;
            let k = (j.gamma[first + i] as f64 * is) as f32;
            (k, (sdy / count) as f32, (sdyx / count * is * is) as f32)
        })
        .collect();
    for img in 0..n {
        for (i, chan) in dx.iter_mut().enumerate() {
            let ch = first + i;
            let (k, mdy, coef) = coefs[i];
            let m = j.mean[ch];
            let r = at(img, ch);
            let (g, v) = (&j.dy[r.clone()], &j.x[r.clone()]);
            let plane = &mut *chan[img];
            match (j.y, gates[i]) {
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
                    let yr = &y[r];
                    for (((d, &g), &v), &u) in plane.iter_mut().zip(g).zip(v).zip(yr) {
                        let g = if u > 0.0 { g } else { 0.0 };
                        *d = k * (g - mdy - (v - m) * coef);
                    }
                    if let Some(dr) = dres.as_deref_mut() {
                        for ((d, &g), &u) in dr[i][img].iter_mut().zip(g).zip(yr) {
                            *d = if u > 0.0 { g } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
    sums
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
    check_bufs(
        op,
        (n, c, hw),
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
        &[
            ("gamma", gamma.len()),
            ("save_mean", save_mean.len()),
            ("save_invstd", save_invstd.len()),
            ("dgamma", dgamma.len()),
            ("dbeta", dbeta.len()),
        ],
    )?;
    let y = match gate {
        Gate::Output(y) => {
            check_x(op, "y", y.len(), n, c, hw)?;
            Some(y)
        }
        _ => None,
    };
    let gate_beta = match gate {
        Gate::Recompute(beta) => Some(beta),
        _ => None,
    };
    let wide = super::has_avx512();
    let job = BwdGroup {
        x,
        y,
        gate_beta,
        dy,
        c,
        hw,
        gamma,
        mean: save_mean,
        invstd: save_invstd,
    };
    let shape = (c, hw, group_size(c, hw));
    let sums = per_group_out(dx, dres, shape, |first, planes, extra| {
        if wide {
            // SAFETY: `has_avx512()` checked the CPU features.
            unsafe { wide::backward_group(&job, first, planes, extra) }
        } else {
            backward_group(&job, first, planes, extra, acc::grad_sums_into)
        }
    });
    for ch in 0..c {
        dbeta[ch] = sums[ch].0 as f32;
        dgamma[ch] = (sums[ch].1 * save_invstd[ch] as f64) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Forces the channels per task (None: the size `group_size` picks).
        pub(super) static GROUP: Cell<Option<usize>> = const { Cell::new(None) };
    }

    #[test]
    fn results_do_not_depend_on_channel_grouping() {
        let (n, c, hw) = (3usize, 8usize, 20usize);
        let len = n * c * hw;
        let val = |i: usize, s: usize| ((i * 37 + s * 11) % 23) as f32 * 0.13 - 1.4;
        let x: Vec<f32> = (0..len).map(|i| val(i, 1)).collect();
        let r: Vec<f32> = (0..len).map(|i| val(i, 2)).collect();
        let dy: Vec<f32> = (0..len).map(|i| val(i, 3)).collect();
        let g: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * 0.05 - 0.2).collect();
        let run = |group: usize| {
            GROUP.set(Some(group));
            let (mut y, mut m, mut s) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            batch_norm_add_relu_forward_train(
                n, c, hw, &x, &r, &g, &b, 1e-5, &mut y, &mut m, &mut s,
            )
            .unwrap();
            let (mut dx, mut dr) = (vec![0.0; len], vec![0.0; len]);
            let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
            batch_norm_add_relu_backward(
                n, c, hw, &x, &y, &dy, &g, &m, &s, &mut dx, &mut dr, &mut dg, &mut db,
            )
            .unwrap();
            let (mut dx2, mut dg2, mut db2) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            batch_norm_relu_backward(
                n,
                c,
                hw,
                &x,
                &dy,
                (&g, &b),
                &m,
                &s,
                &mut dx2,
                &mut dg2,
                &mut db2,
            )
            .unwrap();
            GROUP.set(None);
            (y, m, s, dx, dr, dg, db, dx2, dg2, db2)
        };
        let one = run(1);
        for group in [3, 8] {
            assert!(
                run(group) == one,
                "group of {group} channels changed the bits"
            );
        }
    }
}
