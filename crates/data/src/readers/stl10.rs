//! STL-10 binary: `stl10_binary/{train,test}_X.bin` (96x96x3 per image, each channel plane
//! stored column-major), `{train,test}_y.bin` (one byte per image, labels 1..=10, returned as
//! 0..=9), `unlabeled_X.bin` (100,000 images, 2.7 GB, no labels).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::image::Image;
use crate::readers::{check_records, read_all};
use crate::sample::{InMemory, TaskSpec};
use crate::split::Split;

/// STL-10 class names, in label order (file label minus one).
pub const STL10_CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

const LAYOUT: &str =
    "stl10_binary/{train,test}_X.bin + {train,test}_y.bin (27,648 bytes per image, labels 1..10)";
const RECORD: usize = 96 * 96 * 3;

fn resolve(dir: &Path) -> PathBuf {
    if dir.join("test_X.bin").is_file() {
        dir.to_path_buf()
    } else {
        dir.join("stl10_binary")
    }
}

fn images(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_all(path, LAYOUT)?;
    let n = check_records(path, bytes.len(), RECORD)?;
    let mut pixels = Vec::with_capacity(n * RECORD);
    for chunk in bytes.chunks_exact(RECORD) {
        pixels.extend_from_slice(&Image::from_chw_column_major(96, 96, 3, chunk).data);
    }
    Ok(pixels)
}

/// Opens a labelled split (`dir` is `stl10_binary` or its parent); one task, "class".
pub fn open(dir: &Path, split: Split) -> Result<InMemory> {
    let root = resolve(dir);
    let name = match split {
        Split::Train => "train",
        Split::Test => "test",
        Split::Valid => return Err(DataError::Invalid("STL-10 has no validation split".into())),
    };
    let x = root.join(format!("{name}_X.bin"));
    let y = root.join(format!("{name}_y.bin"));
    let pixels = images(&x)?;
    let raw = read_all(&y, LAYOUT)?;
    let n = pixels.len() / RECORD;
    if raw.len() != n {
        return Err(DataError::Size {
            path: y,
            offset: raw.len().min(n) as u64,
            message: format!("{} labels for {n} images in {}", raw.len(), x.display()),
        });
    }
    let mut labels = Vec::with_capacity(n);
    for (i, &v) in raw.iter().enumerate() {
        if !(1..=10).contains(&v) {
            return Err(DataError::Label {
                path: y,
                record: i,
                value: v as i64,
                expected: "1..=10".into(),
            });
        }
        labels.push(v as u32 - 1);
    }
    Ok(InMemory {
        height: 96,
        width: 96,
        channels: 3,
        pixels,
        task_specs: vec![TaskSpec::class("class", 10)],
        labels: vec![labels],
    })
}

/// Opens `unlabeled_X.bin` (no tasks). Holds all of it in memory: 2.7 GB for the real file.
pub fn open_unlabeled(dir: &Path) -> Result<InMemory> {
    let pixels = images(&resolve(dir).join("unlabeled_X.bin"))?;
    Ok(InMemory {
        height: 96,
        width: 96,
        channels: 3,
        pixels,
        task_specs: Vec::new(),
        labels: Vec::new(),
    })
}
