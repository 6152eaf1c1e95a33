//! Search spaces: the domain of every hyperparameter.

use std::collections::BTreeMap;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::{PbtError, Result};
use crate::rng::PbtRng;
use crate::simplex;
use crate::value::{HpValue, Hyperparams};

/// Tolerance on a simplex sum when checking given weights.
const SIMPLEX_TOL: f64 = 1e-9;

/// The domain of one hyperparameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Real in `[low, high]`, sampled uniformly.
    Uniform {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (inclusive).
        high: f64,
    },
    /// Real in `[low, high]` with `0 < low`, sampled uniformly in log space.
    LogUniform {
        /// Lower bound (inclusive, positive).
        low: f64,
        /// Upper bound (inclusive).
        high: f64,
    },
    /// Integer in `[low, high]`, sampled uniformly.
    Int {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (inclusive).
        high: i64,
    },
    /// One of a list of values; perturbation moves to a neighbouring entry (ordered lists).
    Choice(Vec<HpValue>),
    /// A point of the simplex of dimension `dim` with every weight at least `floor`.
    Simplex {
        /// Number of weights (tasks or domains).
        dim: usize,
        /// Minimum weight, `0 <= floor <= 1 / dim`.
        floor: f64,
    },
    /// A nested config with its own domains.
    Nested(SearchSpace),
    /// A fixed value, never explored.
    Constant(HpValue),
}

impl Domain {
    /// Uniform real in `[low, high]`.
    pub fn uniform(low: f64, high: f64) -> Self {
        Domain::Uniform { low, high }
    }
    /// Log-uniform real in `[low, high]`.
    pub fn log_uniform(low: f64, high: f64) -> Self {
        Domain::LogUniform { low, high }
    }
    /// Integer in `[low, high]`.
    pub fn int(low: i64, high: i64) -> Self {
        Domain::Int { low, high }
    }
    /// One of `values`.
    pub fn choice<V: Into<HpValue>>(values: impl IntoIterator<Item = V>) -> Self {
        Domain::Choice(values.into_iter().map(Into::into).collect())
    }
    /// Simplex of dimension `dim` with no floor.
    pub fn simplex(dim: usize) -> Self {
        Domain::Simplex { dim, floor: 0.0 }
    }
    /// Simplex of dimension `dim` with every weight at least `floor`.
    pub fn simplex_with_floor(dim: usize, floor: f64) -> Self {
        Domain::Simplex { dim, floor }
    }
    /// A nested config.
    pub fn nested(space: SearchSpace) -> Self {
        Domain::Nested(space)
    }
    /// A constant.
    pub fn constant(value: impl Into<HpValue>) -> Self {
        Domain::Constant(value.into())
    }

    /// Checks the domain's own parameters.
    pub fn validate(&self, name: &str) -> Result<()> {
        let bad = |message: String| {
            Err(PbtError::Hyperparameter {
                name: name.to_string(),
                message,
            })
        };
        match self {
            Domain::Uniform { low, high } => {
                if !(low.is_finite() && high.is_finite() && low <= high) {
                    return bad(format!(
                        "uniform bounds [{low}, {high}] must be finite with low <= high"
                    ));
                }
            }
            Domain::LogUniform { low, high } => {
                if !(low.is_finite() && high.is_finite() && *low > 0.0 && low <= high) {
                    return bad(format!(
                        "log-uniform bounds [{low}, {high}] must be finite with 0 < low <= high"
                    ));
                }
            }
            Domain::Int { low, high } => {
                if low > high {
                    return bad(format!("integer bounds [{low}, {high}] need low <= high"));
                }
            }
            Domain::Choice(values) => {
                if values.is_empty() {
                    return bad("choice needs at least one value".to_string());
                }
            }
            Domain::Simplex { dim, floor } => {
                if *dim == 0 {
                    return bad("simplex dimension must be at least 1".to_string());
                }
                if !(floor.is_finite() && *floor >= 0.0 && *floor <= simplex::max_floor(*dim)) {
                    return bad(format!(
                        "simplex floor {floor} must be in [0, 1/dim = {}]",
                        simplex::max_floor(*dim)
                    ));
                }
            }
            Domain::Nested(space) => space.validate_prefixed(&format!("{name}."))?,
            Domain::Constant(_) => {}
        }
        Ok(())
    }

    /// A random value of the domain.
    pub fn sample(&self, rng: &mut PbtRng) -> HpValue {
        match self {
            Domain::Uniform { low, high } => {
                HpValue::Float(low + (high - low) * rng.random::<f64>())
            }
            Domain::LogUniform { low, high } => {
                let (a, b) = (low.ln(), high.ln());
                HpValue::Float((a + (b - a) * rng.random::<f64>()).exp().clamp(*low, *high))
            }
            Domain::Int { low, high } => HpValue::Int(rng.random_range(*low..=*high)),
            Domain::Choice(values) => values[rng.random_range(0..values.len())].clone(),
            Domain::Simplex { dim, floor } => {
                HpValue::Vector(simplex::sample_uniform(*dim, *floor, rng))
            }
            Domain::Nested(space) => HpValue::Map(space.sample(rng)),
            Domain::Constant(v) => v.clone(),
        }
    }

    /// Checks that `value` belongs to the domain.
    pub fn check(&self, name: &str, value: &HpValue) -> Result<()> {
        let bad = |message: String| {
            Err(PbtError::Hyperparameter {
                name: name.to_string(),
                message,
            })
        };
        match (self, value) {
            (
                Domain::Uniform { low, high } | Domain::LogUniform { low, high },
                HpValue::Float(x),
            ) => {
                if !(x.is_finite() && x >= low && x <= high) {
                    return bad(format!("value {x} outside [{low}, {high}]"));
                }
            }
            (Domain::Int { low, high }, HpValue::Int(x)) => {
                if x < low || x > high {
                    return bad(format!("value {x} outside [{low}, {high}]"));
                }
            }
            (Domain::Choice(values), v) => {
                if !values.contains(v) {
                    return bad(format!("value {v} is not one of the choices"));
                }
            }
            (Domain::Simplex { dim, floor }, HpValue::Vector(w)) => {
                if w.len() != *dim {
                    return bad(format!("simplex has {} weights, expected {dim}", w.len()));
                }
                let s: f64 = w.iter().sum();
                if s.is_nan() || (s - 1.0).abs() > SIMPLEX_TOL {
                    return bad(format!("simplex weights sum to {s}, expected 1"));
                }
                if let Some(x) = w.iter().find(|x| x.is_nan() || **x < floor - SIMPLEX_TOL) {
                    return bad(format!("simplex weight {x} below the floor {floor}"));
                }
            }
            (Domain::Nested(space), HpValue::Map(m)) => {
                space.check_prefixed(m, &format!("{name}."))?
            }
            (Domain::Constant(c), v) => {
                if c != v {
                    return bad(format!("value {v} differs from the constant {c}"));
                }
            }
            (d, v) => return bad(format!("value {v} has the wrong type for domain {d:?}")),
        }
        Ok(())
    }

    /// Appends the value's coordinates scaled to `[0, 1]` (the PB2 model input).
    fn encode(&self, value: &HpValue, out: &mut Vec<f64>) {
        let unit = |x: f64, lo: f64, hi: f64| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        match (self, value) {
            (Domain::Uniform { low, high }, v) => {
                out.push(unit(v.as_f64().unwrap_or(*low), *low, *high))
            }
            (Domain::LogUniform { low, high }, v) => {
                let x = v.as_f64().unwrap_or(*low).max(*low);
                out.push(unit(x.ln(), low.ln(), high.ln()));
            }
            (Domain::Int { low, high }, v) => out.push(unit(
                v.as_f64().unwrap_or(*low as f64),
                *low as f64,
                *high as f64,
            )),
            (Domain::Choice(values), v) => {
                let i = values.iter().position(|c| c == v).unwrap_or(0);
                out.push(unit(i as f64, 0.0, (values.len() - 1) as f64));
            }
            (Domain::Simplex { dim, .. }, v) => match v.as_vector() {
                Some(w) if w.len() == *dim => out.extend_from_slice(w),
                _ => out.extend(std::iter::repeat_n(1.0 / *dim as f64, *dim)),
            },
            (Domain::Nested(space), v) => {
                let empty = Hyperparams::new();
                space.encode_into(v.as_map().unwrap_or(&empty), out)
            }
            (Domain::Constant(_), _) => {}
        }
    }
}

/// Named domains (ordered by name, so sampling and encoding are deterministic).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SearchSpace {
    /// The domains by hyperparameter name.
    pub domains: BTreeMap<String, Domain>,
}

impl SearchSpace {
    /// An empty space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the domain of `name` (builder style).
    pub fn with(mut self, name: &str, domain: Domain) -> Self {
        self.domains.insert(name.to_string(), domain);
        self
    }

    /// Checks every domain's parameters.
    pub fn validate(&self) -> Result<()> {
        self.validate_prefixed("")
    }

    fn validate_prefixed(&self, prefix: &str) -> Result<()> {
        for (name, d) in &self.domains {
            d.validate(&format!("{prefix}{name}"))?;
        }
        Ok(())
    }

    /// A random configuration.
    pub fn sample(&self, rng: &mut PbtRng) -> Hyperparams {
        Hyperparams(
            self.domains
                .iter()
                .map(|(k, d)| (k.clone(), d.sample(rng)))
                .collect(),
        )
    }

    /// Checks that `hp` has exactly the space's names, each inside its domain.
    pub fn check(&self, hp: &Hyperparams) -> Result<()> {
        self.check_prefixed(hp, "")
    }

    fn check_prefixed(&self, hp: &Hyperparams, prefix: &str) -> Result<()> {
        for (name, d) in &self.domains {
            match hp.get(name) {
                Some(v) => d.check(&format!("{prefix}{name}"), v)?,
                None => {
                    return Err(PbtError::Hyperparameter {
                        name: format!("{prefix}{name}"),
                        message: "missing from the configuration".to_string(),
                    });
                }
            }
        }
        if let Some(extra) = hp.0.keys().find(|k| !self.domains.contains_key(*k)) {
            return Err(PbtError::Hyperparameter {
                name: format!("{prefix}{extra}"),
                message: "not in the search space".to_string(),
            });
        }
        Ok(())
    }

    /// The configuration's coordinates scaled to `[0, 1]`, for models such as PB2's GP.
    pub fn encode(&self, hp: &Hyperparams) -> Vec<f64> {
        let mut out = Vec::new();
        self.encode_into(hp, &mut out);
        out
    }

    fn encode_into(&self, hp: &Hyperparams, out: &mut Vec<f64>) {
        for (name, d) in &self.domains {
            match hp.get(name) {
                Some(v) => d.encode(v, out),
                None => d.encode(&d_default(d), out),
            }
        }
    }
}

/// A placeholder value used only to keep encodings aligned when a name is missing.
fn d_default(d: &Domain) -> HpValue {
    match d {
        Domain::Int { low, .. } => HpValue::Int(*low),
        Domain::Uniform { low, .. } | Domain::LogUniform { low, .. } => HpValue::Float(*low),
        Domain::Choice(v) => v[0].clone(),
        Domain::Simplex { dim, .. } => HpValue::Vector(vec![1.0 / *dim as f64; *dim]),
        Domain::Nested(_) => HpValue::Map(Hyperparams::new()),
        Domain::Constant(c) => c.clone(),
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
            .with("opt", Domain::choice(["sgd", "adam"]))
            .with("p", Domain::simplex_with_floor(3, 0.05))
            .with("seed", Domain::constant(3i64))
            .with(
                "sched",
                Domain::nested(SearchSpace::new().with("warmup", Domain::int(0, 5))),
            )
    }

    #[test]
    fn samples_are_inside_their_domains_and_encode_to_unit_box() {
        let s = space();
        s.validate().unwrap();
        let mut rng = stream(5, Purpose::Init, 0, 0);
        for _ in 0..300 {
            let hp = s.sample(&mut rng);
            s.check(&hp).unwrap();
            let e = s.encode(&hp);
            // lr, mom, bs, opt, p(3), sched.warmup; the constant adds nothing.
            assert_eq!(e.len(), 8);
            assert!(e.iter().all(|x| (0.0..=1.0).contains(x)), "{e:?}");
        }
    }

    #[test]
    fn check_names_the_offending_hyperparameter() {
        let s = space();
        let mut rng = stream(6, Purpose::Init, 0, 0);
        let good = s.sample(&mut rng);
        let cases: Vec<(Hyperparams, &str)> = vec![
            (good.clone().with("lr", 0.5), "lr"),
            (good.clone().with("bs", 100i64), "bs"),
            (good.clone().with("opt", "rmsprop"), "opt"),
            (good.clone().with("p", vec![0.5, 0.5, 0.0]), "p"),
            (good.clone().with("p", vec![0.5, 0.5]), "p"),
            (
                good.clone()
                    .with("sched", Hyperparams::new().with("warmup", 9i64)),
                "sched.warmup",
            ),
            (good.clone().with("extra", 1i64), "extra"),
            (good.clone().with("mom", "high"), "mom"),
            (good.clone().with("seed", 4i64), "seed"),
        ];
        for (hp, name) in cases {
            match s.check(&hp) {
                Err(PbtError::Hyperparameter { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_domains_are_rejected() {
        for d in [
            Domain::uniform(1.0, 0.0),
            Domain::log_uniform(0.0, 1.0),
            Domain::int(3, 2),
            Domain::Choice(vec![]),
            Domain::simplex(0),
            Domain::simplex_with_floor(4, 0.3),
            Domain::uniform(f64::NAN, 1.0),
        ] {
            assert!(d.validate("x").is_err(), "{d:?}");
        }
        assert!(Domain::simplex_with_floor(4, 0.25).validate("x").is_ok());
    }
}
