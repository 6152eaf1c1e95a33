//! IMTL-H: IMTL-L loss scales plus IMTL-G at the shared representation.

use super::imtl_g::imtl_g_weights;
use super::imtl_l::ImtlL;
use crate::aggregator::Aggregator;
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// IMTL-H, the hybrid of "Towards impartial multi-task learning" (Liu et al., ICLR 2021), as
/// LibMTL's `IMTL`: losses are scaled by `e^{s_t}` (learnable, IMTL-L objective
/// `e^{s_t} L_t - s_t`, gradients `e^{s_t} L_t - 1`) and IMTL-G weights alpha (sum 1) are found
/// from the scaled gradients at the shared representation. Effective weights on the raw
/// gradients are `alpha_t e^{s_t}`.
#[derive(Clone, Debug)]
pub struct ImtlH {
    loss_scales: ImtlL,
}

impl ImtlH {
    /// IMTL-H for `tasks` tasks, scales starting at 0.
    pub fn new(tasks: usize) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid("imtl_h", "tasks = 0, expected T >= 1"));
        }
        Ok(Self {
            loss_scales: ImtlL::new(tasks)?,
        })
    }

    /// The IMTL-L objective at the current scales.
    pub fn objective(&self, losses: &[f64]) -> f64 {
        self.loss_scales.objective(losses)
    }
}

impl Aggregator for ImtlH {
    fn name(&self) -> &'static str {
        "imtl_h"
    }

    fn requirement(&self) -> Requirement {
        Requirement::RepresentationGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("imtl_h", Some(self.loss_scales.params().len()))?;
        let gram = input.gram("imtl_h")?;
        let e = self.loss_scales.weights();
        let ks: Vec<f64> = (0..t * t)
            .map(|idx| gram.total[idx] * e[idx / t] * e[idx % t])
            .collect();
        let alpha = imtl_g_weights(&ks, t);
        let w: Vec<f64> = alpha.iter().zip(&e).map(|(a, s)| a * s).collect();
        self.loss_scales.update_grads(input.losses);
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }

    fn params(&self) -> &[f64] {
        self.loss_scales.params()
    }

    fn param_grads(&self) -> &[f64] {
        self.loss_scales.param_grads()
    }

    fn set_params(&mut self, values: &[f64]) -> Result<()> {
        self.loss_scales.set_params(values)
    }
}
