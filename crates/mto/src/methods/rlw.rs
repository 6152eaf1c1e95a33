//! Random Loss Weighting: weights drawn afresh every step.

use rand::RngExt;
use rand_distr::StandardNormal;

use crate::aggregator::{Aggregator, weighted};
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::rng::{MethodRng, seeded};

/// Random Loss Weighting (Lin et al., "Reasonable effectiveness of random weighting: a litmus
/// test for multi-task learning", TMLR 2022).
///
/// Each step `w = softmax(z)`, `z ~ N(0, I_T)` from the method's seeded generator. Weights sum
/// to 1 (paper and LibMTL).
#[derive(Clone, Debug)]
pub struct Rlw {
    tasks: usize,
    rng: MethodRng,
}

impl Rlw {
    /// RLW for `tasks` tasks with its own generator seeded by `seed`.
    pub fn new(tasks: usize, seed: u64) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid("rlw", "tasks = 0, expected T >= 1"));
        }
        Ok(Self {
            tasks,
            rng: seeded(seed),
        })
    }
}

impl Aggregator for Rlw {
    fn name(&self) -> &'static str {
        "rlw"
    }

    fn requirement(&self) -> Requirement {
        Requirement::Losses
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        input.check_losses("rlw", Some(self.tasks))?;
        let z: Vec<f64> = (0..self.tasks)
            .map(|_| self.rng.sample::<f64, _>(StandardNormal))
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
        let s: f64 = e.iter().sum();
        weighted(input, e.iter().map(|x| x / s).collect())
    }
}
