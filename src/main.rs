//! The `scalarize` binary: one entry point for training, sweeps, PBT, conflict analysis and
//! reports. Each subcommand lives in its own module under `commands/`; configs in `config/`;
//! the training machinery (problems, trainer, run folders, metrics) in `experiment/`.

mod commands;
mod config;
mod experiment;
mod report;

use clap::{Parser, Subcommand};

/// Multi-task and multi-domain learning by scalarization, searched with population-based training.
#[derive(Parser, Debug)]
#[command(name = "scalarize", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train one model with fixed scalarization weights or an MTO method.
    Train(commands::run::TrainArgs),
    /// Train one model per point of a grid over the weights.
    Sweep(commands::run::SweepArgs),
    /// Population-based training over the weights, beside uniform and grid baselines.
    Pbt(commands::pbt::PbtArgs),
    /// Train while measuring per-layer gradient conflicts between tasks.
    Conflicts(commands::run::ConflictsArgs),
    /// Train one single-task (single-domain) model per task: the baselines of Delta_m.
    Single(commands::run::CommonArgs),
    /// Figures (PNG + SVG) and a results table with Delta_m from a run folder.
    Report(commands::report::ReportArgs),
    /// Check or summarise a data set folder (formats auto-detected).
    Data(commands::data::DataArgs),
    /// List the built-in presets, or print one in full.
    Presets {
        /// Preset to print.
        name: Option<String>,
    },
    /// List the compute devices: the CPU (SIMD features, threads) and any CUDA device.
    Devices,
    /// Write a seeded, freshly initialised checkpoint of a model.
    Init(commands::inspect::InitArgs),
    /// One training-mode forward and backward on a batch file, every tensor written by name.
    Inspect(commands::inspect::InspectArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => commands::run::run_train(&a),
        Command::Sweep(a) => commands::run::run_sweep(&a),
        Command::Pbt(a) => commands::pbt::run_pbt(&a),
        Command::Conflicts(a) => commands::run::run_conflicts(&a),
        Command::Single(a) => commands::run::run_single(&a),
        Command::Report(args) => commands::report::run(&args),
        Command::Data(args) => commands::data::run(&args),
        Command::Presets { name } => commands::presets::run(name.as_deref()),
        Command::Devices => commands::devices::run(),
        Command::Init(args) => commands::inspect::run_init(&args),
        Command::Inspect(args) => commands::inspect::run_inspect(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if experiment::interrupt::requested() {
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
