//! Dynamic Weight Average: weights from the descent rate of epoch-mean losses.

use crate::aggregator::{Aggregator, weighted};
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// Dynamic Weight Average (Liu, Johns & Davison, "End-to-end multi-task learning with
/// attention", CVPR 2019).
///
/// `w_t(e) = T softmax_t(r_t / temperature)`, `r_t = Lbar_t(e-1) / Lbar_t(e-2)` with `Lbar` the
/// mean of the losses seen during an epoch; weights 1 in epochs 0 and 1. Weights sum to T
/// (paper and LibMTL). The epoch comes from [`AggregateInput::epoch`]; a ratio with a
/// non-positive or non-finite denominator counts as 1.
#[derive(Clone, Debug)]
pub struct Dwa {
    tasks: usize,
    temperature: f64,
    epoch: usize,
    sums: Vec<f64>,
    count: usize,
    /// Epoch means of the last two finished epochs (older first).
    history: Vec<Vec<f64>>,
}

impl Dwa {
    /// DWA with temperature 2 (the paper's value).
    pub fn new(tasks: usize) -> Result<Self> {
        Self::with_temperature(tasks, 2.0)
    }

    /// DWA with a given temperature (> 0).
    pub fn with_temperature(tasks: usize, temperature: f64) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid("dwa", "tasks = 0, expected T >= 1"));
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(MtoError::invalid(
                "dwa",
                format!("temperature is {temperature}, expected a finite value > 0"),
            ));
        }
        Ok(Self {
            tasks,
            temperature,
            epoch: 0,
            sums: vec![0.0; tasks],
            count: 0,
            history: Vec::new(),
        })
    }

    fn finish_epochs(&mut self, epoch: usize) {
        while self.epoch < epoch {
            if self.count > 0 {
                let mean: Vec<f64> = self.sums.iter().map(|s| s / self.count as f64).collect();
                self.history.push(mean);
                if self.history.len() > 2 {
                    self.history.remove(0);
                }
            }
            self.sums.iter_mut().for_each(|s| *s = 0.0);
            self.count = 0;
            self.epoch += 1;
        }
    }
}

impl Aggregator for Dwa {
    fn name(&self) -> &'static str {
        "dwa"
    }

    fn requirement(&self) -> Requirement {
        Requirement::Losses
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("dwa", Some(self.tasks))?;
        if input.epoch < self.epoch {
            return Err(MtoError::invalid(
                "dwa",
                format!(
                    "epoch went back from {} to {}: epochs must not decrease",
                    self.epoch, input.epoch
                ),
            ));
        }
        self.finish_epochs(input.epoch);
        let w = if self.history.len() < 2 {
            vec![1.0; t]
        } else {
            let r: Vec<f64> = (0..t)
                .map(|i| {
                    let (old, new) = (self.history[0][i], self.history[1][i]);
                    let q = new / old;
                    if old > 0.0 && q.is_finite() { q } else { 1.0 }
                })
                .collect();
            let z: Vec<f64> = r.iter().map(|x| x / self.temperature).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| t as f64 * x / s).collect()
        };
        for (s, l) in self.sums.iter_mut().zip(input.losses) {
            *s += l;
        }
        self.count += 1;
        weighted(input, w)
    }
}
