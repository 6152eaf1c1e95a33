//! IMTL-L: learnable loss scales `e^{s_t}` with a `-s_t` regulariser.

use crate::aggregator::{Aggregator, check_params, weighted};
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// IMTL-L, the loss-balance half of "Towards impartial multi-task learning" (Liu et al., ICLR
/// 2021).
///
/// Learnable `s_t`; objective `sum_t e^{s_t} L_t - s_t`, which drives every scaled loss
/// `e^{s_t} L_t` towards 1. Weights `e^{s_t}` (sum T at the start, s = 0; not normalised, as
/// in the paper and LibMTL). Parameter gradients `dObj/ds_t = e^{s_t} L_t - 1`.
#[derive(Clone, Debug)]
pub struct ImtlL {
    scales: Vec<f64>,
    grads: Vec<f64>,
}

impl ImtlL {
    /// `tasks` log-scales, all 0.
    pub fn new(tasks: usize) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid("imtl_l", "tasks = 0, expected T >= 1"));
        }
        Ok(Self {
            scales: vec![0.0; tasks],
            grads: vec![0.0; tasks],
        })
    }

    /// The paper's objective at the current parameters.
    pub fn objective(&self, losses: &[f64]) -> f64 {
        self.scales
            .iter()
            .zip(losses)
            .map(|(s, l)| s.exp() * l - s)
            .sum()
    }

    /// The loss weights `e^{s_t}`.
    pub fn weights(&self) -> Vec<f64> {
        self.scales.iter().map(|s| s.exp()).collect()
    }

    /// Sets the parameter gradients for `losses` (used by IMTL-H as well).
    pub(crate) fn update_grads(&mut self, losses: &[f64]) {
        self.grads = self
            .scales
            .iter()
            .zip(losses)
            .map(|(s, l)| s.exp() * l - 1.0)
            .collect();
    }
}

impl Aggregator for ImtlL {
    fn name(&self) -> &'static str {
        "imtl_l"
    }

    fn requirement(&self) -> Requirement {
        Requirement::Losses
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        input.check_losses("imtl_l", Some(self.scales.len()))?;
        self.update_grads(input.losses);
        weighted(input, self.weights())
    }

    fn params(&self) -> &[f64] {
        &self.scales
    }

    fn param_grads(&self) -> &[f64] {
        &self.grads
    }

    fn set_params(&mut self, values: &[f64]) -> Result<()> {
        check_params("imtl_l", values, self.scales.len())?;
        self.scales.copy_from_slice(values);
        Ok(())
    }
}
