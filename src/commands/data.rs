//! `scalarize data check DIR` and `scalarize data stats DIR`: read every sample of a data set
//! folder (reporting each failure with its file), or print split sizes, per-class counts and
//! per-channel mean/std. The format is detected from the folder layout unless `--format` is given.
//! Readers are those of `scalarize-data`; the statistics follow `crates/data/examples/stats.rs`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use rayon::prelude::*;
use scalarize_data::readers::{CelebA, DomainNet, Taskonomy};
use scalarize_data::readers::{cifar, digits, domainnet, mnist, stl10, taskonomy};
use scalarize_data::{Dataset, Split, Target, TaskKind};

/// Arguments of `scalarize data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Read and decode every sample of every split; non-zero exit if any fails.
    Check(DirArgs),
    /// Split sizes, per-class counts per task, per-channel mean/std.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
struct DirArgs {
    /// Data set folder.
    dir: PathBuf,
    /// Layout; detected from the folder when omitted.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Images per split decoded for mean/std (evenly spaced).
    #[arg(long, default_value_t = 20_000)]
    max_images: usize,
}

/// Supported on-disk layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// CIFAR-10 binary.
    Cifar10,
    /// CIFAR-100 binary.
    Cifar100,
    /// STL-10 binary.
    Stl10,
    /// MNIST IDX (raw or gzip).
    Mnist,
    /// scikit-learn digits (digits.csv.gz).
    Digits,
    /// DomainNet list files.
    Domainnet,
    /// CelebA list files.
    Celeba,
    /// Taskonomy building folders.
    Taskonomy,
}

/// Each format with the files that identify it (shown when detection fails).
const EXPECTS: [(Format, &str); 8] = [
    (
        Format::Cifar10,
        "cifar-10-batches-bin/data_batch_1.bin (or data_batch_1.bin in DIR)",
    ),
    (
        Format::Cifar100,
        "cifar-100-binary/train.bin (or train.bin + test.bin in DIR)",
    ),
    (
        Format::Stl10,
        "stl10_binary/test_X.bin (or test_X.bin in DIR)",
    ),
    (
        Format::Mnist,
        "train-images-idx3-ubyte[.gz] and the other IDX files",
    ),
    (Format::Digits, "digits.csv.gz (or digits.csv)"),
    (
        Format::Domainnet,
        "{clipart,infograph,painting,quickdraw,real,sketch}_train.txt",
    ),
    (
        Format::Celeba,
        "list_attr_celeba.txt and list_eval_partition.txt",
    ),
    (
        Format::Taskonomy,
        "building folders with rgb/point_*_view_*_domain_rgb.png",
    ),
];

fn matches(format: Format, dir: &Path) -> bool {
    let f = |p: &str| dir.join(p).is_file();
    match format {
        Format::Cifar10 => f("cifar-10-batches-bin/data_batch_1.bin") || f("data_batch_1.bin"),
        Format::Cifar100 => f("cifar-100-binary/train.bin") || (f("train.bin") && f("test.bin")),
        Format::Stl10 => f("stl10_binary/test_X.bin") || f("test_X.bin"),
        Format::Mnist => ["train-images-idx3-ubyte", "train-images.idx3-ubyte"]
            .iter()
            .any(|n| f(n) || f(&format!("{n}.gz"))),
        Format::Digits => f("digits.csv.gz") || f("digits.csv"),
        Format::Domainnet => domainnet::DOMAINS
            .iter()
            .any(|d| f(&format!("{d}_train.txt"))),
        Format::Celeba => f("list_attr_celeba.txt"),
        Format::Taskonomy => std::fs::read_dir(dir)
            .is_ok_and(|rd| rd.flatten().any(|e| e.path().join("rgb").is_dir())),
    }
}

/// The format of `dir`: exactly one layout must match.
pub fn detect(dir: &Path) -> Result<Format> {
    if !dir.is_dir() {
        bail!("data folder {} does not exist", dir.display());
    }
    let found: Vec<Format> = EXPECTS
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| matches(*f, dir))
        .collect();
    let list = || {
        EXPECTS
            .iter()
            .map(|(f, e)| format!("  {}: {e}", name(*f)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "cannot detect the format of {}; pass --format, one of:\n{}",
            dir.display(),
            list()
        ),
        many => bail!(
            "{} matches several formats ({}); pass --format",
            dir.display(),
            many.iter().map(|f| name(*f)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn name(f: Format) -> String {
    f.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// A split, opened; class labels per task are kept for readers that have them in memory.
struct Opened {
    name: String,
    ds: Box<dyn Dataset>,
    /// Per task, per sample class (u32::MAX = unlabelled), when cheap.
    labels: Option<Vec<Vec<u32>>>,
    /// CelebA: attribute names and positive fraction.
    attributes: Option<Vec<(String, f64)>>,
}

fn mem(
    name: &str,
    ds: scalarize_data::Result<scalarize_data::sample::InMemory>,
) -> (String, scalarize_data::Result<Opened>) {
    let opened = ds.map(|m| Opened {
        name: name.to_string(),
        labels: Some(m.labels.clone()),
        ds: Box::new(m),
        attributes: None,
    });
    (name.to_string(), opened)
}

fn boxed(
    name: &str,
    ds: scalarize_data::Result<Box<dyn Dataset>>,
) -> (String, scalarize_data::Result<Opened>) {
    let opened = ds.map(|ds| Opened {
        name: name.to_string(),
        ds,
        labels: None,
        attributes: None,
    });
    (name.to_string(), opened)
}

/// Opens every split of `dir`; a split that fails to open is returned as its error.
fn open(format: Format, dir: &Path) -> Vec<(String, scalarize_data::Result<Opened>)> {
    let tt = [Split::Train, Split::Test];
    match format {
        Format::Cifar10 => tt
            .iter()
            .map(|&s| mem(s.name(), cifar::open_cifar10(dir, s)))
            .collect(),
        Format::Cifar100 => tt
            .iter()
            .map(|&s| mem(s.name(), cifar::open_cifar100(dir, s)))
            .collect(),
        Format::Stl10 => tt
            .iter()
            .map(|&s| mem(s.name(), stl10::open(dir, s)))
            .collect(),
        Format::Mnist => tt
            .iter()
            .map(|&s| mem(s.name(), mnist::open(dir, s)))
            .collect(),
        Format::Digits => tt
            .iter()
            .map(|&s| mem(s.name(), digits::open(dir, s)))
            .collect(),
        Format::Domainnet => domainnet::DOMAINS
            .iter()
            .filter(|d| dir.join(format!("{d}_train.txt")).is_file())
            .flat_map(|d| {
                tt.iter().map(move |&s| {
                    let ds = DomainNet::open(dir, d, s, (64, 64))
                        .map(|x| Box::new(x) as Box<dyn Dataset>);
                    boxed(&format!("{d} {}", s.name()), ds)
                })
            })
            .collect(),
        Format::Celeba => [Split::Train, Split::Valid, Split::Test]
            .iter()
            .map(|&s| {
                let opened = CelebA::open(dir, s, None, None).map(|ds| {
                    let names = ds.attribute_names().to_vec();
                    let mut pos = vec![0usize; names.len()];
                    for i in 0..ds.len() {
                        for (p, &a) in pos.iter_mut().zip(ds.attributes(i)) {
                            *p += a as usize;
                        }
                    }
                    let n = ds.len().max(1) as f64;
                    Opened {
                        name: s.name().to_string(),
                        attributes: Some(
                            names
                                .into_iter()
                                .zip(pos.iter().map(|&p| p as f64 / n))
                                .collect(),
                        ),
                        ds: Box::new(ds),
                        labels: None,
                    }
                });
                (s.name().to_string(), opened)
            })
            .collect(),
        Format::Taskonomy => {
            let ds = Taskonomy::open(dir, None, &taskonomy::TASKS, (128, 128))
                .map(|x| Box::new(x) as Box<dyn Dataset>);
            vec![boxed("all buildings", ds)]
        }
    }
}

fn resolve(args: &DirArgs) -> Result<Format> {
    match args.format {
        Some(f) => {
            if !args.dir.is_dir() {
                bail!("data folder {} does not exist", args.dir.display());
            }
            Ok(f)
        }
        None => detect(&args.dir),
    }
}

/// Checks one sample's targets against its tasks (class indices in range).
fn check_targets(ds: &dyn Dataset, s: &scalarize_data::Sample) -> Option<String> {
    for (task, t) in ds.tasks().iter().zip(&s.targets) {
        if let (TaskKind::Class { num_classes }, Some(Target::Class(c))) = (&task.kind, t)
            && *c as usize >= *num_classes
        {
            return Some(format!("task {}: class {c} >= {num_classes}", task.name));
        }
    }
    if s.image.data.is_empty() {
        return Some("empty image".into());
    }
    None
}

fn check(args: &DirArgs) -> Result<()> {
    let format = resolve(args)?;
    println!("{}: format {}", args.dir.display(), name(format));
    let mut failures = 0usize;
    for (split, opened) in open(format, &args.dir) {
        let o = match opened {
            Ok(o) => o,
            Err(e) => {
                println!("{split}: cannot open: {e}");
                failures += 1;
                continue;
            }
        };
        let ds = o.ds.as_ref();
        let mut errors: Vec<(usize, String)> = (0..ds.len())
            .into_par_iter()
            .filter_map(|i| match ds.get(i) {
                Ok(s) => check_targets(ds, &s).map(|m| (i, m)),
                Err(e) => Some((i, e.to_string())),
            })
            .collect();
        errors.sort_by_key(|e| e.0);
        println!("{}: {} samples, {} errors", o.name, ds.len(), errors.len());
        for (i, e) in &errors {
            println!("  sample {i}: {e}");
        }
        failures += errors.len();
    }
    if failures > 0 {
        bail!("{failures} failure(s) in {}", args.dir.display());
    }
    println!("ok");
    Ok(())
}

fn counts_line(
    task: &str,
    num_classes: usize,
    labels: impl Iterator<Item = Option<u32>>,
) -> String {
    let mut counts = vec![0usize; num_classes];
    let mut unlabelled = 0usize;
    for l in labels {
        match l {
            Some(c) if (c as usize) < num_classes => counts[c as usize] += 1,
            _ => unlabelled += 1,
        }
    }
    let present = counts.iter().filter(|&&c| c > 0).count();
    let (min, max) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    let shown: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
    let mut s = format!(
        "  {task}: {num_classes} classes, present {present}, min {min}, max {max}; counts: {}",
        shown.join(" ")
    );
    if unlabelled > 0 {
        s += &format!("; unlabelled {unlabelled}");
    }
    s
}

fn stats(args: &StatsArgs) -> Result<()> {
    let format = resolve(&args.dir)?;
    println!("{}: format {}", args.dir.dir.display(), name(format));
    for (_, opened) in open(format, &args.dir.dir) {
        let o = opened?;
        let ds = o.ds.as_ref();
        println!("{}: {} samples", o.name, ds.len());
        for (t, task) in ds.tasks().iter().enumerate() {
            match &task.kind {
                TaskKind::Class { num_classes } => {
                    let line = match &o.labels {
                        Some(l) => counts_line(
                            &task.name,
                            *num_classes,
                            l[t].iter().map(|&c| (c != u32::MAX).then_some(c)),
                        ),
                        None if t == 0 => counts_line(
                            &task.name,
                            *num_classes,
                            (0..ds.len()).map(|i| ds.class_of(i)),
                        ),
                        None => {
                            format!("  {}: {num_classes} classes (counts not cheap)", task.name)
                        }
                    };
                    println!("{line}");
                }
                TaskKind::Attributes { names } => {
                    println!("  {}: {} binary attributes", task.name, names.len());
                    for (a, p) in o.attributes.iter().flatten() {
                        println!("    {a}: {p:.3} positive");
                    }
                }
                other => println!("  {}: {other:?}", task.name),
            }
        }
        if let Some(scalarize_data::stats::ChannelStats {
            mean,
            std,
            images: n,
        }) = scalarize_data::stats::channel_stats(ds, args.max_images)?
        {
            println!("  per-channel mean {mean:.4?} std {std:.4?} (of v/255, over {n} images)");
        }
    }
    Ok(())
}

/// Runs `scalarize data`.
pub fn run(args: &DataArgs) -> Result<()> {
    match &args.command {
        DataCommand::Check(a) => check(a),
        DataCommand::Stats(a) => stats(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_shipped_layouts_and_lists_formats_otherwise() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        assert_eq!(detect(&root.join("mnist")).unwrap(), Format::Mnist);
        assert_eq!(detect(&root.join("digits")).unwrap(), Format::Digits);
        let msg = detect(&root).unwrap_err().to_string();
        for f in [
            "cifar10",
            "stl10",
            "domainnet",
            "taskonomy",
            "digits.csv.gz",
        ] {
            assert!(msg.contains(f), "{msg}");
        }
    }

    #[test]
    fn class_counts_line() {
        let l = counts_line("digit", 3, [Some(0), Some(2), Some(2), None].into_iter());
        assert!(
            l.contains("present 2, min 0, max 2; counts: 1 0 2; unlabelled 1"),
            "{l}"
        );
    }
}
