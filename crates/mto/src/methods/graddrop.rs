//! GradDrop: drop gradient signs stochastically by their purity, at the shared representation.

use rand::RngExt;

use crate::aggregator::Aggregator;
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::rng::{MethodRng, seeded};

/// Gradient Sign Dropout (Chen et al., "Just pick a sign: optimizing deep multitask models with
/// gradient sign dropout", NeurIPS 2020).
///
/// Per element j of the representation gradient: purity `P = (1 + sum_t z_tj / sum_t |z_tj|)
/// / 2`, one `U ~ Uniform[0, 1)` from the method's seeded generator; task t keeps `z_tj` if
/// (`P > U` and `z_tj > 0`) or (`P < U` and `z_tj < 0`); with leak `l_t` the kept factor is
/// `l_t + (1 - l_t) mask`. The direction is `sum_t factor_tj z_tj` (a sum, as the paper and
/// LibMTL). Purity is computed per element of the given buffer (no marginalisation over the
/// batch). Effective weights: the L1 fraction of each task's gradient kept
/// (`sum_j factor_tj |z_tj| / sum_j |z_tj|`, 1 for a zero gradient); with leak 1 all are 1.
#[derive(Clone, Debug)]
pub struct GradDrop {
    leak: Vec<f64>,
    rng: MethodRng,
}

impl GradDrop {
    /// GradDrop for `tasks` tasks with leak 0, generator seeded by `seed`.
    pub fn new(tasks: usize, seed: u64) -> Result<Self> {
        Self::with_leak(vec![0.0; tasks], seed)
    }

    /// GradDrop with a per-task leak in [0, 1].
    pub fn with_leak(leak: Vec<f64>, seed: u64) -> Result<Self> {
        if leak.is_empty() {
            return Err(MtoError::invalid("graddrop", "tasks = 0, expected T >= 1"));
        }
        if let Some((i, l)) = leak
            .iter()
            .enumerate()
            .find(|(_, l)| !(0.0..=1.0).contains(*l))
        {
            return Err(MtoError::invalid(
                "graddrop",
                format!("leak of task {i} is {l}, expected a value in [0, 1]"),
            ));
        }
        Ok(Self {
            leak,
            rng: seeded(seed),
        })
    }
}

impl Aggregator for GradDrop {
    fn name(&self) -> &'static str {
        "graddrop"
    }

    fn requirement(&self) -> Requirement {
        Requirement::RepresentationGradients
    }

    fn needs_gradient_values(&self) -> bool {
        true
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("graddrop", Some(self.leak.len()))?;
        let grads = input.require_grads("graddrop")?;
        // Checked before any draw, so a refused call leaves the generator where it was.
        let Ok(data) = grads.data() else {
            return Err(MtoError::invalid(
                "graddrop",
                "needs the gradient values (it keeps or drops each element by its sign), got shape-only gradients: pass the values",
            ));
        };
        let r = grads.params();
        let row = |i: usize| &data[i * r..(i + 1) * r];
        // Row-wise passes (contiguous reads) instead of a strided walk down each column.
        let mut sum = vec![0f64; r];
        let mut abs = vec![0f64; r];
        for i in 0..t {
            for ((s, a), &z) in sum.iter_mut().zip(abs.iter_mut()).zip(row(i)) {
                *s += z as f64;
                *a += (z as f64).abs();
            }
        }
        // One uniform draw per element, in element order, so a seed fixes the masks.
        // `keep_sign[j]`: 1 keeps positive entries (P > U), -1 keeps negative ones (P < U).
        let keep_sign: Vec<i8> = sum
            .iter()
            .zip(&abs)
            .map(|(s, a)| {
                let u: f64 = self.rng.random();
                let purity = if *a > 0.0 { 0.5 * (1.0 + s / a) } else { 0.5 };
                if purity > u {
                    1
                } else if purity < u {
                    -1
                } else {
                    0
                }
            })
            .collect();
        let mut acc = vec![0f64; r];
        let mut kept = vec![0f64; t];
        let mut total = vec![0f64; t];
        for i in 0..t {
            let l = self.leak[i];
            for ((a, &z), &k) in acc.iter_mut().zip(row(i)).zip(&keep_sign) {
                let z = z as f64;
                let keep = (k > 0 && z > 0.0) || (k < 0 && z < 0.0);
                let f = if keep { 1.0 } else { l };
                *a += f * z;
                kept[i] += f * z.abs();
                total[i] += z.abs();
            }
        }
        let out: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
        let w = kept
            .iter()
            .zip(&total)
            .map(|(k, s)| if *s > 0.0 { k / s } else { 1.0 })
            .collect();
        Ok(Aggregation {
            weights: w,
            direction: Some(out),
            segment_weights: None,
        })
    }
}
