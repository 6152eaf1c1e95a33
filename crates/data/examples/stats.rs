//! Prints a data set's split sizes, per-class counts and per-channel mean/std.
//!
//! `cargo run --release -p scalarize-data --example stats -- <format> <dir> [max_images]`
//! formats: cifar10 cifar100 stl10 mnist digits domainnet celeba taskonomy. `max_images`
//! (default 20000) caps how many images per split are decoded for mean/std (evenly spaced).
//! DomainNet images are resized to 64x64 (area when shrinking) and Taskonomy RGB to 128x128
//! before the statistics, as a loader would see them; the other formats use stored pixels.

use std::path::Path;
use std::process::ExitCode;

use scalarize_data::readers::{CelebA, DomainNet, Taskonomy};
use scalarize_data::readers::{cifar, digits, domainnet, mnist, stl10, taskonomy};
use scalarize_data::{Dataset, Result, Split, TaskKind};

fn report(name: &str, ds: &dyn Dataset, max_images: usize) -> Result<()> {
    println!("{name}: {} samples", ds.len());
    if let Some(task) = ds.tasks().first() {
        match &task.kind {
            TaskKind::Class { num_classes } => {
                let mut counts = vec![0usize; *num_classes];
                let mut unknown = 0;
                for i in 0..ds.len() {
                    match ds.class_of(i) {
                        Some(c) => counts[c as usize] += 1,
                        None => unknown += 1,
                    }
                }
                if unknown < ds.len() {
                    let shown: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
                    println!(
                        "  per-class counts ({}, {num_classes} classes): {}",
                        task.name,
                        shown.join(" ")
                    );
                    let present = counts.iter().filter(|&&c| c > 0).count();
                    let (min, max) = (
                        counts.iter().min().unwrap_or(&0),
                        counts.iter().max().unwrap_or(&0),
                    );
                    println!("  classes present {present}/{num_classes}, min {min}, max {max}");
                }
            }
            TaskKind::Attributes { names } => {
                println!("  task {}: {} binary attributes", task.name, names.len())
            }
            other => println!(
                "  tasks: {:?} (first: {other:?})",
                ds.tasks()
                    .iter()
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>()
            ),
        }
    }
    let Some(stats) = scalarize_data::stats::channel_stats(ds, max_images)? else {
        return Ok(());
    };
    println!(
        "  per-channel mean {:.4?}  std {:.4?}  (of v/255, over {} images)",
        stats.mean, stats.std, stats.images
    );
    Ok(())
}

fn run(format: &str, dir: &Path, max_images: usize) -> Result<()> {
    let splits = [Split::Train, Split::Test];
    match format {
        "cifar10" => splits
            .iter()
            .try_for_each(|&s| report(s.name(), &cifar::open_cifar10(dir, s)?, max_images)),
        "cifar100" => splits
            .iter()
            .try_for_each(|&s| report(s.name(), &cifar::open_cifar100(dir, s)?, max_images)),
        "stl10" => splits
            .iter()
            .try_for_each(|&s| report(s.name(), &stl10::open(dir, s)?, max_images)),
        "mnist" => splits
            .iter()
            .try_for_each(|&s| report(s.name(), &mnist::open(dir, s)?, max_images)),
        "digits" => splits
            .iter()
            .try_for_each(|&s| report(s.name(), &digits::open(dir, s)?, max_images)),
        "domainnet" => {
            for d in domainnet::DOMAINS {
                if !dir.join(format!("{d}_train.txt")).is_file() {
                    println!("{d}: no {d}_train.txt, skipped");
                    continue;
                }
                for s in splits {
                    report(
                        &format!("{d} {}", s.name()),
                        &DomainNet::open(dir, d, s, (64, 64))?,
                        max_images,
                    )?;
                }
            }
            Ok(())
        }
        "celeba" => [Split::Train, Split::Valid, Split::Test]
            .iter()
            .try_for_each(|&s| {
                let ds = CelebA::open(dir, s, None, None)?;
                report(s.name(), &ds, max_images)?;
                let k = ds.attribute_names().len();
                let mut pos = vec![0usize; k];
                for i in 0..ds.len() {
                    for (p, &a) in pos.iter_mut().zip(ds.attributes(i)) {
                        *p += a as usize;
                    }
                }
                for (name, p) in ds.attribute_names().iter().zip(pos) {
                    println!(
                        "    {name}: {:.3} positive",
                        p as f64 / ds.len().max(1) as f64
                    );
                }
                Ok(())
            }),
        "taskonomy" => report(
            "all buildings",
            &Taskonomy::open(dir, None, &taskonomy::TASKS, (128, 128))?,
            max_images,
        ),
        other => Err(scalarize_data::DataError::Invalid(format!(
            "unknown format {other:?}; expected cifar10, cifar100, stl10, mnist, digits, domainnet, celeba, taskonomy"
        ))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: stats <format> <dir> [max_images]");
        return ExitCode::from(2);
    }
    let max_images = match args.get(2).map(|s| s.parse::<usize>()) {
        None => 20_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("max_images must be a number, got {:?}", args[2]);
            return ExitCode::from(2);
        }
    };
    match run(&args[0], Path::new(&args[1]), max_images) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
