//! AdamW with decoupled weight decay, exactly as `torch.optim.AdamW` (no amsgrad).

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// Hyperparameters of `torch.optim.AdamW` (the learning rate comes from the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay: `p *= 1 - lr * wd` before the Adam step.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Per-parameter AdamW state.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWState {
    /// Number of updates applied to this parameter.
    pub step: u64,
    /// First moment.
    pub exp_avg: Vec<f32>,
    /// Second moment.
    pub exp_avg_sq: Vec<f32>,
}

impl AdamWState {
    /// Fresh state for a parameter of `n` elements.
    pub fn new(n: usize) -> Self {
        AdamWState {
            step: 0,
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        }
    }
}

impl AdamWConfig {
    /// Checks the PyTorch constraints.
    pub fn validate(&self) -> Result<()> {
        let ok_beta = |b: f32| (0.0..1.0).contains(&b);
        if !ok_beta(self.beta1) || !ok_beta(self.beta2) {
            return Err(NnError::invalid(
                "AdamW config",
                format!(
                    "betas must be in [0, 1), got ({}, {})",
                    self.beta1, self.beta2
                ),
            ));
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(NnError::invalid(
                "AdamW config",
                format!("eps must be >= 0, got {}", self.eps),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(NnError::invalid(
                "AdamW config",
                format!("weight_decay must be >= 0, got {}", self.weight_decay),
            ));
        }
        Ok(())
    }

    /// One AdamW update of `value` in place (PyTorch's single-tensor algorithm; the bias
    /// corrections are computed in f64 as Python floats are).
    pub fn update(
        &self,
        value: &mut [f32],
        grad: &[f32],
        state: &mut AdamWState,
        lr: f32,
        decay: bool,
    ) {
        state.step += 1;
        let t = state.step as f64;
        if decay && self.weight_decay != 0.0 {
            let keep = (1.0 - lr as f64 * self.weight_decay as f64) as f32;
            for p in value.iter_mut() {
                *p *= keep;
            }
        }
        let (b1, b2) = (self.beta1 as f64, self.beta2 as f64);
        let bias1 = 1.0 - b1.powf(t);
        let bias2_sqrt = (1.0 - b2.powf(t)).sqrt() as f32;
        let step_size = (lr as f64 / bias1) as f32;
        let w1 = 1.0 - self.beta1;
        let w2 = 1.0 - self.beta2;
        for (((p, &g), m), v) in value
            .iter_mut()
            .zip(grad)
            .zip(state.exp_avg.iter_mut())
            .zip(state.exp_avg_sq.iter_mut())
        {
            *m += w1 * (g - *m);
            *v = *v * self.beta2 + w2 * g * g;
            let denom = v.sqrt() / bias2_sqrt + self.eps;
            *p += -step_size * (*m / denom);
        }
    }
}
