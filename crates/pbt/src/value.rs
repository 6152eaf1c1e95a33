//! Hyperparameter values: a small JSON-like type that serialises naturally with serde.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One hyperparameter value. Serialised untagged, so a config reads as plain JSON:
/// `{"lr": 0.01, "weights": [0.3, 0.7], "optimizer": "adam", "sched": {"warmup": 5}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HpValue {
    /// A boolean flag.
    Bool(bool),
    /// An integer (also the type of integer search-space domains).
    Int(i64),
    /// A real number.
    Float(f64),
    /// A string (e.g. a choice among names).
    Str(String),
    /// A real vector (the type of simplex domains).
    Vector(Vec<f64>),
    /// A nested config.
    Map(Hyperparams),
}

impl HpValue {
    /// The value as a real, if it is a number (integers are widened).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            HpValue::Float(x) => Some(*x),
            HpValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            HpValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a real vector, if it is one.
    pub fn as_vector(&self) -> Option<&[f64]> {
        match self {
            HpValue::Vector(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HpValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a nested config, if it is one.
    pub fn as_map(&self) -> Option<&Hyperparams> {
        match self {
            HpValue::Map(m) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for HpValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

impl From<f64> for HpValue {
    fn from(x: f64) -> Self {
        HpValue::Float(x)
    }
}
impl From<i64> for HpValue {
    fn from(x: i64) -> Self {
        HpValue::Int(x)
    }
}
impl From<bool> for HpValue {
    fn from(x: bool) -> Self {
        HpValue::Bool(x)
    }
}
impl From<&str> for HpValue {
    fn from(x: &str) -> Self {
        HpValue::Str(x.to_string())
    }
}
impl From<String> for HpValue {
    fn from(x: String) -> Self {
        HpValue::Str(x)
    }
}
impl From<Vec<f64>> for HpValue {
    fn from(x: Vec<f64>) -> Self {
        HpValue::Vector(x)
    }
}
impl From<Hyperparams> for HpValue {
    fn from(x: Hyperparams) -> Self {
        HpValue::Map(x)
    }
}

/// A set of named hyperparameters (ordered by name, so its JSON is canonical).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hyperparams(pub BTreeMap<String, HpValue>);

impl Hyperparams {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `name` (builder style).
    pub fn with(mut self, name: &str, value: impl Into<HpValue>) -> Self {
        self.0.insert(name.to_string(), value.into());
        self
    }

    /// Adds or replaces `name`.
    pub fn insert(&mut self, name: &str, value: impl Into<HpValue>) {
        self.0.insert(name.to_string(), value.into());
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&HpValue> {
        self.0.get(name)
    }

    /// The value of `name` as a real, if present and numeric.
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(HpValue::as_f64)
    }

    /// The value of `name` as an integer, if present and an integer.
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(HpValue::as_i64)
    }

    /// The value of `name` as a real vector (e.g. simplex weights), if present and one.
    pub fn vector(&self, name: &str) -> Option<&[f64]> {
        self.get(name).and_then(HpValue::as_vector)
    }

    /// The value of `name` as a string, if present and one.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(HpValue::as_str)
    }

    /// The nested config `name`, if present and one.
    pub fn map(&self, name: &str) -> Option<&Hyperparams> {
        self.get(name).and_then(HpValue::as_map)
    }

    /// Canonical JSON text (keys sorted; reals round-trip exactly).
    pub fn to_json(&self) -> String {
        // A map of finite numbers, strings and vectors always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// Parses JSON text written by [`Hyperparams::to_json`] (or by hand).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl fmt::Display for Hyperparams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_is_exact_and_keeps_types() {
        let inner = Hyperparams::new()
            .with("warmup", 5i64)
            .with("decay", 0.1 + 0.2);
        let hp = Hyperparams::new()
            .with("lr", 0.012_345_678_901_234_567_f64)
            .with("epochs", 3i64)
            .with("two", 2.0)
            .with("opt", "adam")
            .with("flag", true)
            .with("w", vec![1.0 / 3.0, 2.0 / 3.0, 0.0])
            .with("sched", inner);
        let text = hp.to_json();
        let back = Hyperparams::from_json(&text).unwrap();
        assert_eq!(back, hp);
        assert!(matches!(back.get("two"), Some(HpValue::Float(_))));
        assert!(matches!(back.get("epochs"), Some(HpValue::Int(3))));
        assert_eq!(back.map("sched").unwrap().f64("decay"), Some(0.1 + 0.2));
        // Bit-exact reals over many values (resume depends on it).
        let mut x = 0.123_456_789_f64;
        for _ in 0..1000 {
            x = (x * 3.987_654_321).fract() + 1e-9;
            let h = Hyperparams::new().with("x", x);
            let b = Hyperparams::from_json(&h.to_json()).unwrap();
            assert_eq!(b.f64("x").unwrap().to_bits(), x.to_bits());
        }
    }
}
