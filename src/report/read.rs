//! Parsing of a run folder (see the run folder contract): `run.json`, `results.jsonl`,
//! `metrics.jsonl` and `pbt_schedule.json` into plain structs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `run.json`: what was run, and the task names in weight order.
#[derive(Clone, Debug, Deserialize)]
pub struct RunInfo {
    /// Training command that wrote the folder ("sweep", "pbt", ...).
    pub command: String,
    /// Preset name, when one was used.
    #[serde(default)]
    pub preset: Option<String>,
    /// "mtl" or "mdl".
    #[serde(default)]
    pub problem: Option<String>,
    /// Task (MTL) or domain (MDL) names; `weights[i]` belongs to `tasks[i]`.
    pub tasks: Vec<String>,
    /// Name of the validation metric (higher is better).
    #[serde(default)]
    pub metric: Option<String>,
    /// Model spec.
    #[serde(default)]
    pub model: Option<String>,
}

/// One line of `results.jsonl`: one finished training run.
#[derive(Clone, Debug, Deserialize)]
pub struct RunResult {
    /// Run name ("grid-p0.300", "member-2", ...).
    pub name: String,
    /// "uniform", "grid", "pbt", "train", "method" or "single".
    pub kind: String,
    /// MTO method name or "scalarization".
    #[serde(default)]
    pub method: Option<String>,
    /// Scalarization weights; `None` for MTO methods.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Validation metric per task (fractions); `None` where not meaningful.
    pub task_metric: Vec<Option<f64>>,
    /// Validation mean metric.
    #[serde(default)]
    pub mean_metric: Option<f64>,
    /// For kind "single": the index of the only task trained.
    #[serde(default)]
    pub single_task: Option<usize>,
    /// Training steps.
    #[serde(default)]
    pub steps: Option<u64>,
}

/// A `{"type":"eval"}` record of `metrics.jsonl`.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalRecord {
    /// Training run it belongs to.
    pub run: String,
    /// Step of the evaluation.
    pub step: u64,
    /// Validation mean metric (`None` when it was not finite).
    pub mean_metric: Option<f64>,
}

/// One layer (or the whole backbone) of a conflict record.
#[derive(Clone, Debug, Deserialize)]
pub struct ConflictLayer {
    /// Layer name ("backbone.layer1.0", or "backbone" for the whole).
    pub name: String,
    /// Fraction of task pairs with a negative gradient cosine.
    pub conflict_fraction: Option<f64>,
    /// Mean pairwise cosine of the task gradients.
    #[serde(default)]
    pub mean_cosine: Option<f64>,
}

/// A `{"type":"conflict"}` record.
#[derive(Clone, Debug, Deserialize)]
pub struct ConflictRecord {
    /// Training run it belongs to.
    pub run: String,
    /// Step of the measurement.
    pub step: u64,
    /// Per-layer statistics.
    #[serde(default)]
    pub layers: Vec<ConflictLayer>,
    /// Whole-backbone statistics.
    #[serde(default)]
    pub whole: Option<ConflictLayer>,
}

/// A `{"type":"pbt"}` record: one member's hyperparameters after explore.
#[derive(Clone, Debug, Deserialize)]
pub struct PbtRecord {
    /// Member name ("member-3").
    pub run: String,
    /// Generation number.
    pub generation: u32,
    /// Step at which the weights take effect.
    pub step: u64,
    /// Scalarization weights.
    pub weights: Vec<f64>,
}

/// One entry of the winner's schedule.
#[derive(Clone, Debug, Deserialize)]
pub struct ScheduleEntry {
    /// Step from which these weights were used.
    pub step: u64,
    /// Scalarization weights.
    pub weights: Vec<f64>,
}

/// `pbt_schedule.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Schedule {
    /// Name of the winning member.
    pub winner: String,
    /// Its hyperparameters over time, replayed through its lineage.
    pub schedule: Vec<ScheduleEntry>,
}

/// Everything `report` reads from one run folder.
#[derive(Clone, Debug)]
pub struct RunFolder {
    /// `run.json`.
    pub info: RunInfo,
    /// `results.jsonl`, in file order.
    pub results: Vec<RunResult>,
    /// Eval records of `metrics.jsonl` (empty when the file is absent).
    pub evals: Vec<EvalRecord>,
    /// Conflict records.
    pub conflicts: Vec<ConflictRecord>,
    /// PBT records.
    pub pbt: Vec<PbtRecord>,
    /// `pbt_schedule.json`, when present.
    pub schedule: Option<Schedule>,
}

/// The records of `metrics.jsonl` that report uses.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Eval records.
    pub evals: Vec<EvalRecord>,
    /// Conflict records.
    pub conflicts: Vec<ConflictRecord>,
    /// PBT records.
    pub pbt: Vec<PbtRecord>,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn parse_json<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).with_context(|| format!("{}: malformed JSON", path.display()))
}

/// Parses JSON lines, skipping blank ones; errors name the file and 1-based line number.
fn parse_lines(text: &str, path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}: malformed JSON", path.display(), i + 1))?;
        out.push((i + 1, v));
    }
    Ok(out)
}

fn typed<T: DeserializeOwned>(v: serde_json::Value, path: &Path, line: usize) -> Result<T> {
    serde_json::from_value(v).with_context(|| format!("{}: line {line}", path.display()))
}

/// Parses `results.jsonl` text.
pub fn parse_results(text: &str, path: &Path) -> Result<Vec<RunResult>> {
    parse_lines(text, path)?
        .into_iter()
        .map(|(line, v)| typed(v, path, line))
        .collect()
}

/// Parses `metrics.jsonl` text; unknown record types are ignored (forward compatibility).
pub fn parse_metrics(text: &str, path: &Path) -> Result<Metrics> {
    let mut m = Metrics::default();
    for (line, v) in parse_lines(text, path)? {
        let kind = v.get("type").and_then(|t| t.as_str()).map(str::to_string);
        match kind.as_deref() {
            Some("eval") => m.evals.push(typed(v, path, line)?),
            Some("conflict") => m.conflicts.push(typed(v, path, line)?),
            Some("pbt") => m.pbt.push(typed(v, path, line)?),
            Some(_) => {}
            None => bail!("{}: line {line}: record has no \"type\"", path.display()),
        }
    }
    Ok(m)
}

impl RunFolder {
    /// Reads a run folder: `run.json` and `results.jsonl` are required, the rest optional.
    pub fn read(dir: &Path) -> Result<RunFolder> {
        if !dir.is_dir() {
            bail!("run folder {} does not exist", dir.display());
        }
        let run_json = dir.join("run.json");
        if !run_json.is_file() {
            bail!("missing {} (every run folder has one)", run_json.display());
        }
        let info: RunInfo = parse_json(&read_text(&run_json)?, &run_json)?;
        let results_path = dir.join("results.jsonl");
        if !results_path.is_file() {
            bail!(
                "missing {} (every run folder has one)",
                results_path.display()
            );
        }
        let results = parse_results(&read_text(&results_path)?, &results_path)?;
        for (i, r) in results.iter().enumerate() {
            if r.task_metric.len() != info.tasks.len() {
                bail!(
                    "{}: result {:?} (record {}) has {} task metrics, run.json has {} tasks",
                    results_path.display(),
                    r.name,
                    i + 1,
                    r.task_metric.len(),
                    info.tasks.len()
                );
            }
        }
        let metrics_path = dir.join("metrics.jsonl");
        let metrics = if metrics_path.is_file() {
            parse_metrics(&read_text(&metrics_path)?, &metrics_path)?
        } else {
            Metrics::default()
        };
        let sched_path = dir.join("pbt_schedule.json");
        let schedule = if sched_path.is_file() {
            Some(parse_json(&read_text(&sched_path)?, &sched_path)?)
        } else {
            None
        };
        Ok(RunFolder {
            info,
            results,
            evals: metrics.evals,
            conflicts: metrics.conflicts,
            pbt: metrics.pbt,
            schedule,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_line_is_named_with_its_number() {
        let text =
            "{\"type\":\"eval\",\"run\":\"a\",\"step\":1,\"mean_metric\":0.5}\n\n{not json\n";
        let err = parse_metrics(text, Path::new("m.jsonl")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("m.jsonl: line 3"), "{msg}");
    }

    #[test]
    fn wrong_field_type_is_named_with_its_number() {
        let text = "{\"name\":\"a\",\"kind\":\"grid\",\"task_metric\":[0.5]}\n{\"name\":\"b\",\"kind\":\"grid\",\"task_metric\":\"x\"}\n";
        let msg = format!(
            "{:#}",
            parse_results(text, Path::new("r.jsonl")).unwrap_err()
        );
        assert!(msg.contains("r.jsonl: line 2"), "{msg}");
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        let text = concat!(
            "{\"type\":\"train\",\"run\":\"a\",\"step\":1,\"loss\":[1.0]}\n",
            "{\"type\":\"future\",\"x\":1}\n",
            "{\"type\":\"pbt\",\"run\":\"member-1\",\"generation\":2,\"step\":10,\"weights\":[0.4,0.6],\"new\":true}\n",
            "{\"type\":\"eval\",\"run\":\"a\",\"step\":5,\"task_metric\":[0.9,null],\"mean_metric\":null}\n",
        );
        let m = parse_metrics(text, Path::new("m.jsonl")).unwrap();
        assert_eq!((m.evals.len(), m.pbt.len(), m.conflicts.len()), (1, 1, 0));
        assert_eq!(m.pbt[0].weights, vec![0.4, 0.6]);
        assert_eq!(m.evals[0].mean_metric, None);
    }
}
