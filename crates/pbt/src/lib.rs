//! scalarize-pbt: a reusable population-based-training (PBT) engine.
//!
//! The engine is generic over a [`Trainable`]: anything that can train for an interval,
//! evaluate to a score (higher is better), save and load a checkpoint, and take
//! hyperparameters. It has no dependency on any tensor library.
//!
//! * Search spaces: [`Domain`] (simplex with floor, uniform, log-uniform, integer, choice,
//!   nested) grouped in a [`SearchSpace`]; values are [`HpValue`] / [`Hyperparams`].
//! * Exploit strategies ([`exploit`]): truncation selection, binary tournament, none.
//! * Explore strategies ([`explore`]): perturbation / resampling with simplex moves, PB2
//!   (GP-UCB), custom closures.
//! * State lives in SQLite ([`Store`]); a killed run resumes where it stopped.
//! * Outputs ([`report`]): policy log, best member's hyperparameter schedule, summary.
//!
//! See `README.md` and `examples/toy.rs` for a complete standalone example.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod decision;
pub mod engine;
pub mod error;
pub mod exploit;
pub mod explore;
pub mod report;
pub mod rng;
pub mod simplex;
pub mod space;
pub mod store;
pub mod toys;
pub mod trainable;
pub mod value;
mod worker;

pub use config::{Mode, PbtBuilder, PbtConfig};
pub use engine::Pbt;
pub use error::PbtError;
pub use exploit::{Exploit, NoExploit, Tournament, Truncation};
pub use explore::{Explore, ExploreContext, FnExplore, Pb2, Perturb, SimplexMove};
pub use report::{MemberSummary, PolicyEntry, RunReport, ScheduleEntry};
pub use rng::PbtRng;
pub use space::{Domain, SearchSpace};
pub use store::Store;
pub use trainable::{BoxError, Interval, Trainable};
pub use value::{HpValue, Hyperparams};
