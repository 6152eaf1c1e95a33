//! SGD with momentum, dampening, Nesterov and L2 weight decay, exactly as `torch.optim.SGD`.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// Hyperparameters of [`torch.optim.SGD`](https://pytorch.org/docs/stable/generated/torch.optim.SGD.html)
/// (the learning rate comes from the schedule at each step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum factor (0 disables the buffer).
    pub momentum: f32,
    /// Dampening of the gradient added to the buffer.
    pub dampening: f32,
    /// Nesterov momentum (needs momentum > 0 and dampening 0, as PyTorch).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`g + wd * p`).
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl SgdConfig {
    /// Checks the PyTorch constraints.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(NnError::invalid("SGD config", msg));
        if !(self.momentum >= 0.0 && self.momentum.is_finite()) {
            return bad(format!("momentum must be >= 0, got {}", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !self.dampening.is_finite() {
            return bad(format!("dampening must be finite, got {}", self.dampening));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return bad(format!(
                "Nesterov momentum requires momentum > 0 and dampening 0, got momentum {} dampening {}",
                self.momentum, self.dampening
            ));
        }
        Ok(())
    }

    /// One SGD update of `value` in place. `momentum` is the parameter's buffer: `None` before
    /// the first step (it is then created as a copy of the gradient, as PyTorch does).
    /// `decay` says whether weight decay applies to this parameter.
    pub fn update(
        &self,
        value: &mut [f32],
        grad: &[f32],
        momentum: &mut Option<Vec<f32>>,
        lr: f32,
        decay: bool,
    ) {
        let wd = if decay { self.weight_decay } else { 0.0 };
        let (mu, damp) = (self.momentum, 1.0 - self.dampening);
        if mu == 0.0 {
            for (p, &g) in value.iter_mut().zip(grad) {
                let d = g + wd * *p;
                *p += -lr * d;
            }
            return;
        }
        match momentum {
            None => {
                // First step: buf = d_p (no dampening), as torch.optim.SGD.
                let mut buf = Vec::with_capacity(value.len());
                for (p, &g) in value.iter_mut().zip(grad) {
                    let d = g + wd * *p;
                    buf.push(d);
                    let step = if self.nesterov { d + mu * d } else { d };
                    *p += -lr * step;
                }
                *momentum = Some(buf);
            }
            Some(buf) => {
                for ((p, &g), b) in value.iter_mut().zip(grad).zip(buf.iter_mut()) {
                    let d = g + wd * *p;
                    *b = *b * mu + damp * d;
                    let step = if self.nesterov { d + mu * *b } else { *b };
                    *p += -lr * step;
                }
            }
        }
    }
}
