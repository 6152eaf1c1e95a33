//! scalarize-kernels: every numeric primitive, CPU and CUDA side by side.
//!
//! All buffers are contiguous row-major `f32` slices; image tensors are NCHW. Every function
//! checks slice lengths against the shapes it is given and returns a [`KernelError`] naming the
//! op instead of panicking.

pub mod cpu;
pub mod cuda;
pub mod error;

pub use error::{KernelError, Result};
