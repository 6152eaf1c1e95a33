//! Experiments: problems built from configs, the trainer, run folders, metrics, progress.

pub mod interrupt;
pub mod metrics;
pub mod problem;
pub mod progress;
pub mod run_dir;
pub mod runner;
pub mod trainer;
