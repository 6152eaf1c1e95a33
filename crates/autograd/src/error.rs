//! The error type of the autograd crate.

use scalarize_kernels::KernelError;

/// Why an autograd operation refused its inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutogradError {
    /// Bad shapes, ranks, sizes or arguments given to an op: names the op and what was expected.
    #[error("{op}: {msg}")]
    Invalid {
        /// The op that refused, e.g. `"matmul"`.
        op: &'static str,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A kernel refused its buffers.
    #[error("kernel {0}")]
    Kernel(#[from] KernelError),
    /// A parameter-store lookup or update failed (unknown or duplicate name, wrong size).
    #[error("parameter store: {0}")]
    Param(String),
    /// A tensor is on the wrong device, or a device is unavailable.
    #[error("device: {0}")]
    Device(String),
    /// Backward was called on something it cannot start from.
    #[error("backward: {0}")]
    Backward(String),
}

/// Result of an autograd call.
pub type Result<T> = std::result::Result<T, AutogradError>;

/// Builds an [`AutogradError::Invalid`] for `op`.
pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> AutogradError {
    AutogradError::Invalid {
        op,
        msg: msg.into(),
    }
}
