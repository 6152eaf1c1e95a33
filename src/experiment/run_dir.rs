//! The run folder: `run.json`, the resolved `config.toml`, `results.jsonl`, checkpoints.
//! Formats: `docs/run-folder.md`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::experiment::problem::Problem;

/// One finished training run, a line of `results.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Run name (`uniform`, `grid-p0.250`, `pbt`, `single-mnist`, ...).
    pub name: String,
    /// `uniform`, `grid`, `pbt`, `train`, `method` or `single`.
    pub kind: String,
    /// `scalarization` or the MTO method.
    pub method: String,
    /// The weights p (none for MTO methods).
    pub weights: Option<Vec<f64>>,
    /// Validation metric per objective (`None` for objectives a single-task run did not train).
    pub task_metric: Vec<Option<f64>>,
    /// Mean validation metric over the trained objectives.
    pub mean_metric: f64,
    /// Test metric per objective.
    pub test_task_metric: Option<Vec<Option<f64>>>,
    /// Mean test metric.
    pub test_mean_metric: Option<f64>,
    /// For kind `single`: the objective trained.
    pub single_task: Option<usize>,
    /// Optimizer steps.
    pub steps: u64,
    /// Wall-clock seconds of training and evaluation (this process's share after a resume).
    pub seconds: f64,
}

/// An open run folder.
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
}

/// `runs/<command>-<UTC timestamp>`.
pub fn default_dir(command: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // 2026-12-01T19:22:22Z -> 20261201-192222
    let digits: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
    PathBuf::from("runs").join(format!("{command}-{}-{}", &digits[..8], &digits[8..14]))
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

impl RunDir {
    /// Creates the folder, or reopens it to resume when it holds a run of the same command
    /// and config (a different one is refused, naming the first differing key).
    pub fn open(
        path: &Path,
        command: &str,
        config: &Config,
        problem: &Problem,
    ) -> Result<(RunDir, bool)> {
        let run_json = path.join("run.json");
        let config_path = path.join("config.toml");
        let resolved = config.to_toml();
        if run_json.exists() {
            let old: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&run_json)
                    .with_context(|| format!("cannot read {}", run_json.display()))?,
            )
            .with_context(|| format!("{} is not valid JSON", run_json.display()))?;
            if old["command"] != command {
                bail!(
                    "{} holds a `{}` run; this is `{command}`: choose another --out",
                    path.display(),
                    old["command"].as_str().unwrap_or("?")
                );
            }
            let old_config = std::fs::read_to_string(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?;
            if old_config != resolved {
                let key = first_difference(&old_config, &resolved).unwrap_or_else(|| "?".into());
                bail!(
                    "{} holds a run with a different config (first difference: `{key}`): resume with the same config, or choose another --out",
                    path.display()
                );
            }
            return Ok((
                RunDir {
                    path: path.to_path_buf(),
                },
                true,
            ));
        }
        std::fs::create_dir_all(path.join("checkpoints"))
            .with_context(|| format!("cannot create run folder {}", path.display()))?;
        let meta = serde_json::json!({
            "command": command,
            "preset": config.preset,
            "problem": problem.kind.name(),
            "tasks": problem.names(),
            "metric": "accuracy",
            "model": config.model.spec,
            "version": env!("CARGO_PKG_VERSION"),
        });
        write_atomic(&config_path, resolved.as_bytes())?;
        write_atomic(&run_json, serde_json::to_string_pretty(&meta)?.as_bytes())?;
        Ok((
            RunDir {
                path: path.to_path_buf(),
            },
            false,
        ))
    }

    /// Checkpoint path of a named run.
    pub fn checkpoint(&self, run: &str) -> PathBuf {
        self.path
            .join("checkpoints")
            .join(format!("{run}.safetensors"))
    }

    /// Results recorded so far.
    pub fn results(&self) -> Result<Vec<RunResult>> {
        let path = self.path.join("results.jsonl");
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path)?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not a result", path.display(), i + 1))
            })
            .collect()
    }

    /// The recorded result named `name`, if any.
    pub fn result(&self, name: &str) -> Result<Option<RunResult>> {
        Ok(self.results()?.into_iter().find(|r| r.name == name))
    }

    /// Appends a result (one line, written with a single call so a kill cannot split it).
    pub fn add_result(&self, r: &RunResult) -> Result<()> {
        let path = self.path.join("results.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut line = serde_json::to_string(r)?;
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        Ok(())
    }
}

/// The dotted key of the first line where two TOML texts differ.
fn first_difference(a: &str, b: &str) -> Option<String> {
    let mut section = String::new();
    for (la, lb) in a.lines().zip(b.lines()).chain(std::iter::once(("", ""))) {
        if la != lb {
            let line = if la.is_empty() { lb } else { la };
            let key = line.split('=').next().unwrap_or(line).trim();
            return Some(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
        if la.starts_with('[') {
            section = la.trim_matches(|c| c == '[' || c == ']').to_string();
        }
    }
    (a.lines().count() != b.lines().count()).then(|| "end of file".into())
}
