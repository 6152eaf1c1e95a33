//! `scalarize report RUN_DIR [--baselines DIR]...`: figures and a results table from a run
//! folder, written into `RUN_DIR/report/` (logic in `crate::report`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::report::plots::Outcome;

/// Arguments of `scalarize report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run folder written by a training command (run.json, results.jsonl, metrics.jsonl, ...).
    pub run_dir: PathBuf,
    /// Further run folders to take single-task baselines (results of kind "single") from.
    #[arg(long = "baselines", value_name = "DIR")]
    pub baselines: Vec<PathBuf>,
}

/// Runs `scalarize report`.
pub fn run(args: &ReportArgs) -> Result<()> {
    let r = crate::report::generate(&args.run_dir, &args.baselines)?;
    println!("{}", r.table);
    for p in &r.plots {
        match p {
            Outcome::Written(stem) => println!(
                "wrote {}",
                r.dir.join(format!("{stem}.{{png,svg}}")).display()
            ),
            Outcome::Skipped(why) => println!("{why}"),
        }
    }
    println!("wrote {}", r.dir.join("report.md").display());
    Ok(())
}
