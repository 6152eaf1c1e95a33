//! Readers for the on-disk layouts people already have (torchvision conventions).

pub mod celeba;
pub mod cifar;
pub mod cifar_stl;
pub mod digits;
pub mod domainnet;
pub mod idx;
pub mod mnist;
pub mod multimnist;
pub mod stl10;
pub mod taskonomy;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

pub use celeba::CelebA;
pub use domainnet::DomainNet;
pub use multimnist::MultiMnist;
pub use taskonomy::Taskonomy;

/// Reads a whole file; "not found" becomes [`DataError::Missing`] naming `expected`.
pub(crate) fn read_all(path: &Path, expected: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, e, expected))
}

/// Reads a text file, decompressing it when it starts with the gzip magic.
pub(crate) fn read_text(path: &Path, expected: &str) -> Result<String> {
    let raw = read_all(path, expected)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                location: "gzip stream".into(),
                message: e.to_string(),
            })?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        location: format!("byte {}", e.utf8_error().valid_up_to()),
        message: "not UTF-8 text".into(),
    })
}

/// The first of `names` that exists in `dir`, or a Missing error listing them all.
pub(crate) fn find_file(dir: &Path, names: &[String], expected: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            expected: expected.to_string(),
        });
    }
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Missing {
            path: dir.join(&names[0]),
            expected: format!("{expected} (any of: {})", names.join(", ")),
        })
}

/// Splits a fixed-record binary file into whole records, naming the offset of a partial one.
pub(crate) fn check_records(path: &Path, len: usize, record: usize) -> Result<usize> {
    if !len.is_multiple_of(record) {
        return Err(DataError::Size {
            path: path.to_path_buf(),
            offset: (len / record * record) as u64,
            message: format!(
                "{len} bytes is not a whole number of {record}-byte records (truncated record here)"
            ),
        });
    }
    Ok(len / record)
}
