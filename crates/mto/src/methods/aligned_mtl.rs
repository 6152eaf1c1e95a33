//! Aligned-MTL: align the principal components of the task gradients.

use crate::aggregator::Aggregator;
use crate::error::Result;
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::linalg::sym_eigen;

/// Aligned-MTL (Senushkin, Patakin, Kuznetsov & Konushin, "Independent component alignment for
/// multi-task learning", CVPR 2023).
///
/// With `K = V diag(lambda) V^T` over the numerical rank (eigenvalues above
/// `lambda_max T eps_f32`, LibMTL's cut-off), `B = sqrt(lambda_min) V diag(lambda^-1/2) V^T`
/// makes the gradient system's singular values equal to the smallest; weights `alpha = B 1`
/// (pre-weights 1 per task, as LibMTL), direction `sum_t alpha_t g_t`. Identical gradients give
/// weights 1 each (sum T). All-zero gradients give weights 1 and a zero direction.
#[derive(Clone, Debug, Default)]
pub struct AlignedMtl;

impl AlignedMtl {
    /// Aligned-MTL with uniform pre-weights.
    pub fn new() -> Self {
        Self
    }
}

/// Aligned-MTL weights for Gram matrix `k`.
pub(crate) fn aligned_weights(k: &[f64], t: usize) -> Vec<f64> {
    let (vals, vecs) = sym_eigen(k, t);
    let max = vals.iter().cloned().fold(0.0, f64::max);
    let tol = max * t as f64 * f32::EPSILON as f64;
    let kept: Vec<usize> = (0..t).filter(|&i| vals[i] > tol && vals[i] > 0.0).collect();
    if kept.is_empty() {
        return vec![1.0; t];
    }
    let lmin = kept.iter().map(|&i| vals[i]).fold(f64::INFINITY, f64::min);
    // alpha = sqrt(lmin) V diag(lambda^-1/2) V^T 1.
    let mut alpha = vec![0.0; t];
    for &e in &kept {
        let proj: f64 = (0..t).map(|r| vecs[r * t + e]).sum();
        let f = (lmin / vals[e]).sqrt() * proj;
        for (r, a) in alpha.iter_mut().enumerate() {
            *a += f * vecs[r * t + e];
        }
    }
    alpha
}

impl Aggregator for AlignedMtl {
    fn name(&self) -> &'static str {
        "aligned_mtl"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("aligned_mtl", None)?;
        let gram = input.gram("aligned_mtl")?;
        let w = aligned_weights(&gram.total, t);
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
