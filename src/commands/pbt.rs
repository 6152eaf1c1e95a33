//! `scalarize pbt`: population-based training over the weights p (and optionally the learning
//! rate), beside the baselines it is compared with (uniform p and, for two objectives, a grid
//! of p_1), ending with the comparison table.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use scalarize_pbt::{
    BoxError, Domain, Hyperparams, Interval, Mode, Pb2, Pbt, Perturb, SearchSpace, SimplexMove,
    Tournament, Trainable, Truncation,
};
use serde_json::json;

use crate::commands::run::{
    CommonArgs, grid_name, interrupted, print_results, resolve_config, run_all, setup, sweep_points,
};
use crate::experiment::progress::RunBar;
use crate::experiment::run_dir::{RunResult, write_atomic};
use crate::experiment::runner::{Context, RunSpec};
use crate::experiment::trainer::{Stop, Trainer, steps_per_epoch};

/// `scalarize pbt`.
#[derive(Args, Debug)]
pub struct PbtArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Members (overrides pbt.population).
    #[arg(long)]
    pub population: Option<usize>,
    /// Epochs between decisions (overrides pbt.interval).
    #[arg(long)]
    pub interval: Option<u64>,
    /// Members trained at the same time (overrides pbt.workers).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Also search the learning rate.
    #[arg(long)]
    pub search_lr: bool,
    /// `perturb` or `pb2` (overrides pbt.explore).
    #[arg(long)]
    pub explore: Option<String>,
    /// `sync` or `async` (overrides pbt.mode).
    #[arg(long)]
    pub mode: Option<String>,
    /// Grid baseline points (overrides pbt.baseline_grid; 0: uniform only).
    #[arg(long)]
    pub baseline_grid: Option<usize>,
}

/// One PBT member: a trainer whose p (and learning rate) the engine sets.
struct Member<'a> {
    trainer: Trainer,
    search_lr: bool,
    out: PathBuf,
    /// The population's bar: every member advances it.
    bar: &'a RunBar,
}

impl Trainable for Member<'_> {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        let p = hp.vector("p").ok_or("hyperparameter `p` missing")?;
        self.trainer.set_weights(p)?;
        if let Some(lr) = hp.f64("lr") {
            self.trainer.set_lr(lr);
        }
        Ok(())
    }

    fn hyperparameters(&self) -> Hyperparams {
        let hp = Hyperparams::new().with("p", self.trainer.weights().to_vec());
        if self.search_lr {
            hp.with("lr", self.trainer.lr())
        } else {
            hp
        }
    }

    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        let steps = interval.units * self.trainer.steps_per_epoch();
        let stop = self.trainer.train_steps(steps)?;
        self.bar.inc(
            steps,
            &format!(
                "{} trained to step {}",
                self.trainer.name,
                self.trainer.step()
            ),
        );
        if stop == Stop::Interrupted {
            // The engine commits each finished interval atomically and survives a kill, so
            // exiting here loses only the intervals in flight.
            eprintln!(
                "interrupted: PBT state is committed after every interval; resume with the same command and --out {}",
                self.out.display()
            );
            std::process::exit(130);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<f64, BoxError> {
        let score = self.trainer.evaluate_and_log()?.mean();
        let p: Vec<String> = self
            .trainer
            .weights()
            .iter()
            .map(|w| format!("{w:.3}"))
            .collect();
        self.bar.inc(
            0,
            &format!(
                "{} at step {}: val mean {score:.4} with p = ({})",
                self.trainer.name,
                self.trainer.step(),
                p.join(", ")
            ),
        );
        Ok(score)
    }

    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        Ok(self.trainer.save(path)?)
    }

    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        Ok(self.trainer.load(path)?)
    }
}

/// `scalarize pbt`.
pub fn run_pbt(a: &PbtArgs) -> Result<()> {
    let mut config = resolve_config(&a.common)?;
    let p = &mut config.pbt;
    if let Some(v) = a.population {
        p.population = v;
    }
    if let Some(v) = a.interval {
        p.interval = v;
    }
    if let Some(v) = a.workers {
        p.workers = v;
    }
    if a.search_lr {
        p.search_lr = true;
    }
    if let Some(v) = &a.explore {
        p.explore = v.clone();
    }
    if let Some(v) = &a.mode {
        p.mode = v.clone();
    }
    if let Some(v) = a.baseline_grid {
        p.baseline_grid = v;
    }
    config.validate()?;
    let ctx = setup("pbt", &a.common, config)?;
    let t = ctx.problem.num_objectives();

    // 1. Baselines: uniform and, for two objectives, the grid over p_1.
    let grid = if t == 2 && ctx.config.pbt.baseline_grid > 0 {
        sweep_points(2, ctx.config.pbt.baseline_grid, 0, 0)
    } else {
        Vec::new()
    };
    let uniform = vec![1.0 / t as f64; t];
    let uniform_in_grid = grid
        .iter()
        .any(|w| w.iter().zip(&uniform).all(|(a, b)| (a - b).abs() < 1e-12));
    let mut specs: Vec<RunSpec> = Vec::new();
    if !uniform_in_grid {
        specs.push(spec("uniform", "uniform", uniform.clone()));
    }
    for w in &grid {
        specs.push(spec(&grid_name(w), "grid", w.clone()));
    }
    let Some(mut baselines) = run_all(&ctx, &specs, ctx.config.pbt.workers)? else {
        return interrupted(&ctx.dir, "pbt");
    };
    if uniform_in_grid && ctx.dir.result("uniform")?.is_none() {
        // The grid's midpoint is the uniform run: record it under both names, train it once.
        let mid = baselines
            .iter()
            .find(|r| r.name == grid_name(&uniform))
            .ok_or_else(|| anyhow!("grid midpoint result missing"))?;
        let mut u = mid.clone();
        u.name = "uniform".into();
        u.kind = "uniform".into();
        ctx.dir.add_result(&u)?;
        baselines.insert(0, u);
    } else if uniform_in_grid {
        baselines.insert(0, ctx.dir.result("uniform")?.expect("checked"));
    }

    // 2. PBT.
    let pbt_result = match ctx.dir.result("pbt")? {
        Some(r) => r,
        None => run_population(&ctx)?,
    };

    // 3. The comparison.
    let best_grid = baselines
        .iter()
        .filter(|r| r.kind == "grid")
        .max_by(|a, b| a.mean_metric.total_cmp(&b.mean_metric))
        .cloned();
    let mut table: Vec<RunResult> = baselines
        .iter()
        .filter(|r| r.kind == "uniform")
        .cloned()
        .collect();
    if let Some(mut g) = best_grid {
        g.name = format!("best {}", g.name);
        table.push(g);
    }
    table.push(pbt_result);
    print_results(&ctx, &table);
    println!(
        "\n(best grid point chosen by validation mean; PBT = its best member by validation mean)\nrun folder: {}; plots and the full table: scalarize report {}",
        ctx.dir.path.display(),
        ctx.dir.path.display()
    );
    Ok(())
}

fn spec(name: &str, kind: &str, w: Vec<f64>) -> RunSpec {
    RunSpec {
        name: name.into(),
        kind: kind.into(),
        method: "scalarization".into(),
        weights: w,
        single: None,
        conflicts_every: None,
    }
}

/// Runs (or resumes) the population, then evaluates the winner and writes its records.
fn run_population(ctx: &Context) -> Result<RunResult> {
    let clock = std::time::Instant::now();
    let pc = &ctx.config.pbt;
    let t = ctx.problem.num_objectives();
    let mut space = SearchSpace::new().with("p", Domain::simplex_with_floor(t, pc.floor));
    if pc.search_lr {
        space = space.with("lr", Domain::log_uniform(pc.lr_bounds[0], pc.lr_bounds[1]));
    }
    let simplex_move = match pc.simplex_move.as_str() {
        "dirichlet" => SimplexMove::Dirichlet {
            concentration: pc.concentration,
        },
        _ => SimplexMove::Multiplicative,
    };
    let perturb = Perturb {
        factors: pc.factors.to_vec(),
        resample_probability: pc.resample_probability,
        simplex_move,
    };
    let pbt_dir = ctx.dir.path.join("pbt");
    let mut builder = Pbt::builder(&pbt_dir, space)
        .population(pc.population)
        .workers(pc.workers)
        .interval(pc.interval)
        .budget_units(pc.population as u64 * ctx.config.train.epochs)
        .burn_in(pc.burn_in)
        .mode(if pc.mode == "async" {
            Mode::Asynchronous
        } else {
            Mode::Synchronous
        })
        .seed(ctx.config.train.seed);
    builder = match pc.exploit.as_str() {
        "tournament" => builder.exploit(Tournament),
        _ => builder.exploit(Truncation::new(pc.quantile)),
    };
    builder = match pc.explore.as_str() {
        "pb2" => {
            let mut pb2 = Pb2::default();
            pb2.fallback = perturb;
            builder.explore(pb2)
        }
        _ => builder.explore(perturb),
    };
    let engine = builder.build()?;
    ctx.progress.println(&format!(
        "PBT: {} members, decisions every {} epoch(s), {} epochs each",
        pc.population, pc.interval, ctx.config.train.epochs
    ));
    // Steps of the whole population (a resumed run starts the bar at 0: it counts this process).
    let spe_total =
        pc.population as u64 * ctx.config.train.epochs * steps_per_epoch(&ctx.config, &ctx.problem);
    let bar = ctx.progress.run("pbt", spe_total, 0);
    let report = engine
        .run(|m| -> Result<Member, BoxError> {
            let trainer = Trainer::new(
                &format!("member-{m}"),
                ctx.problem.clone(),
                &ctx.config,
                &[],
                "scalarization",
                Some(ctx.sink.clone()),
            )?;
            Ok(Member {
                trainer,
                search_lr: pc.search_lr,
                out: ctx.dir.path.clone(),
                bar: &bar,
            })
        })
        .context("PBT")?;
    bar.finish("population trained");
    let best = report
        .best
        .ok_or_else(|| anyhow!("PBT finished without a live member"))?;
    let member = &report.members[best];
    let ckpt = member
        .checkpoint
        .as_ref()
        .map(|c| pbt_dir.join(c))
        .ok_or_else(|| anyhow!("PBT winner member-{best} has no checkpoint"))?;

    let mut winner = Trainer::new(
        "pbt",
        ctx.problem.clone(),
        &ctx.config,
        &[],
        "scalarization",
        None,
    )?;
    // The engine counts units (epochs); records are in optimizer steps like the others.
    let spe = winner.steps_per_epoch();

    // Records for the report: every member's p after each interval, and the winner's schedule.
    let store = engine.store()?;
    let policy = store.policy(None)?;
    for e in store.intervals(None)? {
        let source = policy
            .iter()
            .find(|p| p.member == e.member && p.generation == e.generation)
            .map(|p| format!("member-{}", p.source));
        ctx.sink.raw(&json!({
            "type": "pbt", "run": format!("member-{}", e.member), "generation": e.generation,
            "step": e.step_end * spe, "weights": e.hp.vector("p"), "lr": e.hp.f64("lr"),
            "score": e.score, "exploited_from": source,
        }))?;
    }
    let schedule: Vec<serde_json::Value> = report
        .best_schedule
        .iter()
        .map(|s| json!({"step": s.step * spe, "weights": s.hp.vector("p"), "lr": s.hp.f64("lr")}))
        .collect();
    write_atomic(
        &ctx.dir.path.join("pbt_schedule.json"),
        serde_json::to_string_pretty(
            &json!({"winner": format!("member-{best}"), "schedule": schedule}),
        )?
        .as_bytes(),
    )?;

    // The winner, evaluated on validation and test.
    winner.load(&ckpt)?;
    let val = winner.evaluate(false)?;
    let test = winner.evaluate(true)?;
    let result = RunResult {
        name: "pbt".into(),
        kind: "pbt".into(),
        method: "scalarization".into(),
        weights: Some(winner.weights().to_vec()),
        task_metric: val.metric.iter().map(|v| Some(*v)).collect(),
        mean_metric: val.mean(),
        test_task_metric: Some(test.metric.iter().map(|v| Some(*v)).collect()),
        test_mean_metric: Some(test.mean()),
        single_task: None,
        steps: winner.step(),
        seconds: clock.elapsed().as_secs_f64(),
    };
    ctx.dir.add_result(&result)?;
    Ok(result)
}
