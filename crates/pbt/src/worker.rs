//! The worker pool: each worker thread owns the trainables of its members.
//!
//! Member `m` always runs on worker `m % workers`, so its trainable (created there by the
//! factory, never sent across threads) stays in memory between intervals; it is reloaded
//! from a checkpoint only when its state changed underneath (exploit, resume, failure).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};

use crate::checkpoint;
use crate::trainable::{BoxError, Interval, Trainable};
use crate::value::Hyperparams;

/// One interval to train.
pub(crate) struct Job {
    pub interval: Interval,
    pub hp: Hyperparams,
    /// Checkpoint to start from (`None`: a fresh trainable).
    pub load: Option<PathBuf>,
    /// Where the new checkpoint goes (written to a temporary path first).
    pub save: PathBuf,
    pub sync_writes: bool,
    pub always_reload: bool,
}

/// What came of a job.
pub(crate) struct JobResult {
    pub member: usize,
    /// Score and the hyperparameters the trainable reported, or the failure message.
    pub outcome: Result<(f64, Hyperparams), String>,
}

struct Slot<T> {
    trainable: T,
    /// The checkpoint whose state the instance holds (`None`: fresh from the factory).
    state: Option<PathBuf>,
}

fn message(e: BoxError) -> String {
    e.to_string()
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

fn run_job<T: Trainable>(slot: &mut Slot<T>, job: &Job) -> Result<(f64, Hyperparams), String> {
    let t = &mut slot.trainable;
    if job.always_reload || slot.state != job.load {
        if let Some(p) = &job.load {
            t.load(p)
                .map_err(|e| format!("load {}: {}", p.display(), message(e)))?;
        }
        slot.state = job.load.clone();
    }
    t.set_hyperparameters(&job.hp)
        .map_err(|e| format!("set hyperparameters: {}", message(e)))?;
    // From here on the instance no longer holds the loaded state.
    slot.state = None;
    t.train(&job.interval)
        .map_err(|e| format!("train: {}", message(e)))?;
    let score = t
        .evaluate()
        .map_err(|e| format!("evaluate: {}", message(e)))?;
    if !score.is_finite() {
        return Err(format!("evaluate: non-finite score {score}"));
    }
    let temp = checkpoint::temp_path(&job.save);
    if let Err(e) = t.save(&temp) {
        // Leave no partial file behind.
        let _ = checkpoint::remove(&temp);
        return Err(format!("save {}: {}", temp.display(), message(e)));
    }
    checkpoint::commit(&temp, &job.save, job.sync_writes).map_err(|e| e.to_string())?;
    slot.state = Some(job.save.clone());
    Ok((score, t.hyperparameters()))
}

/// Runs jobs until the job channel closes.
pub(crate) fn work<T, F>(factory: &F, jobs: Receiver<Job>, results: Sender<JobResult>)
where
    T: Trainable,
    F: Fn(usize) -> Result<T, BoxError> + Sync,
{
    let mut slots: HashMap<usize, Slot<T>> = HashMap::new();
    for job in jobs {
        let member = job.interval.member;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // A fresh start needs a fresh instance.
            if job.load.is_none() && slots.get(&member).is_some_and(|s| s.state.is_some()) {
                slots.remove(&member);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = slots.entry(member) {
                let trainable =
                    factory(member).map_err(|e| format!("create trainable: {}", message(e)))?;
                e.insert(Slot {
                    trainable,
                    state: None,
                });
            }
            let slot = slots.get_mut(&member).ok_or("no trainable")?;
            run_job(slot, &job)
        }))
        .unwrap_or_else(|p| Err(panic_message(p)));
        if outcome.is_err() {
            // Its state is unknown: start over from a checkpoint next time.
            slots.remove(&member);
        }
        if results.send(JobResult { member, outcome }).is_err() {
            break;
        }
    }
}
