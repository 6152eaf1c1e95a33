//! The `scalarize` binary: one entry point for training, sweeps, PBT, conflict analysis and
//! reports. Each subcommand lives in its own module under `commands/`.

mod commands;
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
    /// List the compute devices: the CPU (SIMD features, threads) and any CUDA device.
    Devices,
    /// Write a seeded, freshly initialised checkpoint of a model.
    Init(commands::inspect::InitArgs),
    /// One training-mode forward and backward on a batch file, every tensor written by name.
    Inspect(commands::inspect::InspectArgs),
    /// Figures (PNG + SVG) and a results table with Delta_m from a run folder.
    Report(commands::report::ReportArgs),
    /// Check or summarise a data set folder (formats auto-detected).
    Data(commands::data::DataArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => commands::devices::run(),
        Command::Init(args) => commands::inspect::run_init(&args),
        Command::Inspect(args) => commands::inspect::run_inspect(&args),
        Command::Report(args) => commands::report::run(&args),
        Command::Data(args) => commands::data::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
