//! `scalarize init` and `scalarize inspect`: a seeded checkpoint, and one forward/backward of
//! the weighted task loss on a batch from a file, written tensor by tensor so that another
//! framework (see `crates/nn/python/interop_check.py`) can be compared with this one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use scalarize_nn::Model;
use scalarize_nn::layout::InitOptions;

/// Arguments of `scalarize init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Model spec, e.g. `resnet26:w0.25` or `vit-ti:p4:d6`.
    #[arg(long)]
    pub model: String,
    /// Heads, e.g. `10,10` (classes per head).
    #[arg(long)]
    pub heads: String,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Zero-init the last BN of every bottleneck.
    #[arg(long)]
    pub zero_init_residual: bool,
    /// Output checkpoint (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `scalarize inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model spec, e.g. `resnet26:w0.25` or `vit-ti:p4:d6`.
    #[arg(long)]
    pub model: String,
    /// Heads, e.g. `10,10` (classes per head).
    #[arg(long)]
    pub heads: String,
    /// Checkpoint to load (safetensors, parameter names as in the architecture).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Batch: `images` F32 [N,C,H,W] and `labels.{t}` per head.
    #[arg(long)]
    pub batch: PathBuf,
    /// Output file: `logits.{t}`, `loss.{t}`, `loss` and `grad.{name}`.
    #[arg(long)]
    pub out: PathBuf,
    /// Task weights p_t, comma-separated (default uniform 1/T).
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f32>>,
}

/// Writes a freshly initialised checkpoint.
pub fn run_init(args: &InitArgs) -> Result<()> {
    let opts = InitOptions {
        zero_init_residual: args.zero_init_residual,
    };
    let model = Model::from_specs(&args.model, &args.heads, opts, args.seed)?;
    model
        .save(&args.out, None, 0, &BTreeMap::new())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} {}, seed {})",
        args.out.display(),
        args.model,
        args.heads,
        args.seed
    );
    Ok(())
}

/// Runs the interop check on our side and prints the losses.
pub fn run_inspect(args: &InspectArgs) -> Result<()> {
    if let Some(w) = &args.weights
        && let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0)
    {
        bail!("--weights: {bad} is not a finite non-negative weight");
    }
    let report = scalarize_nn::inspect::inspect(
        &args.model,
        &args.heads,
        &args.checkpoint,
        &args.batch,
        &args.out,
        args.weights.as_deref(),
    )?;
    for (t, (l, w)) in report.losses.iter().zip(&report.weights).enumerate() {
        println!("loss.{t} = {l:.6} (weight {w})");
    }
    println!(
        "loss = {:.6}; wrote {} gradients to {}",
        report.total,
        report.num_grads,
        args.out.display()
    );
    Ok(())
}
