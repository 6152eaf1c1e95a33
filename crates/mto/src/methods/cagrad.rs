//! CAGrad: the best worst-case improvement within a ball around the mean gradient.

use crate::aggregator::Aggregator;
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::linalg::{matvec, quad, trace};
use crate::simplex::minimize_on_simplex;

/// How CAGrad rescales its direction (the official code's `rescale` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaGradRescale {
    /// `rescale = 0`: no rescaling.
    None,
    /// `rescale = 1` (the official default): divide by `1 + c^2`.
    OnePlusC2,
    /// `rescale = 2`: divide by `1 + c`.
    OnePlusC,
}

/// Conflict-Averse Gradient descent (Liu, Liu, Jin, Stone & Liu, "Conflict-averse gradient
/// descent for multi-task learning", NeurIPS 2021), c = 0.5.
///
/// With `g0` the mean gradient, `phi = c^2 |g0|^2`, solve `min_{w in simplex} g_w . g0 +
/// sqrt(phi) |g_w|` (projected gradient on the T x T Gram matrix), then `d = g0 + (sqrt(phi) /
/// |g_w|) g_w`, rescaled. Weights are `1/T + lambda w_t` (divided by the rescale factor): they
/// sum to 1 + lambda before rescaling; c = 0 gives the mean exactly. When `|g_w|` vanishes
/// (fully conflicting gradients) the correction is dropped (the official code divides by
/// `|g_w| + 1e-4` instead).
#[derive(Clone, Debug)]
pub struct CaGrad {
    c: f64,
    rescale: CaGradRescale,
}

impl CaGrad {
    /// CAGrad with c = 0.5 and the official default rescaling by `1 + c^2`.
    pub fn new() -> Self {
        Self {
            c: 0.5,
            rescale: CaGradRescale::OnePlusC2,
        }
    }

    /// CAGrad with a given `c >= 0` and rescaling.
    pub fn with_options(c: f64, rescale: CaGradRescale) -> Result<Self> {
        if !(c >= 0.0 && c.is_finite()) {
            return Err(MtoError::invalid(
                "cagrad",
                format!("c is {c}, expected a finite value >= 0"),
            ));
        }
        Ok(Self { c, rescale })
    }
}

impl Default for CaGrad {
    fn default() -> Self {
        Self::new()
    }
}

/// CAGrad weights for Gram matrix `k` (before combining).
pub(crate) fn cagrad_weights(k: &[f64], t: usize, c: f64, rescale: CaGradRescale) -> Vec<f64> {
    let tf = t as f64;
    let mean = vec![1.0 / tf; t];
    let tr = trace(k, t);
    let mut w = mean.clone();
    if tr > 0.0 && c > 0.0 {
        // The minimiser is invariant to scaling K; normalise for the solver's tolerances.
        let s = tr / tf;
        let kn: Vec<f64> = k.iter().map(|x| x / s).collect();
        let g0_norm = quad(&kn, t, &mean).max(0.0).sqrt();
        let sq_phi = c * g0_norm;
        let kb = matvec(&kn, t, &mean);
        let eps = 1e-12;
        let f = |x: &[f64]| {
            let lin: f64 = x.iter().zip(&kb).map(|(a, b)| a * b).sum();
            lin + sq_phi * (quad(&kn, t, x).max(0.0) + eps).sqrt()
        };
        let grad = |x: &[f64]| {
            let kx = matvec(&kn, t, x);
            let nrm = (kx.iter().zip(x).map(|(a, b)| a * b).sum::<f64>().max(0.0) + eps).sqrt();
            kb.iter()
                .zip(&kx)
                .map(|(b, a)| b + sq_phi * a / nrm)
                .collect()
        };
        let x = minimize_on_simplex(f, grad, mean.clone(), 1000);
        let gw_norm = quad(&kn, t, &x).max(0.0).sqrt();
        if gw_norm > 1e-10 {
            let lambda = sq_phi / gw_norm;
            w = mean.iter().zip(&x).map(|(m, xi)| m + lambda * xi).collect();
        }
    }
    let factor = match rescale {
        CaGradRescale::None => 1.0,
        CaGradRescale::OnePlusC2 => 1.0 + c * c,
        CaGradRescale::OnePlusC => 1.0 + c,
    };
    w.iter().map(|x| x / factor).collect()
}

impl Aggregator for CaGrad {
    fn name(&self) -> &'static str {
        "cagrad"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("cagrad", None)?;
        let gram = input.gram("cagrad")?;
        let w = cagrad_weights(&gram.total, t, self.c, self.rescale);
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
