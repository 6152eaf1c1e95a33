//! Training one named run to completion inside a run folder: resume from its checkpoint,
//! evaluate every `eval_every` epochs, save on Ctrl-C, record the result.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::config::Config;
use crate::experiment::metrics::MetricsSink;
use crate::experiment::problem::Problem;
use crate::experiment::progress::Progress;
use crate::experiment::run_dir::{RunDir, RunResult};
use crate::experiment::trainer::{Evaluation, Stop, Trainer};

/// Everything the runs of one command share.
pub struct Context {
    /// The run folder.
    pub dir: RunDir,
    /// The resolved config.
    pub config: Config,
    /// The data.
    pub problem: Arc<Problem>,
    /// Metrics files.
    pub sink: Arc<MetricsSink>,
    /// Bars or lines.
    pub progress: Progress,
}

/// What to train.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Run name.
    pub name: String,
    /// Result kind (`uniform`, `grid`, `train`, `method`, `single`).
    pub kind: String,
    /// `scalarization` or an MTO method.
    pub method: String,
    /// p (empty: uniform).
    pub weights: Vec<f64>,
    /// Single-objective baseline: the objective.
    pub single: Option<usize>,
    /// Measure conflicts every k steps.
    pub conflicts_every: Option<u64>,
}

/// Formats per-objective values as `name value` pairs.
pub fn named(names: &[String], values: &[f64], digits: usize) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} {v:.digits$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Trains `spec` to the end (or to Ctrl-C: `Ok(None)` after saving). A run whose result is
/// already recorded is not trained again.
pub fn run(ctx: &Context, spec: &RunSpec) -> Result<Option<RunResult>> {
    if let Some(r) = ctx.dir.result(&spec.name)? {
        ctx.progress.println(&format!(
            "[{}] already finished (val mean {:.4})",
            spec.name, r.mean_metric
        ));
        return Ok(Some(r));
    }
    let clock = Instant::now();
    let mut trainer = Trainer::new(
        &spec.name,
        ctx.problem.clone(),
        &ctx.config,
        &spec.weights,
        &spec.method,
        Some(ctx.sink.clone()),
    )?;
    if let Some(k) = spec.single {
        trainer.single(k)?;
    }
    if let Some(every) = spec.conflicts_every {
        trainer.measure_conflicts(every);
    }
    let ckpt = ctx.dir.checkpoint(&spec.name);
    if ckpt.exists() {
        trainer.load(&ckpt)?;
        ctx.progress.println(&format!(
            "[{}] resuming at step {}",
            spec.name,
            trainer.step()
        ));
    }
    let names = ctx.problem.names();
    let tc = &ctx.config.train;
    let spe = trainer.steps_per_epoch();
    let total = spe * tc.epochs;
    let bar = ctx.progress.run(&spec.name, total, trainer.step());
    let mut last_eval: Option<Evaluation> = None;
    while trainer.step() < total {
        let step = trainer.step();
        let next_eval = (((step / spe) / tc.eval_every + 1) * tc.eval_every * spe).min(total);
        let chunk = (tc.log_every - step % tc.log_every).min(next_eval - step);
        if trainer.train_steps(chunk)? == Stop::Interrupted {
            trainer.save(&ckpt)?;
            bar.finish(&format!(
                "interrupted at step {}, checkpoint saved",
                trainer.step()
            ));
            return Ok(None);
        }
        let losses = trainer.last_losses();
        bar.update(
            trainer.step(),
            &format!(
                "epoch {:.2} loss {}",
                trainer.step() as f64 / spe as f64,
                named(&names, &losses, 3)
            ),
        );
        if trainer.step() == next_eval {
            let e = trainer.evaluate_and_log()?;
            ctx.progress.println(&format!(
                "[{}] step {} val {} mean {:.4}",
                spec.name,
                trainer.step(),
                named(&names, &e.metric, 4),
                e.mean()
            ));
            trainer.save(&ckpt)?;
            last_eval = Some(e);
        }
    }
    let val = match last_eval {
        Some(e) => e,
        None => trainer.evaluate_and_log()?,
    };
    let test = trainer.evaluate(true)?;
    let keep = |v: &[f64]| -> Vec<Option<f64>> {
        v.iter()
            .enumerate()
            .map(|(k, x)| (spec.single.is_none() || spec.single == Some(k)).then_some(*x))
            .collect()
    };
    let mean = |v: &[Option<f64>]| {
        let xs: Vec<f64> = v.iter().flatten().copied().collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    };
    let task_metric = keep(&val.metric);
    let test_metric = keep(&test.metric);
    let result = RunResult {
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        method: spec.method.clone(),
        weights: (spec.method == "scalarization").then(|| trainer.weights().to_vec()),
        mean_metric: mean(&task_metric),
        task_metric,
        test_mean_metric: Some(mean(&test_metric)),
        test_task_metric: Some(test_metric),
        single_task: spec.single,
        steps: trainer.step(),
        seconds: clock.elapsed().as_secs_f64(),
    };
    ctx.dir.add_result(&result)?;
    bar.finish(&format!(
        "done: val mean {:.4}, test mean {:.4}",
        result.mean_metric,
        result.test_mean_metric.unwrap_or(f64::NAN)
    ));
    Ok(Some(result))
}
