//! The one error type of the kernels crate.

use std::fmt;

/// A kernel refused its inputs: names the op and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The op that refused, e.g. `"conv2d_forward"`.
    pub op: &'static str,
    /// What was wrong and what was expected.
    pub msg: String,
}

impl KernelError {
    /// Builds an error for `op`.
    pub fn new(op: &'static str, msg: impl Into<String>) -> Self {
        Self {
            op,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.msg)
    }
}

impl std::error::Error for KernelError {}

/// Result of a kernel call.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Checks that buffer `name` of `op` holds exactly `expected` elements.
pub fn check_len(op: &'static str, name: &str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::new(
            op,
            format!("buffer `{name}` has {got} elements, expected {expected}"),
        ))
    }
}
