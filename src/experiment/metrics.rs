//! The run folder's time series: `metrics.jsonl` (every record) and `metrics.csv` (train and
//! eval records flattened), appended by any thread. Formats: `docs/run-folder.md`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use scalarize_mto::{ConflictRecord, GroupConflict};
use serde::Serialize;
use serde_json::{Value, json};

/// A training log line.
#[derive(Clone, Debug, Serialize)]
pub struct TrainRecord {
    /// Training run.
    pub run: String,
    /// Steps done.
    pub step: u64,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss per objective since the previous line.
    pub loss: Vec<f64>,
    /// The weights p (none for MTO methods).
    pub weights: Option<Vec<f64>>,
    /// Training throughput since the previous line.
    pub images_per_s: f64,
}

/// An evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRecord {
    /// Training run.
    pub run: String,
    /// Steps done.
    pub step: u64,
    /// Epochs done.
    pub epoch: f64,
    /// Metric per objective.
    pub task_metric: Vec<f64>,
    /// Their mean.
    pub mean_metric: f64,
    /// Mean loss per objective.
    pub loss: Vec<f64>,
    /// `val` or `test`.
    pub split: String,
}

struct Files {
    jsonl: File,
    csv: File,
}

/// Appends records to a run folder's metrics files.
pub struct MetricsSink {
    files: Mutex<Files>,
    path: PathBuf,
}

const CSV_HEADER: &str = "type,run,step,epoch,lr,images_per_s,mean_metric,values\n";

impl MetricsSink {
    /// Opens (creating or appending to) `dir/metrics.jsonl` and `dir/metrics.csv`.
    pub fn open(dir: &Path) -> Result<MetricsSink> {
        let path = dir.join("metrics.jsonl");
        let csv_path = dir.join("metrics.csv");
        let new_csv = !csv_path.exists();
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))
        };
        let jsonl = open(&path)?;
        let mut csv = open(&csv_path)?;
        if new_csv {
            csv.write_all(CSV_HEADER.as_bytes())?;
        }
        Ok(MetricsSink {
            files: Mutex::new(Files { jsonl, csv }),
            path,
        })
    }

    /// Keeps only the records for which `keep` is true (and drops lines cut by a kill),
    /// rewriting `dir/metrics.jsonl` atomically in one pass; call it before any sink is
    /// opened. Returns how many records were dropped.
    pub fn retain(dir: &Path, mut keep: impl FnMut(&Value) -> Result<bool>) -> Result<usize> {
        let path = dir.join("metrics.jsonl");
        if !path.exists() {
            return Ok(0);
        }
        let reader = BufReader::new(File::open(&path)?);
        let mut kept = String::new();
        let mut dropped = 0;
        for line in reader.lines() {
            let line = line?;
            // A line cut by a kill is the only expected damage: drop it.
            let ok = match serde_json::from_str::<Value>(&line) {
                Ok(v) => keep(&v)?,
                Err(_) => false,
            };
            if ok {
                kept.push_str(&line);
                kept.push('\n');
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, kept)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(dropped)
    }

    fn write(&self, v: &Value, csv: Option<String>) -> Result<()> {
        let mut f = self.files.lock().expect("metrics lock");
        let mut line = serde_json::to_string(v)?;
        line.push('\n');
        f.jsonl
            .write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        if let Some(row) = csv {
            f.csv.write_all(row.as_bytes())?;
        }
        Ok(())
    }

    /// A training record.
    pub fn train(&self, r: &TrainRecord) -> Result<()> {
        let mut v = serde_json::to_value(r)?;
        v["type"] = json!("train");
        let csv = format!(
            "train,{},{},{:.4},{},{:.1},,{}\n",
            r.run,
            r.step,
            r.epoch,
            r.lr,
            r.images_per_s,
            join(&r.loss)
        );
        self.write(&v, Some(csv))
    }

    /// An evaluation record.
    pub fn eval(&self, r: &EvalRecord) -> Result<()> {
        let mut v = serde_json::to_value(r)?;
        v["type"] = json!("eval");
        let csv = format!(
            "eval,{},{},{:.4},,,{},{}\n",
            r.run,
            r.step,
            r.epoch,
            r.mean_metric,
            join(&r.task_metric)
        );
        self.write(&v, Some(csv))
    }

    /// A gradient-conflict record (per-layer and whole-backbone metrics).
    pub fn conflict(&self, run: &str, r: &ConflictRecord) -> Result<()> {
        let layers: Vec<Value> = r.segments.iter().map(|g| group_json(g, r.tasks)).collect();
        let mut whole = group_json(&r.total, r.tasks);
        whole["name"] = json!("backbone");
        let v = json!({"type": "conflict", "run": run, "step": r.step, "layers": layers, "whole": whole});
        self.write(&v, None)
    }

    /// Any other record (`pbt`, ...), written as given.
    pub fn raw(&self, v: &Value) -> Result<()> {
        self.write(v, None)
    }
}

fn join(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.6}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// One group's metrics in the run-folder format: T x T cosine matrix, means of the pairs.
fn group_json(g: &GroupConflict, t: usize) -> Value {
    let mut cos = vec![vec![1.0f64; t]; t];
    let pairs = (0..t).flat_map(|i| (i + 1..t).map(move |j| (i, j)));
    for ((i, j), &c) in pairs.zip(&g.cosines) {
        cos[i][j] = c;
        cos[j][i] = c;
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    json!({
        "name": g.name.clone().unwrap_or_default(),
        "conflict_fraction": g.conflict_fraction,
        "mean_cosine": mean(&g.cosines),
        "cosines": cos,
        "norms": g.norms,
        "magnitude_similarity": mean(&g.magnitude_similarity),
    })
}
