//! Reading and atomically writing safetensors files of f32 (and i64) tensors.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::error::{NnError, Result};

/// Values of a tensor read from a safetensors file.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers (labels).
    I64(Vec<i64>),
}

impl TensorData {
    /// The safetensors dtype name.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::I64(_) => "I64",
        }
    }
}

/// One tensor read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct StTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: TensorData,
}

/// A whole safetensors file: header metadata and tensors by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StFile {
    /// The `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, StTensor>,
}

/// A borrowed tensor to write.
#[derive(Clone, Copy, Debug)]
pub enum TensorRef<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// i64 values.
    I64(&'a [i64]),
}

struct ViewOf<'a> {
    shape: Vec<usize>,
    data: TensorRef<'a>,
}

impl View for ViewOf<'_> {
    fn dtype(&self) -> Dtype {
        match self.data {
            TensorRef::F32(_) => Dtype::F32,
            TensorRef::I64(_) => Dtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // Converted on demand so only one tensor's bytes exist besides the output buffer.
        Cow::Owned(match self.data {
            TensorRef::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorRef::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }
    fn data_len(&self) -> usize {
        match self.data {
            TensorRef::F32(v) => v.len() * 4,
            TensorRef::I64(v) => v.len() * 8,
        }
    }
}

fn ckpt_err(path: &Path, msg: impl Into<String>) -> NnError {
    NnError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NnError + use<> {
    let path = path.to_path_buf();
    move |source| NnError::Io { op, path, source }
}

/// Reads a safetensors file; F32 and I64 tensors are supported, any other dtype is an error
/// naming the tensor.
pub fn read_safetensors(path: &Path) -> Result<StFile> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::I64 => TensorData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            other => {
                return Err(ckpt_err(
                    path,
                    format!("tensor `{name}` has dtype {other}; only F32 and I64 are supported"),
                ));
            }
        };
        tensors.insert(
            name.to_string(),
            StTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(StFile { metadata, tensors })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `tensors` (name, shape, values) and `metadata` to `path` atomically: the bytes go to
/// a temporary file in the same directory, which is fsynced and renamed over `path`, and the
/// directory is fsynced, so a crash leaves either the old file or the complete new one.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &[(String, Vec<usize>, TensorRef<'_>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        let n: usize = shape.iter().product();
        let len = match data {
            TensorRef::F32(v) => v.len(),
            TensorRef::I64(v) => v.len(),
        };
        if n != len {
            return Err(ckpt_err(
                path,
                format!("tensor `{name}`: shape {shape:?} needs {n} values, {len} given"),
            ));
        }
        views.push((
            name.as_str(),
            ViewOf {
                shape: shape.clone(),
                data: *data,
            },
        ));
    }
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| ckpt_err(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a fsynced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| ckpt_err(path, "the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        // Persist the rename itself; directories cannot be fsynced on some platforms.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
