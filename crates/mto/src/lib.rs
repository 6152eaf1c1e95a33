//! scalarize-mto: scalarization and multi-task optimization (MTO) gradient aggregators, and
//! gradient-conflict metrics.
//!
//! Every method implements [`Aggregator`]: it receives one step's [`AggregateInput`] (per-task
//! losses and, when [`Aggregator::requirement`] asks for them, the per-task gradients
//! T x P of the shared parameters with layer segments, or T x R at the shared
//! representation) and returns an [`Aggregation`] (effective task weights and the combined
//! direction). Loss-based methods with learnable parameters expose them through
//! [`Aggregator::params`] / [`Aggregator::param_grads`] / [`Aggregator::set_params`] so the
//! trainer's optimizer updates them. Every dot product between task gradients goes through
//! [`gram::task_gram`] (the kernels crate's segmented Gram); all T x T solvers (min-norm,
//! box QP, the Nash system, pseudo-inverses, eigen-decompositions) are written here in f64.
//!
//! | method | constructor | needs | weights sum to |
//! |---|---|---|---|
//! | linear scalarization | [`Linear::new`], [`Linear::uniform`] | losses | as given (1 for uniform) |
//! | uncertainty weighting | [`Uncertainty::new`] | losses | free (T/2 at start) |
//! | IMTL-L | [`ImtlL::new`] | losses | free (T at start) |
//! | DWA | [`Dwa::new`] | losses + epoch | T |
//! | RLW | [`Rlw::new`] | losses | 1 |
//! | GradNorm | [`GradNorm::new`] | shared grads | T |
//! | PCGrad | [`PcGrad::new`] | shared grads | T when nothing conflicts |
//! | CAGrad | [`CaGrad::new`] | shared grads | (1 + lambda) / (1 + c^2) |
//! | Nash-MTL | [`NashMtl::new`] | shared grads | free |
//! | GradVac | [`GradVac::new`] | shared grads | T when nothing is adjusted |
//! | Aligned-MTL | [`AlignedMtl::new`] | shared grads | T for identical grads |
//! | UPGrad | [`UpGrad::new`] | shared grads | >= 1 |
//! | MGDA | [`Mgda::new`] | shared grads | 1 |
//! | MGDA-UB | [`MgdaUb::new`] | representation grads | 1 |
//! | IMTL-G | [`ImtlG::new`], [`ImtlG::at_representation`] | grads | 1 |
//! | IMTL-H | [`ImtlH::new`] | representation grads | free |
//! | GradDrop | [`GradDrop::new`] | representation grads | fraction kept (1 each at most) |
//!
//! [`build`] makes any of them from its name ([`METHOD_NAMES`]).
//!
//! # Memory and cost (what the study contrasts with PBT)
//!
//! Scalarization (linear weights, and the loss-based methods uncertainty, IMTL-L, DWA, RLW)
//! needs one backward pass and holds nothing beyond O(T) numbers. Every shared-parameter
//! gradient method (GradNorm, PCGrad, CAGrad, Nash-MTL, GradVac, Aligned-MTL, UPGrad, MGDA,
//! IMTL-G on parameters) needs T backward passes through the backbone and holds the T x P
//! gradient matrix (4 T P bytes: 1.28 GB for T = 32 tasks and P = 10M parameters, 80 MB for
//! T = 8 and a 2.5M-parameter backbone) plus the P-float output direction; on top, the Gram
//! matrices cost one pass over T x P (T(T+1)/2 P multiply-adds) and L + 1 small T x T f64
//! matrices per step. GradVac keeps L x T x T f64 targets; Nash-MTL keeps T f64 for the warm
//! start. Representation methods (MGDA-UB, IMTL-G/H at the representation, GradDrop) hold
//! T x R floats for a representation of R = batch x features elements and need T backward
//! passes through the heads only, then one through the backbone. PBT instead trains N
//! independent scalarized models: its cost is N runs, whatever T is.
//!
//! Per step on the CPU (`benches/mto_aggregate.rs`), a gradient method costs one Gram pass plus
//! its `aggregate` call; the T x T solvers take microseconds to a few milliseconds even at
//! T = 32, so `aggregate` is dominated by the weighted sum over T x P (and allocating the
//! P-float direction), of the same order as the Gram pass. Pass the Gram matrices already
//! computed for conflict metrics through [`AggregateInput::with_gram`] to avoid a second pass.
//!
//! Gradients that live elsewhere (the trainer's T x P buffer on a GPU) are given as a shape
//! only ([`TaskGradients::shape_only`]) with their Gram matrices
//! ([`AggregateInput::with_gram`], computed where the gradients are): every method except
//! GradDrop ([`Aggregator::needs_gradient_values`]) then returns exactly the weights (and
//! GradVac's per-segment weights) of the host path, with `direction: None`, and the caller
//! forms `sum_t w_t g_t` on the device.
//!
//! Randomised methods (PCGrad's order, RLW, GradVac's order, GradDrop) own a seeded
//! [`rng::MethodRng`] so runs reproduce.

pub mod aggregator;
pub mod combine;
pub mod conflict;
pub mod error;
pub mod gram;
pub mod input;
pub mod linalg;
pub mod methods;
pub mod nnqp;
pub mod registry;
pub mod rng;
pub mod simplex;

pub use aggregator::Aggregator;
pub use conflict::{ConflictRecord, GroupConflict};
pub use error::{MtoError, Result};
pub use gram::{SegmentedGram, task_gram};
pub use input::{AggregateInput, Aggregation, Requirement, TaskGradients};
pub use methods::aligned_mtl::AlignedMtl;
pub use methods::cagrad::{CaGrad, CaGradRescale};
pub use methods::dwa::Dwa;
pub use methods::graddrop::GradDrop;
pub use methods::gradnorm::{GradNorm, GradNormLayer};
pub use methods::gradvac::{GradVac, GradVacGrouping};
pub use methods::imtl_g::ImtlG;
pub use methods::imtl_h::ImtlH;
pub use methods::imtl_l::ImtlL;
pub use methods::linear::Linear;
pub use methods::mgda::{Mgda, MgdaNormalization};
pub use methods::mgda_ub::MgdaUb;
pub use methods::nash_mtl::NashMtl;
pub use methods::pcgrad::PcGrad;
pub use methods::rlw::Rlw;
pub use methods::uncertainty::Uncertainty;
pub use methods::upgrad::UpGrad;
pub use registry::{METHOD_NAMES, build};
