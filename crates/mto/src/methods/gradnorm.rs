//! GradNorm: learnable weights that equalise weighted gradient norms at a shared layer.

use crate::aggregator::{Aggregator, check_params};
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// Which shared parameters GradNorm measures gradient norms on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradNormLayer {
    /// The last segment of the gradients (the paper: the last shared layer W).
    LastSegment,
    /// Segment `l`.
    Segment(usize),
    /// All shared parameters (LibMTL's choice).
    All,
}

/// GradNorm (Chen et al., "GradNorm: gradient normalization for adaptive loss balancing in deep
/// multitask networks", ICML 2018), asymmetry alpha = 1.5 by default.
///
/// Learnable weights `w_t`, renormalised to sum to T at the start of every `aggregate` (the
/// paper's renormalisation after each update). With `G_t = w_t |grad_W L_t|`,
/// `Gbar = mean_t G_t`, `r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0))`, the objective is
/// `L_grad = sum_t |G_t - Gbar r_t^alpha|` with the targets `Gbar r_t^alpha` held constant, so
/// `dL_grad/dw_t = sign(G_t - target_t) |grad_W L_t|`. `L_t(0)` are the first losses seen. The
/// returned direction is `sum_t w_t g_t` over all given parameters; weights sum to T.
#[derive(Clone, Debug)]
pub struct GradNorm {
    alpha: f64,
    layer: GradNormLayer,
    weights: Vec<f64>,
    grads: Vec<f64>,
    initial_losses: Option<Vec<f64>>,
    targets: Vec<f64>,
}

impl GradNorm {
    /// GradNorm with alpha 1.5 on the last segment.
    pub fn new(tasks: usize) -> Result<Self> {
        Self::with_options(tasks, 1.5, GradNormLayer::LastSegment)
    }

    /// GradNorm with a given asymmetry `alpha >= 0` and measured layer.
    pub fn with_options(tasks: usize, alpha: f64, layer: GradNormLayer) -> Result<Self> {
        if tasks == 0 {
            return Err(MtoError::invalid("gradnorm", "tasks = 0, expected T >= 1"));
        }
        if !(alpha >= 0.0 && alpha.is_finite()) {
            return Err(MtoError::invalid(
                "gradnorm",
                format!("alpha is {alpha}, expected a finite value >= 0"),
            ));
        }
        Ok(Self {
            alpha,
            layer,
            weights: vec![1.0; tasks],
            grads: vec![0.0; tasks],
            initial_losses: None,
            targets: vec![0.0; tasks],
        })
    }

    /// The targets `Gbar r_t^alpha` of the last `aggregate` call.
    pub fn targets(&self) -> &[f64] {
        &self.targets
    }

    /// `L_grad = sum_t |w_t norms_t - targets_t|` for weights `w` (targets held constant).
    pub fn grad_loss(weights: &[f64], norms: &[f64], targets: &[f64]) -> f64 {
        weights
            .iter()
            .zip(norms)
            .zip(targets)
            .map(|((w, n), c)| (w * n - c).abs())
            .sum()
    }
}

impl Aggregator for GradNorm {
    fn name(&self) -> &'static str {
        "gradnorm"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("gradnorm", Some(self.weights.len()))?;
        let gram = input.gram("gradnorm")?;
        let k: &[f64] = match self.layer {
            GradNormLayer::All => &gram.total,
            GradNormLayer::LastSegment => &gram.segments[gram.segments.len() - 1],
            GradNormLayer::Segment(l) => gram.segments.get(l).ok_or_else(|| {
                MtoError::invalid(
                    "gradnorm",
                    format!(
                        "segment {l} requested, the gradients have {}",
                        gram.segments.len()
                    ),
                )
            })?,
        };
        // Renormalise after the trainer's optimizer step: positive, summing to T.
        self.weights.iter_mut().for_each(|w| *w = w.max(1e-12));
        let sum: f64 = self.weights.iter().sum();
        self.weights.iter_mut().for_each(|w| *w *= t as f64 / sum);

        let norms: Vec<f64> = (0..t).map(|i| k[i * t + i].max(0.0).sqrt()).collect();
        let init = self
            .initial_losses
            .get_or_insert_with(|| input.losses.to_vec());
        let ratio: Vec<f64> = input
            .losses
            .iter()
            .zip(init.iter())
            .map(|(l, l0)| if *l0 > 0.0 { l / l0 } else { 1.0 })
            .collect();
        let mean_ratio = ratio.iter().sum::<f64>() / t as f64;
        let g: Vec<f64> = self
            .weights
            .iter()
            .zip(&norms)
            .map(|(w, n)| w * n)
            .collect();
        let gbar = g.iter().sum::<f64>() / t as f64;
        self.targets = ratio
            .iter()
            .map(|r| {
                let rel = if mean_ratio > 0.0 {
                    r / mean_ratio
                } else {
                    1.0
                };
                gbar * rel.powf(self.alpha)
            })
            .collect();
        self.grads = (0..t)
            .map(|i| {
                let d = g[i] - self.targets[i];
                if d > 0.0 {
                    norms[i]
                } else if d < 0.0 {
                    -norms[i]
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Aggregation {
            direction: input.direction(&self.weights)?,
            weights: self.weights.clone(),
            segment_weights: None,
        })
    }

    fn params(&self) -> &[f64] {
        &self.weights
    }

    fn param_grads(&self) -> &[f64] {
        &self.grads
    }

    fn set_params(&mut self, values: &[f64]) -> Result<()> {
        check_params("gradnorm", values, self.weights.len())?;
        self.weights.copy_from_slice(values);
        Ok(())
    }
}
