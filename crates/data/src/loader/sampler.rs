//! The multi-domain sampler: every sample slot of a batch draws its domain from p (the
//! multi-domain scalarization). Within a domain, samples come without replacement from a
//! per-(seed, epoch, domain, pass) permutation, cycling when the domain is exhausted.
//! `p` may change between epochs (e.g. when PBT explores).

use crate::error::{DataError, Result};
use crate::loader::Plan;
use crate::rng::{Rng, permutation};

/// Draws batch compositions over domains with probabilities `p`.
#[derive(Clone, Debug)]
pub struct DomainSampler {
    p: Vec<f64>,
    batches_per_epoch: usize,
}

impl DomainSampler {
    /// `p`: non-negative weights, one per loader source (normalised here); an epoch has
    /// `batches_per_epoch` full batches.
    pub fn new(p: &[f64], batches_per_epoch: usize) -> Result<Self> {
        let mut s = DomainSampler {
            p: Vec::new(),
            batches_per_epoch,
        };
        s.set_p(p)?;
        Ok(s)
    }

    /// Replaces the probabilities (takes effect at the next planned epoch).
    pub fn set_p(&mut self, p: &[f64]) -> Result<()> {
        let total: f64 = p.iter().sum();
        if p.is_empty() || p.iter().any(|v| !v.is_finite() || *v < 0.0) || total <= 0.0 {
            return Err(DataError::Invalid(format!(
                "domain probabilities {p:?} must be finite, >= 0 and not all 0"
            )));
        }
        self.p = p.iter().map(|v| v / total).collect();
        Ok(())
    }

    /// The normalised probabilities.
    pub fn p(&self) -> &[f64] {
        &self.p
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }

    /// The epoch's plan for domains of `sizes` samples.
    pub fn plan(&self, sizes: &[usize], batch_size: usize, seed: u64, epoch: u64) -> Result<Plan> {
        if sizes.len() != self.p.len() {
            return Err(DataError::Invalid(format!(
                "{} probabilities for {} sources",
                self.p.len(),
                sizes.len()
            )));
        }
        if let Some(d) = (0..sizes.len()).find(|&d| sizes[d] == 0 && self.p[d] > 0.0) {
            return Err(DataError::Invalid(format!(
                "source {d} is empty but has probability {}",
                self.p[d]
            )));
        }
        let mut cdf = Vec::with_capacity(self.p.len());
        let mut acc = 0.0;
        for &v in &self.p {
            acc += v;
            cdf.push(acc);
        }
        let last_positive = self.p.iter().rposition(|&v| v > 0.0).unwrap_or(0);
        let mut rng = Rng::from_words(&[seed, epoch, 0x444F_4D41_494E]);
        let mut drawn = vec![0usize; sizes.len()];
        let mut perms: Vec<(usize, Vec<usize>)> = vec![(usize::MAX, Vec::new()); sizes.len()];
        let mut plan = Vec::with_capacity(self.batches_per_epoch);
        for _ in 0..self.batches_per_epoch {
            let mut batch = Vec::with_capacity(batch_size);
            for _ in 0..batch_size {
                let u = rng.next_f64();
                // Rounding can leave cdf's end a hair below 1; fall back to the last positive domain.
                let d = cdf.iter().position(|&c| u < c).unwrap_or(last_positive);
                let (pass, k) = (drawn[d] / sizes[d], drawn[d] % sizes[d]);
                if perms[d].0 != pass {
                    perms[d] = (
                        pass,
                        permutation(
                            sizes[d],
                            seed,
                            epoch,
                            1 + (d as u64) * (1 << 32) + pass as u64,
                        ),
                    );
                }
                batch.push((d, perms[d].1[k]));
                drawn[d] += 1;
            }
            plan.push(batch);
        }
        Ok(plan)
    }
}
