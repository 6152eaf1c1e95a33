//! MNIST (and Fashion-MNIST / KMNIST, same layout): IDX files in one folder, raw or gzip:
//! `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…` for the test split.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::readers::{find_file, idx::read_idx};
use crate::sample::{InMemory, TaskSpec};
use crate::split::Split;

const LAYOUT: &str =
    "{dir}/{train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz]";

fn names(prefix: &str, kind: &str) -> Vec<String> {
    // The dotted spelling (`train-images.idx3-ubyte`) is how some mirrors unpack the files.
    let dotted = kind.replacen('-', ".", 1);
    [kind.to_string(), dotted]
        .iter()
        .flat_map(|k| [format!("{prefix}-{k}"), format!("{prefix}-{k}.gz")])
        .collect()
}

/// Opens a split of an MNIST-layout folder as 28x28 grey images with one task, "digit".
pub fn open(dir: &Path, split: Split) -> Result<InMemory> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
        Split::Valid => return Err(DataError::Invalid("MNIST has no validation split".into())),
    };
    let img_path = find_file(dir, &names(prefix, "images-idx3-ubyte"), LAYOUT)?;
    let lab_path = find_file(dir, &names(prefix, "labels-idx1-ubyte"), LAYOUT)?;
    let images = read_idx(&img_path, LAYOUT)?;
    let labels = read_idx(&lab_path, LAYOUT)?;
    if images.dims.len() != 3 {
        return Err(DataError::Format {
            path: img_path,
            location: "byte 3".into(),
            message: format!(
                "expected 3 dimensions (count, rows, cols), found {:?}",
                images.dims
            ),
        });
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(DataError::Format {
            path: lab_path,
            location: "byte 4".into(),
            message: format!(
                "expected 1 dimension equal to the {} images, found {:?}",
                images.dims[0], labels.dims
            ),
        });
    }
    if let Some((i, &v)) = labels.data.iter().enumerate().find(|(_, v)| **v > 9) {
        return Err(DataError::Label {
            path: lab_path,
            record: i,
            value: v as i64,
            expected: "0..=9".into(),
        });
    }
    Ok(InMemory {
        height: images.dims[1],
        width: images.dims[2],
        channels: 1,
        pixels: images.data,
        task_specs: vec![TaskSpec::class("digit", 10)],
        labels: vec![labels.data.iter().map(|&v| v as u32).collect()],
    })
}
