//! A small Gaussian process for PB2: RBF kernel, Cholesky solve, hyperparameters picked by
//! marginal likelihood over a short grid.

/// Lower-triangular Cholesky factor of the row-major `n x n` matrix `a`; `None` when `a` is
/// not (numerically) positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L x = b` (forward substitution).
fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = b.to_vec();
    for i in 0..n {
        let mut s = x[i];
        for k in 0..i {
            s -= l[i * n + k] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x
}

/// Solves `L^T x = b` (back substitution).
fn solve_upper_t(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = b.to_vec();
    for i in (0..n).rev() {
        let mut s = x[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x
}

fn rbf(a: &[f64], b: &[f64], lengthscale: f64) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (-0.5 * d2 / (lengthscale * lengthscale)).exp()
}

/// A fitted GP regressor with unit signal variance on standardised targets.
#[derive(Clone, Debug)]
pub struct Gp {
    x: Vec<Vec<f64>>,
    chol: Vec<f64>,
    alpha: Vec<f64>,
    /// Kernel lengthscale chosen by marginal likelihood.
    pub lengthscale: f64,
    /// Noise variance chosen by marginal likelihood (in standardised units).
    pub noise: f64,
    y_mean: f64,
    y_std: f64,
}

impl Gp {
    /// Fits on inputs `x` (equal lengths) and targets `y`; picks the (lengthscale, noise)
    /// pair of the grid with the highest log marginal likelihood. `None` for fewer than two
    /// points or when no kernel matrix factors.
    pub fn fit(x: &[Vec<f64>], y: &[f64], lengthscales: &[f64], noises: &[f64]) -> Option<Gp> {
        let n = x.len();
        if n < 2 || y.len() != n {
            return None;
        }
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let var = y.iter().map(|v| (v - y_mean) * (v - y_mean)).sum::<f64>() / n as f64;
        let y_std = if var > 1e-24 { var.sqrt() } else { 1.0 };
        let ys: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_std).collect();
        let mut best: Option<(f64, Gp)> = None;
        for &ls in lengthscales {
            for &noise in noises {
                let mut k = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        let v = rbf(&x[i], &x[j], ls);
                        k[i * n + j] = v;
                        k[j * n + i] = v;
                    }
                    k[i * n + i] += noise;
                }
                let Some(l) = cholesky(&k, n) else { continue };
                let alpha = solve_upper_t(&l, n, &solve_lower(&l, n, &ys));
                let fit: f64 = ys.iter().zip(&alpha).map(|(a, b)| a * b).sum();
                let logdet: f64 = (0..n).map(|i| l[i * n + i].ln()).sum();
                let lml = -0.5 * fit - logdet;
                if best.as_ref().is_none_or(|(b, _)| lml > *b) {
                    best = Some((
                        lml,
                        Gp {
                            x: x.to_vec(),
                            chol: l,
                            alpha,
                            lengthscale: ls,
                            noise,
                            y_mean,
                            y_std,
                        },
                    ));
                }
            }
        }
        best.map(|(_, g)| g)
    }

    /// Posterior mean and standard deviation at `x` (in the units of the targets).
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let n = self.x.len();
        let k: Vec<f64> = self
            .x
            .iter()
            .map(|xi| rbf(xi, x, self.lengthscale))
            .collect();
        let mean: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = solve_lower(&self.chol, n, &k);
        let var = (1.0 - v.iter().map(|a| a * a).sum::<f64>()).max(0.0);
        (self.y_mean + self.y_std * mean, self.y_std * var.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_reconstructs_a_random_spd_matrix() {
        let n = 5;
        // A = B B^T + n I with B fixed pseudo-random, not symmetric.
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>();
            }
            a[i * n + i] += n as f64;
        }
        let l = cholesky(&a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                assert!((r - a[i * n + j]).abs() < 1e-10);
            }
            for j in i + 1..n {
                assert_eq!(l[i * n + j], 0.0);
            }
        }
        let not_pd = [1.0, 2.0, 2.0, 1.0];
        assert!(cholesky(&not_pd, 2).is_none());
    }

    #[test]
    fn regression_interpolates_and_is_uncertain_far_away() {
        let x: Vec<Vec<f64>> = (0..15).map(|i| vec![i as f64 / 14.0]).collect();
        let y: Vec<f64> = x.iter().map(|v| (6.0 * v[0]).sin() * 3.0 + 1.0).collect();
        let gp = Gp::fit(&x, &y, &[0.05, 0.1, 0.2, 0.5, 1.0], &[1e-6, 1e-4, 1e-2]).unwrap();
        for (xi, yi) in x.iter().zip(&y) {
            let (m, s) = gp.predict(xi);
            assert!((m - yi).abs() < 0.05, "{m} vs {yi}");
            assert!(s < 0.3);
        }
        // Between data points: close to the function.
        let (m, _) = gp.predict(&[0.53]);
        assert!((m - ((6.0f64 * 0.53).sin() * 3.0 + 1.0)).abs() < 0.1);
        // Far away: prior mean and (nearly) prior standard deviation.
        let (m, s) = gp.predict(&[5.0]);
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        assert!((m - mean).abs() < 1e-6);
        let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        assert!((s - sd).abs() < 1e-3 * sd, "{s} vs {sd}");
    }
}
