//! A [`Problem`]: the data of a config turned into training sources, evaluation sets, heads
//! and the list of objectives (the tasks or domains the weights p act on).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use scalarize_data::readers::{
    celeba::CelebA, cifar, cifar_stl, digits, domainnet::DomainNet, mnist, multimnist::MultiMnist,
    stl10, taskonomy::Taskonomy,
};
use scalarize_data::transforms::Interp;
use scalarize_data::{Augment, Dataset, Sample, Source, Split, TaskSpec, sample::InMemory};

use crate::config::Config;

/// Multi-task (one input, several outputs) or multi-domain (several inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Weights are loss weights.
    Mtl,
    /// Weights are domain sampling ratios (or loss weights with `data.weighting = "loss"`).
    Mdl,
}

impl ProblemKind {
    /// `mtl` / `mdl`.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Mtl => "mtl",
            ProblemKind::Mdl => "mdl",
        }
    }
}

/// What an objective's target is, in the loader's task list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Class index of loader task `task`.
    Class {
        /// Loader task index.
        task: usize,
    },
    /// Column `column` of the binary attributes of loader task `task`.
    Attribute {
        /// Loader task index.
        task: usize,
        /// Attribute column.
        column: usize,
    },
    /// Dense regression map of loader task `task` (metric: 1 / (1 + MSE)).
    Dense {
        /// Loader task index.
        task: usize,
    },
    /// Segmentation labels of loader task `task` (metric: pixel accuracy).
    Segmentation {
        /// Loader task index.
        task: usize,
    },
}

/// One term of the scalarized objective: a task (MTL) or a domain (MDL).
#[derive(Clone, Debug)]
pub struct Objective {
    /// Task or domain name.
    pub name: String,
    /// Model head computing it.
    pub head: usize,
    /// MDL: the loader source (domain) whose rows it covers; MTL: `None` (all rows).
    pub domain: Option<usize>,
    /// Its target.
    pub target: TargetKind,
}

/// Everything the trainer needs from the data.
pub struct Problem {
    /// MTL or MDL.
    pub kind: ProblemKind,
    /// The objectives, in weight order.
    pub objectives: Vec<Objective>,
    /// Heads spec for the model (`10,10`, `a1*8`, ...).
    pub heads: String,
    /// Input channels.
    pub channels: usize,
    /// Input side.
    pub resolution: usize,
    /// Training sources (one per domain for MDL; one for MTL).
    pub train: Vec<Source>,
    /// Validation sets, aligned with `train` (no augmentation).
    pub val: Vec<Source>,
    /// Test sets, aligned with `train` (no augmentation).
    pub test: Vec<Source>,
}

impl Problem {
    /// Number of objectives T.
    pub fn num_objectives(&self) -> usize {
        self.objectives.len()
    }

    /// Objective names.
    pub fn names(&self) -> Vec<String> {
        self.objectives.iter().map(|o| o.name.clone()).collect()
    }

    /// Training samples per source.
    pub fn train_sizes(&self) -> Vec<usize> {
        self.train.iter().map(|s| s.dataset.len()).collect()
    }

    /// Builds the problem of `config.data`.
    pub fn build(config: &Config) -> Result<Problem> {
        let d = &config.data;
        let r = d.resolution;
        match d.dataset.as_str() {
            "digits-mdl" => digits_mdl(config, r),
            "multimnist" => multimnist(config, r),
            "cifar-stl" => cifar_stl_problem(config, r),
            "domainnet" => domainnet(config, r),
            "celeba" => celeba(config, r),
            "taskonomy-tiny" => taskonomy(config, r),
            other => bail!("data.dataset: unknown `{other}`"),
        }
    }
}

/// A view of some samples of another dataset (validation carved out of a training split).
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The samples `indices` of `inner`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Self {
        Subset { inner, indices }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn tasks(&self) -> Vec<TaskSpec> {
        self.inner.tasks()
    }
    fn get(&self, index: usize) -> scalarize_data::Result<Sample> {
        self.inner.get(self.indices[index])
    }
    fn class_of(&self, index: usize) -> Option<u32> {
        self.inner.class_of(self.indices[index])
    }
}

/// A fixed pseudo-random permutation of `0..n` (splitmix64-driven Fisher-Yates), so the
/// train/validation split does not depend on the run's seed.
fn permutation(n: usize, salt: u64) -> Vec<usize> {
    let mut state = 0x5CA1_A81Du64 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// (train, validation) indices of a training split of `n` samples; the lists are sorted.
pub fn split_train_val(n: usize, val_fraction: f64, salt: u64) -> (Vec<usize>, Vec<usize>) {
    let n_val = ((n as f64) * val_fraction).round() as usize;
    let p = permutation(n, salt);
    let mut val = p[..n_val].to_vec();
    let mut train = p[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

fn cap(mut v: Vec<usize>, limit: usize) -> Vec<usize> {
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

fn mean_std(channels: usize, grey: (f32, f32), rgb: ([f32; 3], [f32; 3])) -> (Vec<f32>, Vec<f32>) {
    if channels == 1 {
        (vec![grey.0], vec![grey.1])
    } else {
        (rgb.0.to_vec(), rgb.1.to_vec())
    }
}

/// Training and evaluation transforms for images resized to `r` x `r`.
fn transforms(
    r: usize,
    resize: bool,
    augment: bool,
    flip: bool,
    norm: (Vec<f32>, Vec<f32>),
) -> (Augment, Augment) {
    let eval = Augment {
        resize: resize.then_some((r, r, Interp::Bilinear)),
        mean: norm.0,
        std: norm.1,
        ..Default::default()
    };
    let mut train = eval.clone();
    if augment {
        train.pad = (r / 8).max(1);
        train.crop = Some((r, r));
        train.flip = flip;
    }
    (train, eval)
}

/// Splits an in-memory training set into (train, val) per the config's fraction and caps.
fn split_in_memory(set: &InMemory, config: &Config, salt: u64) -> (InMemory, InMemory) {
    let d = &config.data;
    let (tr, va) = split_train_val(set.len(), d.val_fraction, salt);
    (
        set.select(&cap(tr, d.train_limit)),
        set.select(&cap(va, d.eval_limit)),
    )
}

fn cap_in_memory(set: InMemory, limit: usize) -> InMemory {
    if limit > 0 && set.len() > limit {
        set.select(&(0..limit).collect::<Vec<_>>())
    } else {
        set
    }
}

fn mdl_objectives(names: &[&str], shared_head: bool, classes: usize) -> (Vec<Objective>, String) {
    let objectives = names
        .iter()
        .enumerate()
        .map(|(d, n)| Objective {
            name: n.to_string(),
            head: if shared_head { 0 } else { d },
            domain: Some(d),
            target: TargetKind::Class { task: 0 },
        })
        .collect();
    let heads = if shared_head {
        format!("{classes}")
    } else {
        format!("{classes}*{}", names.len())
    };
    (objectives, heads)
}

/// A multi-domain problem over in-memory domains given as (name, train split, test split):
/// validation carved out of each training split, one head per domain unless shared.
fn in_memory_domains(
    config: &Config,
    domains: Vec<(&str, InMemory, InMemory)>,
    classes: usize,
    channels: usize,
    (train_t, eval_t): (Augment, Augment),
) -> Problem {
    let names: Vec<&str> = domains.iter().map(|d| d.0).collect();
    let (objectives, heads) = mdl_objectives(&names, config.data.shared_head, classes);
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (d, (_, tr, te)) in domains.into_iter().enumerate() {
        let (tr, va) = split_in_memory(&tr, config, 1 + d as u64);
        train.push(Source::new(tr, train_t.clone()));
        val.push(Source::new(va, eval_t.clone()));
        test.push(Source::new(
            cap_in_memory(te, config.data.eval_limit),
            eval_t.clone(),
        ));
    }
    Problem {
        kind: ProblemKind::Mdl,
        objectives,
        heads,
        channels,
        resolution: config.data.resolution,
        train,
        val,
        test,
    }
}

fn digits_mdl(config: &Config, r: usize) -> Result<Problem> {
    let root = &config.data.root;
    let mnist = |split| mnist::open(&root.join("mnist"), split);
    let digits_path = root.join("digits").join("digits.csv.gz");
    let digits = |split| digits::open(&digits_path, split);
    let norm = mean_std(1, (0.13, 0.31), ([0.0; 3], [1.0; 3]));
    Ok(in_memory_domains(
        config,
        vec![
            ("mnist", mnist(Split::Train)?, mnist(Split::Test)?),
            ("digits", digits(Split::Train)?, digits(Split::Test)?),
        ],
        10,
        1,
        transforms(r, true, config.data.augment, false, norm),
    ))
}

fn multimnist(config: &Config, r: usize) -> Result<Problem> {
    let d = &config.data;
    let root = d.root.join("mnist");
    let train_src = mnist::open(&root, Split::Train)?;
    let test_src = mnist::open(&root, Split::Test)?;
    // Validation canvases are drawn from held-out MNIST digits, never from training ones.
    let (tr_idx, va_idx) = split_train_val(train_src.len(), d.val_fraction.max(0.05), 3);
    let capped = |n: usize, limit: usize| if limit > 0 { n.min(limit) } else { n };
    let n_train = capped(d.multimnist_train, d.train_limit);
    let n_val = (((d.multimnist_train as f64) * d.val_fraction).round() as usize).max(1);
    let n_val = capped(n_val, d.eval_limit);
    let n_test = capped(d.multimnist_test, d.eval_limit);
    let train = MultiMnist::new(train_src.select(&tr_idx), n_train, 11, Some(r))?;
    let val = MultiMnist::new(train_src.select(&va_idx), n_val, 12, Some(r))?;
    let test = MultiMnist::new(test_src, n_test, 13, Some(r))?;
    let norm = mean_std(1, (0.13, 0.31), ([0.0; 3], [1.0; 3]));
    let (train_t, eval_t) = transforms(r, false, d.augment, false, norm);
    Ok(Problem {
        kind: ProblemKind::Mtl,
        objectives: vec![
            Objective {
                name: "left".into(),
                head: 0,
                domain: None,
                target: TargetKind::Class { task: 0 },
            },
            Objective {
                name: "right".into(),
                head: 1,
                domain: None,
                target: TargetKind::Class { task: 1 },
            },
        ],
        heads: "10,10".into(),
        channels: 1,
        resolution: r,
        train: vec![Source::new(train, train_t)],
        val: vec![Source::new(val, eval_t.clone())],
        test: vec![Source::new(test, eval_t)],
    })
}

fn cifar_stl_problem(config: &Config, r: usize) -> Result<Problem> {
    let root = &config.data.root;
    let shared = cifar_stl::SHARED_CLASSES;
    // The readers take the parent folder and add their own sub-folder (passing the sub-folder
    // also works, but when it is missing the error would name `sub/sub/...`).
    let cifar = |split| -> Result<InMemory> {
        Ok(cifar::open_cifar10(root, split)?.remap_classes(&cifar_stl::CIFAR10_TO_SHARED, shared))
    };
    let stl = |split| -> Result<InMemory> {
        Ok(stl10::open(root, split)?.remap_classes(&cifar_stl::STL10_TO_SHARED, shared))
    };
    let norm = mean_std(3, (0.0, 1.0), ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]));
    // CIFAR is 32x32 and STL 96x96: both go through the resize to r.
    Ok(in_memory_domains(
        config,
        vec![
            ("cifar10", cifar(Split::Train)?, cifar(Split::Test)?),
            ("stl10", stl(Split::Train)?, stl(Split::Test)?),
        ],
        shared,
        3,
        transforms(r, true, config.data.augment, true, norm),
    ))
}

/// Train / validation / test views of a generic dataset's train and test splits.
fn generic_splits(
    train: Arc<dyn Dataset>,
    test: Arc<dyn Dataset>,
    config: &Config,
    salt: u64,
) -> (Subset, Subset, Subset) {
    let d = &config.data;
    let (tr, va) = split_train_val(train.len(), d.val_fraction, salt);
    let te: Vec<usize> = (0..test.len()).collect();
    (
        Subset::new(train.clone(), cap(tr, d.train_limit)),
        Subset::new(train, cap(va, d.eval_limit)),
        Subset::new(test, cap(te, d.eval_limit)),
    )
}

fn domainnet(config: &Config, r: usize) -> Result<Problem> {
    let d = &config.data;
    if d.domains.len() < 2 {
        bail!(
            "data.domains: DomainNet needs at least two domains (e.g. [\"real\", \"clipart\"]), got {:?}",
            d.domains
        );
    }
    let norm = mean_std(
        3,
        (0.0, 1.0),
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    );
    let (train_t, eval_t) = transforms(r, false, d.augment, true, norm);
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (i, name) in d.domains.iter().enumerate() {
        let tr: Arc<dyn Dataset> = Arc::new(
            DomainNet::open(&d.root, name, Split::Train, (r, r))
                .with_context(|| format!("data.domains: domain `{name}`"))?,
        );
        let te: Arc<dyn Dataset> = Arc::new(DomainNet::open(&d.root, name, Split::Test, (r, r))?);
        let (a, b, c) = generic_splits(tr, te, config, 10 + i as u64);
        train.push(Source::new(a, train_t.clone()));
        val.push(Source::new(b, eval_t.clone()));
        test.push(Source::new(c, eval_t.clone()));
    }
    let names: Vec<&str> = d.domains.iter().map(String::as_str).collect();
    let (objectives, heads) = mdl_objectives(
        &names,
        d.shared_head,
        scalarize_data::readers::domainnet::NUM_CLASSES,
    );
    Ok(Problem {
        kind: ProblemKind::Mdl,
        objectives,
        heads,
        channels: 3,
        resolution: r,
        train,
        val,
        test,
    })
}

fn celeba(config: &Config, r: usize) -> Result<Problem> {
    let d = &config.data;
    if d.attributes.is_empty() {
        bail!("data.attributes: CelebA needs at least one attribute name");
    }
    let attrs: Vec<&str> = d.attributes.iter().map(String::as_str).collect();
    let open = |split| -> Result<Arc<dyn Dataset>> {
        Ok(Arc::new(
            CelebA::open(&d.root, split, Some(&attrs), Some((r, r)))
                .with_context(|| format!("data.attributes {attrs:?}"))?,
        ))
    };
    let (tr, va, te) = (open(Split::Train)?, open(Split::Valid)?, open(Split::Test)?);
    let all = |s: &Arc<dyn Dataset>, limit| cap((0..s.len()).collect(), limit);
    let norm = mean_std(3, (0.0, 1.0), ([0.5, 0.42, 0.38], [0.3, 0.28, 0.28]));
    let (train_t, eval_t) = transforms(r, false, d.augment, true, norm);
    let objectives = attrs
        .iter()
        .enumerate()
        .map(|(i, a)| Objective {
            name: a.to_string(),
            head: i,
            domain: None,
            target: TargetKind::Attribute { task: 0, column: i },
        })
        .collect();
    Ok(Problem {
        kind: ProblemKind::Mtl,
        objectives,
        heads: format!("a1*{}", attrs.len()),
        channels: 3,
        resolution: r,
        train: vec![Source::new(
            Subset::new(tr.clone(), all(&tr, d.train_limit)),
            train_t,
        )],
        val: vec![Source::new(
            Subset::new(va.clone(), all(&va, d.eval_limit)),
            eval_t.clone(),
        )],
        test: vec![Source::new(
            Subset::new(te.clone(), all(&te, d.eval_limit)),
            eval_t,
        )],
    })
}

fn taskonomy(config: &Config, r: usize) -> Result<Problem> {
    let d = &config.data;
    if d.tasks.is_empty() {
        bail!(
            "data.tasks: Taskonomy needs at least one task of {}",
            scalarize_data::readers::taskonomy::TASKS.join(", ")
        );
    }
    let tasks: Vec<&str> = d.tasks.iter().map(String::as_str).collect();
    let all: Arc<dyn Dataset> = Arc::new(
        Taskonomy::open(&d.root, None, &tasks, (r, r))
            .with_context(|| format!("data.tasks {tasks:?}"))?,
    );
    // The reader takes every sub-folder as a building, so a wrong root opens as empty.
    if all.is_empty() {
        bail!(
            "no Taskonomy views: expected {{building}}/rgb/point_{{P}}_view_{{V}}_domain_rgb.png under {}",
            d.root.display()
        );
    }
    // Taskonomy-tiny has no official split here: 10% test, then validation from the rest.
    let (rest, test_idx) = split_train_val(all.len(), 0.1, 20);
    let (tr, va) = split_train_val(rest.len(), d.val_fraction, 21);
    let pick = |ix: Vec<usize>| ix.into_iter().map(|i| rest[i]).collect::<Vec<_>>();
    let norm = mean_std(
        3,
        (0.0, 1.0),
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    );
    let (train_t, eval_t) = transforms(r, false, d.augment, true, norm);
    let mut heads = Vec::new();
    let mut objectives = Vec::new();
    for (i, spec) in all.tasks().iter().enumerate() {
        let (head, target) = match &spec.kind {
            scalarize_data::TaskKind::Segmentation { num_classes } => (
                format!("d{num_classes}"),
                TargetKind::Segmentation { task: i },
            ),
            scalarize_data::TaskKind::Dense { channels } => {
                (format!("d{channels}"), TargetKind::Dense { task: i })
            }
            other => bail!(
                "data.tasks: task `{}` has unsupported kind {other:?}",
                spec.name
            ),
        };
        heads.push(head);
        objectives.push(Objective {
            name: spec.name.clone(),
            head: i,
            domain: None,
            target,
        });
    }
    Ok(Problem {
        kind: ProblemKind::Mtl,
        objectives,
        heads: heads.join(","),
        channels: 3,
        resolution: r,
        train: vec![Source::new(
            Subset::new(all.clone(), cap(pick(tr), d.train_limit)),
            train_t,
        )],
        val: vec![Source::new(
            Subset::new(all.clone(), cap(pick(va), d.eval_limit)),
            eval_t.clone(),
        )],
        test: vec![Source::new(
            Subset::new(all, cap(test_idx, d.eval_limit)),
            eval_t,
        )],
    })
}
