//! PB2-style explore (Parker-Holder et al., 2020): a GP models the change in score over an
//! interval as a function of (time, hyperparameters); the new hyperparameters maximise an
//! upper confidence bound over random candidates.

use std::sync::{Arc, Mutex};

use super::gp::Gp;
use super::{Explore, ExploreContext, Perturb};
use crate::rng::PbtRng;
use crate::trainable::BoxError;
use crate::value::Hyperparams;

/// GP-UCB explore over candidates drawn from the space and from perturbations of the copied
/// hyperparameters. Numeric domains are modelled (choices as their index); falls back to
/// `fallback` while there are fewer than `min_points` observations.
#[derive(Debug)]
pub struct Pb2 {
    /// UCB exploration weight: score = mean + kappa * std.
    pub kappa: f64,
    /// Candidates drawn uniformly from the search space.
    pub random_candidates: usize,
    /// Candidates obtained by perturbing the copied hyperparameters.
    pub perturbed_candidates: usize,
    /// Only the latest `window` observations are modelled (GP cost grows as its cube).
    pub window: usize,
    /// Observations needed before the GP is used.
    pub min_points: usize,
    /// The explore used for perturbed candidates and as a fallback.
    pub fallback: Perturb,
    /// The last fit, reused while the data and time are unchanged (all decisions of a
    /// synchronous generation share one fit; the fit is deterministic, so reuse changes
    /// nothing but the cost).
    cache: Mutex<Option<(u64, Arc<Gp>)>>,
}

impl Clone for Pb2 {
    fn clone(&self) -> Self {
        Self {
            kappa: self.kappa,
            random_candidates: self.random_candidates,
            perturbed_candidates: self.perturbed_candidates,
            window: self.window,
            min_points: self.min_points,
            fallback: self.fallback.clone(),
            cache: Mutex::new(None),
        }
    }
}

/// A fingerprint of the model inputs, targets and prediction time (FNV-1a over the bits).
fn data_key(x: &[Vec<f64>], y: &[f64], t_next: u64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let mut eat = |v: u64| {
        h ^= v;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    };
    eat(t_next);
    eat(x.len() as u64);
    for (xi, yi) in x.iter().zip(y) {
        xi.iter().for_each(|v| eat(v.to_bits()));
        eat(yi.to_bits());
    }
    h
}

impl Default for Pb2 {
    fn default() -> Self {
        Self {
            kappa: 2.0,
            random_candidates: 128,
            perturbed_candidates: 64,
            window: 200,
            min_points: 4,
            fallback: Perturb::default(),
            cache: Mutex::new(None),
        }
    }
}

impl Pb2 {
    fn fit(&self, x: &[Vec<f64>], y: &[f64], key: u64) -> Option<Arc<Gp>> {
        if let Ok(c) = self.cache.lock()
            && let Some((k, gp)) = c.as_ref()
            && *k == key
        {
            return Some(gp.clone());
        }
        let gp = Arc::new(Gp::fit(
            x,
            y,
            &[0.1, 0.2, 0.4, 0.8, 1.6],
            &[1e-3, 1e-2, 1e-1, 0.5],
        )?);
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((key, gp.clone()));
        }
        Some(gp)
    }
}

impl Explore for Pb2 {
    fn name(&self) -> String {
        format!(
            "pb2(kappa={}, candidates={}+{}, window={}, fallback={})",
            self.kappa,
            self.random_candidates,
            self.perturbed_candidates,
            self.window,
            self.fallback.name()
        )
    }

    fn needs_history(&self) -> bool {
        true
    }

    fn explore(
        &self,
        ctx: &ExploreContext<'_>,
        hp: &Hyperparams,
        rng: &mut PbtRng,
    ) -> Result<Hyperparams, BoxError> {
        let start = ctx.history.len().saturating_sub(self.window);
        let data = &ctx.history[start..];
        if data.len() < self.min_points.max(2) {
            return Ok(self.fallback.perturb(ctx.space, hp, rng));
        }
        let t_next = ctx.step + ctx.interval;
        let t_max = data
            .iter()
            .map(|o| o.step_end)
            .max()
            .unwrap_or(0)
            .max(t_next)
            .max(1) as f64;
        let encode = |t: u64, h: &Hyperparams| {
            let mut v = vec![t as f64 / t_max];
            v.extend(ctx.space.encode(h));
            v
        };
        let x: Vec<Vec<f64>> = data.iter().map(|o| encode(o.step_end, &o.hp)).collect();
        let y: Vec<f64> = data.iter().map(|o| o.reward_change).collect();
        let Some(gp) = self.fit(&x, &y, data_key(&x, &y, t_next)) else {
            return Ok(self.fallback.perturb(ctx.space, hp, rng));
        };
        let mut best: Option<(f64, Hyperparams)> = None;
        let total = self.perturbed_candidates + self.random_candidates;
        for i in 0..total {
            let cand = if i < self.perturbed_candidates {
                self.fallback.perturb(ctx.space, hp, rng)
            } else {
                ctx.space.sample(rng)
            };
            let (m, s) = gp.predict(&encode(t_next, &cand));
            let ucb = m + self.kappa * s;
            if best.as_ref().is_none_or(|(b, _)| ucb > *b) {
                best = Some((ucb, cand));
            }
        }
        Ok(best.map_or_else(|| hp.clone(), |(_, h)| h))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Observation;
    use super::*;
    use crate::rng::{Purpose, stream};
    use crate::space::{Domain, SearchSpace};

    #[test]
    fn ucb_choice_moves_towards_the_rewarding_region() {
        // Reward change peaks at x = 0.8; observations cover [0, 1] coarsely.
        let space = SearchSpace::new().with("x", Domain::uniform(0.0, 1.0));
        let mut hist = Vec::new();
        for step in 1..=4u64 {
            for i in 0..6 {
                let x = i as f64 / 5.0;
                hist.push(Observation {
                    member: i,
                    step_end: step * 10,
                    hp: Hyperparams::new().with("x", x),
                    reward_change: 1.0 - 4.0 * (x - 0.8) * (x - 0.8),
                });
            }
        }
        let pb2 = Pb2 {
            kappa: 0.5,
            ..Pb2::default()
        };
        let ctx = ExploreContext {
            space: &space,
            member: 0,
            source: 1,
            step: 40,
            interval: 10,
            history: &hist,
        };
        let mut rng = stream(9, Purpose::Decision, 0, 0);
        let mut xs = Vec::new();
        for _ in 0..10 {
            let out = pb2
                .explore(&ctx, &Hyperparams::new().with("x", 0.1), &mut rng)
                .unwrap();
            space.check(&out).unwrap();
            xs.push(out.f64("x").unwrap());
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.8).abs() < 0.1, "{xs:?}");
    }

    #[test]
    fn falls_back_to_perturbation_without_data() {
        let space = SearchSpace::new().with("x", Domain::uniform(0.0, 1.0));
        let ctx = ExploreContext {
            space: &space,
            member: 0,
            source: 1,
            step: 0,
            interval: 10,
            history: &[],
        };
        let pb2 = Pb2 {
            fallback: Perturb {
                resample_probability: 0.0,
                ..Perturb::default()
            },
            ..Pb2::default()
        };
        let mut rng = stream(9, Purpose::Decision, 1, 0);
        let x = pb2
            .explore(&ctx, &Hyperparams::new().with("x", 0.5), &mut rng)
            .unwrap()
            .f64("x")
            .unwrap();
        assert!((x - 0.4).abs() < 1e-12 || (x - 0.6).abs() < 1e-12);
    }
}
