//! Learning-rate schedules: constant, step and cosine, each after an optional linear warm-up.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// The shape of the schedule after warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` at each milestone (step counts, like `MultiStepLR`).
    Step {
        /// Steps at which the rate drops.
        milestones: Vec<u64>,
        /// Factor per drop.
        gamma: f64,
    },
    /// Half-cosine from the base rate down to `min_lr` at `total_steps` (then `min_lr`).
    Cosine {
        /// Final rate.
        #[serde(default)]
        min_lr: f64,
    },
}

/// A learning-rate schedule over optimizer steps (0-based).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak (base) learning rate.
    pub base_lr: f64,
    /// Linear warm-up steps: step `s < warmup` uses `base_lr * (s + 1) / warmup`.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Length of the run, which the cosine decay spans (warm-up included).
    pub total_steps: u64,
    /// What happens after warm-up.
    #[serde(flatten)]
    pub kind: ScheduleKind,
}

impl Schedule {
    /// A checked schedule.
    pub fn new(
        base_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        kind: ScheduleKind,
    ) -> Result<Self> {
        let s = Schedule {
            base_lr,
            warmup_steps,
            total_steps,
            kind,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks that rates are finite and non-negative and the steps are consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(NnError::invalid("LR schedule", msg));
        if !(self.base_lr >= 0.0 && self.base_lr.is_finite()) {
            return bad(format!("base_lr must be >= 0, got {}", self.base_lr));
        }
        match &self.kind {
            ScheduleKind::Cosine { min_lr } => {
                if !(*min_lr >= 0.0 && *min_lr <= self.base_lr) {
                    return bad(format!(
                        "cosine min_lr must be in [0, base_lr = {}], got {min_lr}",
                        self.base_lr
                    ));
                }
                if self.total_steps <= self.warmup_steps {
                    return bad(format!(
                        "cosine needs total_steps ({}) > warmup_steps ({})",
                        self.total_steps, self.warmup_steps
                    ));
                }
            }
            ScheduleKind::Step { milestones, gamma } => {
                if !(*gamma > 0.0 && gamma.is_finite()) {
                    return bad(format!("step gamma must be > 0, got {gamma}"));
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!(
                        "step milestones must be strictly increasing, got {milestones:?}"
                    ));
                }
            }
            ScheduleKind::Constant => {}
        }
        Ok(())
    }

    /// The learning rate at optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return (self.base_lr * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        let lr = match &self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Step { milestones, gamma } => {
                let drops = milestones.iter().filter(|&&m| m <= step).count();
                self.base_lr * gamma.powi(drops as i32)
            }
            ScheduleKind::Cosine { min_lr } => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        lr as f32
    }
}
