//! MGDA: the min-norm element of the convex hull of the task gradients.

use crate::aggregator::Aggregator;
use crate::error::Result;
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::simplex::min_norm_weights;

/// How MGDA normalises each task gradient before the min-norm problem (Sener & Koltun's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MgdaNormalization {
    /// No normalisation (LibMTL's default).
    None,
    /// Divide `g_t` by `|g_t|`.
    L2,
    /// Divide `g_t` by `L_t`.
    Loss,
    /// Divide `g_t` by `L_t |g_t|` (the paper code's `loss+`).
    LossL2,
}

/// MGDA (Sener & Koltun, "Multi-task learning as multi-objective optimization", NeurIPS 2018;
/// Désidéri 2012), on the shared parameters.
///
/// Weights `w` on the simplex minimising `|sum_t w_t g_t / n_t|^2` (Frank-Wolfe with away steps
/// on the Gram matrix), `n_t` the normaliser; effective weights `w_t / n_t`, which sum to 1
/// without normalisation. Zero normalisers (zero gradient or loss) count as 1. A zero gradient
/// makes the min norm 0: the direction is then 0 (a Pareto-stationary point).
#[derive(Clone, Debug)]
pub struct Mgda {
    normalization: MgdaNormalization,
    requirement: Requirement,
    name: &'static str,
}

impl Mgda {
    /// MGDA on the shared parameters without gradient normalisation.
    pub fn new() -> Self {
        Self::with_normalization(MgdaNormalization::None)
    }

    /// MGDA on the shared parameters with a given normalisation.
    pub fn with_normalization(normalization: MgdaNormalization) -> Self {
        Self {
            normalization,
            requirement: Requirement::SharedGradients,
            name: "mgda",
        }
    }

    /// The same solver on gradients at the shared representation (MGDA-UB).
    pub(crate) fn at_representation(normalization: MgdaNormalization) -> Self {
        Self {
            normalization,
            requirement: Requirement::RepresentationGradients,
            name: "mgda_ub",
        }
    }
}

impl Default for Mgda {
    fn default() -> Self {
        Self::new()
    }
}

/// MGDA's effective weights for Gram matrix `k`, losses and normalisation.
pub(crate) fn mgda_weights(
    k: &[f64],
    t: usize,
    losses: &[f64],
    norm: MgdaNormalization,
) -> Vec<f64> {
    let n: Vec<f64> = (0..t)
        .map(|i| {
            let g = k[i * t + i].max(0.0).sqrt();
            let v = match norm {
                MgdaNormalization::None => 1.0,
                MgdaNormalization::L2 => g,
                MgdaNormalization::Loss => losses[i],
                MgdaNormalization::LossL2 => losses[i] * g,
            };
            if v > 0.0 && v.is_finite() { v } else { 1.0 }
        })
        .collect();
    let kn: Vec<f64> = (0..t * t)
        .map(|idx| k[idx] / (n[idx / t] * n[idx % t]))
        .collect();
    let w = min_norm_weights(&kn, t);
    w.iter().zip(&n).map(|(a, b)| a / b).collect()
}

impl Aggregator for Mgda {
    fn name(&self) -> &'static str {
        self.name
    }

    fn requirement(&self) -> Requirement {
        self.requirement
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses(self.name, None)?;
        let gram = input.gram(self.name)?;
        let w = mgda_weights(&gram.total, t, input.losses, self.normalization);
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
