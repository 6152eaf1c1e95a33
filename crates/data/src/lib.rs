//! scalarize-data: dataset readers, transforms, batching and domain sampling, usable on their own.
//!
//! Readers take the layouts people already have on disk (the torchvision conventions) and hand
//! out [`Sample`]s through the [`Dataset`] trait; [`Loader`] turns one or several datasets into
//! deterministic, augmented, multi-task [`Batch`]es with background workers.
//!
//! # Usage (from the crate README)
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod error;
pub mod image;
pub mod loader;
pub mod readers;
pub mod rng;
pub mod sample;
pub mod split;
pub mod stats;
pub mod transforms;

pub use error::{DataError, Result};
pub use image::Image;
pub use loader::{Batch, DomainSampler, Loader, LoaderConfig, Source, TaskBatch};
pub use sample::{Dataset, DenseMap, LabelMap, Sample, Target, TaskKind, TaskSpec};
pub use split::Split;
pub use transforms::Augment;
