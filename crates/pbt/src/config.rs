//! Run configuration and its builder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::Pbt;
use crate::error::{PbtError, Result};
use crate::exploit::{Exploit, Truncation};
use crate::explore::{Explore, Perturb};
use crate::space::SearchSpace;
use crate::value::Hyperparams;

/// When members are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every member trains one interval, then all are ranked together (the study's setting).
    /// Fully reproducible: a resumed run equals an uninterrupted one.
    Synchronous,
    /// Each member is ranked against the population as it stands whenever it finishes an
    /// interval. No interval is lost or redone on resume, but which scores a member sees
    /// depends on timing, so two runs may differ.
    Asynchronous,
}

/// The scalar settings of a run (strategies are held by [`Pbt`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PbtConfig {
    /// Number of members.
    pub population: usize,
    /// Worker threads; more members than workers are time-shared. Not part of the run's
    /// identity: a resumed run may use another count.
    pub workers: usize,
    /// Units (steps or epochs) trained between decisions.
    pub interval: u64,
    /// Total units over all members. Each member trains
    /// `floor(budget / (population * interval))` intervals (the generations, in synchronous
    /// mode; in asynchronous mode each member's equal share, so a slow member is not starved).
    /// A failed interval counts against the budget.
    pub budget_units: u64,
    /// No member is exploited before its model has trained this many units (failed members
    /// are still replaced).
    pub burn_in: u64,
    /// Synchronous or asynchronous decisions.
    pub mode: Mode,
    /// Seed of every random draw.
    pub seed: u64,
    /// fsync checkpoints and the database at each commit (protects against power loss; a
    /// killed process is safe either way). Not part of the run's identity.
    pub sync_writes: bool,
    /// Load the checkpoint before every interval even when the member's instance already
    /// holds that state (for trainables whose in-memory state is not fully checkpointed).
    pub always_reload: bool,
}

impl Default for PbtConfig {
    fn default() -> Self {
        Self {
            population: 8,
            workers: 1,
            interval: 1,
            budget_units: 80,
            burn_in: 0,
            mode: Mode::Synchronous,
            seed: 0,
            sync_writes: true,
            always_reload: false,
        }
    }
}

impl PbtConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(PbtError::Config(m.to_string()));
        if self.population == 0 {
            return bad("`population` must be at least 1");
        }
        if self.workers == 0 {
            return bad("`workers` must be at least 1");
        }
        if self.interval == 0 {
            return bad("`interval` must be at least 1 unit");
        }
        if self.budget_units < self.population as u64 * self.interval {
            return Err(PbtError::Config(format!(
                "`budget_units` = {} is less than one interval for every member ({} x {})",
                self.budget_units, self.population, self.interval
            )));
        }
        Ok(())
    }

    /// Number of synchronous generations the budget allows.
    pub fn generations(&self) -> u64 {
        self.budget_units / (self.population as u64 * self.interval)
    }
}

/// Builds a [`Pbt`] run.
pub struct PbtBuilder {
    pub(crate) dir: PathBuf,
    pub(crate) space: SearchSpace,
    pub(crate) config: PbtConfig,
    pub(crate) exploit: Box<dyn Exploit>,
    pub(crate) explore: Box<dyn Explore>,
    pub(crate) initial: Vec<Hyperparams>,
}

impl PbtBuilder {
    /// A builder for a run stored in `dir` (created if missing) over `space`.
    pub fn new(dir: impl AsRef<Path>, space: SearchSpace) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            space,
            config: PbtConfig::default(),
            exploit: Box::new(Truncation::default()),
            explore: Box::new(Perturb::default()),
            initial: Vec::new(),
        }
    }

    /// Replaces all scalar settings.
    pub fn config(mut self, config: PbtConfig) -> Self {
        self.config = config;
        self
    }
    /// Number of members.
    pub fn population(mut self, n: usize) -> Self {
        self.config.population = n;
        self
    }
    /// Worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }
    /// Units between decisions.
    pub fn interval(mut self, units: u64) -> Self {
        self.config.interval = units;
        self
    }
    /// Total units over all members.
    pub fn budget_units(mut self, units: u64) -> Self {
        self.config.budget_units = units;
        self
    }
    /// Units before any exploit.
    pub fn burn_in(mut self, units: u64) -> Self {
        self.config.burn_in = units;
        self
    }
    /// Synchronous or asynchronous decisions.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }
    /// Seed of every random draw.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }
    /// fsync at every commit.
    pub fn sync_writes(mut self, on: bool) -> Self {
        self.config.sync_writes = on;
        self
    }
    /// Load the checkpoint before every interval.
    pub fn always_reload(mut self, on: bool) -> Self {
        self.config.always_reload = on;
        self
    }
    /// The exploit strategy (default truncation, quantile 0.25).
    pub fn exploit(mut self, e: impl Exploit + 'static) -> Self {
        self.exploit = Box::new(e);
        self
    }
    /// The explore strategy (default perturbation 0.8 / 1.2, resampling 0.25).
    pub fn explore(mut self, e: impl Explore + 'static) -> Self {
        self.explore = Box::new(e);
        self
    }
    /// Initial hyperparameters, given to members in order (cycled); unset members sample
    /// the search space.
    pub fn initial(mut self, hps: Vec<Hyperparams>) -> Self {
        self.initial = hps;
        self
    }

    /// Validates and builds the run (nothing is written until [`Pbt::run`]).
    pub fn build(self) -> Result<Pbt> {
        self.config.validate()?;
        self.space.validate()?;
        for hp in &self.initial {
            self.space.check(hp)?;
        }
        Ok(Pbt::from_builder(self))
    }
}
