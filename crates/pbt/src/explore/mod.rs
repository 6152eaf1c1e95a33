//! Explore strategies: how a member's hyperparameters change after it copied another member.

mod custom;
pub mod gp;
mod pb2;
mod perturb;

pub use custom::FnExplore;
pub use pb2::Pb2;
pub use perturb::{Perturb, SimplexMove};

use crate::rng::PbtRng;
use crate::space::SearchSpace;
use crate::trainable::BoxError;
use crate::value::Hyperparams;

/// One completed interval, as PB2-style models see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The member that trained.
    pub member: usize,
    /// Model step at the end of the interval.
    pub step_end: u64,
    /// Hyperparameters used in the interval.
    pub hp: Hyperparams,
    /// Score at the end minus the score of the state the interval started from.
    pub reward_change: f64,
}

/// What an explore strategy knows about the decision.
#[derive(Clone, Copy, Debug)]
pub struct ExploreContext<'a> {
    /// The search space (bounds, simplex floors).
    pub space: &'a SearchSpace,
    /// The member being explored.
    pub member: usize,
    /// The member it copied.
    pub source: usize,
    /// Model step of the copied state.
    pub step: u64,
    /// Units until the next decision.
    pub interval: u64,
    /// Completed intervals, oldest first (empty unless [`Explore::needs_history`]).
    pub history: &'a [Observation],
}

/// Produces new hyperparameters from the copied ones.
pub trait Explore: Send {
    /// A short name with the parameters, stored with the run's config.
    fn name(&self) -> String;

    /// Whether [`ExploreContext::history`] must be filled (costs a database read).
    fn needs_history(&self) -> bool {
        false
    }

    /// New hyperparameters; the engine checks them against the search space.
    fn explore(
        &self,
        ctx: &ExploreContext<'_>,
        hp: &Hyperparams,
        rng: &mut PbtRng,
    ) -> Result<Hyperparams, BoxError>;
}
