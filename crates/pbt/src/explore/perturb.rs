//! Perturbation and resampling explore (Ray Tune's PBT explore), with simplex moves.

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::{Explore, ExploreContext};
use crate::rng::PbtRng;
use crate::simplex;
use crate::space::{Domain, SearchSpace};
use crate::trainable::BoxError;
use crate::value::{HpValue, Hyperparams};

/// How simplex-valued hyperparameters are perturbed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum SimplexMove {
    /// Each weight times a random perturbation factor, then renormalised (and floored).
    Multiplicative,
    /// A Dirichlet draw with mean the current weights; larger concentration, smaller moves.
    Dirichlet {
        /// Sum of the Dirichlet parameters.
        concentration: f64,
    },
}

/// Perturb each hyperparameter by a random factor, or with probability
/// `resample_probability` draw it afresh from its domain; always within bounds.
///
/// Integers are rounded after scaling and moved by at least one when the factor is not 1;
/// choices move to the neighbouring entry (down for factors below 1, up above);
/// simplexes move as `simplex_move` says; constants never change.
#[derive(Clone, Debug)]
pub struct Perturb {
    /// Multiplicative factors drawn uniformly (default 0.8 and 1.2).
    pub factors: Vec<f64>,
    /// Probability of resampling each hyperparameter instead of perturbing it (default 0.25).
    pub resample_probability: f64,
    /// The move used for simplex domains.
    pub simplex_move: SimplexMove,
}

impl Default for Perturb {
    fn default() -> Self {
        Self {
            factors: vec![0.8, 1.2],
            resample_probability: 0.25,
            simplex_move: SimplexMove::Multiplicative,
        }
    }
}

impl Perturb {
    /// Uses `m` for simplex domains (builder style).
    pub fn with_simplex_move(mut self, m: SimplexMove) -> Self {
        self.simplex_move = m;
        self
    }

    /// Perturbs every hyperparameter of `space` in `hp` (names missing from `hp` are sampled).
    pub fn perturb(&self, space: &SearchSpace, hp: &Hyperparams, rng: &mut PbtRng) -> Hyperparams {
        let mut out = Hyperparams::new();
        for (name, domain) in &space.domains {
            let v = match hp.get(name) {
                Some(v) => self.perturb_value(domain, v, rng),
                None => domain.sample(rng),
            };
            out.0.insert(name.clone(), v);
        }
        out
    }

    fn factor(&self, rng: &mut PbtRng) -> f64 {
        if self.factors.is_empty() {
            1.0
        } else {
            self.factors[rng.random_range(0..self.factors.len())]
        }
    }

    fn perturb_value(&self, domain: &Domain, v: &HpValue, rng: &mut PbtRng) -> HpValue {
        if let Domain::Nested(inner) = domain {
            // Nested configs decide per leaf.
            let empty = Hyperparams::new();
            return HpValue::Map(self.perturb(inner, v.as_map().unwrap_or(&empty), rng));
        }
        if matches!(domain, Domain::Constant(_)) {
            return domain.sample(rng);
        }
        if rng.random::<f64>() < self.resample_probability {
            return domain.sample(rng);
        }
        match domain {
            Domain::Uniform { low, high } | Domain::LogUniform { low, high } => match v.as_f64() {
                Some(x) => HpValue::Float((x * self.factor(rng)).clamp(*low, *high)),
                None => domain.sample(rng),
            },
            Domain::Int { low, high } => match v.as_i64() {
                Some(x) => {
                    let f = self.factor(rng);
                    let mut y = (x as f64 * f).round() as i64;
                    if y == x && f > 1.0 {
                        y = x.saturating_add(1);
                    } else if y == x && f < 1.0 {
                        y = x.saturating_sub(1);
                    }
                    HpValue::Int(y.clamp(*low, *high))
                }
                None => domain.sample(rng),
            },
            Domain::Choice(values) => match values.iter().position(|c| c == v) {
                Some(i) => {
                    let f = self.factor(rng);
                    let j = if f > 1.0 {
                        (i + 1).min(values.len() - 1)
                    } else if f < 1.0 {
                        i.saturating_sub(1)
                    } else {
                        i
                    };
                    values[j].clone()
                }
                None => domain.sample(rng),
            },
            Domain::Simplex { dim, floor } => match v.as_vector() {
                Some(w) if w.len() == *dim => HpValue::Vector(match self.simplex_move {
                    SimplexMove::Multiplicative => {
                        simplex::perturb_multiplicative(w, &self.factors, *floor, rng)
                    }
                    SimplexMove::Dirichlet { concentration } => {
                        simplex::perturb_dirichlet(w, concentration, *floor, rng)
                    }
                }),
                _ => domain.sample(rng),
            },
            Domain::Nested(_) | Domain::Constant(_) => domain.sample(rng),
        }
    }
}

impl Explore for Perturb {
    fn name(&self) -> String {
        format!(
            "perturb(factors={:?}, resample={}, simplex={:?})",
            self.factors, self.resample_probability, self.simplex_move
        )
    }

    fn explore(
        &self,
        ctx: &ExploreContext<'_>,
        hp: &Hyperparams,
        rng: &mut PbtRng,
    ) -> Result<Hyperparams, BoxError> {
        Ok(self.perturb(ctx.space, hp, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    fn space() -> SearchSpace {
        SearchSpace::new()
            .with("lr", Domain::log_uniform(1e-4, 1e-1))
            .with("mom", Domain::uniform(0.5, 0.99))
            .with("bs", Domain::int(8, 64))
            .with("opt", Domain::choice(["sgd", "adam", "lamb"]))
            .with("p", Domain::simplex_with_floor(4, 0.05))
            .with("c", Domain::constant("fixed"))
            .with(
                "n",
                Domain::nested(SearchSpace::new().with("x", Domain::uniform(0.0, 1.0))),
            )
    }

    #[test]
    fn pure_perturbation_scales_by_a_factor_and_clamps() {
        let s = space();
        let p = Perturb {
            resample_probability: 0.0,
            ..Perturb::default()
        };
        let mut rng = stream(1, Purpose::Decision, 0, 0);
        let hp = Hyperparams::new()
            .with("lr", 0.01)
            .with("mom", 0.95)
            .with("bs", 10i64)
            .with("opt", "adam")
            .with("p", vec![0.1, 0.2, 0.3, 0.4])
            .with("c", "fixed")
            .with("n", Hyperparams::new().with("x", 0.5));
        for _ in 0..200 {
            let out = p.perturb(&s, &hp, &mut rng);
            s.check(&out).unwrap();
            let lr = out.f64("lr").unwrap();
            assert!(
                (lr - 0.008).abs() < 1e-15 || (lr - 0.012).abs() < 1e-15,
                "{lr}"
            );
            let mom = out.f64("mom").unwrap();
            assert!((mom - 0.76).abs() < 1e-12 || mom == 0.99, "{mom}");
            let bs = out.i64("bs").unwrap();
            assert!(bs == 8 || bs == 12, "{bs}");
            let opt = out.str("opt").unwrap();
            assert!(opt == "sgd" || opt == "lamb", "{opt}");
            let x = out.map("n").unwrap().f64("x").unwrap();
            assert!((x - 0.4).abs() < 1e-12 || (x - 0.6).abs() < 1e-12);
            assert_eq!(out.str("c"), Some("fixed"));
        }
    }

    #[test]
    fn resampling_happens_at_the_configured_rate_and_stays_in_bounds() {
        let s = SearchSpace::new().with("x", Domain::uniform(0.0, 1.0));
        let p = Perturb::default();
        let mut rng = stream(2, Purpose::Decision, 0, 0);
        let hp = Hyperparams::new().with("x", 0.5);
        let n = 4000;
        let mut resampled = 0;
        for _ in 0..n {
            let x = p.perturb(&s, &hp, &mut rng).f64("x").unwrap();
            assert!((0.0..=1.0).contains(&x));
            if (x - 0.4).abs() > 1e-12 && (x - 0.6).abs() > 1e-12 {
                resampled += 1;
            }
        }
        let rate = resampled as f64 / n as f64;
        assert!((rate - 0.25).abs() < 0.03, "{rate}");
    }

    #[test]
    fn simplex_moves_respect_sum_and_floor_at_the_boundary() {
        let s = SearchSpace::new().with("p", Domain::simplex_with_floor(3, 0.1));
        let mut rng = stream(3, Purpose::Decision, 0, 0);
        for m in [
            SimplexMove::Multiplicative,
            SimplexMove::Dirichlet {
                concentration: 30.0,
            },
        ] {
            let p = Perturb::default().with_simplex_move(m);
            let mut hp = Hyperparams::new().with("p", vec![0.8, 0.1, 0.1]);
            for _ in 0..500 {
                hp = p.perturb(&s, &hp, &mut rng);
                s.check(&hp).unwrap();
                let w = hp.vector("p").unwrap();
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                assert!(w.iter().all(|&x| x >= 0.1 - 1e-15), "{w:?}");
            }
        }
    }
}
