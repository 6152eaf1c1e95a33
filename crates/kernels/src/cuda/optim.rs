//! CUDA multi-tensor optimizer kernels (kernels/optim.cu): the global gradient norm and the
//! SGD-momentum / AdamW updates of every parameter tensor of a model, one launch each, through
//! a table of per-tensor device addresses (PyTorch's `multi_tensor_apply`).
//!
//! There is no CPU twin in this crate: the rules are those of `crates/nn/src/optim/{sgd,adamw}.rs`
//! (PyTorch semantics), which this crate cannot depend on, so the hyperparameters come as plain
//! structs ([`SgdHyper`], [`AdamWHyper`]) and the per-tensor state the CPU optimizer keeps in its
//! maps (weight decay, momentum buffer created, AdamW step count) comes per tensor
//! ([`SgdSegment`], [`AdamWSegment`]). The host computes the per-tensor coefficients with the
//! CPU code's own expressions (bias corrections in f64), and the kernels use non-contracting
//! round-to-nearest arithmetic in the CPU's order, so a step matches the CPU optimizer bit for
//! bit.
//!
//! A step with [`MultiTensor`]: [`MultiTensor::begin`] with the hyperparameters, one
//! `push_*` per tensor that has a gradient, then optionally [`MultiTensor::grad_sq_norm`] (one
//! launch, one 8-byte read-back) and [`MultiTensor::step`] with the clip factor (one launch).
//! The table goes to the device once per step, into a buffer reused across steps.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::OPTIM;
use crate::error::{KernelError, Result};

/// Threads per block (OPT_THREADS in kernels/optim.cu).
const THREADS: u32 = 256;
/// Elements per block (OPT_CHUNK in kernels/optim.cu).
const CHUNK: usize = 256 * 8;
/// u64 words per table row (sizeof(OptEntry) / 8 in kernels/optim.cu).
const ROW: usize = 8;

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

/// The optimizer of a multi-tensor step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MultiOptim {
    /// SGD with momentum.
    Sgd(SgdHyper),
    /// AdamW.
    AdamW(AdamWHyper),
}

/// What the SGD step does to one tensor that has a gradient (a tensor without one gets no row
/// and is left untouched, as PyTorch does for a parameter whose `.grad` is None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgdSegment {
    /// Weight decay applies to this tensor.
    pub decay: bool,
    /// The momentum buffer already holds a value; when false the step initialises it with the
    /// (decayed) gradient, as PyTorch's first step does, and never reads it.
    pub has_momentum: bool,
}

/// What the AdamW step does to one tensor that has a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdamWSegment {
    /// Weight decay applies to this tensor.
    pub decay: bool,
    /// The tensor's step count including this update (1 on its first update).
    pub step: u64,
}

/// Device addresses of one tensor's buffers (from [`GpuBuffer::device_address`] /
/// [`GpuBuffer::device_address_mut`], plus `4 * offset` for a gradient inside a flat buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorAddrs {
    /// The parameter values (read and written).
    pub param: u64,
    /// The gradient or update direction (read).
    pub grad: u64,
    /// Optimizer state (read and written): SGD `[momentum, 0]` (`[0, 0]` when momentum is 0),
    /// AdamW `[exp_avg, exp_avg_sq]`.
    pub state: [u64; 2],
    /// Elements of each buffer from its address.
    pub len: usize,
}

/// A step's table of tensors and the device buffers it reuses from step to step (table,
/// norm partials, ticket counter). Keep one per model and device handle.
#[derive(Debug)]
pub struct MultiTensor {
    optim: Option<MultiOptim>,
    /// Host rows, ROW words each (the layout of OptEntry).
    rows: Vec<u64>,
    /// Chunks (blocks) of the rows so far.
    chunks: usize,
    /// Whether `table` holds `rows`.
    uploaded: bool,
    table: Option<GpuBuffer<u64>>,
    partials: Option<GpuBuffer<f64>>,
    /// Blocks of the norm launch that finished; 0 between launches (the last block resets it).
    counter: GpuBuffer<u32>,
    sum: GpuBuffer<f64>,
}

impl MultiTensor {
    /// An empty table for launches on `gpu`'s device.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Ok(Self {
            optim: None,
            rows: Vec::new(),
            chunks: 0,
            uploaded: false,
            table: None,
            partials: None,
            counter: gpu.zeros::<u32>(1)?,
            sum: gpu.zeros::<f64>(1)?,
        })
    }

    /// Starts a step with `optim` (validated like the CPU optimizer's config): forgets the rows
    /// of the previous step, keeps the device buffers.
    pub fn begin(&mut self, optim: MultiOptim) -> Result<()> {
        const OP: &str = "cuda::MultiTensor::begin";
        match &optim {
            MultiOptim::Sgd(hp) => check_sgd(OP, hp)?,
            MultiOptim::AdamW(hp) => check_adamw(OP, hp)?,
        }
        self.optim = Some(optim);
        self.rows.clear();
        self.chunks = 0;
        self.uploaded = false;
        Ok(())
    }

    /// Number of tensors in the table.
    pub fn len(&self) -> usize {
        self.rows.len() / ROW
    }

    /// True when no tensor has been pushed since [`MultiTensor::begin`].
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a tensor to an SGD step (after `begin(MultiOptim::Sgd(..))`). A tensor of length 0
    /// adds nothing.
    ///
    /// # Safety
    /// See [`MultiTensor::push_adamw`].
    pub unsafe fn push_sgd(&mut self, t: TensorAddrs, seg: SgdSegment) -> Result<()> {
        const OP: &str = "cuda::MultiTensor::push_sgd";
        let Some(MultiOptim::Sgd(hp)) = self.optim else {
            return Err(KernelError::new(
                OP,
                "the table was not begun for SGD (call begin(MultiOptim::Sgd(..)) first)",
            ));
        };
        let uses_momentum = hp.momentum != 0.0;
        check_addrs(OP, &t, [uses_momentum, false])?;
        let wd = if seg.decay { hp.weight_decay } else { 0.0 };
        let first = if seg.has_momentum { 0.0 } else { 1.0 };
        self.push_row(&t, [wd, first, 0.0, 0.0])
    }

    /// Adds a tensor to an AdamW step (after `begin(MultiOptim::AdamW(..))`). A tensor of
    /// length 0 adds nothing.
    ///
    /// # Safety
    /// Every address of `t` the optimizer uses (param, grad and the states it keeps) points to
    /// at least `t.len` f32 inside one live allocation of the device whose [`Gpu`] handle runs
    /// this table (the emulator: an emulated allocation), and stays allocated until the
    /// launches of this step are queued: the kernels run on that handle's stream, in order,
    /// and buffers dropped after the launch are freed in stream order after it (the emulator
    /// runs launches synchronously). The param and state ranges of the rows do not overlap
    /// each other or any grad range: the kernels write them without synchronisation.
    pub unsafe fn push_adamw(&mut self, t: TensorAddrs, seg: AdamWSegment) -> Result<()> {
        const OP: &str = "cuda::MultiTensor::push_adamw";
        let Some(MultiOptim::AdamW(hp)) = self.optim else {
            return Err(KernelError::new(
                OP,
                "the table was not begun for AdamW (call begin(MultiOptim::AdamW(..)) first)",
            ));
        };
        check_addrs(OP, &t, [true, true])?;
        if seg.step == 0 {
            return Err(KernelError::new(
                OP,
                "step = 0, expected the count including this update (>= 1)",
            ));
        }
        // The expressions of AdamWConfig::update, in the same precisions.
        let (b1, b2, t_f) = (hp.beta1 as f64, hp.beta2 as f64, seg.step as f64);
        let keep = if seg.decay && hp.weight_decay != 0.0 {
            (1.0 - hp.lr as f64 * hp.weight_decay as f64) as f32
        } else {
            1.0
        };
        let bias1 = 1.0 - b1.powf(t_f);
        let bias2_sqrt = (1.0 - b2.powf(t_f)).sqrt() as f32;
        let step_size = (hp.lr as f64 / bias1) as f32;
        self.push_row(&t, [keep, step_size, bias2_sqrt, 0.0])
    }

    fn push_row(&mut self, t: &TensorAddrs, c: [f32; 4]) -> Result<()> {
        const OP: &str = "cuda::MultiTensor::push";
        if t.len == 0 {
            return Ok(());
        }
        if self.len() >= i32::MAX as usize {
            return Err(KernelError::new(OP, "more than i32::MAX tensors"));
        }
        let chunks = self
            .chunks
            .checked_add(t.len.div_ceil(CHUNK))
            .filter(|&c| c <= i32::MAX as usize)
            .ok_or_else(|| KernelError::new(OP, "the tensors need more than 2^31 - 1 blocks"))?;
        let pack = |a: f32, b: f32| u64::from(a.to_bits()) | (u64::from(b.to_bits()) << 32);
        self.rows.extend([
            t.param,
            t.grad,
            t.state[0],
            t.state[1],
            t.len as u64,
            self.chunks as u64,
            pack(c[0], c[1]),
            pack(c[2], c[3]),
        ]);
        self.chunks = chunks;
        self.uploaded = false;
        Ok(())
    }

    /// Copies the rows to the device table (one host-to-device copy), padded to the buffer's
    /// capacity with rows no block selects (len 0, first chunk past the last block).
    fn upload(&mut self, gpu: &Gpu) -> Result<()> {
        if self.uploaded {
            return Ok(());
        }
        let n = self.rows.len();
        match &mut self.table {
            Some(t) if t.len() >= n => {
                let pad = [0, 0, 0, 0, 0, self.chunks as u64, 0, 0];
                while self.rows.len() < t.len() {
                    self.rows.extend(pad);
                }
                let r = gpu.write(&self.rows, t);
                self.rows.truncate(n);
                r?;
            }
            _ => self.table = Some(gpu.upload(&self.rows)?),
        }
        self.uploaded = true;
        Ok(())
    }

    fn table_args(&self) -> (Arg<'_>, Arg<'_>) {
        let table = self.table.as_ref().expect("uploaded before every launch");
        (table.arg(), Arg::i32(self.len() as i32))
    }

    /// Σ g² over the gradients of every row in f64 (deterministic), in one launch and one
    /// read-back of 8 bytes (so it waits for the work queued before). 0 for an empty table.
    pub fn grad_sq_norm(&mut self, gpu: &Gpu) -> Result<f64> {
        if self.is_empty() {
            return Ok(0.0);
        }
        self.upload(gpu)?;
        if self.partials.as_ref().is_none_or(|p| p.len() < self.chunks) {
            // Every block writes its partial before the last block reads them.
            self.partials = Some(gpu.alloc::<f64>(self.chunks)?);
        }
        let table = self.table.as_ref().expect("uploaded above");
        let partials = self.partials.as_mut().expect("allocated above");
        gpu.launch(
            &OPTIM,
            "optim_grad_sq_norm",
            launch_cfg(self.chunks),
            &[
                table.arg(),
                Arg::i32((self.rows.len() / ROW) as i32),
                partials.arg_mut(),
                self.counter.arg_mut(),
                self.sum.arg_mut(),
            ],
        )?;
        Ok(gpu.download(&self.sum)?[0])
    }

    /// The update of every row in one launch, each gradient element multiplied by
    /// `grad_scale` (the clip factor; 1 when not clipping) as it is read. Ends the step: the
    /// rows are forgotten, the next step starts with [`MultiTensor::begin`]. Does not
    /// synchronise.
    pub fn step(&mut self, gpu: &Gpu, grad_scale: f32) -> Result<()> {
        const OP: &str = "cuda::MultiTensor::step";
        let Some(optim) = self.optim else {
            return Err(KernelError::new(OP, "no step begun (call begin first)"));
        };
        if !grad_scale.is_finite() {
            return Err(KernelError::new(
                OP,
                format!("grad_scale must be finite, got {grad_scale}"),
            ));
        }
        if !self.is_empty() {
            self.upload(gpu)?;
            let (table, l) = self.table_args();
            let gs = Arg::f32(grad_scale);
            let cfg = launch_cfg(self.chunks);
            match optim {
                MultiOptim::Sgd(hp) => gpu.launch(
                    &OPTIM,
                    "optim_sgd",
                    cfg,
                    &[
                        table,
                        l,
                        gs,
                        Arg::f32(hp.lr),
                        Arg::f32(hp.momentum),
                        // Same f32 expression as SgdConfig::update.
                        Arg::f32(1.0 - hp.dampening),
                        Arg::i32(i32::from(hp.nesterov)),
                    ],
                )?,
                MultiOptim::AdamW(hp) => gpu.launch(
                    &OPTIM,
                    "optim_adamw",
                    cfg,
                    &[
                        table,
                        l,
                        gs,
                        Arg::f32(hp.beta2),
                        Arg::f32(1.0 - hp.beta1),
                        Arg::f32(1.0 - hp.beta2),
                        Arg::f32(hp.eps),
                    ],
                )?,
            }
        }
        // The addresses may dangle once the caller's borrows end: never launch them again.
        self.optim = None;
        self.rows.clear();
        self.chunks = 0;
        self.uploaded = false;
        Ok(())
    }
}

/// Non-null, f32-aligned addresses for the buffers the optimizer uses (`states[k]`: whether
/// state k is used); a tensor of length 0 needs none.
fn check_addrs(op: &'static str, t: &TensorAddrs, states: [bool; 2]) -> Result<()> {
    if t.len == 0 {
        return Ok(());
    }
    let check = |name: &str, a: u64| {
        if a == 0 || !a.is_multiple_of(4) {
            Err(KernelError::new(
                op,
                format!("{name} address {a:#x} is null or not f32-aligned"),
            ))
        } else {
            Ok(())
        }
    };
    check("param", t.param)?;
    check("grad", t.grad)?;
    for (k, used) in states.into_iter().enumerate() {
        if used {
            check(&format!("state[{k}]"), t.state[k])?;
        }
    }
    Ok(())
}

/// One block per CHUNK elements (`blocks` is at most i32::MAX, checked when pushing).
fn launch_cfg(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
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
