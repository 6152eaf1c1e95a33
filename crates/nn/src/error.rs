//! The crate's error type: every failure names what was wrong (the spec part, the file, the
//! tensor name) and what was expected.

use std::path::PathBuf;

/// Result alias used throughout scalarize-nn.
pub type Result<T> = std::result::Result<T, NnError>;

/// Errors of scalarize-nn.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A model spec such as `resnet26:w0.25` could not be parsed or is not supported.
    #[error("bad model spec `{spec}`: {msg}")]
    ModelSpec {
        /// The whole spec string as given.
        spec: String,
        /// What part was wrong and what is allowed.
        msg: String,
    },
    /// A heads list such as `10,a40,d3` could not be parsed.
    #[error("bad heads spec `{spec}`: {msg}")]
    HeadsSpec {
        /// The whole heads string as given.
        spec: String,
        /// What part was wrong and what is allowed.
        msg: String,
    },
    /// A checkpoint (or other safetensors file) is unreadable or does not match the model.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        msg: String,
    },
    /// An I/O operation on a file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An optimizer, schedule or parameter-set call got inconsistent input.
    #[error("{what}: {msg}")]
    Invalid {
        /// The operation or object concerned.
        what: String,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A tensor operation (autograd) refused its inputs.
    #[error(transparent)]
    Autograd(#[from] scalarize_autograd::AutogradError),
    /// A numeric kernel reported an error.
    #[error(transparent)]
    Kernel(#[from] scalarize_kernels::KernelError),
}

impl NnError {
    /// Shorthand for [`NnError::Invalid`].
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        NnError::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}
