//! scikit-learn's 8x8 digits (`digits.csv.gz` as shipped in the wheel, UCI optdigits test set):
//! 1,797 lines of 64 pixel values in 0..=16 and a label 0..=9, comma-separated.
//!
//! Pixels are rescaled to 0..=255 as `round(v * 255 / 16)` so that the same normalisation code
//! serves every source. Split: stratified, the last `floor(0.2 n + 0.5)` rows of each class (in
//! file order) are test ([`crate::split::stratified_indices`]): 1,438 train, 359 test.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::readers::read_text;
use crate::sample::{InMemory, TaskSpec};
use crate::split::{Split, stratified_indices};

const LAYOUT: &str =
    "{dir}/digits.csv.gz (or a file path): lines of 64 values 0..16 and a label 0..9";

/// Parses the CSV text (`path` names errors) into all 1,797 samples.
pub fn parse(text: &str, path: &Path) -> Result<InMemory> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (lineno, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |message: String| DataError::Format {
            path: path.into(),
            location: format!("line {}", lineno + 1),
            message,
        };
        if fields.len() != 65 {
            return Err(bad(format!(
                "expected 65 comma-separated values, found {}",
                fields.len()
            )));
        }
        for (col, f) in fields.iter().enumerate() {
            let v: f64 = f
                .parse()
                .map_err(|_| bad(format!("column {}: {f:?} is not a number", col + 1)))?;
            let (max, is_label) = if col == 64 {
                (9.0, true)
            } else {
                (16.0, false)
            };
            if v.fract() != 0.0 || !(0.0..=max).contains(&v) {
                if is_label {
                    return Err(DataError::Label {
                        path: path.into(),
                        record: lineno + 1,
                        value: v as i64,
                        expected: "0..=9 (line number as record)".into(),
                    });
                }
                return Err(bad(format!("column {}: pixel {v} outside 0..=16", col + 1)));
            }
            if is_label {
                labels.push(v as u8);
            } else {
                pixels.push(((v * 255.0 / 16.0) + 0.5) as u8);
            }
        }
    }
    Ok(InMemory {
        height: 8,
        width: 8,
        channels: 1,
        pixels,
        task_specs: vec![TaskSpec::class("digit", 10)],
        labels: vec![labels.iter().map(|&v| v as u32).collect()],
    })
}

/// Opens a split; `path` is the folder holding `digits.csv.gz` (or `digits.csv`) or the file.
pub fn open(path: &Path, split: Split) -> Result<InMemory> {
    let file = if path.is_dir() {
        let gz = path.join("digits.csv.gz");
        if gz.is_file() {
            gz
        } else {
            path.join("digits.csv")
        }
    } else {
        path.to_path_buf()
    };
    let all = parse(&read_text(&file, LAYOUT)?, &file)?;
    if split == Split::Valid {
        return Err(DataError::Invalid("digits has no validation split".into()));
    }
    let labels: Vec<u8> = all.labels[0].iter().map(|&v| v as u8).collect();
    Ok(all.select(&stratified_indices(&labels, 10, split)))
}
