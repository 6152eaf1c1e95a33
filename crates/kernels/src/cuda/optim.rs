//! CUDA fused optimizer updates (SGD with momentum, AdamW) (kernels/optim.cu): one launch
//! updates every parameter of a model held in flat device buffers.
//!
//! There is no CPU twin in this crate: the rules are those of `crates/nn/src/optim/{sgd,adamw}.rs`
//! (PyTorch semantics), which this crate cannot depend on, so the hyperparameters come as plain
//! structs ([`SgdHyper`], [`AdamWHyper`]) and the per-tensor state the CPU optimizer keeps in its
//! maps (gradient present this step, weight decay, momentum buffer created, AdamW step count)
//! comes per segment ([`SgdSegment`], [`AdamWSegment`]). The host computes the per-segment
//! coefficients with the CPU code's own expressions (bias corrections in f64), and the kernels
//! use non-contracting round-to-nearest arithmetic in the CPU's order, so a step matches the CPU
//! optimizer bit for bit.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::OPTIM;
use crate::cpu::grad_gram::check_segments;
use crate::error::{KernelError, Result, check_len};

/// Threads per block (OPT_THREADS in kernels/optim.cu).
const THREADS: u32 = 256;
/// Flat elements per block (OPT_CHUNK in kernels/optim.cu).
const CHUNK: usize = 256 * 8;

/// Hyperparameters of `torch.optim.SGD` for one step (mirrors `scalarize_nn::optim::SgdConfig`
/// plus the scheduled learning rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    /// Learning rate of this step.
    pub lr: f32,
    /// Momentum factor (0 disables the buffer).
    pub momentum: f32,
    /// Dampening of the gradient added to the buffer.
    pub dampening: f32,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`g + wd * p`) of tensors that decay.
    pub weight_decay: f32,
}

/// Hyperparameters of `torch.optim.AdamW` for one step (mirrors
/// `scalarize_nn::optim::AdamWConfig` plus the scheduled learning rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    /// Learning rate of this step.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay (`p *= 1 - lr * wd`) of tensors that decay.
    pub weight_decay: f32,
}

/// What the SGD step does to one parameter tensor (segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgdSegment {
    /// The tensor has a gradient this step; when false it is left untouched (no decay, no
    /// momentum step), as PyTorch does for a parameter whose `.grad` is None.
    pub active: bool,
    /// Weight decay applies to this tensor.
    pub decay: bool,
    /// The momentum buffer already holds a value; when false the step initialises it with the
    /// (decayed) gradient, as PyTorch's first step does, and never reads it.
    pub has_momentum: bool,
}

/// What the AdamW step does to one parameter tensor (segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdamWSegment {
    /// The tensor has a gradient this step; when false it is left untouched.
    pub active: bool,
    /// Weight decay applies to this tensor.
    pub decay: bool,
    /// The tensor's step count including this update (1 on its first update); ignored when
    /// inactive.
    pub step: u64,
}

/// The tensor layout of a flat parameter buffer, with its segment table on the device; build it
/// once per model and reuse it every step.
#[derive(Debug)]
pub struct FlatSegments {
    ends: Vec<usize>,
    d_ends: GpuBuffer<i64>,
}

impl FlatSegments {
    /// Segments with cumulative ends `segment_ends` (strictly increasing, one per tensor; the
    /// last is the total element count).
    pub fn new(gpu: &Gpu, segment_ends: &[usize]) -> Result<Self> {
        const OP: &str = "cuda::FlatSegments::new";
        let Some(&n) = segment_ends.last() else {
            return Err(KernelError::new(
                OP,
                "segment_ends is empty, expected at least one segment",
            ));
        };
        check_segments(OP, n, segment_ends)?;
        i32::try_from(segment_ends.len())
            .map_err(|_| KernelError::new(OP, "more than i32::MAX segments"))?;
        let ends64: Vec<i64> = segment_ends.iter().map(|&e| e as i64).collect();
        Ok(Self {
            ends: segment_ends.to_vec(),
            d_ends: gpu.upload(&ends64)?,
        })
    }

    /// Segments of the given (non-zero) lengths, in order.
    pub fn from_lens(gpu: &Gpu, lens: &[usize]) -> Result<Self> {
        let mut ends = Vec::with_capacity(lens.len());
        let mut acc = 0usize;
        for &l in lens {
            acc = acc.checked_add(l).ok_or_else(|| {
                KernelError::new("cuda::FlatSegments::from_lens", "total length overflows")
            })?;
            ends.push(acc);
        }
        Self::new(gpu, &ends)
    }

    /// Total number of elements.
    pub fn len(&self) -> usize {
        *self.ends.last().expect("at least one segment")
    }

    /// Always false: every segment holds at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of segments (tensors).
    pub fn num_segments(&self) -> usize {
        self.ends.len()
    }

    /// Cumulative segment ends.
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }
}

/// One block per CHUNK flat elements.
fn launch_cfg(op: &'static str, n: usize) -> Result<LaunchConfig> {
    let blocks = u32::try_from(n.div_ceil(CHUNK))
        .map_err(|_| KernelError::new(op, format!("{n} elements need too many blocks")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Same checks as `SgdConfig::validate` in crates/nn (PyTorch's constraints), plus the rate.
fn check_sgd(op: &'static str, hp: &SgdHyper) -> Result<()> {
    let bad = |msg: String| Err(KernelError::new(op, msg));
    if !hp.lr.is_finite() {
        return bad(format!("lr must be finite, got {}", hp.lr));
    }
    if !(hp.momentum >= 0.0 && hp.momentum.is_finite()) {
        return bad(format!("momentum must be >= 0, got {}", hp.momentum));
    }
    if !(hp.weight_decay >= 0.0 && hp.weight_decay.is_finite()) {
        return bad(format!(
            "weight_decay must be >= 0, got {}",
            hp.weight_decay
        ));
    }
    if !hp.dampening.is_finite() {
        return bad(format!("dampening must be finite, got {}", hp.dampening));
    }
    if hp.nesterov && (hp.momentum <= 0.0 || hp.dampening != 0.0) {
        return bad(format!(
            "Nesterov momentum requires momentum > 0 and dampening 0, got momentum {} \
             dampening {}",
            hp.momentum, hp.dampening
        ));
    }
    Ok(())
}

/// Same checks as `AdamWConfig::validate` in crates/nn, plus the rate.
fn check_adamw(op: &'static str, hp: &AdamWHyper) -> Result<()> {
    let bad = |msg: String| Err(KernelError::new(op, msg));
    if !hp.lr.is_finite() {
        return bad(format!("lr must be finite, got {}", hp.lr));
    }
    let ok_beta = |b: f32| (0.0..1.0).contains(&b);
    if !ok_beta(hp.beta1) || !ok_beta(hp.beta2) {
        return bad(format!(
            "betas must be in [0, 1), got ({}, {})",
            hp.beta1, hp.beta2
        ));
    }
    if !(hp.eps >= 0.0 && hp.eps.is_finite()) {
        return bad(format!("eps must be >= 0, got {}", hp.eps));
    }
    if !(hp.weight_decay >= 0.0 && hp.weight_decay.is_finite()) {
        return bad(format!(
            "weight_decay must be >= 0, got {}",
            hp.weight_decay
        ));
    }
    Ok(())
}

/// One SGD step (`torch.optim.SGD`) of every tensor of the flat `params` in one launch, with
/// the flat gradient `grads` and momentum buffer `momentum` (same layout; may be None only when
/// `hp.momentum == 0`). `segments[k]` says what happens to tensor k. The caller records the
/// momentum buffers created by this step (`has_momentum` becomes true for active tensors).
/// Does not synchronise.
pub fn sgd_step(
    gpu: &Gpu,
    hp: &SgdHyper,
    layout: &FlatSegments,
    segments: &[SgdSegment],
    params: &mut GpuBuffer<f32>,
    grads: &GpuBuffer<f32>,
    momentum: Option<&mut GpuBuffer<f32>>,
) -> Result<()> {
    const OP: &str = "cuda::sgd_step";
    check_sgd(OP, hp)?;
    let n = layout.len();
    check_len(OP, "params", params.len(), n)?;
    check_len(OP, "grads", grads.len(), n)?;
    check_len(OP, "segments", segments.len(), layout.num_segments())?;
    match &momentum {
        Some(m) => check_len(OP, "momentum", m.len(), n)?,
        None if hp.momentum != 0.0 => {
            return Err(KernelError::new(
                OP,
                format!(
                    "momentum = {} needs a momentum buffer, got None",
                    hp.momentum
                ),
            ));
        }
        None => {}
    }
    let mut coef = Vec::with_capacity(segments.len() * 2);
    for s in segments {
        let mode = match (s.active, s.has_momentum) {
            (false, _) => 0.0f32,
            (true, false) => 1.0,
            (true, true) => 2.0,
        };
        coef.push(mode);
        coef.push(if s.decay { hp.weight_decay } else { 0.0 });
    }
    let d_coef = gpu.upload(&coef)?;
    gpu.launch(
        &OPTIM,
        "optim_sgd",
        launch_cfg(OP, n)?,
        &[
            params.arg_mut(),
            grads.arg(),
            momentum.map_or_else(Arg::null, GpuBuffer::arg_mut),
            layout.d_ends.arg(),
            d_coef.arg(),
            Arg::i32(layout.num_segments() as i32),
            Arg::i64(n as i64),
            Arg::f32(hp.lr),
            Arg::f32(hp.momentum),
            // Same f32 expression as SgdConfig::update.
            Arg::f32(1.0 - hp.dampening),
            Arg::i32(i32::from(hp.nesterov)),
        ],
    )
}

/// One AdamW step (`torch.optim.AdamW`, no amsgrad) of every tensor of the flat `params` in one
/// launch, with the flat gradient `grads` and moments `exp_avg`, `exp_avg_sq` (same layout;
/// zeros before a tensor's first step). `segments[k]` says what happens to tensor k, including
/// its own step count. Does not synchronise.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    gpu: &Gpu,
    hp: &AdamWHyper,
    layout: &FlatSegments,
    segments: &[AdamWSegment],
    params: &mut GpuBuffer<f32>,
    grads: &GpuBuffer<f32>,
    exp_avg: &mut GpuBuffer<f32>,
    exp_avg_sq: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::adamw_step";
    check_adamw(OP, hp)?;
    let n = layout.len();
    check_len(OP, "params", params.len(), n)?;
    check_len(OP, "grads", grads.len(), n)?;
    check_len(OP, "exp_avg", exp_avg.len(), n)?;
    check_len(OP, "exp_avg_sq", exp_avg_sq.len(), n)?;
    check_len(OP, "segments", segments.len(), layout.num_segments())?;
    let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
    let mut coef = Vec::with_capacity(segments.len() * 4);
    for (k, s) in segments.iter().enumerate() {
        if !s.active {
            coef.extend([0.0f32, 1.0, 0.0, 1.0]);
            continue;
        }
        if s.step == 0 {
            return Err(KernelError::new(
                OP,
                format!("segments[{k}].step = 0, expected the count including this update (>= 1)"),
            ));
        }
        // The expressions of AdamWConfig::update, in the same precisions.
        let t = s.step as f64;
        let keep = if s.decay && hp.weight_decay != 0.0 {
            (1.0 - hp.lr as f64 * hp.weight_decay as f64) as f32
        } else {
            1.0
        };
        let bias1 = 1.0 - b1.powf(t);
        let bias2_sqrt = (1.0 - b2.powf(t)).sqrt() as f32;
        let step_size = (hp.lr as f64 / bias1) as f32;
        coef.extend([1.0, keep, step_size, bias2_sqrt]);
    }
    let d_coef = gpu.upload(&coef)?;
    gpu.launch(
        &OPTIM,
        "optim_adamw",
        launch_cfg(OP, n)?,
        &[
            params.arg_mut(),
            grads.arg(),
            exp_avg.arg_mut(),
            exp_avg_sq.arg_mut(),
            layout.d_ends.arg(),
            d_coef.arg(),
            Arg::i32(layout.num_segments() as i32),
            Arg::i64(n as i64),
            Arg::f32(hp.beta2),
            Arg::f32(1.0 - hp.beta1),
            Arg::f32(1.0 - hp.beta2),
            Arg::f32(hp.eps),
        ],
    )
}
