//! UPGrad: average of each task gradient projected onto the dual cone of all of them.

use crate::aggregator::Aggregator;
use crate::error::Result;
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::linalg::trace;
use crate::nnqp::min_quadratic_above;

/// UPGrad (Quinton & Rey, "Jacobian descent for multi-objective optimization", 2024; torchjd's
/// `UPGrad`).
///
/// For each task i, `v_i = argmin_{v >= e_i / T} v^T K v` (the projection of `g_i / T` onto the
/// dual cone `{x : g_j . x >= 0 for all j}`); weights `sum_i v_i`, direction
/// `sum_t w_t g_t`. Every `g_j . d >= 0`: the update never conflicts with a task. Weights sum to
/// at least 1 (exactly 1, equal, when no gradients conflict). Solved on `K / (trace K / T)` with
/// no regularisation (torchjd adds a 1e-4 ridge); zero gradients are left at their bound.
#[derive(Clone, Debug, Default)]
pub struct UpGrad;

impl UpGrad {
    /// UPGrad with uniform preference 1/T.
    pub fn new() -> Self {
        Self
    }
}

/// UPGrad weights for Gram matrix `k`.
pub(crate) fn upgrad_weights(k: &[f64], t: usize) -> Vec<f64> {
    let tf = t as f64;
    let tr = trace(k, t);
    if tr <= 0.0 {
        return vec![1.0 / tf; t];
    }
    let kn: Vec<f64> = k.iter().map(|x| x * tf / tr).collect();
    let mut w = vec![0.0; t];
    for i in 0..t {
        let mut lower = vec![0.0; t];
        lower[i] = 1.0 / tf;
        let v = min_quadratic_above(&kn, t, &lower);
        for (a, b) in w.iter_mut().zip(&v) {
            *a += b;
        }
    }
    w
}

impl Aggregator for UpGrad {
    fn name(&self) -> &'static str {
        "upgrad"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("upgrad", None)?;
        let gram = input.gram("upgrad")?;
        let w = upgrad_weights(&gram.total, t);
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
