//! One epoch's iterator: batch k is built by worker k mod W and received in order, so the
//! sequence is identical for any number of workers; each worker's bounded channel caps prefetch.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use crate::error::Result;
use crate::loader::batch::{Batch, collate};
use crate::loader::{Loader, Plan};
use crate::transforms::Augmented;

/// Iterator over an epoch's batches.
pub struct Epoch {
    loader: Loader,
    plan: Arc<Plan>,
    epoch: u64,
    next: usize,
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    skipped: usize,
    failed: bool,
}

/// Builds batch `b` of `plan`.
fn build(loader: &Loader, plan: &Plan, b: usize, epoch: u64) -> Result<Batch> {
    let cfg = &loader.config;
    let ntasks = loader.tasks.len();
    let mut items: Vec<(usize, usize, Augmented)> = Vec::with_capacity(plan[b].len());
    let mut skipped = Vec::new();
    for &(s, i) in &plan[b] {
        let src = &loader.sources[s];
        let sample = match src.dataset.get(i) {
            Ok(x) => x,
            Err(e) if cfg.skip_corrupt && e.is_per_sample() => {
                skipped.push((s, i, e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut a = src.augment.apply(sample, cfg.seed, epoch, s, i)?;
        // Place the source's targets in the loader's union task order.
        let mut targets = vec![None; ntasks];
        for (t, target) in a.targets.drain(..).enumerate() {
            targets[loader.task_map[s][t]] = target;
        }
        a.targets = targets;
        items.push((s, i, a));
    }
    collate(&loader.tasks, items, skipped)
}

impl Epoch {
    pub(crate) fn start(loader: Loader, plan: Plan, epoch: u64) -> Self {
        let plan = Arc::new(plan);
        let workers = loader.config.workers.min(plan.len());
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(loader.config.prefetch.max(1));
            let (loader, plan) = (loader.clone(), Arc::clone(&plan));
            handles.push(std::thread::spawn(move || {
                for b in (w..plan.len()).step_by(workers) {
                    // A send error means the consumer is gone: stop quietly.
                    if tx.send(build(&loader, &plan, b, epoch)).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        Epoch {
            loader,
            plan,
            epoch,
            next: 0,
            receivers,
            handles,
            skipped: 0,
            failed: false,
        }
    }

    /// Number of batches in this epoch.
    pub fn num_batches(&self) -> usize {
        self.plan.len()
    }

    /// Samples skipped so far under `skip_corrupt`.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.failed || self.next >= self.plan.len() {
            return None;
        }
        let b = self.next;
        self.next += 1;
        let out = if self.receivers.is_empty() {
            build(&self.loader, &self.plan, b, self.epoch)
        } else {
            let rx = &self.receivers[b % self.receivers.len()];
            match rx.recv() {
                Ok(r) => r,
                Err(_) => Err(crate::error::DataError::Invalid(format!(
                    "loader worker for batch {b} stopped unexpectedly"
                ))),
            }
        };
        match &out {
            Ok(batch) => self.skipped += batch.skipped.len(),
            Err(_) => self.failed = true,
        }
        Some(out)
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Dropping the receivers makes blocked workers' sends fail, so they exit.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
