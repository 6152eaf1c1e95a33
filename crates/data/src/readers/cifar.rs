//! CIFAR-10 and CIFAR-100 binary versions.
//!
//! CIFAR-10: `cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`; records of
//! 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B, row-major 32x32).
//! CIFAR-100: `cifar-100-binary/train.bin`, `test.bin`; records of coarse label, fine label,
//! 3072 pixel bytes.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::image::Image;
use crate::readers::{check_records, read_all};
use crate::sample::{InMemory, TaskSpec};
use crate::split::Split;

/// CIFAR-10 class names, label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const LAYOUT10: &str =
    "cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (1 label + 3072 pixel bytes per record)";
const LAYOUT100: &str =
    "cifar-100-binary/{train,test}.bin (coarse, fine label + 3072 pixel bytes per record)";

/// Accepts either the batches folder itself or its parent.
fn resolve(dir: &Path, sub: &str, probe: &str) -> PathBuf {
    if dir.join(probe).is_file() {
        dir.to_path_buf()
    } else {
        dir.join(sub)
    }
}

fn parse(
    files: &[PathBuf],
    label_bytes: usize,
    limits: &[u32],
    layout: &str,
) -> Result<(Vec<u8>, Vec<Vec<u32>>)> {
    let rec = label_bytes + 3072;
    let mut pixels = Vec::new();
    let mut labels = vec![Vec::new(); label_bytes];
    for path in files {
        let bytes = read_all(path, layout)?;
        let n = check_records(path, bytes.len(), rec)?;
        pixels.reserve(n * 3072);
        for (r, chunk) in bytes.chunks_exact(rec).enumerate() {
            for t in 0..label_bytes {
                let v = chunk[t] as u32;
                if v >= limits[t] {
                    return Err(DataError::Label {
                        path: path.clone(),
                        record: r,
                        value: v as i64,
                        expected: format!("0..{}", limits[t]),
                    });
                }
                labels[t].push(v);
            }
            pixels.extend_from_slice(&Image::from_chw(32, 32, 3, &chunk[label_bytes..]).data);
        }
    }
    Ok((pixels, labels))
}

/// Opens CIFAR-10 (`dir` is `cifar-10-batches-bin` or its parent); one task, "class".
pub fn open_cifar10(dir: &Path, split: Split) -> Result<InMemory> {
    let root = resolve(dir, "cifar-10-batches-bin", "test_batch.bin");
    let files: Vec<PathBuf> = match split {
        Split::Train => (1..=5)
            .map(|i| root.join(format!("data_batch_{i}.bin")))
            .collect(),
        Split::Test => vec![root.join("test_batch.bin")],
        Split::Valid => {
            return Err(DataError::Invalid(
                "CIFAR-10 has no validation split".into(),
            ));
        }
    };
    let (pixels, labels) = parse(&files, 1, &[10], LAYOUT10)?;
    Ok(InMemory {
        height: 32,
        width: 32,
        channels: 3,
        pixels,
        task_specs: vec![TaskSpec::class("class", 10)],
        labels,
    })
}

/// Opens CIFAR-100 (`dir` is `cifar-100-binary` or its parent); tasks "fine" (100), "coarse" (20).
pub fn open_cifar100(dir: &Path, split: Split) -> Result<InMemory> {
    let root = resolve(dir, "cifar-100-binary", "test.bin");
    let file = match split {
        Split::Train => root.join("train.bin"),
        Split::Test => root.join("test.bin"),
        Split::Valid => {
            return Err(DataError::Invalid(
                "CIFAR-100 has no validation split".into(),
            ));
        }
    };
    let (pixels, mut labels) = parse(&[file], 2, &[20, 100], LAYOUT100)?;
    labels.swap(0, 1);
    Ok(InMemory {
        height: 32,
        width: 32,
        channels: 3,
        pixels,
        task_specs: vec![TaskSpec::class("fine", 100), TaskSpec::class("coarse", 20)],
        labels,
    })
}
