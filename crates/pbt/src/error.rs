//! Errors of the PBT engine.

use std::path::PathBuf;

/// Everything that can go wrong in the engine (trainable failures are not errors: they mark
/// the member failed and the run goes on).
#[derive(Debug, thiserror::Error)]
pub enum PbtError {
    /// The configuration is inconsistent (names the key and what was expected).
    #[error("invalid PBT config: {0}")]
    Config(String),
    /// A hyperparameter value does not fit its search-space domain.
    #[error("hyperparameter `{name}`: {message}")]
    Hyperparameter {
        /// Dotted path of the hyperparameter (nested configs use `outer.inner`).
        name: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The database could not be read or written.
    #[error("state database {path}: {source}")]
    Database {
        /// Path of the SQLite file.
        path: PathBuf,
        /// Underlying SQLite error.
        source: rusqlite::Error,
    },
    /// The database holds something the engine cannot interpret.
    #[error("state database {path}: {message}")]
    Corrupt {
        /// Path of the SQLite file.
        path: PathBuf,
        /// What was found and what was expected.
        message: String,
    },
    /// A file-system operation on a checkpoint or the run folder failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (e.g. "rename checkpoint").
        op: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// An existing run folder was created with a different configuration.
    #[error(
        "run folder {path} was created with a different config (key `{key}`: stored {stored}, given {given}); use a new folder or the original config"
    )]
    ConfigMismatch {
        /// Path of the run folder.
        path: PathBuf,
        /// The first differing config key.
        key: String,
        /// Value stored in the database.
        stored: String,
        /// Value of the config given now.
        given: String,
    },
    /// Every member of the population failed; the run cannot continue.
    #[error("every member of the population failed (last error: {last_error})")]
    AllMembersFailed {
        /// The last failure message seen.
        last_error: String,
    },
    /// An explore strategy failed or produced hyperparameters outside the search space.
    #[error("explore strategy `{strategy}`: {message}")]
    Explore {
        /// Name of the strategy.
        strategy: String,
        /// What went wrong.
        message: String,
    },
    /// A member factory failed to create a trainable.
    #[error("creating the trainable for member {member}: {message}")]
    Factory {
        /// The member index.
        member: usize,
        /// The factory's error.
        message: String,
    },
    /// JSON (de)serialisation of hyperparameters or an export failed.
    #[error("JSON {context}: {source}")]
    Json {
        /// What was being (de)serialised.
        context: String,
        /// Underlying serde_json error.
        source: serde_json::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = PbtError> = std::result::Result<T, E>;
