//! scalarize-nn: layers, ResNet and ViT families, multi-head models, optimizers, LR schedules
//! and safetensors checkpoints.
//!
//! Start from [`Model`]: `Model::from_specs("resnet26:w0.25", "10,10", Default::default(), seed)`,
//! [`Model::forward`] with a [`Routing`], [`loss::head_loss`] / [`loss::weighted_sum`], backward
//! with `scalarize_autograd`, then [`Model::step`] with an [`optim::Optimizer`] and a learning
//! rate from an [`optim::Schedule`]; [`Model::save`] / [`Model::load`] for checkpoints.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod init;
pub mod inspect;
pub mod layout;
pub mod loss;
pub mod model;
pub mod optim;
pub mod spec;

pub use error::{NnError, Result};
pub use model::{Features, ForwardOutput, HeadOutput, Model, Routing, Segment};
pub use spec::{HeadSpec, HeadsSpec, ModelSpec};
