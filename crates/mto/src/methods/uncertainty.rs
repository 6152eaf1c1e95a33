//! Uncertainty weighting: learnable homoscedastic log-variances per task.

use crate::aggregator::{Aggregator, check_params, weighted};
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-task learning using uncertainty to
/// weigh losses for scene geometry and semantics", CVPR 2018).
///
/// Learnable `s_t = log sigma_t^2`; objective `sum_t 0.5 e^{-s_t} L_t + 0.5 s_t` (LibMTL's
/// convention: the regression form `1/(2 sigma^2) L + log sigma` for every task; the paper uses
/// `1/sigma^2` for classification). Weights `0.5 e^{-s_t}`: they do not sum to a constant
/// (T/2 at the start, s = 0). Parameter gradients `dObj/ds_t = 0.5 - 0.5 e^{-s_t} L_t`.
#[derive(Clone, Debug)]
pub struct Uncertainty {
    log_var: Vec<f64>,
    grads: Vec<f64>,
}

impl Uncertainty {
    /// `tasks` log-variances, all 0.
    pub fn new(tasks: usize) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid(
                "uncertainty",
                "tasks = 0, expected T >= 1",
            ));
        }
        Ok(Self {
            log_var: vec![0.0; tasks],
            grads: vec![0.0; tasks],
        })
    }

    /// The paper's objective at the current parameters (what the weights and gradients derive
    /// from).
    pub fn objective(&self, losses: &[f64]) -> f64 {
        self.log_var
            .iter()
            .zip(losses)
            .map(|(s, l)| 0.5 * (-s).exp() * l + 0.5 * s)
            .sum()
    }
}

impl Aggregator for Uncertainty {
    fn name(&self) -> &'static str {
        "uncertainty"
    }

    fn requirement(&self) -> Requirement {
        Requirement::Losses
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        input.check_losses("uncertainty", Some(self.log_var.len()))?;
        let w: Vec<f64> = self.log_var.iter().map(|s| 0.5 * (-s).exp()).collect();
        self.grads = w
            .iter()
            .zip(input.losses)
            .map(|(wt, l)| 0.5 - wt * l)
            .collect();
        weighted(input, w)
    }

    fn params(&self) -> &[f64] {
        &self.log_var
    }

    fn param_grads(&self) -> &[f64] {
        &self.grads
    }

    fn set_params(&mut self, values: &[f64]) -> Result<()> {
        check_params("uncertainty", values, self.log_var.len())?;
        self.log_var.copy_from_slice(values);
        Ok(())
    }
}
