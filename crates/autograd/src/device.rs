//! Where a tensor's values live.

use std::fmt;

/// The device holding a tensor's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, computed by `scalarize_kernels::cpu`.
    #[default]
    Cpu,
    /// CUDA device `ordinal`, computed by `scalarize_kernels::cuda` (or by its CPU emulator,
    /// which reports itself as device 0).
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
