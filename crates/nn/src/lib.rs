//! scalarize-nn: layers, ResNet and ViT families, multi-head models, optimizers, LR schedules
//! and safetensors checkpoints.

pub mod checkpoint;
pub mod error;
pub mod init;
pub mod layout;
pub mod spec;

pub use error::{NnError, Result};
pub mod optim;
