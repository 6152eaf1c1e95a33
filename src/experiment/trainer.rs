//! One model being trained: data order, forward, the scalarized (or MTO) update, evaluation,
//! checkpoints. `train`, `sweep`, `single`, `conflicts` and every PBT member drive a [`Trainer`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use scalarize_autograd::{Backward, Device, Gradients, Tensor, no_grad};
use scalarize_data::{Batch, DomainSampler, Loader, LoaderConfig, Source, TaskBatch};
use scalarize_kernels::cuda::combine::{combine_into, combine_segments_into};
use scalarize_kernels::cuda::{Gpu, GpuBuffer, grad_gram};
use scalarize_mto::{
    AggregateInput, Aggregator, ConflictRecord, Requirement, SegmentedGram, TaskGradients,
};
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{IGNORE_INDEX, Target, head_loss};
use scalarize_nn::optim::{
    AdamWConfig, Optimizer, OptimizerConfig, Schedule, ScheduleKind, SgdConfig, clip_grad_norm,
};
use scalarize_nn::{Features, HeadOutput, Model, ModelSpec, Routing, Segment};

use crate::config::Config;
use crate::experiment::interrupt;
use crate::experiment::metrics::{EvalRecord, MetricsSink, TrainRecord};
use crate::experiment::problem::{Objective, Problem, ProblemKind, TargetKind};

/// Per-objective results of an evaluation (metric: higher is better, in [0, 1]).
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Metric per objective.
    pub metric: Vec<f64>,
    /// Mean loss per objective.
    pub loss: Vec<f64>,
}

impl Evaluation {
    /// Mean of the per-objective metrics (the validation score).
    pub fn mean(&self) -> f64 {
        self.metric.iter().sum::<f64>() / self.metric.len().max(1) as f64
    }
}

/// Where a training step stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The requested steps are done.
    Done,
    /// Ctrl-C: state is consistent at `step`, nothing half-applied.
    Interrupted,
}

/// Backbone parameter groups (layers) for conflict metrics and per-layer methods.
#[derive(Clone, Debug)]
pub struct Segments {
    /// Exclusive ends in the flat backbone gradient.
    pub ends: Vec<usize>,
    /// Group names (`backbone.layer1.0`, `backbone.stem`, ...).
    pub names: Vec<String>,
    /// Number of backbone elements (the shared parameters P).
    pub backbone: usize,
}

/// A model, its optimizer and its data order.
pub struct Trainer {
    /// Run name in metrics (`train`, `grid-p0.250`, `member-3`, ...).
    pub name: String,
    problem: Arc<Problem>,
    config: Config,
    model: Model,
    opt: Optimizer,
    /// This trainer's own stream on the device of `train.device` (None on the CPU): PBT
    /// members on one GPU queue their work on different streams and overlap.
    gpu: Option<Arc<scalarize_kernels::cuda::Gpu>>,
    schedule: Schedule,
    loader: Loader,
    val: Vec<Loader>,
    test: Vec<Loader>,
    /// The scalarization weights p (normalised to sum 1).
    weights: Vec<f64>,
    /// Learning-rate multiplier of the schedule (PBT's learning-rate search).
    base_lr: f64,
    method: Option<Box<dyn Aggregator>>,
    /// Steps done.
    step: u64,
    steps_per_epoch: u64,
    segments: Segments,
    /// Measure conflicts every this many steps (conflicts command).
    conflict_every: Option<u64>,
    sink: Option<Arc<MetricsSink>>,
    /// Training-set loss per objective, mean since the last log line.
    loss_acc: Vec<(f64, u64)>,
    last_losses: Vec<f64>,
    log_clock: Instant,
    log_images: u64,
    /// Which objectives train (single-task baselines train one).
    active: Vec<bool>,
}

impl Trainer {
    /// A fresh model for `problem` under `config`, with weights `p` (empty: uniform) and an
    /// optional MTO `method` (`scalarization` or empty for none).
    pub fn new(
        name: &str,
        problem: Arc<Problem>,
        config: &Config,
        weights: &[f64],
        method: &str,
        sink: Option<Arc<MetricsSink>>,
    ) -> Result<Trainer> {
        let t = problem.num_objectives();
        let tc = &config.train;
        let spec = model_spec(config, &problem)?;
        let mut model = Model::new(
            spec,
            scalarize_nn::HeadsSpec::parse(&problem.heads)?,
            InitOptions {
                zero_init_residual: config.model.zero_init_residual,
            },
            tc.seed,
        )
        .context("model")?;
        let device = crate::config::parse_device(&tc.device).context("train.device")?;
        let gpu = match device {
            Device::Cpu => None,
            Device::Cuda(i) => Some(
                scalarize_autograd::cuda_device(i)
                    .and_then(|g| Ok(g.new_stream()?))
                    .with_context(|| format!("opening {device} (train.device)"))?,
            ),
        };
        if let Some(g) = &gpu {
            model
                .to_gpu(g)
                .with_context(|| format!("moving the model to {device} (train.device)"))?;
        }
        let opt_config = match tc.optimizer.as_str() {
            "sgd" => OptimizerConfig::Sgd(SgdConfig {
                momentum: tc.momentum,
                nesterov: tc.nesterov,
                weight_decay: tc.weight_decay,
                ..Default::default()
            }),
            _ => OptimizerConfig::AdamW(AdamWConfig {
                weight_decay: tc.weight_decay,
                ..Default::default()
            }),
        };
        let opt = Optimizer::new(opt_config, tc.no_decay_norm_bias).context("train.optimizer")?;
        let sizes = problem.train_sizes();
        if let Some((d, _)) = sizes.iter().enumerate().find(|(_, n)| **n == 0) {
            bail!(
                "training set `{}` is empty (data.root = {})",
                problem
                    .objectives
                    .get(d)
                    .map(|o| o.name.as_str())
                    .unwrap_or("?"),
                config.data.root.display()
            );
        }
        let steps_per_epoch = steps_per_epoch(config, &problem);
        let total_steps = steps_per_epoch * tc.epochs;
        let warmup = (tc.warmup_epochs * steps_per_epoch as f64).round() as u64;
        let kind = match tc.schedule.as_str() {
            "cosine" => ScheduleKind::Cosine { min_lr: 0.0 },
            "step" => ScheduleKind::Step {
                milestones: tc.milestones.iter().map(|e| e * steps_per_epoch).collect(),
                gamma: tc.gamma,
            },
            _ => ScheduleKind::Constant,
        };
        let schedule = Schedule::new(1.0, warmup, total_steps, kind).context("train.schedule")?;
        let loader_config = LoaderConfig {
            batch_size: tc.batch_size,
            shuffle: true,
            drop_last: true,
            seed: tc.seed,
            workers: config.data.workers,
            prefetch: 2,
            skip_corrupt: false,
        };
        let loader = Loader::new(problem.train.clone(), loader_config).context("training data")?;
        let eval_loaders = |sources: &[Source]| -> Result<Vec<Loader>> {
            sources
                .iter()
                .map(|s| {
                    Loader::new(
                        vec![s.clone()],
                        LoaderConfig {
                            batch_size: 256,
                            shuffle: false,
                            drop_last: false,
                            seed: 0,
                            workers: config.data.workers,
                            prefetch: 2,
                            skip_corrupt: false,
                        },
                    )
                    .map_err(anyhow::Error::from)
                })
                .collect()
        };
        let val = eval_loaders(&problem.val).context("validation data")?;
        let test = eval_loaders(&problem.test).context("test data")?;
        let method = match method {
            "" | "scalarization" => None,
            m => Some(scalarize_mto::registry::build(m, t, tc.seed)?),
        };
        let segments = backbone_segments(&model);
        let mut trainer = Trainer {
            gpu,
            name: name.to_string(),
            problem,
            config: config.clone(),
            model,
            opt,
            schedule,
            loader,
            val,
            test,
            weights: vec![1.0 / t as f64; t],
            base_lr: tc.lr,
            method,
            step: 0,
            steps_per_epoch,
            segments,
            conflict_every: None,
            sink,
            loss_acc: vec![(0.0, 0); t],
            last_losses: vec![f64::NAN; t],
            log_clock: Instant::now(),
            log_images: 0,
            active: vec![true; t],
        };
        if !weights.is_empty() {
            trainer.set_weights(weights)?;
        }
        Ok(trainer)
    }

    /// Trains only objective `k` (single-task / single-domain baseline): its weight is 1.
    pub fn single(&mut self, k: usize) -> Result<()> {
        let t = self.weights.len();
        let mut w = vec![0.0; t];
        w[k] = 1.0;
        self.set_weights(&w)?;
        self.active = (0..t).map(|i| i == k).collect();
        Ok(())
    }

    /// Sets p (normalised to sum 1); the key names it in errors.
    pub fn set_weights(&mut self, w: &[f64]) -> Result<()> {
        let t = self.problem.num_objectives();
        if w.len() != t {
            bail!(
                "weights: {} given, the problem has {t} ({})",
                w.len(),
                self.problem.names().join(", ")
            );
        }
        crate::config::check_weights("weights", w)?;
        let s: f64 = w.iter().sum();
        self.weights = w.iter().map(|v| v / s).collect();
        Ok(())
    }

    /// The weights p.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Sets the peak learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.base_lr = lr;
    }

    /// The peak learning rate.
    pub fn lr(&self) -> f64 {
        self.base_lr
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Steps per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// Measure gradient conflicts every `k` steps.
    pub fn measure_conflicts(&mut self, every: u64) {
        self.conflict_every = Some(every);
    }

    /// The batches of the epoch containing step `from`, starting at `from`.
    fn epoch_batches(&self, epoch: u64, skip: u64) -> Result<scalarize_data::loader::epoch::Epoch> {
        let s = self.steps_per_epoch as usize;
        let bs = self.config.train.batch_size;
        let seed = self.config.train.seed;
        let sampled =
            self.problem.kind == ProblemKind::Mdl && self.config.data.weighting == "sampling";
        let plan: Vec<Vec<(usize, usize)>> = if sampled {
            // p acts as the domain sampling ratios; a single-domain baseline samples its domain.
            let p: Vec<f64> = self.weights.clone();
            let sampler = DomainSampler::new(&p, s)?;
            sampler.plan(&self.problem.train_sizes(), bs, seed, epoch)?
        } else {
            // Plain shuffled passes; epoch e covers batches [e*S, (e+1)*S) of the pass sequence.
            let per_pass = self.loader.num_batches().max(1);
            let mut out = Vec::with_capacity(s);
            let mut cursor = epoch as usize * s;
            while out.len() < s {
                let pass = cursor / per_pass;
                let plan = self.loader.plan(pass as u64);
                let take = (per_pass - cursor % per_pass).min(s - out.len());
                out.extend(plan.into_iter().skip(cursor % per_pass).take(take));
                cursor += take;
            }
            out
        };
        let plan = plan.into_iter().skip(skip as usize).collect();
        Ok(self.loader.run_plan(plan, epoch))
    }

    /// Trains `steps` steps (or until Ctrl-C). A non-finite loss is an error naming the step.
    pub fn train_steps(&mut self, steps: u64) -> Result<Stop> {
        let end = self.step + steps;
        while self.step < end {
            let epoch = self.step / self.steps_per_epoch;
            let in_epoch = self.step % self.steps_per_epoch;
            let epoch_end = (epoch + 1) * self.steps_per_epoch;
            let mut batches = self.epoch_batches(epoch, in_epoch)?;
            while self.step < end.min(epoch_end) {
                if interrupt::requested() {
                    return Ok(Stop::Interrupted);
                }
                let batch = batches
                    .next()
                    .ok_or_else(|| anyhow!("data ended early in epoch {epoch}"))??;
                self.train_batch(&batch)?;
            }
        }
        Ok(Stop::Done)
    }

    /// One optimizer step on `batch`.
    fn train_batch(&mut self, batch: &Batch) -> Result<()> {
        let t = self.problem.num_objectives();
        let (images, order, counts) = self.arrange(batch)?;
        let n = order.len();
        let routing = self.routing(&counts);
        let features = self.model.forward_features(&images)?;
        let outputs = self.model.forward_heads(&features, &routing)?;
        let rows = self.objective_rows(&counts, n);
        let mut losses: Vec<Option<Tensor>> = Vec::with_capacity(t);
        for (k, obj) in self.problem.objectives.iter().enumerate() {
            if !self.active[k] || rows[k].is_empty() {
                losses.push(None);
                continue;
            }
            let out = output_rows(&outputs, obj.head, &rows[k])?;
            let target = make_target(obj, batch, &order, &rows[k], &out)?;
            let head = &self.model.heads().0[obj.head];
            losses.push(target.map(|t| head_loss(head, &out, &t)).transpose()?);
        }
        let values: Vec<f64> = losses
            .iter()
            .map(|l| l.as_ref().map(|l| l.item().map(f64::from)).transpose())
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .map(|v| v.unwrap_or(0.0))
            .collect();
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "run `{}` diverged: loss of `{}` is {} at step {} (lower train.lr or set train.clip_grad_norm)",
                self.name,
                self.problem.objectives[k].name,
                values[k],
                self.step
            );
        }
        for (k, l) in losses.iter().enumerate() {
            if l.is_some() {
                self.loss_acc[k].0 += values[k];
                self.loss_acc[k].1 += 1;
            }
        }
        let lr = (self.base_lr * self.schedule.lr_at(self.step) as f64) as f32;
        let clip =
            (self.config.train.clip_grad_norm > 0.0).then_some(self.config.train.clip_grad_norm);
        let measure = self
            .conflict_every
            .is_some_and(|k| self.step.is_multiple_of(k));
        let requirement = self.method.as_ref().map(|m| m.requirement());
        // Conflicts of the host path come as T x P gradients, those of the device path as the
        // Gram matrices of the T x P device buffer (only they leave the device).
        let mut conflict_grads: Option<Vec<f32>> = None;
        let mut conflict_gram: Option<SegmentedGram> = None;
        let epoch = (self.step / self.steps_per_epoch) as usize;
        match requirement {
            None | Some(Requirement::Losses) => {
                let w = match self.method.as_mut() {
                    None => self.fixed_weights(&counts, n),
                    Some(m) => {
                        let agg = m.aggregate(
                            &AggregateInput::from_losses(&masked(&values, &losses))
                                .with_epoch((self.step / self.steps_per_epoch) as usize),
                        )?;
                        agg.weights
                    }
                };
                if measure {
                    match self.gpu.clone() {
                        Some(gpu) => {
                            conflict_gram = Some(self.backbone_gram_device(&gpu, &losses)?)
                        }
                        None => conflict_grads = Some(self.task_backbone_grads(&losses)?.0),
                    }
                }
                let total = weighted_total(&losses, &w)?;
                let grads = total.backward()?;
                drop(outputs);
                drop(features);
                self.model.step(&mut self.opt, &grads, lr, clip)?;
            }
            Some(Requirement::SharedGradients) if self.gpu.is_some() => {
                let gpu = self.gpu.clone().expect("checked by the guard");
                let (p, h) = (self.segments.backbone, self.head_len());
                let (g, heads) = self.task_grads_device(&gpu, &losses, true)?;
                let gram = grad_gram(&gpu, &g, t, p, &self.segments.ends)?;
                let lv = masked(&values, &losses);
                let method = self.method.as_mut().expect("method");
                // Only the T x T Gram matrices leave the device, unless the method needs the
                // values themselves (none of the shared-parameter methods does today).
                let host = if method.needs_gradient_values() {
                    Some(gpu.download(&g)?)
                } else {
                    None
                };
                let tg = match &host {
                    Some(v) => TaskGradients::new(v, t, p, &self.segments.ends)?,
                    None => TaskGradients::shape_only(t, p, &self.segments.ends)?,
                };
                let agg = method.aggregate(
                    &AggregateInput::from_losses(&lv)
                        .with_grads(tg)
                        .with_gram(&gram)
                        .with_epoch(epoch),
                )?;
                let mut flat = gpu.alloc::<f32>(p + h)?;
                match (&agg.direction, &agg.segment_weights) {
                    (Some(d), _) => gpu.copy(&gpu.upload(d)?, 0, &mut flat, 0, p)?,
                    (None, Some(sw)) => combine_segments_into(
                        &gpu,
                        &g,
                        t,
                        p,
                        &self.segments.ends,
                        sw,
                        &mut flat,
                        0,
                    )?,
                    (None, None) => combine_into(&gpu, &g, t, p, &agg.weights, &mut flat, 0)?,
                }
                if let Some(heads) = &heads {
                    combine_into(&gpu, heads, t, h, &agg.weights, &mut flat, p)?;
                }
                if measure {
                    conflict_gram = Some(gram);
                }
                drop(outputs);
                drop(features);
                self.model
                    .step_flat_device(&mut self.opt, &flat, lr, clip)?;
            }
            Some(Requirement::SharedGradients) => {
                let (g, heads) = self.task_backbone_grads(&losses)?;
                let p = self.segments.backbone;
                let tg = TaskGradients::new(&g, t, p, &self.segments.ends)?;
                let lv = masked(&values, &losses);
                let agg = self.method.as_mut().expect("method").aggregate(
                    &AggregateInput::from_losses(&lv)
                        .with_grads(tg)
                        .with_epoch(epoch),
                )?;
                let direction = agg
                    .direction
                    .ok_or_else(|| anyhow!("method returned no direction"))?;
                let mut flat = direction;
                flat.extend(combine_heads(&heads, &agg.weights));
                if measure {
                    conflict_grads = Some(g);
                }
                drop(outputs);
                drop(features);
                self.apply_flat(flat, lr, clip)?;
            }
            Some(Requirement::RepresentationGradients) if self.gpu.is_some() => {
                let gpu = self.gpu.clone().expect("checked by the guard");
                let pooled = features.pooled.clone();
                let r = pooled.numel();
                let (p, h) = (self.segments.backbone, self.head_len());
                // Row k: objective k's gradient at the pooled features (T x R), and its head
                // gradients (T x H); both stay on the device.
                let mut zg = gpu.zeros::<f32>(t * r)?;
                let mut hg = (h > 0).then(|| gpu.zeros::<f32>(t * h)).transpose()?;
                let mut at_pooled: Vec<Option<Tensor>> = vec![None; t];
                for (k, l) in losses.iter().enumerate() {
                    let Some(l) = l else { continue };
                    let one = Tensor::scalar(1.0).to_device_like(l)?;
                    let grads = Backward::new().root(l, &one).stop_at(&pooled).run()?;
                    if let Some(gr) = grads.get(&pooled) {
                        gpu.copy(device_buf(gr, "pooled features")?, 0, &mut zg, k * r, r)?;
                        at_pooled[k] = Some(gr.clone());
                    }
                    if let Some(hg) = hg.as_mut() {
                        self.copy_grads_device(&gpu, &grads, None, Some((hg, k * h)))?;
                    }
                }
                let lv = masked(&values, &losses);
                let method = self.method.as_mut().expect("method");
                let agg = if method.needs_gradient_values() {
                    // GradDrop keeps or drops each element by its sign: the T x R values go to
                    // the host, as on the CPU path (R = batch x features, not the parameters).
                    let host = gpu.download(&zg)?;
                    method.aggregate(
                        &AggregateInput::from_losses(&lv)
                            .with_grads(TaskGradients::whole(&host, t, r)?),
                    )?
                } else {
                    let gram = grad_gram(&gpu, &zg, t, r, &[r])?;
                    method.aggregate(
                        &AggregateInput::from_losses(&lv)
                            .with_grads(TaskGradients::shape_only_whole(t, r)?)
                            .with_gram(&gram),
                    )?
                };
                let cot = match agg.direction {
                    Some(d) => Tensor::new(d, pooled.shape())?.to_device_like(&pooled)?,
                    None => weighted_sum_device(&at_pooled, &agg.weights, &pooled)?,
                };
                let grads = Backward::new().root(&pooled, &cot).run()?;
                // [backbone | heads]: the backbone from this backward (zeros where it did not
                // reach, as flat_grads), the heads combined from their per-objective rows.
                let mut flat = gpu.zeros::<f32>(p + h)?;
                self.copy_grads_device(&gpu, &grads, Some((&mut flat, 0)), None)?;
                if let Some(hg) = &hg {
                    combine_into(&gpu, hg, t, h, &agg.weights, &mut flat, p)?;
                }
                if measure {
                    conflict_gram = Some(self.backbone_gram_device(&gpu, &losses)?);
                }
                drop(outputs);
                drop(features);
                self.model
                    .step_flat_device(&mut self.opt, &flat, lr, clip)?;
            }
            Some(Requirement::RepresentationGradients) => {
                let pooled = features.pooled.clone();
                let r = pooled.numel();
                let mut g = vec![0f32; t * r];
                let mut head_grads: Vec<Vec<f32>> = Vec::with_capacity(t);
                for (k, l) in losses.iter().enumerate() {
                    match l {
                        Some(l) => {
                            let one = Tensor::scalar(1.0).to_device_like(l)?;
                            let grads = Backward::new().root(l, &one).stop_at(&pooled).run()?;
                            if let Some(gr) = grads.get(&pooled) {
                                g[k * r..(k + 1) * r].copy_from_slice(&gr.to_host()?);
                            }
                            head_grads.push(self.head_flat(&grads));
                        }
                        None => head_grads.push(vec![0.0; self.head_len()]),
                    }
                }
                let tg = TaskGradients::whole(&g, t, r)?;
                let lv = masked(&values, &losses);
                let agg = self
                    .method
                    .as_mut()
                    .expect("method")
                    .aggregate(&AggregateInput::from_losses(&lv).with_grads(tg))?;
                let direction = agg
                    .direction
                    .ok_or_else(|| anyhow!("method returned no direction"))?;
                let cot = Tensor::new(direction, pooled.shape())?.to_device_like(&pooled)?;
                let grads = Backward::new().root(&pooled, &cot).run()?;
                let mut flat = self.model.flat_grads(&grads);
                let b = self.segments.backbone;
                let heads = combine_heads(&head_grads, &agg.weights);
                flat[b..].copy_from_slice(&heads);
                if measure {
                    conflict_grads = Some(self.task_backbone_grads(&losses)?.0);
                }
                drop(outputs);
                drop(features);
                self.apply_flat(flat, lr, clip)?;
            }
        }
        // Methods with learnable parameters (uncertainty log-variances, IMTL scales, GradNorm
        // weights) step them after every aggregation, whatever inputs the method took.
        if let Some(m) = self.method.as_mut() {
            step_method_params(m.as_mut(), lr as f64)?;
        }
        if let Some(g) = conflict_grads {
            self.record_conflicts(&g)?;
        }
        if let Some(gram) = conflict_gram {
            self.record_conflict_gram(&gram)?;
        }
        self.step += 1;
        self.log_images += n as u64;
        self.log_train(lr as f64)?;
        Ok(())
    }

    /// Weights of the fixed scalarization at this batch: MTL and MDL-with-loss-weighting use p;
    /// MDL with sampling uses each domain's share of the batch (p acted through sampling), so
    /// the loss is the plain mean over the batch's samples.
    fn fixed_weights(&self, counts: &[usize], n: usize) -> Vec<f64> {
        let sampled =
            self.problem.kind == ProblemKind::Mdl && self.config.data.weighting == "sampling";
        if sampled {
            self.problem
                .objectives
                .iter()
                .map(|o| counts[o.domain.unwrap_or(0)] as f64 / n as f64)
                .collect()
        } else {
            self.weights.clone()
        }
    }

    fn apply_flat(&mut self, mut flat: Vec<f32>, lr: f32, clip: Option<f32>) -> Result<()> {
        if let Some(c) = clip {
            clip_grad_norm(&mut [&mut flat[..]], c)?;
        }
        self.model.step_flat(&mut self.opt, &flat, lr)?;
        Ok(())
    }

    /// A batch tensor moved to this trainer's device stream (unchanged on the CPU).
    fn on_device(&self, t: Tensor) -> Result<Tensor> {
        Ok(match &self.gpu {
            Some(g) => t.to_gpu(g)?,
            None => t,
        })
    }

    fn head_len(&self) -> usize {
        self.model.store().num_trainable_elements() - self.segments.backbone
    }

    fn head_flat(&self, grads: &Gradients) -> Vec<f32> {
        self.model.flat_grads(grads)[self.segments.backbone..].to_vec()
    }

    /// Per-objective gradients: the T x P backbone matrix and each objective's head gradients.
    fn task_backbone_grads(&self, losses: &[Option<Tensor>]) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let p = self.segments.backbone;
        let t = losses.len();
        let mut g = vec![0f32; t * p];
        let mut heads = Vec::with_capacity(t);
        for (k, l) in losses.iter().enumerate() {
            match l {
                Some(l) => {
                    let grads = l.backward()?;
                    let flat = self.model.flat_grads(&grads);
                    g[k * p..(k + 1) * p].copy_from_slice(&flat[..p]);
                    heads.push(flat[p..].to_vec());
                }
                None => heads.push(vec![0.0; self.head_len()]),
            }
        }
        Ok((g, heads))
    }

    fn record_conflicts(&mut self, g: &[f32]) -> Result<()> {
        let t = self.problem.num_objectives();
        let tg = TaskGradients::new(g, t, self.segments.backbone, &self.segments.ends)?;
        let rec = ConflictRecord::measure(self.step, &tg, Some(&self.segments.names))?;
        if let Some(sink) = &self.sink {
            sink.conflict(&self.name, &rec)?;
        }
        Ok(())
    }

    /// Conflict metrics from the Gram matrices of the device T x P gradients.
    fn record_conflict_gram(&mut self, gram: &SegmentedGram) -> Result<()> {
        let rec = ConflictRecord::from_gram(self.step, gram, Some(&self.segments.names))?;
        if let Some(sink) = &self.sink {
            sink.conflict(&self.name, &rec)?;
        }
        Ok(())
    }

    /// Copies each trainable parameter's gradient in `grads` into device buffers: backbone
    /// parameters to `backbone.0[backbone.1 + offset]`, head parameters to
    /// `heads.0[heads.1 + offset - P]` (offsets in store order); parameters backward did not
    /// reach are left as they are (zeros in a zeroed buffer, as in `flat_grads`).
    fn copy_grads_device(
        &self,
        gpu: &Gpu,
        grads: &Gradients,
        mut backbone: Option<(&mut GpuBuffer<f32>, usize)>,
        mut heads: Option<(&mut GpuBuffer<f32>, usize)>,
    ) -> Result<()> {
        let p = self.segments.backbone;
        let mut offset = 0;
        for e in self.model.store().trainable() {
            let n = e.tensor().numel();
            let dst = if offset < p {
                backbone.as_mut().map(|(b, at)| (&mut **b, *at + offset))
            } else {
                heads.as_mut().map(|(b, at)| (&mut **b, *at + offset - p))
            };
            if let (Some((buf, at)), Some(g)) = (dst, grads.get(e.tensor())) {
                gpu.copy(device_buf(g, e.name())?, 0, buf, at, n)?;
            }
            offset += n;
        }
        Ok(())
    }

    /// Per-objective gradients on the device: the T x P backbone buffer (row k: objective k's
    /// gradient in store order, zeros for an objective without samples) and, if asked and the
    /// model has head parameters, the T x H head buffer. One backward per objective, as
    /// [`Trainer::task_backbone_grads`], with device copies instead of read-backs.
    fn task_grads_device(
        &self,
        gpu: &Gpu,
        losses: &[Option<Tensor>],
        with_heads: bool,
    ) -> Result<(GpuBuffer<f32>, Option<GpuBuffer<f32>>)> {
        let (p, h, t) = (self.segments.backbone, self.head_len(), losses.len());
        let mut g = gpu.zeros::<f32>(t * p)?;
        let mut heads = (with_heads && h > 0)
            .then(|| gpu.zeros::<f32>(t * h))
            .transpose()?;
        for (k, l) in losses.iter().enumerate() {
            let Some(l) = l else { continue };
            let grads = l.backward()?;
            let hd = heads.as_mut().map(|b| (b, k * h));
            self.copy_grads_device(gpu, &grads, Some((&mut g, k * p)), hd)?;
        }
        Ok((g, heads))
    }

    /// The Gram matrices (per backbone segment and total) of the per-objective backbone
    /// gradients, computed on the device; only the T x T matrices are read back.
    fn backbone_gram_device(&self, gpu: &Gpu, losses: &[Option<Tensor>]) -> Result<SegmentedGram> {
        let (g, _) = self.task_grads_device(gpu, losses, false)?;
        let (t, p) = (losses.len(), self.segments.backbone);
        Ok(grad_gram(gpu, &g, t, p, &self.segments.ends)?)
    }

    fn log_train(&mut self, lr: f64) -> Result<()> {
        let every = self.config.train.log_every;
        if !self.step.is_multiple_of(every) && !self.step.is_multiple_of(self.steps_per_epoch) {
            return Ok(());
        }
        let loss: Vec<f64> = self
            .loss_acc
            .iter()
            .map(|(s, n)| if *n > 0 { s / *n as f64 } else { f64::NAN })
            .collect();
        let secs = self.log_clock.elapsed().as_secs_f64().max(1e-9);
        self.last_losses = loss.clone();
        let rec = TrainRecord {
            run: self.name.clone(),
            step: self.step,
            epoch: self.step as f64 / self.steps_per_epoch as f64,
            lr,
            loss,
            weights: if self.method.is_none() {
                Some(self.weights.clone())
            } else {
                None
            },
            images_per_s: self.log_images as f64 / secs,
        };
        if let Some(sink) = &self.sink {
            sink.train(&rec)?;
        }
        self.loss_acc.iter_mut().for_each(|e| *e = (0.0, 0));
        self.log_clock = Instant::now();
        self.log_images = 0;
        Ok(())
    }

    /// Mean training loss per objective over the steps before the latest log line.
    pub fn last_losses(&self) -> Vec<f64> {
        self.last_losses.clone()
    }

    /// Rows sorted by domain (MDL) so each domain is one contiguous sub-batch; the batch tensor,
    /// the original row of each new row, and rows per domain.
    fn arrange(&self, batch: &Batch) -> Result<(Tensor, Vec<usize>, Vec<usize>)> {
        let [b, c, h, w] = batch.shape;
        let ndom = self.problem.train.len();
        let mut counts = vec![0usize; ndom];
        for &s in &batch.sources {
            counts[s] += 1;
        }
        let mut order: Vec<usize> = (0..b).collect();
        if self.problem.kind == ProblemKind::Mdl {
            order.sort_by_key(|&i| batch.sources[i]);
        }
        let img = c * h * w;
        let images = if order.iter().enumerate().all(|(i, &o)| i == o) {
            batch.images.clone()
        } else {
            let mut v = Vec::with_capacity(b * img);
            for &o in &order {
                v.extend_from_slice(&batch.images[o * img..(o + 1) * img]);
            }
            v
        };
        let images = self.on_device(Tensor::new(images, &[b, c, h, w])?)?;
        Ok((images, order, counts))
    }

    fn routing(&self, counts: &[usize]) -> Routing {
        match self.problem.kind {
            ProblemKind::Mtl => Routing::AllHeads,
            ProblemKind::Mdl => {
                if self.model.heads().len() == 1 {
                    Routing::AllHeads
                } else {
                    Routing::Segments(
                        counts
                            .iter()
                            .enumerate()
                            .map(|(d, &len)| Segment { len, head: d })
                            .collect(),
                    )
                }
            }
        }
    }

    /// Row range (in arranged order) of each objective.
    fn objective_rows(&self, counts: &[usize], n: usize) -> Vec<std::ops::Range<usize>> {
        let mut starts = vec![0usize; counts.len() + 1];
        for d in 0..counts.len() {
            starts[d + 1] = starts[d] + counts[d];
        }
        self.problem
            .objectives
            .iter()
            .map(|o| match o.domain {
                Some(d) => starts[d]..starts[d + 1],
                None => 0..n,
            })
            .collect()
    }

    /// Metric and mean loss per objective on the validation (`test = false`) or test sets.
    pub fn evaluate(&mut self, test: bool) -> Result<Evaluation> {
        let _guard = no_grad();
        self.model.set_train(false);
        let result = self.evaluate_inner(test);
        self.model.set_train(true);
        result
    }

    fn evaluate_inner(&mut self, test: bool) -> Result<Evaluation> {
        let t = self.problem.num_objectives();
        let mut score = vec![(0.0f64, 0.0f64); t];
        let mut loss = vec![(0.0f64, 0.0f64); t];
        let loaders = if test {
            self.test.clone()
        } else {
            self.val.clone()
        };
        let mdl = self.problem.kind == ProblemKind::Mdl;
        for (s, loader) in loaders.iter().enumerate() {
            for batch in loader.epoch(0) {
                let batch = batch?;
                let [b, c, h, w] = batch.shape;
                let images = self.on_device(Tensor::new(batch.images.clone(), &[b, c, h, w])?)?;
                let features: Features = self.model.forward_features(&images)?;
                let order: Vec<usize> = (0..b).collect();
                // An evaluation batch holds one source: one head pass serves its objectives.
                let routing = match self
                    .problem
                    .objectives
                    .iter()
                    .find(|o| mdl && o.domain == Some(s))
                {
                    Some(o) if self.model.heads().len() > 1 => Routing::Segments(vec![Segment {
                        len: b,
                        head: o.head,
                    }]),
                    _ => Routing::AllHeads,
                };
                let outputs = self.model.forward_heads(&features, &routing)?;
                for (k, obj) in self.problem.objectives.iter().enumerate() {
                    if mdl && obj.domain != Some(s) {
                        continue;
                    }
                    let rows = 0..b;
                    let out = output_rows(&outputs, obj.head, &rows)?;
                    if let Some(target) = make_target(obj, &batch, &order, &rows, &out)? {
                        let head = &self.model.heads().0[obj.head];
                        let l = head_loss(head, &out, &target)?.item()? as f64;
                        let labelled = labelled_rows(obj, &batch);
                        let (hit, count) = metric_counts(&out, &target, &labelled)?;
                        score[k].0 += hit;
                        score[k].1 += count;
                        // Weight of this batch's mean loss in the objective's mean.
                        let w = match target {
                            Target::DenseValues(_) => {
                                labelled.iter().filter(|m| **m).count() as f64
                            }
                            _ => count,
                        };
                        loss[k].0 += l * w;
                        loss[k].1 += w;
                    }
                }
            }
        }
        let metric = self
            .problem
            .objectives
            .iter()
            .zip(&score)
            .map(|(o, (hit, count))| match o.target {
                // No labelled sample scores 0, as for the accuracies.
                _ if *count == 0.0 => 0.0,
                // Regression: 1 / (1 + MSE over labelled samples), higher is better.
                TargetKind::Dense { .. } => 1.0 / (1.0 + hit / count),
                _ => hit / count,
            })
            .collect();
        let loss = loss.iter().map(|(ls, w)| ls / w.max(1e-12)).collect();
        Ok(Evaluation { metric, loss })
    }

    /// Evaluates on validation and logs an eval record.
    pub fn evaluate_and_log(&mut self) -> Result<Evaluation> {
        let e = self.evaluate(false)?;
        if let Some(sink) = &self.sink {
            sink.eval(&EvalRecord {
                run: self.name.clone(),
                step: self.step,
                epoch: self.step as f64 / self.steps_per_epoch as f64,
                task_metric: e.metric.clone(),
                mean_metric: e.mean(),
                loss: e.loss.clone(),
                split: "val".into(),
            })?;
        }
        Ok(e)
    }

    /// Saves everything that affects later training (weights, BN statistics, optimizer state,
    /// step, p, learning rate, the method's learnable parameters) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut extra = BTreeMap::new();
        extra.insert("weights".into(), serde_json::to_string(&self.weights)?);
        extra.insert("lr".into(), serde_json::to_string(&self.base_lr)?);
        if let Some(m) = &self.method {
            extra.insert("method".into(), m.name().to_string());
            extra.insert("method_params".into(), serde_json::to_string(m.params())?);
        }
        self.model
            .save(path, Some(&self.opt), self.step, &extra)
            .with_context(|| format!("saving checkpoint {}", path.display()))
    }

    /// Restores the state written by [`Trainer::save`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let ck = self
            .model
            .load(path)
            .with_context(|| format!("loading checkpoint {}", path.display()))?;
        if let Some(opt) = ck.optimizer()? {
            self.opt = opt;
        }
        self.step = ck.meta.step;
        let get = |k: &str| ck.meta.extra.get(k);
        if let Some(w) = get("weights") {
            let w: Vec<f64> = serde_json::from_str(w)
                .with_context(|| format!("checkpoint {}: bad `weights`", path.display()))?;
            self.weights = w;
        }
        if let Some(lr) = get("lr") {
            self.base_lr = serde_json::from_str(lr)
                .with_context(|| format!("checkpoint {}: bad `lr`", path.display()))?;
        }
        if let (Some(m), Some(p)) = (self.method.as_mut(), get("method_params")) {
            let p: Vec<f64> = serde_json::from_str(p)?;
            m.set_params(&p)?;
        }
        Ok(())
    }
}

/// Optimizer steps per epoch: `train.steps_per_epoch`, or all domains' training samples over
/// the batch size.
pub fn steps_per_epoch(config: &Config, problem: &Problem) -> u64 {
    let tc = &config.train;
    if tc.steps_per_epoch > 0 {
        tc.steps_per_epoch
    } else {
        let total: usize = problem.train_sizes().iter().sum();
        (total / tc.batch_size).max(1) as u64
    }
}

/// The backbone spec with the data's resolution and channels (an explicit, different `r` or
/// `c` in `model.spec` is an error).
pub fn model_spec(config: &Config, problem: &Problem) -> Result<ModelSpec> {
    let s = &config.model.spec;
    let mut spec = ModelSpec::parse(s).map_err(|e| anyhow!("model.spec: {e}"))?;
    let opts: Vec<&str> = s.split(':').skip(1).map(str::trim).collect();
    if opts.iter().any(|o| o.starts_with('r')) && spec.resolution != problem.resolution {
        bail!(
            "model.spec `{s}`: resolution {} differs from data.resolution {}",
            spec.resolution,
            problem.resolution
        );
    }
    if opts.iter().any(|o| o.starts_with('c')) && spec.in_channels != problem.channels {
        bail!(
            "model.spec `{s}`: {} input channels, the data has {}",
            spec.in_channels,
            problem.channels
        );
    }
    spec.resolution = problem.resolution;
    spec.in_channels = problem.channels;
    // Re-parse the canonical form so every check of the spec applies (e.g. patch divides r).
    ModelSpec::parse(&spec.to_string()).map_err(|e| {
        anyhow!(
            "model.spec `{s}` at data.resolution {}: {e}",
            problem.resolution
        )
    })
}

/// Layer groups of the backbone: consecutive parameters sharing a block prefix.
pub fn backbone_segments(model: &Model) -> Segments {
    let mut ends = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut offset = 0;
    for e in model.store().trainable() {
        let name = e.name();
        let Some(rest) = name.strip_prefix("backbone.") else {
            break;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let group = if parts[0].starts_with("layer") || parts[0] == "blocks" {
            format!("backbone.{}.{}", parts[0], parts.get(1).unwrap_or(&""))
        } else if matches!(parts[0], "conv1" | "bn1") {
            "backbone.stem".to_string()
        } else if matches!(parts[0], "patch_embed" | "cls_token" | "pos_embed") {
            "backbone.embed".to_string()
        } else {
            format!("backbone.{}", parts[0])
        };
        offset += e.tensor().numel();
        if names.last() == Some(&group) {
            *ends.last_mut().expect("a group") = offset;
        } else {
            names.push(group);
            ends.push(offset);
        }
    }
    Segments {
        ends,
        names,
        backbone: offset,
    }
}

/// The output rows `rows` of head `head` (narrowed out of the head output covering them).
fn output_rows(
    outputs: &[HeadOutput],
    head: usize,
    rows: &std::ops::Range<usize>,
) -> Result<Tensor> {
    let o = outputs
        .iter()
        .find(|o| o.head == head && o.rows.start <= rows.start && rows.end <= o.rows.end)
        .ok_or_else(|| anyhow!("no output of head {head} covers rows {rows:?}"))?;
    if o.rows == *rows {
        Ok(o.output.clone())
    } else {
        Ok(o.output.narrow(0, rows.start - o.rows.start, rows.len())?)
    }
}

/// The target of `obj` for the arranged rows `rows` (`order[i]` = original batch row), or
/// `None` when none of the rows carries one.
fn make_target(
    obj: &Objective,
    batch: &Batch,
    order: &[usize],
    rows: &std::ops::Range<usize>,
    out: &Tensor,
) -> Result<Option<Target>> {
    let src = |i: usize| order[i];
    let target = match (obj.target, &batch.targets) {
        (TargetKind::Class { task }, targets) => match &targets[task] {
            TaskBatch::Class { labels, mask } => {
                let t: Vec<i64> = rows
                    .clone()
                    .map(|i| {
                        if mask[src(i)] {
                            labels[src(i)] as i64
                        } else {
                            IGNORE_INDEX
                        }
                    })
                    .collect();
                if t.iter().all(|&v| v == IGNORE_INDEX) {
                    return Ok(None);
                }
                Target::Classes(t)
            }
            other => bail!(
                "objective `{}`: expected class labels, got {other:?}",
                obj.name
            ),
        },
        (TargetKind::Attribute { task, column }, targets) => match &targets[task] {
            TaskBatch::Attributes {
                values,
                width,
                mask,
            } => {
                if rows.clone().any(|i| !mask[src(i)]) {
                    bail!("objective `{}`: a sample has no attributes", obj.name);
                }
                Target::Attributes(
                    rows.clone()
                        .map(|i| values[src(i) * width + column] as f32)
                        .collect(),
                )
            }
            _ => bail!("objective `{}`: expected attributes", obj.name),
        },
        (TargetKind::Segmentation { task }, targets) => match &targets[task] {
            TaskBatch::Segmentation {
                labels,
                shape,
                mask,
            } => {
                let classes = out.shape()[1];
                let px = shape[0] * shape[1];
                let mut t = Vec::with_capacity(rows.len() * px);
                for i in rows.clone() {
                    let o = src(i);
                    for &l in &labels[o * px..(o + 1) * px] {
                        t.push(if mask[o] && (l as usize) < classes {
                            l as i64
                        } else {
                            IGNORE_INDEX
                        });
                    }
                }
                if t.iter().all(|&v| v == IGNORE_INDEX) {
                    return Ok(None);
                }
                Target::DenseClasses(t)
            }
            _ => bail!("objective `{}`: expected label maps", obj.name),
        },
        (TargetKind::Dense { task }, targets) => match &targets[task] {
            TaskBatch::Dense {
                values,
                shape,
                mask,
            } => {
                let per = shape[0] * shape[1] * shape[2];
                if out.numel() != rows.len() * per {
                    bail!(
                        "objective `{}`: head output {:?} does not match targets [{}, {:?}]",
                        obj.name,
                        out.shape(),
                        rows.len(),
                        shape
                    );
                }
                if !rows.clone().any(|i| mask[src(i)]) {
                    return Ok(None);
                }
                // A sample without this target gets the prediction itself as its target: no
                // gradient from it (it still counts in the mean's denominator).
                let pred = out.to_vec();
                let mut t = Vec::with_capacity(rows.len() * per);
                for (j, i) in rows.clone().enumerate() {
                    let o = src(i);
                    if mask[o] {
                        t.extend_from_slice(&values[o * per..(o + 1) * per]);
                    } else {
                        t.extend_from_slice(&pred[j * per..(j + 1) * per]);
                    }
                }
                Target::DenseValues(t)
            }
            _ => bail!("objective `{}`: expected dense maps", obj.name),
        },
    };
    Ok(Some(target))
}

/// Which rows of an evaluation batch carry `obj`'s target.
fn labelled_rows(obj: &Objective, batch: &Batch) -> Vec<bool> {
    let task = match obj.target {
        TargetKind::Class { task }
        | TargetKind::Attribute { task, .. }
        | TargetKind::Dense { task }
        | TargetKind::Segmentation { task } => task,
    };
    batch.targets[task].mask().to_vec()
}

/// (correct, counted) for accuracy-type metrics; (sum of squared errors, elements) over the
/// `labelled` rows for regression.
fn metric_counts(out: &Tensor, target: &Target, labelled: &[bool]) -> Result<(f64, f64)> {
    // Device outputs are read back once per batch.
    let host = out.to_host()?;
    let v = &host[..];
    Ok(match target {
        Target::Classes(t) => {
            let c = out.shape()[1];
            let mut hit = 0.0;
            let mut n = 0.0;
            for (r, &label) in t.iter().enumerate() {
                if label == IGNORE_INDEX {
                    continue;
                }
                n += 1.0;
                if argmax(&v[r * c..(r + 1) * c]) == label as usize {
                    hit += 1.0;
                }
            }
            (hit, n)
        }
        Target::Attributes(t) => {
            let hit = v
                .iter()
                .zip(t)
                .filter(|(logit, y)| (**logit > 0.0) == (**y > 0.5))
                .count();
            (hit as f64, t.len() as f64)
        }
        Target::DenseClasses(t) => {
            let s = out.shape();
            let (n, c, px) = (s[0], s[1], s[2] * s[3]);
            let mut hit = 0.0;
            let mut count = 0.0;
            for r in 0..n {
                for p in 0..px {
                    let label = t[r * px + p];
                    if label == IGNORE_INDEX {
                        continue;
                    }
                    count += 1.0;
                    let best = (0..c)
                        .max_by(|&a, &b| {
                            v[(r * c + a) * px + p].total_cmp(&v[(r * c + b) * px + p])
                        })
                        .unwrap_or(0);
                    if best == label as usize {
                        hit += 1.0;
                    }
                }
            }
            (hit, count)
        }
        Target::DenseValues(t) => {
            let per = t.len() / labelled.len().max(1);
            let mut sse = 0.0;
            let mut n = 0.0;
            for (r, _) in labelled.iter().enumerate().filter(|(_, m)| **m) {
                for i in r * per..(r + 1) * per {
                    let d = (v[i] - t[i]) as f64;
                    sse += d * d;
                }
                n += per as f64;
            }
            (sse, n)
        }
    })
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

/// Losses with absent objectives as 0 (methods need one value per task).
fn masked(values: &[f64], losses: &[Option<Tensor>]) -> Vec<f64> {
    values
        .iter()
        .zip(losses)
        .map(|(v, l)| if l.is_some() { *v } else { 0.0 })
        .collect()
}

/// `sum_k w_k L_k` over present objectives.
fn weighted_total(losses: &[Option<Tensor>], w: &[f64]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (l, &wk) in losses.iter().zip(w) {
        if let Some(l) = l {
            let term = l.scale(wk as f32)?;
            total = Some(match total {
                None => term,
                Some(t) => t.add(&term)?,
            });
        }
    }
    total.ok_or_else(|| anyhow!("no objective has samples in this batch"))
}

/// The device buffer of a gradient the device path expects on the model's GPU.
fn device_buf<'a>(g: &'a Tensor, what: &str) -> Result<&'a GpuBuffer<f32>> {
    g.cuda().map(|c| &c.buf).ok_or_else(|| {
        anyhow!(
            "gradient of `{what}` is on {}, expected the model's GPU",
            g.device()
        )
    })
}

/// `sum_k w_k z_k` of the per-objective device gradients at the representation (skipping
/// zero weights and objectives without a gradient), as a device tensor shaped like `like`.
/// Device tensor ops (f32) rather than the combine kernel: a device buffer cannot be wrapped
/// as a tensor outside the autograd crate.
fn weighted_sum_device(z: &[Option<Tensor>], w: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (zk, &wk) in z.iter().zip(w) {
        let Some(zk) = zk else { continue };
        if wk == 0.0 {
            continue;
        }
        let term = zk.scale(wk as f32)?;
        total = Some(match total {
            None => term,
            Some(t) => t.add(&term)?,
        });
    }
    match total {
        Some(t) => Ok(t),
        None => Ok(Tensor::zeros_like_device(like.shape(), like)?),
    }
}

/// `sum_k w_k h_k` of the per-objective head gradients.
fn combine_heads(heads: &[Vec<f32>], w: &[f64]) -> Vec<f32> {
    let len = heads.first().map_or(0, Vec::len);
    let mut out = vec![0f32; len];
    for (h, &wk) in heads.iter().zip(w) {
        for (o, v) in out.iter_mut().zip(h) {
            *o += wk as f32 * v;
        }
    }
    out
}

/// One SGD step on a method's own parameters (uncertainty log-variances, IMTL-L/H loss
/// scales, GradNorm weights) at the model's learning rate.
fn step_method_params(m: &mut dyn Aggregator, lr: f64) -> Result<()> {
    let g = m.param_grads().to_vec();
    if g.is_empty() {
        return Ok(());
    }
    let p: Vec<f64> = m.params().iter().zip(&g).map(|(p, g)| p - lr * g).collect();
    m.set_params(&p)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_metric_counts_only_labelled_rows() {
        // Two rows of 2 values; row 1 has no target (the trainer substitutes the prediction).
        let out = Tensor::new(vec![1.0, 2.0, 5.0, 7.0], &[2, 1, 1, 2]).unwrap();
        let target = Target::DenseValues(vec![0.0, 4.0, 5.0, 7.0]);
        let (sse, n) = metric_counts(&out, &target, &[true, false]).unwrap();
        assert_eq!((sse, n), (1.0 + 4.0, 2.0));
        let (sse, n) = metric_counts(&out, &target, &[false, false]).unwrap();
        assert_eq!((sse, n), (0.0, 0.0));
    }

    #[test]
    fn accuracy_counts_skip_ignored_rows() {
        let out = Tensor::new(vec![0.1, 0.9, 0.8, 0.2, 0.3, 0.7], &[3, 2]).unwrap();
        let target = Target::Classes(vec![1, IGNORE_INDEX, 0]);
        assert_eq!(
            metric_counts(&out, &target, &[true; 3]).unwrap(),
            (1.0, 2.0)
        );
        let attrs = Target::Attributes(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // Logits > 0 predict 1: all six logits are positive, so the three 1s are right.
        assert_eq!(metric_counts(&out, &attrs, &[true; 3]).unwrap(), (4.0, 6.0));
    }

    /// A tiny multi-task trainer with `method`, moved onto a stream of `gpu`, measuring
    /// conflicts every step.
    fn device_trainer(gpu: &Arc<Gpu>, method: &str) -> Trainer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        let text = format!(
            "preset = \"multimnist-mtl\"\n[data]\nroot = {root:?}\ntrain_limit = 32\neval_limit = 8\nmultimnist_train = 32\nmultimnist_test = 8\nworkers = 0\n[train]\nepochs = 1\nsteps_per_epoch = 2\nbatch_size = 8\nlog_every = 1\n"
        );
        let config = Config::from_toml(&text, "test").unwrap();
        let problem = Arc::new(Problem::build(&config).unwrap());
        let mut tr = Trainer::new("t", problem, &config, &[], method, None).unwrap();
        let stream = gpu.new_stream().unwrap();
        tr.model.to_gpu(&stream).unwrap();
        tr.gpu = Some(stream);
        tr.measure_conflicts(1);
        tr
    }

    #[test]
    fn device_mto_steps_read_back_no_task_gradients() {
        let Some(gpu) = Gpu::for_tests("device_mto_steps_read_back_no_task_gradients") else {
            return;
        };
        for method in ["pcgrad", "gradvac", "imtl_h"] {
            let mut tr = device_trainer(&gpu, method);
            let stream = tr.gpu.clone().unwrap();
            let p = tr.segments.backbone as u64;
            let before = stream.transfer_stats();
            tr.train_steps(1).unwrap();
            let d = stream.transfer_stats().since(&before);
            // Read back: the loss values, the T x T Gram matrices (the step's, and for the
            // representation method the conflict set's and the T x R one), the norm: far less
            // than one backbone gradient row (4 P bytes), let alone the T x P matrix.
            assert!(
                d.download_bytes < p,
                "{method}: {d:?} downloaded, a backbone gradient row is {} bytes",
                4 * p
            );
            assert!(d.downloads > 0, "{method}: {d:?}");
            assert_eq!(tr.step, 1);
        }
    }
}
