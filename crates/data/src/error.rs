//! The crate-level error type: every variant names the file and what was expected.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, DataError>;

/// Everything that can go wrong while reading or loading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder the layout needs does not exist.
    #[error("missing {path}: expected layout {expected}")]
    Missing {
        /// The path that was looked for.
        path: PathBuf,
        /// The on-disk layout the reader expects.
        expected: String,
    },
    /// An I/O error other than "not found".
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file ends before the format says it should, or has bytes left over.
    #[error("{path}: bad size at byte offset {offset}: {message}")]
    Size {
        /// The file.
        path: PathBuf,
        /// Byte offset (in the decompressed stream for gzip files) where the problem is.
        offset: u64,
        /// What was expected.
        message: String,
    },
    /// A header or text line does not follow the format.
    #[error("{path}: {location}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset or line ("line 3", "byte 0").
        location: String,
        /// What was expected.
        message: String,
    },
    /// A label outside the valid range.
    #[error("{path}: record {record}: label {value} out of range (expected {expected})")]
    Label {
        /// The file holding the label.
        path: PathBuf,
        /// Record: 0-based sample number in binary files, 1-based line number in text files.
        record: usize,
        /// The offending value.
        value: i64,
        /// The valid range.
        expected: String,
    },
    /// An image file could not be decoded.
    #[error("cannot decode image {path}: {message}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// Inconsistent use of the API (mismatched shapes, bad probabilities, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl DataError {
    /// Wraps an I/O error, turning "not found" into [`DataError::Missing`] with the layout.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error, expected: &str) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path,
                expected: expected.to_string(),
            }
        } else {
            DataError::Io { path, source }
        }
    }

    /// True for errors confined to one sample (a loader with `skip_corrupt` skips these).
    pub fn is_per_sample(&self) -> bool {
        matches!(self, DataError::Decode { .. } | DataError::Missing { .. })
    }
}
