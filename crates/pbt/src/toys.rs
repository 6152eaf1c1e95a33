//! Toy trainables (no neural network) for examples, tests and benchmarks.
//!
//! Both are deterministic: their whole state is in the checkpoint, and their "noise" is a
//! hash of that state, so a resumed run reproduces an uninterrupted one bit for bit.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::space::{Domain, SearchSpace};
use crate::trainable::{BoxError, Interval, Trainable};
use crate::value::Hyperparams;

fn write_json<S: Serialize>(path: &Path, state: &S) -> Result<(), BoxError> {
    std::fs::write(path, serde_json::to_vec(state)?)?;
    Ok(())
}

fn read_json<S: for<'de> Deserialize<'de>>(path: &Path) -> Result<S, BoxError> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

/// A uniform number in [0, 1) from a hash of `a` and `b` (SplitMix64).
fn hash_unit(a: u64, b: u64) -> f64 {
    let mut z = a ^ b.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Scalarization on a simplex: parameters `theta` follow gradient descent on
/// `sum_t p_t * |theta - e_t|^2` (so `theta -> p`), and the score is `-|theta - target|^2`.
/// The best weights are `p = target`; PBT must find them. Hyperparameter: `weights`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimplexQuadratic {
    /// The optimum on the simplex.
    pub target: Vec<f64>,
    /// The parameters being trained.
    pub theta: Vec<f64>,
    /// Gradient-descent step size per unit.
    pub lr: f64,
    /// Current weights p.
    pub weights: Vec<f64>,
    /// Units trained.
    pub step: u64,
}

impl SimplexQuadratic {
    /// A fresh trainable with `theta = 0`.
    pub fn new(target: Vec<f64>) -> Self {
        let t = target.len();
        Self {
            target,
            theta: vec![0.0; t],
            lr: 0.1,
            weights: vec![1.0 / t as f64; t],
            step: 0,
        }
    }

    /// The search space: `weights` on the simplex of the target's dimension.
    pub fn space(dim: usize, floor: f64) -> SearchSpace {
        SearchSpace::new().with("weights", Domain::simplex_with_floor(dim, floor))
    }
}

impl Trainable for SimplexQuadratic {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        let w = hp
            .vector("weights")
            .ok_or("hyperparameter `weights` missing or not a vector")?;
        if w.len() != self.target.len() {
            return Err(format!(
                "`weights` has {} entries, expected {}",
                w.len(),
                self.target.len()
            )
            .into());
        }
        self.weights = w.to_vec();
        Ok(())
    }

    fn hyperparameters(&self) -> Hyperparams {
        Hyperparams::new().with("weights", self.weights.clone())
    }

    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        for _ in 0..interval.units {
            // Gradient of sum_t p_t |theta - e_t|^2 is 2 (theta * sum p - p).
            let sum_p: f64 = self.weights.iter().sum();
            for (th, p) in self.theta.iter_mut().zip(&self.weights) {
                *th -= self.lr * 2.0 * (*th * sum_p - p);
            }
            self.step += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<f64, BoxError> {
        Ok(-self
            .theta
            .iter()
            .zip(&self.target)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>())
    }

    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        write_json(path, self)
    }

    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        *self = read_json(path)?;
        Ok(())
    }
}

/// Ray Tune's PBT benchmark toy: accuracy grows fastest when `lr` is close to an optimal
/// learning rate that first rises and then falls as accuracy grows (a triangle wave
/// between 0.001 and 0.01, peak at accuracy 100), and drops when `lr` is far too large.
/// A fixed `lr` stalls; following the moving optimum needs a schedule. Hyperparameter: `lr`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MovingOptimum {
    /// The score.
    pub accuracy: f64,
    /// Current learning rate.
    pub lr: f64,
    /// Units trained.
    pub step: u64,
}

impl MovingOptimum {
    /// A fresh trainable at accuracy 0.
    pub fn new() -> Self {
        Self {
            accuracy: 0.0,
            lr: 0.001,
            step: 0,
        }
    }

    /// The search space of Ray's example: `lr` in [1e-4, 2e-2].
    pub fn space() -> SearchSpace {
        SearchSpace::new().with("lr", Domain::uniform(1e-4, 0.02))
    }

    /// The optimal learning rate at accuracy `acc`.
    pub fn optimal_lr(acc: f64) -> f64 {
        let midpoint = 100.0;
        let opt = if acc < midpoint {
            0.01 * acc / midpoint
        } else {
            0.01 - 0.01 * (acc - midpoint) / midpoint
        };
        opt.clamp(0.001, 0.01)
    }
}

impl Trainable for MovingOptimum {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        self.lr = hp
            .f64("lr")
            .ok_or("hyperparameter `lr` missing or not a number")?;
        Ok(())
    }

    fn hyperparameters(&self) -> Hyperparams {
        Hyperparams::new().with("lr", self.lr)
    }

    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        let q_tolerance = 3.0;
        let noise_level = 2.0;
        for _ in 0..interval.units {
            let opt = Self::optimal_lr(self.accuracy);
            let q_err = self.lr.max(opt) / self.lr.min(opt);
            let key = self.accuracy.to_bits();
            let u = hash_unit(key, self.step);
            if q_err < q_tolerance {
                self.accuracy += u / q_err;
            } else if self.lr > opt {
                self.accuracy -= (q_err - q_tolerance) * u;
            }
            // Gaussian noise by Box-Muller from two more hashed uniforms.
            let (u1, u2) = (
                hash_unit(key, self.step ^ 0xA5A5),
                hash_unit(key ^ 0x5A5A, self.step),
            );
            let normal = (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            self.accuracy = (self.accuracy + noise_level * normal).max(0.0);
            self.step += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<f64, BoxError> {
        Ok(self.accuracy)
    }

    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        write_json(path, self)
    }

    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        *self = read_json(path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadratic_gradient_matches_finite_differences() {
        let mut q = SimplexQuadratic::new(vec![0.2, 0.3, 0.5]);
        q.weights = vec![0.1, 0.6, 0.3];
        q.theta = vec![0.4, -0.2, 0.9];
        let loss = |th: &[f64], w: &[f64]| -> f64 {
            (0..3)
                .map(|t| {
                    w[t] * (0..3)
                        .map(|i| (th[i] - if i == t { 1.0 } else { 0.0 }).powi(2))
                        .sum::<f64>()
                })
                .sum()
        };
        let before = q.theta.clone();
        q.train(&Interval {
            member: 0,
            start_step: 0,
            units: 1,
        })
        .unwrap();
        for i in 0..3 {
            let h = 1e-6;
            let mut a = before.clone();
            let mut b = before.clone();
            a[i] += h;
            b[i] -= h;
            let g = (loss(&a, &q.weights) - loss(&b, &q.weights)) / (2.0 * h);
            assert!((before[i] - q.lr * g - q.theta[i]).abs() < 1e-8);
        }
    }

    #[test]
    fn moving_optimum_rewards_the_schedule_and_is_deterministic() {
        let run = |lr_of: &dyn Fn(f64) -> f64| {
            let mut m = MovingOptimum::new();
            for _ in 0..300 {
                m.lr = lr_of(m.accuracy);
                m.train(&Interval {
                    member: 0,
                    start_step: m.step,
                    units: 1,
                })
                .unwrap();
            }
            m.accuracy
        };
        let oracle = run(&MovingOptimum::optimal_lr);
        let fixed = run(&|_| 0.002);
        assert!(oracle > fixed + 30.0, "oracle {oracle} fixed {fixed}");
        assert_eq!(run(&|_| 0.002).to_bits(), fixed.to_bits());
    }
}
