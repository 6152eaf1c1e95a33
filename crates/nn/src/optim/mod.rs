//! Optimizers (SGD, AdamW) on flat f32 buffers keyed by parameter name, learning-rate
//! schedules and global gradient-norm clipping, all with PyTorch semantics.

mod adamw;
mod clip;
mod device;

pub(crate) use device::DeviceParam;
mod schedule;
mod sgd;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::layout::ParamKind;

pub use adamw::{AdamWConfig, AdamWState};
pub use clip::{clip_coef, clip_grad_norm, global_grad_norm};
pub use schedule::{Schedule, ScheduleKind};
pub use sgd::SgdConfig;

/// Which optimizer, with its hyperparameters (TOML/JSON: `kind = "sgd"` or `"adamw"` plus the
/// fields of [`SgdConfig`] / [`AdamWConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.AdamW`.
    AdamW(AdamWConfig),
}

/// Prefixes of optimizer-state tensor names in checkpoints (`optim.momentum.{param}`, ...).
pub const MOMENTUM_PREFIX: &str = "optim.momentum.";
/// First-moment prefix.
pub const EXP_AVG_PREFIX: &str = "optim.exp_avg.";
/// Second-moment prefix.
pub const EXP_AVG_SQ_PREFIX: &str = "optim.exp_avg_sq.";

/// An optimizer with its per-parameter state (in host memory, or on the device for the
/// parameters a device step (`Model::step` on a GPU) has updated since the last
/// [`Optimizer::to_host`]).
pub struct Optimizer {
    config: OptimizerConfig,
    no_decay_norm_bias: bool,
    momentum: BTreeMap<String, Vec<f32>>,
    adamw: BTreeMap<String, AdamWState>,
    device: device::DeviceState,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("config", &self.config)
            .field("no_decay_norm_bias", &self.no_decay_norm_bias)
            .field("host_momentum", &self.momentum.len())
            .field("host_adamw", &self.adamw.len())
            .field("device_momentum", &self.device.momentum.len())
            .field("device_adamw", &self.device.adamw.len())
            .finish()
    }
}

/// A clone holds the state in host memory (device state is read back first); it panics only
/// if that read fails (a lost device), like [`scalarize_autograd::Tensor::to_vec`].
impl Clone for Optimizer {
    fn clone(&self) -> Self {
        let mut o = Optimizer {
            config: self.config,
            no_decay_norm_bias: self.no_decay_norm_bias,
            momentum: self.momentum.clone(),
            adamw: self.adamw.clone(),
            device: device::DeviceState::default(),
        };
        if let Err(e) = self.device_state_into(&mut o.momentum, &mut o.adamw) {
            panic!("reading optimizer state back from the device failed: {e}");
        }
        o
    }
}

/// Equal configuration and equal state, wherever it is held.
impl PartialEq for Optimizer {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.clone(), other.clone());
        a.config == b.config
            && a.no_decay_norm_bias == b.no_decay_norm_bias
            && a.momentum == b.momentum
            && a.adamw == b.adamw
    }
}

impl Optimizer {
    /// A new optimizer. With `no_decay_norm_bias`, weight decay applies only to conv and
    /// linear weight matrices ([`ParamKind::Weight`]), not to biases, norms or embeddings.
    pub fn new(config: OptimizerConfig, no_decay_norm_bias: bool) -> Result<Self> {
        match &config {
            OptimizerConfig::Sgd(c) => c.validate()?,
            OptimizerConfig::AdamW(c) => c.validate()?,
        }
        Ok(Optimizer {
            config,
            no_decay_norm_bias,
            momentum: BTreeMap::new(),
            adamw: BTreeMap::new(),
            device: device::DeviceState::default(),
        })
    }

    /// Adds the device state to host maps (device values win: they are newer).
    fn device_state_into(
        &self,
        momentum: &mut BTreeMap<String, Vec<f32>>,
        adamw: &mut BTreeMap<String, AdamWState>,
    ) -> Result<()> {
        let Some(gpu) = &self.device.gpu else {
            return Ok(());
        };
        let read = |b: &scalarize_kernels::cuda::GpuBuffer<f32>| {
            gpu.download(b)
                .map_err(|e| NnError::invalid("optimizer state", e.to_string()))
        };
        for (n, b) in &self.device.momentum {
            momentum.insert(n.clone(), read(b)?);
        }
        for (n, s) in &self.device.adamw {
            let st = AdamWState {
                step: s.step,
                exp_avg: read(&s.exp_avg)?,
                exp_avg_sq: read(&s.exp_avg_sq)?,
            };
            adamw.insert(n.clone(), st);
        }
        Ok(())
    }

    /// Moves all device-held state back to host memory (before a checkpoint; the next device
    /// update moves it back).
    pub fn to_host(&mut self) -> Result<()> {
        let (mut m, mut a) = (
            std::mem::take(&mut self.momentum),
            std::mem::take(&mut self.adamw),
        );
        let r = self.device_state_into(&mut m, &mut a);
        self.momentum = m;
        self.adamw = a;
        r?;
        self.device = device::DeviceState::default();
        Ok(())
    }

    /// One update of every parameter in `params` (each with its device gradient, same rules
    /// as [`Optimizer::update`]) in one multi-tensor launch on `gpu`, clipping the gradients'
    /// global norm to `max_grad_norm` if given as [`clip_grad_norm`] does. Returns the norm
    /// before clipping when it was computed (with clipping or `want_norm`; one launch and one
    /// read-back). The state of these parameters moves to the device. Nothing changes on an
    /// error found before the launch (bad lengths, a non-finite norm when clipping).
    ///
    /// # Safety
    /// Every `value` and `grad` address of `params` points to `len` f32 inside one live
    /// allocation of `gpu`'s device, allocated until this call returns (the launches are
    /// queued on `gpu`'s stream before it returns, and buffers dropped later are freed in
    /// stream order after them); no `value` range overlaps another `value` or any `grad`
    /// range (the kernel writes them without synchronisation); names are distinct.
    pub(crate) unsafe fn step_device(
        &mut self,
        gpu: &std::sync::Arc<scalarize_kernels::cuda::Gpu>,
        params: &[device::DeviceParam<'_>],
        lr: f32,
        max_grad_norm: Option<f32>,
        want_norm: bool,
    ) -> Result<Option<f32>> {
        for p in params {
            check_update(p.name, p.kind, p.len, p.grad_len)?;
            // The kernel writes the state through raw addresses: every held buffer (host or
            // device) must have the parameter's length.
            let (d, n) = (&self.device, p.name);
            let lens: Vec<usize> = match self.config {
                OptimizerConfig::Sgd(_) => {
                    let host = self.momentum.get(n).map(Vec::len);
                    host.into_iter()
                        .chain(d.momentum.get(n).map(|b| b.len()))
                        .collect()
                }
                OptimizerConfig::AdamW(_) => {
                    let host = self
                        .adamw
                        .get(n)
                        .map(|s| [s.exp_avg.len(), s.exp_avg_sq.len()]);
                    let dev = d
                        .adamw
                        .get(n)
                        .map(|s| [s.exp_avg.len(), s.exp_avg_sq.len()]);
                    host.into_iter().chain(dev).flatten().collect()
                }
            };
            if let Some(&have) = lens.iter().find(|&&l| l != p.len) {
                return Err(state_len_err(p.name, have, p.len));
            }
        }
        if let Some(g) = &self.device.gpu
            && !std::sync::Arc::ptr_eq(g, gpu)
            && !self.device.is_empty()
        {
            return Err(NnError::invalid(
                "optimizer step",
                "the optimizer's device state belongs to another device handle; call to_host first",
            ));
        }
        let decays: Vec<bool> = params.iter().map(|p| self.decays(p.kind)).collect();
        let inputs = device::StepInputs {
            config: self.config,
            params,
            decays: &decays,
            host_momentum: &mut self.momentum,
            host_adamw: &mut self.adamw,
            lr,
            max_grad_norm,
            want_norm,
        };
        // SAFETY: the caller's contract.
        unsafe { self.device.step(gpu, inputs) }
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Whether biases, norms and embeddings are excluded from weight decay.
    pub fn no_decay_norm_bias(&self) -> bool {
        self.no_decay_norm_bias
    }

    /// Whether weight decay applies to a tensor of this kind.
    pub fn decays(&self, kind: ParamKind) -> bool {
        !self.no_decay_norm_bias || kind.decays_when_filtered()
    }

    /// Updates one parameter in place with learning rate `lr`; state is created on first use.
    pub fn update(
        &mut self,
        name: &str,
        kind: ParamKind,
        value: &mut [f32],
        grad: &[f32],
        lr: f32,
    ) -> Result<()> {
        check_update(name, kind, value.len(), grad.len())?;
        let decay = self.decays(kind);
        match self.config {
            OptimizerConfig::Sgd(c) => {
                let mut buf = self.momentum.remove(name);
                if let Some(b) = &buf
                    && b.len() != value.len()
                {
                    return Err(state_len_err(name, b.len(), value.len()));
                }
                c.update(value, grad, &mut buf, lr, decay);
                if let Some(b) = buf {
                    self.momentum.insert(name.to_string(), b);
                }
            }
            OptimizerConfig::AdamW(c) => {
                let st = self
                    .adamw
                    .entry(name.to_string())
                    .or_insert_with(|| AdamWState::new(value.len()));
                if st.exp_avg.len() != value.len() {
                    return Err(state_len_err(name, st.exp_avg.len(), value.len()));
                }
                c.update(value, grad, st, lr, decay);
            }
        }
        Ok(())
    }

    /// The state as named tensors for a checkpoint: `optim.momentum.{p}` (SGD) or
    /// `optim.exp_avg.{p}` and `optim.exp_avg_sq.{p}` (AdamW), in name order.
    pub fn state_tensors(&self) -> Vec<(String, &[f32])> {
        let mut out = Vec::new();
        for (n, b) in &self.momentum {
            out.push((format!("{MOMENTUM_PREFIX}{n}"), b.as_slice()));
        }
        for (n, s) in &self.adamw {
            out.push((format!("{EXP_AVG_PREFIX}{n}"), s.exp_avg.as_slice()));
            out.push((format!("{EXP_AVG_SQ_PREFIX}{n}"), s.exp_avg_sq.as_slice()));
        }
        out
    }

    /// Per-parameter AdamW step counts (empty for SGD), stored in checkpoint metadata.
    pub fn param_steps(&self) -> BTreeMap<String, u64> {
        self.adamw
            .iter()
            .map(|(n, s)| (n.clone(), s.step))
            .collect()
    }

    /// Replaces the state with tensors named as [`Optimizer::state_tensors`] writes them
    /// (other names are ignored) and AdamW step counts. Every AdamW moment needs its pair and
    /// a step count; the error lists what is inconsistent.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Vec<f32>>,
        param_steps: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let mut momentum = BTreeMap::new();
        let mut adamw = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, v) in tensors {
            if let Some(p) = name.strip_prefix(MOMENTUM_PREFIX) {
                momentum.insert(p.to_string(), v.clone());
            } else if let Some(p) = name.strip_prefix(EXP_AVG_SQ_PREFIX) {
                let Some(m) = tensors.get(&format!("{EXP_AVG_PREFIX}{p}")) else {
                    problems.push(format!("`{name}` has no matching `{EXP_AVG_PREFIX}{p}`"));
                    continue;
                };
                let Some(&step) = param_steps.get(p) else {
                    problems.push(format!("no AdamW step count for `{p}`"));
                    continue;
                };
                if m.len() != v.len() {
                    problems.push(format!("moments of `{p}` differ in length"));
                    continue;
                }
                adamw.insert(
                    p.to_string(),
                    AdamWState {
                        step,
                        exp_avg: m.clone(),
                        exp_avg_sq: v.clone(),
                    },
                );
            } else if let Some(p) = name.strip_prefix(EXP_AVG_PREFIX)
                && !tensors.contains_key(&format!("{EXP_AVG_SQ_PREFIX}{p}"))
            {
                problems.push(format!("`{name}` has no matching `{EXP_AVG_SQ_PREFIX}{p}`"));
            }
        }
        let is_sgd = matches!(self.config, OptimizerConfig::Sgd(_));
        if is_sgd && !adamw.is_empty() {
            problems.push("AdamW moments given to an SGD optimizer".into());
        }
        if !is_sgd && !momentum.is_empty() {
            problems.push("SGD momentum buffers given to an AdamW optimizer".into());
        }
        if !problems.is_empty() {
            return Err(NnError::invalid("optimizer state", problems.join("; ")));
        }
        self.momentum = momentum;
        self.adamw = adamw;
        Ok(())
    }
}

/// The checks every update starts with: gradient as long as the parameter, a trainable kind.
fn check_update(name: &str, kind: ParamKind, value_len: usize, grad_len: usize) -> Result<()> {
    if value_len != grad_len {
        return Err(NnError::invalid(
            format!("optimizer update of `{name}`"),
            format!("parameter has {value_len} elements but its gradient {grad_len}"),
        ));
    }
    if !kind.trainable() {
        return Err(NnError::invalid(
            format!("optimizer update of `{name}`"),
            "this is a buffer (BN running statistic), not a trainable parameter",
        ));
    }
    Ok(())
}

fn state_len_err(name: &str, have: usize, want: usize) -> NnError {
    NnError::invalid(
        format!("optimizer update of `{name}`"),
        format!("stored state has {have} elements, the parameter {want}"),
    )
}

#[cfg(test)]
mod tests;
