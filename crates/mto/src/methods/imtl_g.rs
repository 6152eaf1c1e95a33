//! IMTL-G: the update with equal projections on every unit task gradient.

use crate::aggregator::Aggregator;
use crate::error::Result;
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::linalg::lstsq_min_norm;

/// IMTL-G, the gradient-balance half of "Towards impartial multi-task learning" (Liu et al.,
/// ICLR 2021).
///
/// Weights alpha with `sum_t alpha_t = 1` such that `d = sum_t alpha_t g_t` has the same
/// projection on every unit gradient `u_t = g_t / |g_t|` (the paper's closed form
/// `alpha_{2:T} = g_1 U^T (D U^T)^{-1}` solves the same T equations). Solved from the Gram
/// matrix as a T x T linear system by a pseudo-inverse (min-norm solution), so identical
/// gradients give alpha = 1/T and near-singular systems stay finite. Tasks with a zero gradient
/// get weight 0 (their unit vector is undefined); all-zero gradients give 1/T and a zero
/// direction. Weights sum to 1. [`ImtlG::new`] works on the shared parameters (the paper's
/// IMTL-G); [`ImtlG::at_representation`] on the shared representation (LibMTL's choice).
#[derive(Clone, Debug)]
pub struct ImtlG {
    requirement: Requirement,
}

impl ImtlG {
    /// IMTL-G on the shared parameters.
    pub fn new() -> Self {
        Self {
            requirement: Requirement::SharedGradients,
        }
    }

    /// IMTL-G on the gradients at the shared representation.
    pub fn at_representation() -> Self {
        Self {
            requirement: Requirement::RepresentationGradients,
        }
    }
}

impl Default for ImtlG {
    fn default() -> Self {
        Self::new()
    }
}

/// IMTL-G weights for Gram matrix `k`.
pub(crate) fn imtl_g_weights(k: &[f64], t: usize) -> Vec<f64> {
    let max_diag = (0..t).map(|i| k[i * t + i]).fold(0.0, f64::max);
    let active: Vec<usize> = (0..t)
        .filter(|&i| max_diag > 0.0 && k[i * t + i] > 1e-20 * max_diag)
        .collect();
    let mut w = vec![0.0; t];
    if active.is_empty() {
        return vec![1.0 / t as f64; t];
    }
    let n = active.len();
    let norms: Vec<f64> = active.iter().map(|&i| k[i * t + i].sqrt()).collect();
    // m[a][b] = g_a . u_b
    let m = |a: usize, b: usize| k[active[a] * t + active[b]] / norms[b];
    // Rows 0..n-1: (M^T alpha)_b - (M^T alpha)_0 = 0 for b >= 1; last row: sum alpha = 1.
    let mut a = vec![0.0; n * n];
    let mut rhs = vec![0.0; n];
    for b in 1..n {
        for c in 0..n {
            a[(b - 1) * n + c] = m(c, b) - m(c, 0);
        }
    }
    for c in 0..n {
        a[(n - 1) * n + c] = 1.0;
    }
    rhs[n - 1] = 1.0;
    // Equalise row scales so the pseudo-inverse cut-off is relative to the gradient scale.
    let scale = norms.iter().cloned().fold(0.0, f64::max);
    for v in a.iter_mut().take((n - 1) * n) {
        *v /= scale;
    }
    let alpha = lstsq_min_norm(&a, n, n, &rhs, 1e-10);
    for (x, &i) in alpha.iter().zip(&active) {
        w[i] = *x;
    }
    w
}

impl Aggregator for ImtlG {
    fn name(&self) -> &'static str {
        match self.requirement {
            Requirement::RepresentationGradients => "imtl_g_rep",
            _ => "imtl_g",
        }
    }

    fn requirement(&self) -> Requirement {
        self.requirement
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let name = self.name();
        let t = input.check_losses(name, None)?;
        let gram = input.gram(name)?;
        let w = imtl_g_weights(&gram.total, t);
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
