//! The `scalarize` binary: one entry point for training, sweeps, PBT, conflict analysis and
//! reports. Each subcommand lives in its own module under `commands/`.

mod commands;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => commands::devices::run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
