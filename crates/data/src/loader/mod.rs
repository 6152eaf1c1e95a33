//! Batching: plans (which samples go in which batch), workers that materialise them, and the
//! multi-domain sampler.

pub mod batch;
pub mod epoch;
pub mod sampler;

use std::sync::Arc;

use crate::error::{DataError, Result};
use crate::rng::permutation;
use crate::sample::{Dataset, TaskSpec};
use crate::transforms::Augment;

pub use batch::{Batch, TaskBatch};
pub use epoch::Epoch;
pub use sampler::DomainSampler;

/// One input source (a domain): a data set and the augmentation applied to its samples.
#[derive(Clone)]
pub struct Source {
    /// The data set.
    pub dataset: Arc<dyn Dataset>,
    /// Its augmentation (also where per-domain resizing lives, so shapes agree).
    pub augment: Augment,
}

impl Source {
    /// Wraps a data set with an augmentation.
    pub fn new(dataset: impl Dataset + 'static, augment: Augment) -> Self {
        Source {
            dataset: Arc::new(dataset),
            augment,
        }
    }
}

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle each epoch (a permutation that depends on seed and epoch only).
    pub shuffle: bool,
    /// Drop the last, incomplete batch.
    pub drop_last: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Background worker threads (0: build batches in the calling thread).
    pub workers: usize,
    /// Batches each worker may have ready ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Skip samples whose file is missing or undecodable, counting them, instead of failing.
    pub skip_corrupt: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            shuffle: true,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
            skip_corrupt: false,
        }
    }
}

/// A batch plan: for each batch, the (source, index) of each sample.
pub type Plan = Vec<Vec<(usize, usize)>>;

/// Turns sources into batches. Output depends on (config, sources, epoch) only, never on the
/// number of workers or their timing.
#[derive(Clone)]
pub struct Loader {
    pub(crate) sources: Arc<Vec<Source>>,
    pub(crate) config: LoaderConfig,
    pub(crate) tasks: Arc<Vec<TaskSpec>>,
    /// `task_map[s][t]`: which union task source s's task t feeds.
    pub(crate) task_map: Arc<Vec<Vec<usize>>>,
}

impl Loader {
    /// Builds a loader; tasks of all sources are merged by name (kinds must agree), and a
    /// sample's tasks that its source lacks are masked out in batches.
    pub fn new(sources: Vec<Source>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Invalid("batch_size must be at least 1".into()));
        }
        if sources.is_empty() {
            return Err(DataError::Invalid(
                "a loader needs at least one source".into(),
            ));
        }
        let mut tasks: Vec<TaskSpec> = Vec::new();
        let mut task_map = Vec::new();
        for (s, src) in sources.iter().enumerate() {
            let mut map = Vec::new();
            for t in src.dataset.tasks() {
                match tasks.iter().position(|u| u.name == t.name) {
                    Some(u) if tasks[u].kind != t.kind => {
                        return Err(DataError::Invalid(format!(
                            "task {:?} of source {s} is {:?} but an earlier source has {:?}",
                            t.name, t.kind, tasks[u].kind
                        )));
                    }
                    Some(u) => map.push(u),
                    None => {
                        map.push(tasks.len());
                        tasks.push(t);
                    }
                }
            }
            task_map.push(map);
        }
        Ok(Loader {
            sources: Arc::new(sources),
            config,
            tasks: Arc::new(tasks),
            task_map: Arc::new(task_map),
        })
    }

    /// The merged task list (order of first appearance across sources).
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Plan of one pass over all sources (concatenated), shuffled per (seed, epoch) if asked.
    pub fn plan(&self, epoch: u64) -> Plan {
        let all: Vec<(usize, usize)> = self
            .sources
            .iter()
            .enumerate()
            .flat_map(|(s, src)| (0..src.dataset.len()).map(move |i| (s, i)))
            .collect();
        let order: Vec<(usize, usize)> = if self.config.shuffle {
            permutation(all.len(), self.config.seed, epoch, 0)
                .into_iter()
                .map(|k| all[k])
                .collect()
        } else {
            all
        };
        chunk(order, self.config.batch_size, self.config.drop_last)
    }

    /// Number of batches per epoch of [`Loader::epoch`].
    pub fn num_batches(&self) -> usize {
        let n: usize = self.sources.iter().map(|s| s.dataset.len()).sum();
        let b = self.config.batch_size;
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Iterates one epoch over all sources.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        Epoch::start(self.clone(), self.plan(epoch), epoch)
    }

    /// Iterates one epoch whose batches draw their domains (sources) from `sampler`.
    pub fn epoch_sampled(&self, epoch: u64, sampler: &DomainSampler) -> Result<Epoch> {
        let sizes: Vec<usize> = self.sources.iter().map(|s| s.dataset.len()).collect();
        let plan = sampler.plan(&sizes, self.config.batch_size, self.config.seed, epoch)?;
        Ok(Epoch::start(self.clone(), plan, epoch))
    }

    /// Iterates batches of an explicit plan (e.g. a fixed evaluation order).
    pub fn run_plan(&self, plan: Plan, epoch: u64) -> Epoch {
        Epoch::start(self.clone(), plan, epoch)
    }
}

fn chunk(order: Vec<(usize, usize)>, batch: usize, drop_last: bool) -> Plan {
    order
        .chunks(batch)
        .filter(|c| !drop_last || c.len() == batch)
        .map(|c| c.to_vec())
        .collect()
}
