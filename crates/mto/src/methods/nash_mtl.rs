//! Nash-MTL: the Nash bargaining solution, `K alpha = 1 / alpha`.

use crate::aggregator::Aggregator;
use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};
use crate::linalg::{cholesky_solve, matvec, quad};

/// Ridge added to the normalised Gram matrix so that the system has a finite solution even when
/// gradients are linearly dependent with a non-negative null combination (e.g. g2 = -g1).
const RIDGE: f64 = 1e-9;

/// Nash-MTL (Navon et al., "Multi-task learning as a bargaining game", ICML 2022).
///
/// Weights alpha > 0 solve `(K alpha)_t = 1 / alpha_t`, K the Gram matrix of the task
/// gradients; the direction `sum_t alpha_t g_t` is clipped to norm `max_norm` (1.0, the
/// official `max_norm`). The official code reaches the system by CCCP iterations of a convex
/// program (cvxpy, 20 iterations, warm-started from the previous alpha); here the same fixed
/// point is found as the unique minimiser of the strictly convex potential
/// `0.5 alpha^T K alpha - sum_t log alpha_t` (its gradient is `K alpha - 1/alpha`) by damped
/// Newton iterations, warm-started from the previous step's solution. The system is solved on
/// `K / |K|_F` plus a 1e-9 ridge and rescaled exactly (`alpha = alpha_n / sqrt(|K|_F)`), so alpha
/// solves the paper's equation for the raw K (the official code applies alpha of the
/// normalised system to the raw gradients, a uniform factor `sqrt(|K|_F)` larger, before
/// clipping). Tasks with a zero gradient get weight 0. Weights do not sum to a constant.
#[derive(Clone, Debug)]
pub struct NashMtl {
    max_norm: Option<f64>,
    max_iter: usize,
    warm: Option<Vec<f64>>,
}

impl NashMtl {
    /// Nash-MTL with `max_norm = 1.0` and up to 100 Newton iterations.
    pub fn new() -> Self {
        Self {
            max_norm: Some(1.0),
            max_iter: 100,
            warm: None,
        }
    }

    /// Nash-MTL with a given clip norm (`None`: no clipping) and iteration limit (>= 1).
    pub fn with_options(max_norm: Option<f64>, max_iter: usize) -> Result<Self> {
        if let Some(m) = max_norm
            && !(m > 0.0 && m.is_finite())
        {
            return Err(MtoError::invalid(
                "nash_mtl",
                format!("max_norm is {m}, expected a finite value > 0"),
            ));
        }
        if max_iter == 0 {
            return Err(MtoError::invalid("nash_mtl", "max_iter = 0, expected >= 1"));
        }
        Ok(Self {
            max_norm,
            max_iter,
            warm: None,
        })
    }
}

impl Default for NashMtl {
    fn default() -> Self {
        Self::new()
    }
}

/// Solves `A alpha = 1/alpha`, alpha > 0, for symmetric PSD-plus-ridge `a`, from `start`.
pub(crate) fn nash_solve(a: &[f64], n: usize, start: Vec<f64>, max_iter: usize) -> Vec<f64> {
    let potential = |x: &[f64]| 0.5 * quad(a, n, x) - x.iter().map(|v| v.ln()).sum::<f64>();
    let mut x = start;
    let mut fx = potential(&x);
    for _ in 0..max_iter {
        let ax = matvec(a, n, &x);
        let g: Vec<f64> = (0..n).map(|i| ax[i] - 1.0 / x[i]).collect();
        // Scale-free residual of (A x)_i x_i = 1.
        let res = (0..n)
            .map(|i| (ax[i] * x[i] - 1.0).abs())
            .fold(0.0, f64::max);
        if res < 1e-13 {
            break;
        }
        let mut h = a.to_vec();
        for i in 0..n {
            h[i * n + i] += 1.0 / (x[i] * x[i]);
        }
        let neg_g: Vec<f64> = g.iter().map(|v| -v).collect();
        let Some(dx) = cholesky_solve(&h, n, &neg_g) else {
            break;
        };
        // Stay inside alpha > 0, then backtrack for sufficient decrease.
        let mut step = 1.0f64;
        for i in 0..n {
            if dx[i] < 0.0 {
                step = step.min(-0.99 * x[i] / dx[i]);
            }
        }
        let slope: f64 = g.iter().zip(&dx).map(|(a, b)| a * b).sum();
        let mut moved = false;
        while step > 1e-16 {
            let y: Vec<f64> = x.iter().zip(&dx).map(|(a, b)| a + step * b).collect();
            let fy = potential(&y);
            if fy <= fx + 1e-4 * step * slope {
                x = y;
                fx = fy;
                moved = true;
                break;
            }
            step *= 0.5;
        }
        if !moved {
            break;
        }
    }
    x
}

impl Aggregator for NashMtl {
    fn name(&self) -> &'static str {
        "nash_mtl"
    }

    fn requirement(&self) -> Requirement {
        Requirement::SharedGradients
    }

    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation> {
        let t = input.check_losses("nash_mtl", None)?;
        let gram = input.gram("nash_mtl")?;
        let k = &gram.total;
        let max_diag = (0..t).map(|i| k[i * t + i]).fold(0.0, f64::max);
        let active: Vec<usize> = (0..t)
            .filter(|&i| k[i * t + i] > 1e-20 * max_diag && max_diag > 0.0)
            .collect();
        let mut w = vec![0.0; t];
        if !active.is_empty() {
            let n = active.len();
            let mut ka: Vec<f64> = (0..n * n)
                .map(|idx| k[active[idx / n] * t + active[idx % n]])
                .collect();
            let fro = ka.iter().map(|x| x * x).sum::<f64>().sqrt();
            ka.iter_mut().for_each(|x| *x /= fro);
            for i in 0..n {
                ka[i * n + i] += RIDGE;
            }
            let start = match &self.warm {
                Some(prev) if prev.len() == n && prev.iter().all(|v| v.is_finite() && *v > 0.0) => {
                    prev.clone()
                }
                _ => (0..n)
                    .map(|i| 1.0 / (ka[i * n + i] * n as f64).sqrt())
                    .collect(),
            };
            let alpha_n = nash_solve(&ka, n, start, self.max_iter);
            let s = fro.sqrt();
            for (a, &i) in alpha_n.iter().zip(&active) {
                w[i] = a / s;
            }
            self.warm = Some(alpha_n);
        }
        if let Some(max_norm) = self.max_norm {
            let norm = quad(k, t, &w).max(0.0).sqrt();
            if norm > max_norm {
                let f = max_norm / norm;
                w.iter_mut().for_each(|x| *x *= f);
            }
        }
        Ok(Aggregation {
            direction: input.direction(&w)?,
            weights: w,
            segment_weights: None,
        })
    }
}
