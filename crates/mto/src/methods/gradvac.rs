//! Gradient Vaccine: raise pairwise cosines towards EMA targets, per layer group.

use crate::aggregator::Aggregator;
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::rng::{MethodRng, seeded, shuffled_others};

/// How GradVac groups parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradVacGrouping {
    /// One group: the whole shared gradient (LibMTL's `whole_model`).
    WholeModel,
    /// One group per gradient segment (layer; the paper's per-layer variant, LibMTL's
    /// `all_layer`).
    PerSegment,
}

/// Gradient Vaccine (Wang, Tsvetkov, Firat & Cao, "Gradient vaccine: investigating and
/// improving multi-task optimization in massively multilingual models", ICLR 2021).
///
/// Per group and ordered task pair (i, j), in a random order of j drawn for each i: with
/// `phi = cos(g_i', g_j)` and target `phihat_ij` (EMA of past cosines, starting at 0), if
/// `phi < phihat` then `g_i' += g_j |g_i'| (phihat sqrt(1-phi^2) - phi sqrt(1-phihat^2)) /
/// (|g_j| sqrt(1-phihat^2))`; then `phihat = (1-beta) phihat + beta phi` (always). beta = 0.01
/// (the paper; LibMTL defaults to 0.5). The direction is `sum_i g_i'` (sum, as LibMTL: weights
/// sum to T when nothing is adjusted). With all targets 0 the update is PCGrad's projection,
/// and the random order is drawn exactly as [`crate::PcGrad`] draws it. Pairs where either
/// piece is zero are skipped.
#[derive(Clone, Debug)]
pub struct GradVac {
    beta: f64,
    grouping: GradVacGrouping,
    rng: MethodRng,
    /// Per group, T x T targets (row-major); sized on the first call.
    targets: Vec<Vec<f64>>,
}

impl GradVac {
    /// GradVac with beta = 0.01, per-segment groups, generator seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            beta: 0.01,
            grouping: GradVacGrouping::PerSegment,
            rng: seeded(seed),
            targets: Vec::new(),
        }
    }

    /// GradVac with a given EMA rate `beta` in [0, 1] and grouping.
    pub fn with_options(seed: u64, beta: f64, grouping: GradVacGrouping) -> Result<Self> {
        if !(0.0..=1.0).contains(&beta) {
            return Err(MtoError::invalid(
                "gradvac",
                format!("beta is {beta}, expected a value in [0, 1]"),
            ));
        }
        Ok(Self {
            beta,
            grouping,
            ..Self::new(seed)
        })
    }

    /// The current targets: per group, T x T row-major.
    pub fn targets(&self) -> &[Vec<f64>] {
        &self.targets
    }
}

impl Aggregator for GradVac {
    fn name(&self) -> &'static str {
        "gradvac"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("gradvac", None)?;
        let grads = input.require_grads("gradvac")?;
        let gram = input.gram("gradvac")?;
        let groups: Vec<&[f64]> = match self.grouping {
            GradVacGrouping::WholeModel => vec![&gram.total],
            GradVacGrouping::PerSegment => gram.segments.iter().map(|s| s.as_slice()).collect(),
        };
        if self.targets.is_empty() {
            self.targets = vec![vec![0.0; t * t]; groups.len()];
        } else if self.targets.len() != groups.len() || self.targets[0].len() != t * t {
            return Err(MtoError::invalid(
                "gradvac",
                format!(
                    "gradients now have {} groups of {t} tasks, earlier steps had {} groups of {} tasks",
                    groups.len(),
                    self.targets.len(),
                    (self.targets[0].len() as f64).sqrt() as usize
                ),
            ));
        }
        let mut coef: Vec<Vec<Vec<f64>>> = vec![vec![vec![0.0; t]; t]; groups.len()];
        for c in coef.iter_mut() {
            for (i, row) in c.iter_mut().enumerate() {
                row[i] = 1.0;
            }
        }
        // `i` indexes the coefficient rows of every group at once.
        #[allow(clippy::needless_range_loop)]
        for i in 0..t {
            let order = shuffled_others(&mut self.rng, i, t);
            for (gi, k) in groups.iter().enumerate() {
                let row = &mut coef[gi][i];
                for &j in &order {
                    let kj: Vec<f64> = (0..t).map(|m| k[m * t + j]).collect();
                    let dot: f64 = row.iter().zip(&kj).map(|(c, kk)| c * kk).sum();
                    let ni2: f64 = (0..t)
                        .map(|a| row[a] * (0..t).map(|b| k[a * t + b] * row[b]).sum::<f64>())
                        .sum();
                    let nj2 = k[j * t + j];
                    if !(ni2 > 0.0 && nj2 > 0.0) {
                        continue;
                    }
                    let (ni, nj) = (ni2.sqrt(), nj2.sqrt());
                    let phi = (dot / (ni * nj)).clamp(-1.0, 1.0);
                    let target = &mut self.targets[gi][i * t + j];
                    let phat = target.clamp(-1.0, 1.0 - 1e-12);
                    if phi < phat {
                        let sp = (1.0 - phat * phat).sqrt();
                        let w = ni * (phat * (1.0 - phi * phi).sqrt() - phi * sp) / (nj * sp);
                        row[j] += w;
                    }
                    *target = (1.0 - self.beta) * *target + self.beta * phi;
                }
            }
        }
        let seg_w: Vec<Vec<f64>> = coef
            .iter()
            .map(|c| (0..t).map(|m| c.iter().map(|row| row[m]).sum()).collect())
            .collect();
        Ok(match self.grouping {
            GradVacGrouping::WholeModel => {
                let w = seg_w[0].clone();
                Aggregation {
                    direction: input.direction(&w)?,
                    weights: w,
                    segment_weights: None,
                }
            }
            GradVacGrouping::PerSegment => {
                let sizes = grads.segment_sizes();
                let p = grads.params() as f64;
                let w: Vec<f64> = (0..t)
                    .map(|m| {
                        seg_w
                            .iter()
                            .zip(&sizes)
                            .map(|(sw, &n)| sw[m] * n as f64 / p)
                            .sum()
                    })
                    .collect();
                Aggregation {
                    direction: input.direction_segments(&seg_w)?,
                    weights: w,
                    segment_weights: Some(seg_w),
                }
            }
        })
    }
}
