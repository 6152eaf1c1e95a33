//! Optimizers (SGD, AdamW) on flat f32 buffers keyed by parameter name, learning-rate
//! schedules and global gradient-norm clipping, all with PyTorch semantics.

mod adamw;
mod clip;
mod schedule;
mod sgd;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::layout::ParamKind;

pub use adamw::{AdamWConfig, AdamWState};
pub use clip::{clip_grad_norm, global_grad_norm};
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

/// An optimizer with its per-parameter state.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    config: OptimizerConfig,
    no_decay_norm_bias: bool,
    momentum: BTreeMap<String, Vec<f32>>,
    adamw: BTreeMap<String, AdamWState>,
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
        })
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
        if value.len() != grad.len() {
            return Err(NnError::invalid(
                format!("optimizer update of `{name}`"),
                format!(
                    "parameter has {} elements but its gradient {}",
                    value.len(),
                    grad.len()
                ),
            ));
        }
        if !kind.trainable() {
            return Err(NnError::invalid(
                format!("optimizer update of `{name}`"),
                "this is a buffer (BN running statistic), not a trainable parameter",
            ));
        }
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

fn state_len_err(name: &str, have: usize, want: usize) -> NnError {
    NnError::invalid(
        format!("optimizer update of `{name}`"),
        format!("stored state has {have} elements, the parameter {want}"),
    )
}

#[cfg(test)]
mod tests;
