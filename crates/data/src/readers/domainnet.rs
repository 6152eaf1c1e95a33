//! DomainNet: `{root}/{domain}/{class}/{file}.jpg` with split files `{root}/{domain}_train.txt`
//! and `{domain}_test.txt`, lines `{domain}/{class}/{file}.jpg {label}` (label 0..=344).
//! Images are decoded on `get` and resized to a fixed size (area when shrinking, else bilinear).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::readers::read_text;
use crate::sample::{Dataset, Sample, Target, TaskSpec};
use crate::split::Split;
use crate::transforms::{Interp, read_image, resize_image};

/// The six DomainNet domains.
pub const DOMAINS: [&str; 6] = [
    "clipart",
    "infograph",
    "painting",
    "quickdraw",
    "real",
    "sketch",
];
/// Number of classes.
pub const NUM_CLASSES: usize = 345;

const LAYOUT: &str = "{root}/{domain}_{train,test}.txt with lines `{domain}/{class}/{file}.jpg label`, images under {root}";

/// One DomainNet domain and split.
#[derive(Clone, Debug)]
pub struct DomainNet {
    root: PathBuf,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    size: (usize, usize),
}

impl DomainNet {
    /// Reads `{root}/{domain}_{split}.txt`; images are resized to `size` (rows, cols) on `get`.
    pub fn open(root: &Path, domain: &str, split: Split, size: (usize, usize)) -> Result<Self> {
        let name = match split {
            Split::Train => "train",
            Split::Test => "test",
            Split::Valid => {
                return Err(DataError::Invalid(
                    "DomainNet has no validation split".into(),
                ));
            }
        };
        let list = root.join(format!("{domain}_{name}.txt"));
        let text = read_text(&list, LAYOUT)?;
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut parts = line.split_whitespace();
            let (Some(file), Some(label), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(DataError::Format {
                    path: list,
                    location: format!("line {}", i + 1),
                    message: format!("expected `path label`, found {line:?}"),
                });
            };
            let value: i64 = label.parse().map_err(|_| DataError::Format {
                path: list.clone(),
                location: format!("line {}", i + 1),
                message: format!("label {label:?} is not an integer"),
            })?;
            if !(0..NUM_CLASSES as i64).contains(&value) {
                return Err(DataError::Label {
                    path: list,
                    record: i + 1,
                    value,
                    expected: "0..345 (record = line)".into(),
                });
            }
            files.push(PathBuf::from(file));
            labels.push(value as u32);
        }
        Ok(DomainNet {
            root: root.to_path_buf(),
            files,
            labels,
            size,
        })
    }

    /// Image path of sample `index`.
    pub fn path(&self, index: usize) -> PathBuf {
        self.root.join(&self.files[index])
    }
}

impl Dataset for DomainNet {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn tasks(&self) -> Vec<TaskSpec> {
        vec![TaskSpec::class("class", NUM_CLASSES)]
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let img = read_image(&self.path(index), 3, LAYOUT)?;
        let (h, w) = self.size;
        let interp = if img.height >= h && img.width >= w {
            Interp::Area
        } else {
            Interp::Bilinear
        };
        Ok(Sample {
            image: resize_image(&img, h, w, interp),
            targets: vec![Some(Target::Class(self.labels[index]))],
        })
    }

    fn class_of(&self, index: usize) -> Option<u32> {
        Some(self.labels[index])
    }
}
