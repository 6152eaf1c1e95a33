//! Where a tensor's values live.

use std::fmt;

/// The device holding a tensor's storage.
///
/// Only the CPU exists today; the CUDA backend adds a `Cuda(ordinal)` variant here and a
/// matching buffer variant in [`crate::storage::Storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, computed by `scalarize_kernels::cpu`.
    #[default]
    Cpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
        }
    }
}
