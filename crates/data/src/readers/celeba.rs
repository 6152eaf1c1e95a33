//! CelebA: `{root}/img_align_celeba/*.jpg`, `{root}/list_attr_celeba.txt` (line 1: count,
//! line 2: the 40 attribute names, then `file v1 … v40` with values -1/1) and
//! `{root}/list_eval_partition.txt` (`file p`, p = 0 train, 1 valid, 2 test).
//! One task, "attributes": the chosen attributes as a 0/1 vector.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::readers::read_text;
use crate::sample::{Dataset, Sample, Target, TaskKind, TaskSpec};
use crate::split::Split;
use crate::transforms::{Interp, read_image, resize_image};

const LAYOUT: &str = "{root}/img_align_celeba/*.jpg, {root}/list_attr_celeba.txt (count, 40 names, `file ±1 …`), {root}/list_eval_partition.txt (`file 0|1|2`)";

/// One CelebA split with a chosen subset of attributes.
#[derive(Clone, Debug)]
pub struct CelebA {
    root: PathBuf,
    files: Vec<String>,
    names: Vec<String>,
    /// Row-major `len x names.len()` 0/1 values.
    attrs: Vec<u8>,
    size: Option<(usize, usize)>,
}

fn format_err(path: &Path, line: usize, message: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        location: format!("line {line}"),
        message,
    }
}

impl CelebA {
    /// Opens a split. `attributes`: names to keep (in that order), `None` for all 40.
    /// `size`: resize images (area) to (rows, cols) on `get`; `None` keeps 218x178.
    pub fn open(
        root: &Path,
        split: Split,
        attributes: Option<&[&str]>,
        size: Option<(usize, usize)>,
    ) -> Result<Self> {
        let attr_path = root.join("list_attr_celeba.txt");
        let text = read_text(&attr_path, LAYOUT)?;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let (_, count_line) = lines.next().ok_or_else(|| {
            format_err(&attr_path, 1, "empty file; expected the image count".into())
        })?;
        let count: usize = count_line.trim().parse().map_err(|_| {
            format_err(
                &attr_path,
                1,
                format!("expected the image count, found {count_line:?}"),
            )
        })?;
        let (_, header) = lines
            .next()
            .ok_or_else(|| format_err(&attr_path, 2, "missing the attribute-name line".into()))?;
        let all_names: Vec<&str> = header.split_whitespace().collect();
        let columns: Vec<usize> = match attributes {
            None => (0..all_names.len()).collect(),
            Some(want) => want
                .iter()
                .map(|w| {
                    all_names.iter().position(|n| n == w).ok_or_else(|| {
                        format_err(
                            &attr_path,
                            2,
                            format!("attribute {w:?} not among {}", all_names.join(" ")),
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };

        let part_path = root.join("list_eval_partition.txt");
        let part_text = read_text(&part_path, LAYOUT)?;
        let mut partition = HashMap::new();
        for (i, line) in part_text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut it = line.split_whitespace();
            let (Some(f), Some(p), None) = (it.next(), it.next(), it.next()) else {
                return Err(format_err(
                    &part_path,
                    i + 1,
                    format!("expected `file partition`, found {line:?}"),
                ));
            };
            let p: i64 = p.parse().map_err(|_| {
                format_err(
                    &part_path,
                    i + 1,
                    format!("partition {p:?} is not an integer"),
                )
            })?;
            if !(0..=2).contains(&p) {
                return Err(DataError::Label {
                    path: part_path,
                    record: i + 1,
                    value: p,
                    expected: "0, 1 or 2 (record = line)".into(),
                });
            }
            partition.insert(f.to_string(), p as u8);
        }
        let want = match split {
            Split::Train => 0,
            Split::Valid => 1,
            Split::Test => 2,
        };

        let mut files = Vec::new();
        let mut attrs = Vec::new();
        let mut rows = 0;
        for (lineno, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            rows += 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != all_names.len() + 1 {
                return Err(format_err(
                    &attr_path,
                    lineno,
                    format!(
                        "expected a file name and {} values, found {} fields",
                        all_names.len(),
                        fields.len()
                    ),
                ));
            }
            let file = fields[0];
            let p = *partition.get(file).ok_or_else(|| {
                format_err(
                    &attr_path,
                    lineno,
                    format!("{file} has no entry in {}", part_path.display()),
                )
            })?;
            let mut row = Vec::with_capacity(columns.len());
            for (k, f) in fields[1..].iter().enumerate() {
                let v: i64 = match *f {
                    "1" => 1,
                    "-1" => -1,
                    other => other.parse().unwrap_or(i64::MIN),
                };
                if v != 1 && v != -1 {
                    return Err(DataError::Label {
                        path: attr_path,
                        record: lineno,
                        value: v,
                        expected: format!("-1 or 1 for {} (record = line)", all_names[k]),
                    });
                }
                row.push(u8::from(v == 1));
            }
            if p == want {
                files.push(file.to_string());
                attrs.extend(columns.iter().map(|&c| row[c]));
            }
        }
        if rows != count {
            return Err(format_err(
                &attr_path,
                1,
                format!("header says {count} images, file lists {rows}"),
            ));
        }
        let names = columns.iter().map(|&c| all_names[c].to_string()).collect();
        Ok(CelebA {
            root: root.to_path_buf(),
            files,
            names,
            attrs,
            size,
        })
    }

    /// The chosen attribute names.
    pub fn attribute_names(&self) -> &[String] {
        &self.names
    }

    /// The 0/1 attributes of sample `index`.
    pub fn attributes(&self, index: usize) -> &[u8] {
        let k = self.names.len();
        &self.attrs[index * k..(index + 1) * k]
    }
}

impl Dataset for CelebA {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn tasks(&self) -> Vec<TaskSpec> {
        vec![TaskSpec {
            name: "attributes".into(),
            kind: TaskKind::Attributes {
                names: self.names.clone(),
            },
        }]
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let path = self.root.join("img_align_celeba").join(&self.files[index]);
        let mut image = read_image(&path, 3, LAYOUT)?;
        if let Some((h, w)) = self.size {
            image = resize_image(&image, h, w, Interp::Area);
        }
        Ok(Sample {
            image,
            targets: vec![Some(Target::Attributes(self.attributes(index).to_vec()))],
        })
    }
}
