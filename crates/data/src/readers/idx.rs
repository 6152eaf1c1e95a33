//! The IDX format of MNIST (raw or gzip): magic `00 00 type ndims`, big-endian u32 dimensions,
//! then the payload. Only unsigned bytes (type 0x08) are supported, which is what MNIST uses.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// A parsed IDX array of u8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major payload.
    pub data: Vec<u8>,
}

/// Payloads larger than this are refused before any allocation (MNIST's largest is 47 MB).
pub const MAX_PAYLOAD: u64 = 1 << 34;

/// Parses IDX bytes, gzip-compressed or not; `path` only names errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse_idx_stream(flate2::read::GzDecoder::new(bytes), path)
    } else {
        parse_idx_stream(bytes, path)
    }
}

/// Reads an IDX file (raw or gzip).
pub fn read_idx(path: &Path, expected: &str) -> Result<IdxArray> {
    let bytes = super::read_all(path, expected)?;
    parse_idx(&bytes, path)
}

/// Reads as many bytes as are available into `buf`, returning the count (stops at EOF).
fn fill(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(DataError::Format {
                    path: path.into(),
                    location: "gzip stream".into(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(got)
}

fn parse_idx_stream(mut r: impl Read, path: &Path) -> Result<IdxArray> {
    let truncated = |offset: u64, what: &str| DataError::Size {
        path: path.into(),
        offset,
        message: format!("file ends inside the {what}"),
    };
    let mut magic = [0u8; 4];
    if fill(&mut r, &mut magic, path)? < 4 {
        return Err(truncated(0, "4-byte magic"));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::Format {
            path: path.into(),
            location: "byte 0".into(),
            message: format!(
                "IDX magic must start with 00 00, found {:02x} {:02x}",
                magic[0], magic[1]
            ),
        });
    }
    if magic[2] != 0x08 {
        return Err(DataError::Format {
            path: path.into(),
            location: "byte 2".into(),
            message: format!(
                "IDX element type 0x{:02x} unsupported (expected 0x08, unsigned byte)",
                magic[2]
            ),
        });
    }
    let ndims = magic[3] as usize;
    let mut dims = Vec::with_capacity(ndims);
    let mut total: u64 = 1;
    for d in 0..ndims {
        let mut b = [0u8; 4];
        if fill(&mut r, &mut b, path)? < 4 {
            return Err(truncated(4 + 4 * d as u64, "dimension list"));
        }
        let v = u32::from_be_bytes(b) as u64;
        total = total.saturating_mul(v);
        dims.push(v as usize);
    }
    let header = 4 + 4 * ndims as u64;
    if total > MAX_PAYLOAD {
        return Err(DataError::Format {
            path: path.into(),
            location: format!("byte {header}"),
            message: format!(
                "dimensions {dims:?} claim {total} bytes, more than the {MAX_PAYLOAD} allowed"
            ),
        });
    }
    // read_to_end grows with the bytes actually present, so a lying header cannot make us
    // allocate more than the stream holds (plus one probe byte for trailing data).
    let mut data = Vec::new();
    (&mut r)
        .take(total + 1)
        .read_to_end(&mut data)
        .map_err(|e| DataError::Format {
            path: path.into(),
            location: "gzip stream".into(),
            message: e.to_string(),
        })?;
    let got = data.len() as u64;
    if got < total {
        return Err(DataError::Size {
            path: path.into(),
            offset: header + got,
            message: format!(
                "payload truncated: dimensions {dims:?} need {total} bytes, found {got}"
            ),
        });
    }
    if got > total {
        return Err(DataError::Size {
            path: path.into(),
            offset: header + total,
            message: format!(
                "unexpected bytes after the {total}-byte payload of dimensions {dims:?}"
            ),
        });
    }
    Ok(IdxArray { dims, data })
}
