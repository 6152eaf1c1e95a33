//! Linear scalarization: `L = sum_t p_t L_t` with fixed weights p.

use crate::aggregator::{Aggregator, weighted};
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// Linear scalarization with fixed weights p (the baseline the study tunes with PBT).
///
/// Reference: the weighted-sum method of multi-objective optimisation; as studied in Royer,
/// Blankevoort & Ehteshami Bejnordi, "Scalarization for multi-task and multi-domain learning at
/// scale", NeurIPS 2023. Weights are used as given; [`Linear::uniform`] gives p = 1/T (sum 1,
/// the study's convention; LibMTL's `EW` uses p = 1, sum T).
#[derive(Clone, Debug)]
pub struct Linear {
    weights: Vec<f64>,
}

impl Linear {
    /// Fixed weights p (finite, non-negative, not all zero; not renormalised).
    pub fn new(weights: Vec<f64>) -> Result<Self> {
        if weights.is_empty() {
            return Err(MtoError::invalid(
                "linear",
                "no weights given, expected T >= 1",
            ));
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(MtoError::invalid(
                "linear",
                format!("weight {i} is {w}, expected a finite value >= 0"),
            ));
        }
        if weights.iter().all(|&w| w == 0.0) {
            return Err(MtoError::invalid("linear", "all weights are 0"));
        }
        Ok(Self { weights })
    }

    /// Uniform weights 1/T.
    pub fn uniform(tasks: usize) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid("uniform", "tasks = 0, expected T >= 1"));
        }
        Self::new(vec![1.0 / tasks as f64; tasks])
    }

    /// The weights p.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

impl Aggregator for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn requirement(&self) -> Requirement {
        Requirement::Losses
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        input.check_losses("linear", Some(self.weights.len()))?;
        weighted(input, self.weights.clone())
    }
}
