//! Run configuration: a TOML file (or a built-in preset) resolved into [`Config`].
//!
//! Every section and key has a default, so a config only names what differs. A file may start
//! from a preset (`preset = "digits-mdl"`) and override keys. Unknown keys are errors naming
//! the key; values are checked by [`Config::validate`], whose errors name the key too. The
//! schema with every key is documented in `docs/config.md` and each preset under
//! `src/config/presets/` is a complete, commented example.

pub mod presets;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The whole run configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Preset this config started from (informational once resolved).
    pub preset: Option<String>,
    /// The data: which problem, where, at which resolution.
    pub data: DataConfig,
    /// The model.
    pub model: ModelConfig,
    /// Training of one model.
    pub train: TrainConfig,
    /// `scalarize sweep`.
    pub sweep: SweepConfig,
    /// `scalarize pbt`.
    pub pbt: PbtConfig,
    /// `scalarize conflicts`.
    pub conflicts: ConflictsConfig,
}

/// `[data]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `digits-mdl`, `multimnist`, `cifar-stl`, `domainnet`, `celeba`, `taskonomy-tiny`.
    pub dataset: String,
    /// Data folder (relative paths are taken from the working directory).
    pub root: PathBuf,
    /// Side of the square network input.
    pub resolution: usize,
    /// Fraction of each training split held out for validation (PBT's score, model choice).
    pub val_fraction: f64,
    /// Cap on training samples per domain (0: all); for tiny test runs.
    pub train_limit: usize,
    /// Cap on validation and test samples per domain (0: all).
    pub eval_limit: usize,
    /// DomainNet domains (the first is the main one).
    pub domains: Vec<String>,
    /// CelebA attributes, one binary task each.
    pub attributes: Vec<String>,
    /// Taskonomy tasks.
    pub tasks: Vec<String>,
    /// MultiMNIST: training and test samples generated.
    pub multimnist_train: usize,
    /// MultiMNIST test samples generated.
    pub multimnist_test: usize,
    /// Multi-domain: one head shared by all domains (default: a head per domain).
    pub shared_head: bool,
    /// Multi-domain: how p acts, `sampling` (domain sampling ratios, the study's formulation)
    /// or `loss` (domains drawn in proportion to their size, losses weighted by p).
    pub weighting: String,
    /// Random crop (pad 2) and, for natural images, horizontal flips.
    pub augment: bool,
    /// Loader worker threads (0: load in the training thread).
    pub workers: usize,
}

/// `[model]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Backbone spec, e.g. `resnet26:w0.25`, `vit-s:p4:d6`; `r`/`c` options default to the data.
    pub spec: String,
    /// Zero-init the last BN of each bottleneck.
    pub zero_init_residual: bool,
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs (an epoch is `steps_per_epoch` steps).
    pub epochs: u64,
    /// Optimizer steps per epoch (0: the training samples of all domains over the batch size).
    pub steps_per_epoch: u64,
    /// Batch size.
    pub batch_size: usize,
    /// `sgd` or `adamw`.
    pub optimizer: String,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f32,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay (L2 for SGD, decoupled for AdamW).
    pub weight_decay: f32,
    /// No weight decay on norms, biases and embeddings.
    pub no_decay_norm_bias: bool,
    /// `cosine`, `step` or `constant`.
    pub schedule: String,
    /// Linear warm-up, in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// `step` schedule: epochs at which the rate is multiplied by `gamma`.
    pub milestones: Vec<u64>,
    /// `step` schedule factor.
    pub gamma: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub clip_grad_norm: f32,
    /// Seed of initialisation, data order and augmentation.
    pub seed: u64,
    /// Compute threads (0: all cores).
    pub threads: usize,
    /// Where the model trains: `cpu`, `cuda` (device 0) or `cuda:N`.
    pub device: String,
    /// Evaluate every this many epochs (the last epoch is always evaluated).
    pub eval_every: u64,
    /// Log a training line every this many steps.
    pub log_every: u64,
    /// Scalarization weights p, one per task or domain (empty: uniform).
    pub weights: Vec<f64>,
    /// `scalarization` (fixed weights p) or an MTO method (`pcgrad`, `cagrad`, ...).
    pub method: String,
}

/// `[sweep]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// Two tasks: p_1 on `grid` interior points `i / (grid + 1)`; more tasks: lattice points of
    /// the simplex with `grid + 1` steps per axis, interior ones only.
    pub grid: usize,
    /// More tasks: draw this many Dirichlet(1) points instead of the lattice (0: lattice).
    pub samples: usize,
    /// Runs trained at the same time.
    pub workers: usize,
}

/// `[pbt]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PbtConfig {
    /// Members.
    pub population: usize,
    /// Epochs between exploit/explore decisions.
    pub interval: u64,
    /// `truncation` or `tournament`.
    pub exploit: String,
    /// Truncation quantile.
    pub quantile: f64,
    /// `perturb` or `pb2`.
    pub explore: String,
    /// Simplex move: `multiplicative` or `dirichlet`.
    pub simplex_move: String,
    /// Dirichlet concentration (simplex_move = "dirichlet").
    pub concentration: f64,
    /// Perturbation factors.
    pub factors: [f64; 2],
    /// Probability of resampling instead of perturbing.
    pub resample_probability: f64,
    /// Smallest weight any task keeps.
    pub floor: f64,
    /// Also search the learning rate (log-uniform within `lr_bounds`).
    pub search_lr: bool,
    /// Learning-rate bounds when searched.
    pub lr_bounds: [f64; 2],
    /// `sync` (generations, the study's setting) or `async`.
    pub mode: String,
    /// Epochs before the first exploit.
    pub burn_in: u64,
    /// Members trained at the same time.
    pub workers: usize,
    /// Baselines trained beside PBT for the comparison table: uniform and, for two tasks, a
    /// grid of this many points of p_1 (0: uniform only).
    pub baseline_grid: usize,
}

/// `[conflicts]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConflictsConfig {
    /// Measure gradient conflicts every this many steps.
    pub every: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "digits-mdl".into(),
            root: PathBuf::from("datasets"),
            resolution: 16,
            val_fraction: 0.1,
            train_limit: 0,
            eval_limit: 0,
            domains: Vec::new(),
            attributes: Vec::new(),
            tasks: Vec::new(),
            multimnist_train: 8000,
            multimnist_test: 2000,
            shared_head: false,
            weighting: "sampling".into(),
            augment: true,
            workers: 1,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            spec: "resnet26:w0.25".into(),
            zero_init_residual: false,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 4,
            steps_per_epoch: 0,
            batch_size: 128,
            optimizer: "sgd".into(),
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            no_decay_norm_bias: true,
            schedule: "cosine".into(),
            warmup_epochs: 0.0,
            milestones: Vec::new(),
            gamma: 0.1,
            clip_grad_norm: 0.0,
            seed: 0,
            threads: 0,
            device: "cpu".to_string(),
            eval_every: 1,
            log_every: 20,
            weights: Vec::new(),
            method: "scalarization".into(),
        }
    }
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            grid: 5,
            samples: 0,
            workers: 1,
        }
    }
}

impl Default for PbtConfig {
    fn default() -> Self {
        PbtConfig {
            population: 4,
            interval: 1,
            exploit: "truncation".into(),
            quantile: 0.25,
            explore: "perturb".into(),
            simplex_move: "multiplicative".into(),
            concentration: 50.0,
            factors: [0.8, 1.2],
            resample_probability: 0.25,
            floor: 0.02,
            search_lr: false,
            lr_bounds: [1e-3, 0.5],
            mode: "sync".into(),
            burn_in: 0,
            workers: 1,
            baseline_grid: 3,
        }
    }
}

impl Default for ConflictsConfig {
    fn default() -> Self {
        ConflictsConfig { every: 10 }
    }
}

/// Datasets the trainer knows.
pub const DATASETS: &[&str] = &[
    "digits-mdl",
    "multimnist",
    "cifar-stl",
    "domainnet",
    "celeba",
    "taskonomy-tiny",
];

impl Config {
    /// Parses TOML text (`origin` names it in errors), applying its `preset` first if any.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        // First parse alone: unknown keys and wrong types are reported with their line.
        let own: Config =
            toml::from_str(text).with_context(|| format!("config {origin}: invalid"))?;
        let config = match &own.preset {
            None => own,
            Some(name) => {
                let base = presets::text(name).with_context(|| format!("config {origin}"))?;
                let mut table: toml::Table = toml::from_str(base)
                    .with_context(|| format!("built-in preset `{name}` does not parse"))?;
                let over: toml::Table = toml::from_str(text)?;
                merge(&mut table, over);
                let mut c: Config = table
                    .try_into()
                    .with_context(|| format!("config {origin} over preset `{name}`"))?;
                c.preset = Some(name.clone());
                c
            }
        };
        config
            .validate()
            .with_context(|| format!("config {origin}"))?;
        Ok(config)
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// A built-in preset.
    pub fn preset(name: &str) -> Result<Config> {
        let text = presets::text(name)?;
        let mut c = Config::from_toml(text, &format!("preset `{name}`"))?;
        c.preset = Some(name.to_string());
        Ok(c)
    }

    /// The resolved config as TOML (written to every run folder).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Checks every value; errors name the key (`train.lr`) and what was expected.
    pub fn validate(&self) -> Result<()> {
        parse_device(&self.train.device).context("train.device")?;
        let d = &self.data;
        if !DATASETS.contains(&d.dataset.as_str()) {
            bail!(
                "data.dataset: unknown `{}`, expected one of {}",
                d.dataset,
                DATASETS.join(", ")
            );
        }
        if d.resolution < 4 {
            bail!("data.resolution: must be >= 4, got {}", d.resolution);
        }
        if !(0.0..0.9).contains(&d.val_fraction) {
            bail!(
                "data.val_fraction: must be in [0, 0.9), got {}",
                d.val_fraction
            );
        }
        if !["sampling", "loss"].contains(&d.weighting.as_str()) {
            bail!(
                "data.weighting: expected `sampling` or `loss`, got `{}`",
                d.weighting
            );
        }
        scalarize_nn::ModelSpec::parse(&self.model.spec)
            .map_err(|e| anyhow::anyhow!("model.spec: {e}"))?;
        let t = &self.train;
        if t.epochs == 0 {
            bail!("train.epochs: must be >= 1");
        }
        if t.batch_size == 0 {
            bail!("train.batch_size: must be >= 1");
        }
        if !["sgd", "adamw"].contains(&t.optimizer.as_str()) {
            bail!(
                "train.optimizer: expected `sgd` or `adamw`, got `{}`",
                t.optimizer
            );
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            bail!("train.lr: must be a positive number, got {}", t.lr);
        }
        if !["cosine", "step", "constant"].contains(&t.schedule.as_str()) {
            bail!(
                "train.schedule: expected `cosine`, `step` or `constant`, got `{}`",
                t.schedule
            );
        }
        if !(t.warmup_epochs >= 0.0 && t.warmup_epochs < t.epochs as f64) {
            bail!(
                "train.warmup_epochs: must be in [0, epochs = {}), got {}",
                t.epochs,
                t.warmup_epochs
            );
        }
        if t.clip_grad_norm.is_nan() || t.clip_grad_norm < 0.0 {
            bail!(
                "train.clip_grad_norm: must be >= 0, got {}",
                t.clip_grad_norm
            );
        }
        if t.eval_every == 0 || t.log_every == 0 {
            bail!("train.eval_every and train.log_every: must be >= 1");
        }
        check_weights("train.weights", &t.weights)?;
        if t.method != "scalarization"
            && !scalarize_mto::registry::METHOD_NAMES.contains(&t.method.as_str())
        {
            bail!(
                "train.method: unknown `{}`, expected `scalarization` or one of {}",
                t.method,
                scalarize_mto::registry::METHOD_NAMES.join(", ")
            );
        }
        if self.sweep.grid == 0 || self.sweep.workers == 0 {
            bail!("sweep.grid and sweep.workers: must be >= 1");
        }
        let p = &self.pbt;
        if p.population < 2 {
            bail!("pbt.population: must be >= 2, got {}", p.population);
        }
        if p.interval == 0 || p.workers == 0 {
            bail!("pbt.interval and pbt.workers: must be >= 1");
        }
        if !["truncation", "tournament"].contains(&p.exploit.as_str()) {
            bail!(
                "pbt.exploit: expected `truncation` or `tournament`, got `{}`",
                p.exploit
            );
        }
        if !(p.quantile > 0.0 && p.quantile <= 0.5) {
            bail!("pbt.quantile: must be in (0, 0.5], got {}", p.quantile);
        }
        if !["perturb", "pb2"].contains(&p.explore.as_str()) {
            bail!(
                "pbt.explore: expected `perturb` or `pb2`, got `{}`",
                p.explore
            );
        }
        if !["multiplicative", "dirichlet"].contains(&p.simplex_move.as_str()) {
            bail!(
                "pbt.simplex_move: expected `multiplicative` or `dirichlet`, got `{}`",
                p.simplex_move
            );
        }
        if !(p.factors[0] > 0.0 && p.factors[0] < 1.0 && p.factors[1] > 1.0) {
            bail!(
                "pbt.factors: expected [down < 1, up > 1] with down > 0, got {:?}",
                p.factors
            );
        }
        if !(0.0..=1.0).contains(&p.resample_probability) {
            bail!(
                "pbt.resample_probability: must be in [0, 1], got {}",
                p.resample_probability
            );
        }
        if !(p.floor >= 0.0 && p.floor < 0.5) {
            bail!("pbt.floor: must be in [0, 0.5), got {}", p.floor);
        }
        if !(p.lr_bounds[0] > 0.0 && p.lr_bounds[0] < p.lr_bounds[1]) {
            bail!(
                "pbt.lr_bounds: expected [low, high] with 0 < low < high, got {:?}",
                p.lr_bounds
            );
        }
        if !["sync", "async"].contains(&p.mode.as_str()) {
            bail!("pbt.mode: expected `sync` or `async`, got `{}`", p.mode);
        }
        if self.conflicts.every == 0 {
            bail!("conflicts.every: must be >= 1");
        }
        Ok(())
    }
}

/// Weights must be finite, non-negative and not all zero (they are normalised to sum 1).
pub fn check_weights(key: &str, w: &[f64]) -> Result<()> {
    if w.is_empty() {
        return Ok(());
    }
    if let Some(v) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        bail!("{key}: every weight must be a finite number >= 0, got {v}");
    }
    if w.iter().sum::<f64>() <= 0.0 {
        bail!("{key}: weights must not all be zero");
    }
    Ok(())
}

/// Overlays `over` on `base`, recursing into tables.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parses `train.device`: `cpu`, `cuda` (device 0) or `cuda:N`.
pub fn parse_device(s: &str) -> Result<scalarize_autograd::Device> {
    use scalarize_autograd::Device;
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Ok(Device::Cuda(i)),
            _ => bail!("`{s}` is not a device: expected `cpu`, `cuda` or `cuda:N`"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_bad_ones_are_named() {
        use scalarize_autograd::Device;
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), Device::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), Device::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA"] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("cuda:N"), "{e}");
        }
        let e = Config::from_toml("[train]\ndevice = \"tpu\"\n", "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("train.device"), "{e:#}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml("[train]\nlrr = 0.1\n", "t.toml").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("lrr"), "{msg}");
        assert!(msg.contains("t.toml"), "{msg}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::from_toml("[train]\nlr = -1.0\n", "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("train.lr"), "{e:#}");
        let e = Config::from_toml("[pbt]\nexplore = \"pb3\"\n", "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("pbt.explore"), "{e:#}");
        let e = Config::from_toml("[model]\nspec = \"resnet27\"\n", "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("model.spec"), "{e:#}");
    }

    #[test]
    fn preset_overrides_merge_deeply() {
        let c = Config::from_toml("preset = \"digits-mdl\"\n[train]\nepochs = 7\n", "t").unwrap();
        let p = Config::preset("digits-mdl").unwrap();
        assert_eq!(c.train.epochs, 7);
        assert_eq!(c.train.lr, p.train.lr);
        assert_eq!(c.model.spec, p.model.spec);
        assert_eq!(c.preset.as_deref(), Some("digits-mdl"));
    }

    #[test]
    fn every_preset_resolves_and_round_trips() {
        for name in presets::NAMES {
            let c = Config::preset(name).unwrap();
            let back = Config::from_toml(&c.to_toml(), "roundtrip").unwrap();
            assert_eq!(back, c, "{name}");
        }
    }
}
