//! PCGrad: project each task gradient off the normal planes of the gradients it conflicts with.

use crate::aggregator::Aggregator;
use crate::error::Result;
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::rng::{MethodRng, seeded, shuffled_others};

/// PCGrad (Yu et al., "Gradient surgery for multi-task learning", NeurIPS 2020).
///
/// For each task i, `g_i'` starts at `g_i`; for every other task j in a random order drawn
/// afresh for each i, if `g_i' . g_j < 0` then `g_i' -= (g_i' . g_j / |g_j|^2) g_j`, always
/// against the original `g_j`. The direction is `sum_i g_i'` (the paper's and LibMTL's sum, so
/// weights sum to T when nothing conflicts). Every `g_i'` is a combination of the original
/// gradients, so the whole procedure runs on the T x T Gram matrix and one final weighted sum.
/// Two exactly opposite gradients cancel to 0.
#[derive(Clone, Debug)]
pub struct PcGrad {
    rng: MethodRng,
}

impl PcGrad {
    /// PCGrad with its own generator seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: seeded(seed) }
    }
}

/// PCGrad's coefficient matrix C (row i: `g_i' = sum_k C[i][k] g_k`) for Gram matrix `k`.
pub(crate) fn pcgrad_coefficients(k: &[f64], t: usize, rng: &mut MethodRng) -> Vec<Vec<f64>> {
    let mut c = vec![vec![0.0; t]; t];
    for (i, row) in c.iter_mut().enumerate() {
        row[i] = 1.0;
        for j in shuffled_others(rng, i, t) {
            let dot: f64 = (0..t).map(|m| row[m] * k[m * t + j]).sum();
            let kjj = k[j * t + j];
            if dot < 0.0 && kjj > 0.0 {
                row[j] -= dot / kjj;
            }
        }
    }
    c
}

impl Aggregator for PcGrad {
    fn name(&self) -> &'static str {
        "pcgrad"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("pcgrad", None)?;
        let gram = input.gram("pcgrad")?;
        let c = pcgrad_coefficients(&gram.total, t, &mut self.rng);
        let w: Vec<f64> = (0..t).map(|m| c.iter().map(|row| row[m]).sum()).collect();
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
