//! `scalarize report`: plots and a Markdown table from a run folder (see the run folder
//! contract). `read` parses the files, `table` builds the table and Delta_m, `plots` draws.

pub mod plots;
pub mod read;
pub mod table;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use plots::Outcome;
use read::RunFolder;

/// What `report` wrote.
#[derive(Debug)]
pub struct Report {
    /// The `report/` folder.
    pub dir: PathBuf,
    /// The table (also printed).
    pub table: String,
    /// One outcome per figure.
    pub plots: Vec<Outcome>,
}

/// Reads `run_dir` (and single-task baselines from `baseline_dirs`), writes `run_dir/report/`.
pub fn generate(run_dir: &Path, baseline_dirs: &[PathBuf]) -> Result<Report> {
    let run = RunFolder::read(run_dir)?;
    let extra: Vec<RunFolder> = baseline_dirs
        .iter()
        .map(|d| RunFolder::read(d).with_context(|| format!("baselines {}", d.display())))
        .collect::<Result<_>>()?;
    let mut folders = vec![&run];
    folders.extend(extra.iter());
    let base = table::baselines(&folders);
    let table = table::markdown(&run.info.tasks, &run.results, &base);

    let out = run_dir.join("report");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    plots::register_font();
    let plots = vec![
        plots::metric_vs_p1(&run, &out)?,
        plots::pbt_weights(&run, &out)?,
        plots::conflicts(&run, &out)?,
        plots::conflict_vs_metric(&run, &out)?,
    ];

    let i = &run.info;
    let mut md = String::new();
    let _ = writeln!(md, "# Report: {}\n", run_dir.display());
    let _ = writeln!(
        md,
        "command `{}`, problem {}, preset {}, model {}, metric {}, tasks: {}\n",
        i.command,
        i.problem.as_deref().unwrap_or("?"),
        i.preset.as_deref().unwrap_or("none"),
        i.model.as_deref().unwrap_or("?"),
        i.metric.as_deref().unwrap_or("?"),
        i.tasks.join(", ")
    );
    let _ = writeln!(md, "## Results\n\n{table}");
    match table::best_grid(&run.results) {
        Some(b) => {
            let w = b
                .weights
                .as_ref()
                .map(|w| {
                    w.iter()
                        .map(|x| format!("{x:.3}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "Best grid point by validation mean: **{}** (weights [{w}]), mean {:.2}%.\n",
                b.name,
                100.0 * b.mean_metric.unwrap_or(f64::NAN)
            );
        }
        None => {
            let _ = writeln!(md, "Best grid point: none (no grid results).\n");
        }
    }
    let _ = writeln!(md, "## Figures\n");
    for p in &plots {
        match p {
            Outcome::Written(stem) => {
                let _ = writeln!(md, "![{stem}]({stem}.png) ([SVG]({stem}.svg))\n");
            }
            Outcome::Skipped(why) => {
                let _ = writeln!(md, "- {why}\n");
            }
        }
    }
    let md_path = out.join("report.md");
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    Ok(Report {
        dir: out,
        table,
        plots,
    })
}
