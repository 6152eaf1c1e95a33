//! The interface a user's trainer implements.

use std::path::Path;

use crate::value::Hyperparams;

/// The error type trainables return (any `std::error::Error`, `anyhow::Error` converts).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the engine asks for in one training call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// The member (population slot) being trained.
    pub member: usize,
    /// Training units (steps or epochs, as the trainable defines them) done before this call.
    pub start_step: u64,
    /// Units to train in this call.
    pub units: u64,
}

/// One member of the population.
///
/// Instances are created by a factory inside their worker thread (so they need not be
/// `Send`, e.g. they may own a GPU context). For resumed runs to reproduce uninterrupted ones,
/// a checkpoint must hold every piece of state that affects later training (weights,
/// optimizer state, data order, any random generator), and `train` must depend only on that
/// state, the hyperparameters and the [`Interval`].
pub trait Trainable {
    /// Applies hyperparameters; called before every interval (after any `load`).
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError>;

    /// The hyperparameters in effect (after any rounding the trainable applies); the engine
    /// records them in the interval history, from which schedules are replayed.
    fn hyperparameters(&self) -> Hyperparams;

    /// Trains for `interval.units` units.
    fn train(&mut self, interval: &Interval) -> Result<(), BoxError>;

    /// Evaluates the member: higher is better; a non-finite score marks the member failed.
    fn evaluate(&mut self) -> Result<f64, BoxError>;

    /// Writes a checkpoint to `path` (a file path the engine chooses; the engine makes the
    /// write atomic by renaming it into place afterwards).
    fn save(&mut self, path: &Path) -> Result<(), BoxError>;

    /// Restores the state written by `save` (possibly another member's checkpoint).
    fn load(&mut self, path: &Path) -> Result<(), BoxError>;
}
