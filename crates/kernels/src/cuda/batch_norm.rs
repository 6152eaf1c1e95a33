//! CUDA twin of [`crate::cpu::batch_norm`] (kernels/batch_norm.cu): batch norm over
//! x [n, c, hw] with training statistics, running statistics, eval mode and the fused ReLU /
//! residual-add epilogues. Same names, argument order and meaning as the CPU functions, with the
//! [`Gpu`] first and the tensors in device memory.
//!
//! Statistics are two-pass partial sums (blocks over (channel, split), then one thread per
//! channel adds its partials in split order): no float atomics, so results are bit-for-bit
//! reproducible, and they follow the CPU's numerics (f64 sums of x − x0 in one pass, the ReLU
//! gate of the fused backward recomputed with the forward's f32 operations).

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::BATCH_NORM;
use crate::cpu::batch_norm as cpu;
use crate::error::{KernelError, Result};

/// Threads per block of every kernel of the family.
const THREADS: u32 = 256;
/// Values of one channel the statistics kernels give one block (about 32 per thread).
const PER_BLOCK: usize = 8192;
/// At most this many blocks per channel (the finishing thread adds them one by one).
const MAX_SPLITS: usize = 1024;
/// At most this many blocks for the element-wise passes (they stride over the rest).
const MAX_APPLY_BLOCKS: usize = 1 << 16;

/// The validated shape, with the integers the kernels take.
#[derive(Clone, Copy, Debug)]
struct Shape {
    n: usize,
    c: usize,
    hw: usize,
}

impl Shape {
    /// n·c planes as a kernel `int`.
    fn planes(&self) -> i32 {
        (self.n * self.c) as i32
    }
}

/// Refuses a zero dimension, as the CPU does, and shapes the kernels' `int` plane and position
/// indices cannot address (n·c and hw must fit in i32; element offsets are 64-bit).
fn check_shape(op: &'static str, n: usize, c: usize, hw: usize) -> Result<Shape> {
    let dims = [("n", n), ("c", c), ("hw", hw)];
    let show = format!("[n={n}, c={c}, hw={hw}]");
    if let Some(&(name, _)) = dims.iter().find(|d| d.1 == 0) {
        return Err(KernelError::new(
            op,
            format!("empty tensor: dimension `{name}` is 0 (shape {show})"),
        ));
    }
    let fits = |v: Option<usize>| v.is_some_and(|v| v <= i32::MAX as usize);
    if !fits(n.checked_mul(c)) || !fits(Some(hw)) || n.checked_mul(c * hw).is_none() {
        return Err(KernelError::new(
            op,
            format!(
                "shape {show} is too large (n·c and hw must each be at most {})",
                i32::MAX
            ),
        ));
    }
    Ok(Shape { n, c, hw })
}

/// Checks that buffer `name` holds n·c·hw values.
fn check_x(op: &'static str, name: &str, len: usize, s: Shape) -> Result<()> {
    cpu::check_x(op, name, len, s.n, s.c, s.hw)
}

/// The CPU's buffer checks ([`cpu::check_bufs`]) for the validated shape.
fn check_bufs(
    op: &'static str,
    s: Shape,
    xs: &[(&str, usize)],
    cs: &[(&str, usize)],
) -> Result<()> {
    cpu::check_bufs(op, (s.n, s.c, s.hw), xs, cs)
}

/// How the statistics kernels split each channel's n·hw values over blocks: ranges of
/// `img_per` images when there are enough images, else single images cut into `splits_pos`
/// ranges of `pos_per` positions. Depends on the shape only, so the sums' order does too.
#[derive(Clone, Copy, Debug)]
struct Splits {
    img_per: usize,
    pos_per: usize,
    splits_pos: usize,
    splits: usize,
}

fn splits(n: usize, hw: usize) -> Splits {
    let want = (n * hw).div_ceil(PER_BLOCK).clamp(1, MAX_SPLITS);
    if want <= n {
        let img_per = n.div_ceil(want);
        Splits {
            img_per,
            pos_per: hw,
            splits_pos: 1,
            splits: n.div_ceil(img_per),
        }
    } else {
        let pos_per = hw.div_ceil(want.div_ceil(n).min(hw));
        let splits_pos = hw.div_ceil(pos_per);
        Splits {
            img_per: 1,
            pos_per,
            splits_pos,
            splits: n * splits_pos,
        }
    }
}

/// Launch of a statistics kernel: one block per (channel, split).
fn partial_cfg(op: &'static str, c: usize, sp: Splits) -> Result<LaunchConfig> {
    let blocks = u32::try_from(c * sp.splits)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| KernelError::new(op, format!("c = {c} needs too many blocks")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Launch of a per-channel kernel: one thread per channel.
fn channel_cfg(c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c.div_ceil(THREADS as usize) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launch of an element-wise pass: tiles of 256 / min(hw, 256) planes per block.
fn apply_cfg(s: Shape) -> LaunchConfig {
    let rows = THREADS as usize / s.hw.min(THREADS as usize);
    let tiles = (s.n * s.c).div_ceil(rows).clamp(1, MAX_APPLY_BLOCKS);
    LaunchConfig {
        grid_dim: (tiles as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The kernels' shape arguments (n, c, hw) and split arguments.
fn split_args<'a>(s: Shape, sp: Splits) -> [Arg<'a>; 7] {
    [
        Arg::i32(s.n as i32),
        Arg::i32(s.c as i32),
        Arg::i32(s.hw as i32),
        Arg::i32(sp.img_per as i32),
        Arg::i32(sp.pos_per as i32),
        Arg::i32(sp.splits_pos as i32),
        Arg::i32(sp.splits as i32),
    ]
}

/// Training-mode forward: y = (x − mean)·invstd·gamma + beta with the batch statistics, which
/// it also stores (save_mean, save_invstd = 1/sqrt(var + eps), biased variance; each [c]).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    eps: f32,
    y: &mut GpuBuffer<f32>,
    save_mean: &mut GpuBuffer<f32>,
    save_invstd: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_forward_train";
    forward_train(
        gpu,
        op,
        false,
        (n, c, hw),
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
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    eps: f32,
    y: &mut GpuBuffer<f32>,
    save_mean: &mut GpuBuffer<f32>,
    save_invstd: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_relu_forward_train";
    forward_train(
        gpu,
        op,
        true,
        (n, c, hw),
        (x, None),
        (gamma, beta),
        eps,
        y,
        save_mean,
        save_invstd,
    )
}

/// Fused training-mode batch norm, residual add and ReLU: y = max(bn(x) + residual, 0)
/// (backward: `batch_norm_add_relu_backward`). Statistics as in `batch_norm_forward_train`
/// (of x alone).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_add_relu_forward_train(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    residual: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    eps: f32,
    y: &mut GpuBuffer<f32>,
    save_mean: &mut GpuBuffer<f32>,
    save_invstd: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_add_relu_forward_train";
    forward_train(
        gpu,
        op,
        true,
        (n, c, hw),
        (x, Some(residual)),
        (gamma, beta),
        eps,
        y,
        save_mean,
        save_invstd,
    )
}

#[allow(clippy::too_many_arguments)]
fn forward_train(
    gpu: &Gpu,
    op: &'static str,
    relu: bool,
    (n, c, hw): (usize, usize, usize),
    (x, residual): (&GpuBuffer<f32>, Option<&GpuBuffer<f32>>),
    (gamma, beta): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    eps: f32,
    y: &mut GpuBuffer<f32>,
    save_mean: &mut GpuBuffer<f32>,
    save_invstd: &mut GpuBuffer<f32>,
) -> Result<()> {
    let s = check_shape(op, n, c, hw)?;
    if let Some(r) = residual {
        check_x(op, "residual", r.len(), s)?;
    }
    check_bufs(
        op,
        s,
        &[("x", x.len()), ("y", y.len())],
        &[
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("save_mean", save_mean.len()),
            ("save_invstd", save_invstd.len()),
        ],
    )?;
    let sp = splits(s.n, s.hw);
    // Both are fully written before they are read: every (split, channel) partial by its
    // block, every coefficient by its channel's thread.
    let mut part = gpu.alloc::<f64>(2 * sp.splits * c)?;
    let mut coef = gpu.alloc::<f32>(2 * c)?;
    let mut args = vec![x.arg()];
    args.extend(split_args(s, sp));
    args.push(part.arg_mut());
    gpu.launch(
        &BATCH_NORM,
        "bn_fwd_partial",
        partial_cfg(op, c, sp)?,
        &args,
    )?;
    gpu.launch(
        &BATCH_NORM,
        "bn_fwd_finish",
        channel_cfg(c),
        &[
            part.arg(),
            Arg::i32(sp.splits as i32),
            Arg::i32(c as i32),
            x.arg(),
            Arg::i32(s.hw as i32),
            Arg::f64((s.n * s.hw) as f64),
            gamma.arg(),
            beta.arg(),
            Arg::f32(eps),
            save_mean.arg_mut(),
            save_invstd.arg_mut(),
            coef.arg_mut(),
        ],
    )?;
    apply(gpu, s, x, residual, &coef, relu, y)
}

/// y = x·scale + shift (+ residual), clamped at 0 when `relu`, with coef = [scale; shift].
fn apply(
    gpu: &Gpu,
    s: Shape,
    x: &GpuBuffer<f32>,
    residual: Option<&GpuBuffer<f32>>,
    coef: &GpuBuffer<f32>,
    relu: bool,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    gpu.launch(
        &BATCH_NORM,
        "bn_apply",
        apply_cfg(s),
        &[
            x.arg(),
            residual.into(),
            coef.arg(),
            Arg::i32(s.planes()),
            Arg::i32(s.c as i32),
            Arg::i32(s.hw as i32),
            Arg::i32(relu as i32),
            y.arg_mut(),
        ],
    )
}

/// Updates running statistics: running = (1 − momentum)·running + momentum·batch, where the
/// batch variance is made unbiased with `count` = n·hw (PyTorch's default momentum is 0.1).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_update_running(
    gpu: &Gpu,
    c: usize,
    count: usize,
    save_mean: &GpuBuffer<f32>,
    save_invstd: &GpuBuffer<f32>,
    eps: f32,
    momentum: f32,
    running_mean: &mut GpuBuffer<f32>,
    running_var: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::batch_norm_update_running";
    if c == 0 {
        return Err(KernelError::new(
            OP,
            "empty tensor: dimension `c` is 0 (shape [c=0])",
        ));
    }
    if c > i32::MAX as usize {
        return Err(KernelError::new(OP, format!("c = {c} does not fit in i32")));
    }
    if count < 2 {
        return Err(KernelError::new(
            OP,
            format!("expected more than 1 value per channel (count = n·hw = {count})"),
        ));
    }
    cpu::check_running(
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
    gpu.launch(
        &BATCH_NORM,
        "bn_update_running",
        channel_cfg(c),
        &[
            save_mean.arg(),
            save_invstd.arg(),
            Arg::f32(eps),
            Arg::f32(momentum),
            Arg::f64(unbias),
            Arg::i32(c as i32),
            running_mean.arg_mut(),
            running_var.arg_mut(),
        ],
    )
}

/// Eval-mode forward with the running statistics:
/// y = (x − running_mean)/sqrt(running_var + eps)·gamma + beta.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_eval(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    running_mean: &GpuBuffer<f32>,
    running_var: &GpuBuffer<f32>,
    eps: f32,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_forward_eval";
    let stats = (running_mean, running_var);
    forward_eval(gpu, op, false, (n, c, hw), x, (gamma, beta), stats, eps, y)
}

/// Fused eval-mode batch norm + ReLU: y = max(bn_eval(x), 0) in one pass.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_forward_eval(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    running_mean: &GpuBuffer<f32>,
    running_var: &GpuBuffer<f32>,
    eps: f32,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_relu_forward_eval";
    let stats = (running_mean, running_var);
    forward_eval(gpu, op, true, (n, c, hw), x, (gamma, beta), stats, eps, y)
}

/// The CPU's refusal of a non-positive (or NaN) `running_var + eps`, on host variances: run
/// it where the statistics come from the host, before they reach the device.
pub fn check_running_var(op: &'static str, running_var: &[f32], eps: f32) -> Result<()> {
    match running_var
        .iter()
        .position(|&v| (v + eps).is_nan() || v + eps <= 0.0)
    {
        Some(ch) => Err(KernelError::new(
            op,
            format!(
                "running_var[{ch}] + eps = {} is not positive",
                running_var[ch] + eps
            ),
        )),
        None => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_eval(
    gpu: &Gpu,
    op: &'static str,
    relu: bool,
    (n, c, hw): (usize, usize, usize),
    x: &GpuBuffer<f32>,
    (gamma, beta): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    (running_mean, running_var): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    eps: f32,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let s = check_shape(op, n, c, hw)?;
    check_bufs(
        op,
        s,
        &[("x", x.len()), ("y", y.len())],
        &[
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("running_mean", running_mean.len()),
            ("running_var", running_var.len()),
        ],
    )?;
    // The CPU refuses a non-positive running_var + eps. Here the variances are on the device
    // and checking them would read them back (a synchronisation per BN layer): they are
    // checked where they enter instead, on the host (check_running_var: the autograd op's host
    // statistics, ParamStore::set_values for loaded ones), and our own running updates keep
    // them non-negative. A bad one that got past gives NaN outputs for its channel.
    // Fully written by bn_eval_coef (one thread per channel) before bn_apply reads it.
    let mut coef = gpu.alloc::<f32>(2 * c)?;
    gpu.launch(
        &BATCH_NORM,
        "bn_eval_coef",
        channel_cfg(c),
        &[
            gamma.arg(),
            beta.arg(),
            running_mean.arg(),
            running_var.arg(),
            Arg::f32(eps),
            Arg::i32(c as i32),
            coef.arg_mut(),
        ],
    )?;
    apply(gpu, s, x, None, &coef, relu, y)
}

/// Training-mode backward: dx, dgamma = Σ dy·x̂, dbeta = Σ dy (all overwritten), with the
/// statistics saved by `batch_norm_forward_train`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    save_mean: &GpuBuffer<f32>,
    save_invstd: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
    dgamma: &mut GpuBuffer<f32>,
    dbeta: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_backward";
    let stats = (save_mean, save_invstd);
    backward(
        gpu,
        op,
        (n, c, hw),
        (x, dy, Gate::None),
        gamma,
        stats,
        (dx, None),
        (dgamma, dbeta),
    )
}

/// Backward of `batch_norm_relu_forward_train`: the same results as `relu_backward` then
/// `batch_norm_backward`, without the intermediate buffer. The ReLU gate (y > 0) is
/// recomputed from x with the forward's exact f32 arithmetic, so y is not read.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    (gamma, beta): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    save_mean: &GpuBuffer<f32>,
    save_invstd: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
    dgamma: &mut GpuBuffer<f32>,
    dbeta: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_relu_backward";
    let stats = (save_mean, save_invstd);
    backward(
        gpu,
        op,
        (n, c, hw),
        (x, dy, Gate::Recompute(beta)),
        gamma,
        stats,
        (dx, None),
        (dgamma, dbeta),
    )
}

/// Backward of `batch_norm_add_relu_forward_train` from its output y: with g = dy where
/// y > 0, dresidual = g and dx, dgamma, dbeta are the batch-norm backward of g (all
/// overwritten).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_add_relu_backward(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    x: &GpuBuffer<f32>,
    y: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    save_mean: &GpuBuffer<f32>,
    save_invstd: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
    dresidual: &mut GpuBuffer<f32>,
    dgamma: &mut GpuBuffer<f32>,
    dbeta: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::batch_norm_add_relu_backward";
    let stats = (save_mean, save_invstd);
    backward(
        gpu,
        op,
        (n, c, hw),
        (x, dy, Gate::Output(y)),
        gamma,
        stats,
        (dx, Some(dresidual)),
        (dgamma, dbeta),
    )
}

/// Which ReLU gate a backward applies to dy.
#[derive(Clone, Copy)]
enum Gate<'a> {
    /// No ReLU.
    None,
    /// The fused output y: dy passes where y > 0.
    Output(&'a GpuBuffer<f32>),
    /// Recomputed from x with the forward's f32 operations (this is beta).
    Recompute(&'a GpuBuffer<f32>),
}

#[allow(clippy::too_many_arguments)]
fn backward(
    gpu: &Gpu,
    op: &'static str,
    (n, c, hw): (usize, usize, usize),
    (x, dy, gate): (&GpuBuffer<f32>, &GpuBuffer<f32>, Gate<'_>),
    gamma: &GpuBuffer<f32>,
    (save_mean, save_invstd): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    (dx, dres): (&mut GpuBuffer<f32>, Option<&mut GpuBuffer<f32>>),
    (dgamma, dbeta): (&mut GpuBuffer<f32>, &mut GpuBuffer<f32>),
) -> Result<()> {
    // The checks of the gated variants come first, in the order the entry points list them.
    let s = check_shape(op, n, c, hw)?;
    match gate {
        Gate::None => {}
        Gate::Recompute(beta) => cpu::check_c(op, "beta", beta.len(), c)?,
        Gate::Output(y) => check_x(op, "y", y.len(), s)?,
    }
    if let Some(d) = &dres {
        check_x(op, "dresidual", d.len(), s)?;
    }
    check_bufs(
        op,
        s,
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
        &[
            ("gamma", gamma.len()),
            ("save_mean", save_mean.len()),
            ("save_invstd", save_invstd.len()),
            ("dgamma", dgamma.len()),
            ("dbeta", dbeta.len()),
        ],
    )?;
    let (y, beta) = match gate {
        Gate::None => (None, None),
        Gate::Output(y) => (Some(y), None),
        Gate::Recompute(b) => (None, Some(b)),
    };
    let sp = splits(s.n, s.hw);
    // Both fully written before they are read, as in `forward_train`.
    let mut part = gpu.alloc::<f64>(2 * sp.splits * c)?;
    let mut coef = gpu.alloc::<f32>(3 * c)?;
    let mut args = vec![
        x.arg(),
        dy.arg(),
        y.into(),
        gamma.arg(),
        beta.into(),
        save_mean.arg(),
        save_invstd.arg(),
    ];
    args.extend(split_args(s, sp));
    args.push(part.arg_mut());
    gpu.launch(
        &BATCH_NORM,
        "bn_bwd_partial",
        partial_cfg(op, c, sp)?,
        &args,
    )?;
    gpu.launch(
        &BATCH_NORM,
        "bn_bwd_finish",
        channel_cfg(c),
        &[
            part.arg(),
            Arg::i32(sp.splits as i32),
            Arg::i32(c as i32),
            Arg::f64((s.n * s.hw) as f64),
            gamma.arg(),
            save_invstd.arg(),
            dgamma.arg_mut(),
            dbeta.arg_mut(),
            coef.arg_mut(),
        ],
    )?;
    gpu.launch(
        &BATCH_NORM,
        "bn_bwd_apply",
        apply_cfg(s),
        &[
            x.arg(),
            dy.arg(),
            y.into(),
            gamma.arg(),
            beta.into(),
            save_mean.arg(),
            save_invstd.arg(),
            coef.arg(),
            Arg::i32(s.planes()),
            Arg::i32(c as i32),
            Arg::i32(s.hw as i32),
            dx.arg_mut(),
            dres.map_or_else(Arg::null, GpuBuffer::arg_mut),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_each_channel_exactly_once() {
        for (n, hw) in [
            (1, 1),
            (1, 20_000),
            (2, 9_000),
            (3, 5),
            (5, 2_000),
            (256, 16),
            (256, 1024),
            (7, 100_000),
        ] {
            let sp = splits(n, hw);
            assert!(
                (1..=2 * MAX_SPLITS).contains(&sp.splits),
                "{n}x{hw}: {sp:?}"
            );
            let mut seen = vec![0u8; n * hw];
            for s in 0..sp.splits {
                let (si, sq) = (s / sp.splits_pos, s % sp.splits_pos);
                let (i0, q0) = (si * sp.img_per, sq * sp.pos_per);
                let (i1, q1) = ((i0 + sp.img_per).min(n), (q0 + sp.pos_per).min(hw));
                assert!(i0 < i1 && q0 < q1, "{n}x{hw}: split {s} is empty ({sp:?})");
                for i in i0..i1 {
                    for q in q0..q1 {
                        seen[i * hw + q] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&v| v == 1), "{n}x{hw}: {sp:?}");
        }
    }
}
