//! Custom explore functions given as closures.

use super::{Explore, ExploreContext};
use crate::rng::PbtRng;
use crate::trainable::BoxError;
use crate::value::Hyperparams;

/// The closure type accepted by [`FnExplore`].
pub type ExploreFn = dyn Fn(&ExploreContext<'_>, &Hyperparams, &mut PbtRng) -> Result<Hyperparams, BoxError>
    + Send
    + Sync;

/// An explore strategy defined by a closure (draw randomness only from the given `rng`).
pub struct FnExplore {
    name: String,
    f: Box<ExploreFn>,
}

impl FnExplore {
    /// Wraps `f` under `name` (the name is stored with the run's config).
    pub fn new<F>(name: &str, f: F) -> Self
    where
        F: Fn(&ExploreContext<'_>, &Hyperparams, &mut PbtRng) -> Result<Hyperparams, BoxError>
            + Send
            + Sync
            + 'static,
    {
        Self {
            name: name.to_string(),
            f: Box::new(f),
        }
    }
}

impl Explore for FnExplore {
    fn name(&self) -> String {
        format!("custom({})", self.name)
    }

    fn explore(
        &self,
        ctx: &ExploreContext<'_>,
        hp: &Hyperparams,
        rng: &mut PbtRng,
    ) -> Result<Hyperparams, BoxError> {
        (self.f)(ctx, hp, rng)
    }
}
