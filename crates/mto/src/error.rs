//! The one error type of the mto crate.

use scalarize_kernels::KernelError;

/// Why an aggregator or a conflict measurement refused its input.
#[derive(Debug, thiserror::Error)]
pub enum MtoError {
    /// The input did not match what the method expects; names the method and the value.
    #[error("{method}: {msg}")]
    Invalid {
        /// The method (or function) that refused, e.g. `"pcgrad"`.
        method: &'static str,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// The Gram kernel refused the gradient buffer.
    #[error("gram kernel: {0}")]
    Kernel(#[from] KernelError),
}

impl MtoError {
    /// Builds an [`MtoError::Invalid`] for `method`.
    pub fn invalid(method: &'static str, msg: impl Into<String>) -> Self {
        Self::Invalid {
            method,
            msg: msg.into(),
        }
    }
}

/// Result of an mto call.
pub type Result<T> = std::result::Result<T, MtoError>;
