//! `train`, `sweep`, `single` and `conflicts`: the commands that train named runs in a run
//! folder (PBT is in `pbt.rs`), and what they share: config resolution, the run folder, resume.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::config::Config;
use crate::experiment::interrupt;
use crate::experiment::metrics::MetricsSink;
use crate::experiment::problem::Problem;
use crate::experiment::progress::Progress;
use crate::experiment::run_dir::{RunDir, RunResult, default_dir};
use crate::experiment::runner::{self, Context, RunSpec, named};

/// Where the config comes from and where the run goes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// TOML config file (see docs/config.md).
    #[arg(long, short = 'c', conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Built-in preset instead of a file: digits-mdl, multimnist-mtl, cifar-stl, domainnet,
    /// celeba, taskonomy-tiny.
    #[arg(long, short = 'p')]
    pub preset: Option<String>,
    /// Run folder (default runs/<command>-<timestamp>); an existing one is resumed.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Override train.epochs.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Override train.steps_per_epoch.
    #[arg(long)]
    pub steps_per_epoch: Option<u64>,
    /// Override train.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override train.threads (0: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override data.root.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override train.device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long)]
    pub device: Option<String>,
}

/// `scalarize train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Scalarization weights p, comma-separated (normalised to sum 1).
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// `scalarization` or an MTO method (pcgrad, cagrad, mgda, imtl_l, uncertainty, ...).
    #[arg(long)]
    pub method: Option<String>,
}

/// `scalarize sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Grid points (overrides sweep.grid).
    #[arg(long)]
    pub grid: Option<usize>,
    /// Runs at the same time (overrides sweep.workers).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// `scalarize conflicts`.
#[derive(Args, Debug)]
pub struct ConflictsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Measure every this many steps (overrides conflicts.every).
    #[arg(long)]
    pub every: Option<u64>,
    /// Scalarization weights p.
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// `scalarization` or an MTO method.
    #[arg(long)]
    pub method: Option<String>,
}

/// Resolves the config from a file or preset plus command-line overrides.
pub fn resolve_config(a: &CommonArgs) -> Result<Config> {
    let mut c = match (&a.config, &a.preset) {
        (Some(path), _) => Config::from_file(path)?,
        (None, Some(name)) => Config::preset(name)?,
        (None, None) => bail!("give a config (--config FILE.toml) or a preset (--preset NAME)"),
    };
    if let Some(v) = a.epochs {
        c.train.epochs = v;
    }
    if let Some(v) = a.steps_per_epoch {
        c.train.steps_per_epoch = v;
    }
    if let Some(v) = a.seed {
        c.train.seed = v;
    }
    if let Some(v) = a.threads {
        c.train.threads = v;
    }
    if let Some(v) = &a.data {
        c.data.root = v.clone();
    }
    if let Some(v) = &a.device {
        c.train.device = v.clone();
    }
    c.validate().context("after command-line overrides")?;
    Ok(c)
}

/// Builds the shared context: threads, data, run folder (resumed if it exists), metrics.
pub fn setup(command: &str, a: &CommonArgs, config: Config) -> Result<Context> {
    if config.train.threads > 0 {
        // Fails only if the pool was already built (tests calling twice): keep the first.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(config.train.threads)
            .build_global();
    }
    interrupt::install();
    let problem = Arc::new(Problem::build(&config).with_context(|| {
        format!(
            "data.dataset `{}` under data.root {}",
            config.data.dataset,
            config.data.root.display()
        )
    })?);
    let path = a.out.clone().unwrap_or_else(|| default_dir(command));
    let (dir, resumed) = RunDir::open(&path, command, &config, &problem)?;
    let progress = Progress::new();
    if resumed {
        let dropped = drop_unsaved_records(&dir)?;
        progress.println(&format!(
            "resuming {} ({dropped} records after the last checkpoints dropped)",
            path.display()
        ));
    } else {
        progress.println(&format!("run folder: {}", path.display()));
    }
    let sink = Arc::new(MetricsSink::open(&dir.path)?);
    Ok(Context {
        dir,
        config,
        problem,
        sink,
        progress,
    })
}

/// On resume, drops metrics written after each unfinished run's checkpoint (they are redone).
/// PBT members are left alone: the engine resumes them from its own committed state.
fn drop_unsaved_records(dir: &RunDir) -> Result<usize> {
    let finished: Vec<String> = dir.results()?.into_iter().map(|r| r.name).collect();
    // Per run: the checkpoint's step, or `None` (no checkpoint: every record is redone).
    let mut cutoffs: HashMap<String, Option<u64>> = HashMap::new();
    MetricsSink::retain(&dir.path, |v| {
        let Some(run) = v["run"].as_str() else {
            return Ok(true);
        };
        if finished.iter().any(|f| f == run) || run.starts_with("member-") {
            return Ok(true);
        }
        if !cutoffs.contains_key(run) {
            let ckpt = dir.checkpoint(run);
            let step = if ckpt.exists() {
                Some(scalarize_nn::checkpoint::read_checkpoint_meta(&ckpt)?.step)
            } else {
                None
            };
            cutoffs.insert(run.to_string(), step);
        }
        Ok(match cutoffs[run] {
            Some(step) => v["step"].as_u64().is_none_or(|s| s <= step),
            None => false,
        })
    })
}

/// Exit status 130 and the resume command after Ctrl-C.
pub fn interrupted(dir: &RunDir, command: &str) -> Result<()> {
    bail!(
        "interrupted: state saved in {}; resume with the same command and --out {} ({command})",
        dir.path.display(),
        dir.path.display()
    )
}

/// Prints a results table (validation and test means, per-objective test metrics).
pub fn print_results(ctx: &Context, results: &[RunResult]) {
    let names = ctx.problem.names();
    println!(
        "\n{:<18} {:<22} {:>9} {:>9}  test per {}",
        "run",
        "weights / method",
        "val mean",
        "test mean",
        if ctx.problem.kind == crate::experiment::problem::ProblemKind::Mdl {
            "domain"
        } else {
            "task"
        }
    );
    for r in results {
        let w = match &r.weights {
            Some(w) if r.method == "scalarization" => w
                .iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(","),
            _ => r.method.clone(),
        };
        let per: Vec<f64> = r
            .test_task_metric
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|x| x.unwrap_or(f64::NAN))
            .collect();
        println!(
            "{:<18} {:<22} {:>9.4} {:>9.4}  {}",
            r.name,
            w,
            r.mean_metric,
            r.test_mean_metric.unwrap_or(f64::NAN),
            named(&names, &per, 4)
        );
    }
}

/// `scalarize train`.
pub fn run_train(a: &TrainArgs) -> Result<()> {
    train_one("train", &a.common, &a.weights, &a.method, None)
}

/// `scalarize conflicts`.
pub fn run_conflicts(a: &ConflictsArgs) -> Result<()> {
    train_one("conflicts", &a.common, &a.weights, &a.method, Some(a.every))
}

/// One model with the config's (or given) weights or method; `conflicts` measures gradient
/// conflicts every `conflicts.every` steps (overridden by `Some(Some(k))`).
fn train_one(
    command: &str,
    common: &CommonArgs,
    weights: &Option<Vec<f64>>,
    method: &Option<String>,
    conflicts: Option<Option<u64>>,
) -> Result<()> {
    let mut config = resolve_config(common)?;
    if let Some(w) = weights {
        config.train.weights = w.clone();
    }
    if let Some(m) = method {
        config.train.method = m.clone();
    }
    if let Some(Some(e)) = conflicts {
        config.conflicts.every = e;
    }
    config.validate()?;
    let ctx = setup(command, common, config)?;
    let method = ctx.config.train.method.clone();
    let spec = RunSpec {
        name: command.into(),
        kind: if method == "scalarization" {
            "train"
        } else {
            "method"
        }
        .into(),
        method,
        weights: ctx.config.train.weights.clone(),
        single: None,
        conflicts_every: conflicts.map(|_| ctx.config.conflicts.every),
    };
    let Some(r) = runner::run(&ctx, &spec)? else {
        return interrupted(&ctx.dir, command);
    };
    print_results(&ctx, &[r]);
    if conflicts.is_some() {
        println!(
            "conflict time series: {} (type \"conflict\"); plot with `scalarize report {}`",
            ctx.dir.path.join("metrics.jsonl").display(),
            ctx.dir.path.display()
        );
    }
    Ok(())
}

/// `scalarize single`.
pub fn run_single(a: &CommonArgs) -> Result<()> {
    let config = resolve_config(a)?;
    let ctx = setup("single", a, config)?;
    let mut results = Vec::new();
    for (k, name) in ctx.problem.names().iter().enumerate() {
        let spec = RunSpec {
            name: format!("single-{name}"),
            kind: "single".into(),
            method: "scalarization".into(),
            weights: Vec::new(),
            single: Some(k),
            conflicts_every: None,
        };
        match runner::run(&ctx, &spec)? {
            Some(r) => results.push(r),
            None => return interrupted(&ctx.dir, "single"),
        }
    }
    print_results(&ctx, &results);
    Ok(())
}

/// Weight vectors of a sweep: two objectives, p_1 on `grid` interior points; more, the
/// interior lattice points with `grid + 1` steps per axis, or `samples` Dirichlet(1) draws.
pub fn sweep_points(t: usize, grid: usize, samples: usize, seed: u64) -> Vec<Vec<f64>> {
    if t == 1 {
        return vec![vec![1.0]];
    }
    if t == 2 {
        return (1..=grid)
            .map(|i| {
                let p = i as f64 / (grid + 1) as f64;
                vec![p, 1.0 - p]
            })
            .collect();
    }
    if samples > 0 {
        let mut rng = scalarize_pbt::rng::stream(
            seed,
            scalarize_pbt::rng::Purpose::Init,
            0x0053_5745_4550,
            0,
        );
        let space = scalarize_pbt::Domain::simplex(t);
        return (0..samples)
            .map(|_| {
                space
                    .sample(&mut rng)
                    .as_vector()
                    .expect("simplex")
                    .to_vec()
            })
            .collect();
    }
    // Compositions of n = grid + 1 into t positive parts.
    let n = grid + 1;
    let mut out = Vec::new();
    let mut parts = vec![1usize; t];
    fn rec(i: usize, left: usize, parts: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<f64>>) {
        let t = parts.len();
        if i == t - 1 {
            parts[i] = left;
            out.push(parts.iter().map(|&k| k as f64 / n as f64).collect());
            return;
        }
        for k in 1..=left - (t - 1 - i) {
            parts[i] = k;
            rec(i + 1, left - k, parts, n, out);
        }
    }
    if n >= t {
        rec(0, n, &mut parts, n, &mut out);
    }
    out
}

/// Run name of a grid point.
pub fn grid_name(w: &[f64]) -> String {
    if w.len() == 2 {
        format!("grid-p{:.3}", w[0])
    } else {
        format!(
            "grid-{}",
            w.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join("-")
        )
    }
}

/// Trains every spec, up to `workers` at a time; stops early on Ctrl-C (`Ok(None)`).
pub fn run_all(ctx: &Context, specs: &[RunSpec], workers: usize) -> Result<Option<Vec<RunResult>>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<Option<RunResult>>>>> =
        Mutex::new((0..specs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, specs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= specs.len() || interrupt::requested() {
                        break;
                    }
                    let r = runner::run(ctx, &specs[i]);
                    let failed = r.is_err();
                    slots.lock().expect("slots")[i] = Some(r);
                    if failed {
                        // Stop handing out work; the error is reported below.
                        next.store(specs.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let mut results = Vec::new();
    for slot in slots.into_inner().expect("slots") {
        match slot {
            Some(Ok(Some(r))) => results.push(r),
            Some(Err(e)) => return Err(e),
            Some(Ok(None)) | None => return Ok(None),
        }
    }
    Ok(Some(results))
}

/// `scalarize sweep`.
pub fn run_sweep(a: &SweepArgs) -> Result<()> {
    let mut config = resolve_config(&a.common)?;
    if let Some(g) = a.grid {
        config.sweep.grid = g;
    }
    if let Some(w) = a.workers {
        config.sweep.workers = w;
    }
    config.validate()?;
    let ctx = setup("sweep", &a.common, config)?;
    let t = ctx.problem.num_objectives();
    let s = &ctx.config.sweep;
    let specs: Vec<RunSpec> = sweep_points(t, s.grid, s.samples, ctx.config.train.seed)
        .into_iter()
        .map(|w| RunSpec {
            name: grid_name(&w),
            kind: "grid".into(),
            method: "scalarization".into(),
            weights: w,
            single: None,
            conflicts_every: None,
        })
        .collect();
    if specs.is_empty() {
        bail!(
            "sweep.grid = {}: no interior point for {t} objectives",
            s.grid
        );
    }
    ctx.progress
        .println(&format!("sweep: {} runs", specs.len()));
    match run_all(&ctx, &specs, ctx.config.sweep.workers)? {
        Some(results) => {
            print_results(&ctx, &results);
            if let Some(best) = results
                .iter()
                .max_by(|a, b| a.mean_metric.total_cmp(&b.mean_metric))
            {
                println!("best by validation mean: {}", best.name);
            }
            Ok(())
        }
        None => interrupted(&ctx.dir, "sweep"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_task_grid_is_interior_and_symmetric() {
        let g = sweep_points(2, 3, 0, 0);
        assert_eq!(g, vec![vec![0.25, 0.75], vec![0.5, 0.5], vec![0.75, 0.25]]);
    }

    #[test]
    fn lattice_points_are_interior_on_the_simplex() {
        // n = 4 steps, 3 parts >= 1: C(3, 2) = 3 compositions.
        let g = sweep_points(3, 3, 0, 0);
        assert_eq!(g.len(), 3);
        for w in &g {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(w.iter().all(|&x| x > 0.0));
        }
        let d = sweep_points(4, 1, 5, 7);
        assert_eq!(d.len(), 5);
        assert!(d.iter().all(|w| (w.iter().sum::<f64>() - 1.0).abs() < 1e-9));
    }
}
