//! The engine: drives members through intervals and decisions, persisting every step.
//!
//! Crash safety rests on three rules: (1) an interval's result, the member's new state and
//! (asynchronous mode) its decision are committed in one SQLite transaction, after the
//! checkpoint file is complete under its final name; (2) synchronous decisions for a whole
//! generation are committed in one transaction with the generation counter; (3) every random
//! draw comes from a stream keyed by (seed, generation or interval count, member). A killed
//! run therefore restarts from the last commit and makes the same draws again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::checkpoint;
use crate::config::{Mode, PbtBuilder, PbtConfig};
use crate::decision::{Decision, DecisionInput, candidates, decide, observations};
use crate::error::{PbtError, Result};
use crate::exploit::Exploit;
use crate::explore::{Explore, Observation};
use crate::report::{IntervalEntry, MemberSummary, PolicyEntry, RunReport};
use crate::rng::{Purpose, stream};
use crate::space::SearchSpace;
use crate::store::{Store, Write};
use crate::trainable::{BoxError, Interval, Trainable};
use crate::value::Hyperparams;
use crate::worker::{Job, JobResult, work};

/// A population-based-training run stored in a folder (`state.sqlite` + `checkpoints/`).
pub struct Pbt {
    dir: PathBuf,
    space: SearchSpace,
    config: PbtConfig,
    exploit: Box<dyn Exploit>,
    explore: Box<dyn Explore>,
    initial: Vec<Hyperparams>,
}

/// Channels of the running pool, as the coordinator sees them.
struct Pool {
    jobs: Vec<mpsc::Sender<Job>>,
    results: mpsc::Receiver<JobResult>,
}

impl Pbt {
    /// Starts building a run stored in `dir` over `space`.
    pub fn builder(dir: impl AsRef<Path>, space: SearchSpace) -> PbtBuilder {
        PbtBuilder::new(dir, space)
    }

    pub(crate) fn from_builder(b: PbtBuilder) -> Self {
        Self {
            dir: b.dir,
            space: b.space,
            config: b.config,
            exploit: b.exploit,
            explore: b.explore,
            initial: b.initial,
        }
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scalar settings.
    pub fn config(&self) -> &PbtConfig {
        &self.config
    }

    /// Opens the run's database (for queries while or after it runs).
    pub fn store(&self) -> Result<Store> {
        Store::open_existing(&self.dir)
    }

    /// The settings that define the run: a resumed run must match them exactly.
    fn identity(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "population": c.population,
            "interval": c.interval,
            "budget_units": c.budget_units,
            "burn_in": c.burn_in,
            "mode": c.mode,
            "seed": c.seed,
            "space": self.space,
            "exploit": self.exploit.name(),
            "explore": self.explore.name(),
            "initial": self.initial,
        })
    }

    fn check_identity(&self, stored: &str) -> Result<()> {
        let given = self.identity();
        let stored: serde_json::Value =
            serde_json::from_str(stored).map_err(|source| PbtError::Json {
                context: format!("config stored in {}", self.dir.display()),
                source,
            })?;
        let (Some(g), Some(s)) = (given.as_object(), stored.as_object()) else {
            return Err(PbtError::Corrupt {
                path: self.dir.join(crate::store::DB_FILE),
                message: "stored config is not a JSON object".to_string(),
            });
        };
        let keys: std::collections::BTreeSet<&String> = g.keys().chain(s.keys()).collect();
        for k in keys {
            let (a, b) = (s.get(k), g.get(k));
            if a != b {
                let show = |v: Option<&serde_json::Value>| {
                    v.map_or("(none)".to_string(), |v| v.to_string())
                };
                return Err(PbtError::ConfigMismatch {
                    path: self.dir.clone(),
                    key: k.clone(),
                    stored: show(a),
                    given: show(b),
                });
            }
        }
        Ok(())
    }

    /// Creates the members of a new run, or checks that an existing run matches this config.
    fn initialise(&self, store: &mut Store) -> Result<()> {
        if let Some(stored) = store.meta("config")? {
            return self.check_identity(&stored);
        }
        let mut writes = Vec::new();
        for m in 0..self.config.population {
            let hp = if self.initial.is_empty() {
                self.space
                    .sample(&mut stream(self.config.seed, Purpose::Init, m as u64, 0))
            } else {
                self.initial[m % self.initial.len()].clone()
            };
            writes.push(Write::Member(MemberSummary {
                member: m,
                step: 0,
                units: 0,
                intervals: 0,
                hp,
                checkpoint: None,
                score: None,
                start_score: None,
                failed: false,
                error: None,
                parent: None,
            }));
        }
        writes.push(Write::Meta("generation".into(), "0".into()));
        writes.push(Write::Meta("config".into(), self.identity().to_string()));
        store.apply(&writes)
    }

    /// Runs (or resumes) the study until the budget is spent and returns its report.
    ///
    /// `factory(member)` creates a member's trainable inside its worker thread; it is called
    /// again after a failure or a resume. Starting again after the process was killed picks
    /// up at the last committed interval.
    pub fn run<T, F>(&self, factory: F) -> Result<RunReport>
    where
        T: Trainable,
        F: Fn(usize) -> Result<T, BoxError> + Sync,
    {
        let mut store = Store::open(&self.dir, self.config.sync_writes)?;
        self.initialise(&mut store)?;
        if store.meta("finished")?.as_deref() == Some("1") {
            return store.report();
        }
        let members = store.members()?;
        if members.len() != self.config.population {
            return Err(PbtError::Corrupt {
                path: store.path().to_path_buf(),
                message: format!(
                    "{} members stored, config says {}",
                    members.len(),
                    self.config.population
                ),
            });
        }
        // Leftovers of a killed process: temporary files and checkpoints never committed.
        let keep: HashSet<String> = members
            .iter()
            .filter_map(|m| m.checkpoint.clone())
            .collect();
        checkpoint::sweep(&self.dir, &keep)?;
        let ckpt_dir = self.dir.join(checkpoint::DIR);
        std::fs::create_dir_all(&ckpt_dir).map_err(|source| PbtError::Io {
            op: "create checkpoint folder",
            path: ckpt_dir,
            source,
        })?;

        let workers = self.config.workers.min(self.config.population);
        let outcome = std::thread::scope(|scope| {
            let (result_tx, result_rx) = mpsc::channel();
            let mut jobs = Vec::new();
            for _ in 0..workers {
                let (tx, rx) = mpsc::channel();
                let results = result_tx.clone();
                let factory = &factory;
                scope.spawn(move || work(factory, rx, results));
                jobs.push(tx);
            }
            drop(result_tx);
            let mut pool = Pool {
                jobs,
                results: result_rx,
            };
            match self.config.mode {
                Mode::Synchronous => self.run_sync(&mut store, &mut pool, members),
                Mode::Asynchronous => self.run_async(&mut store, &mut pool, members),
            }
            // Dropping the pool closes the job channels; the scope joins the workers.
        });
        outcome?;
        store.apply(&[Write::Meta("finished".into(), "1".into())])?;
        store.checkpoint_wal()?;
        store.report()
    }

    fn job(&self, m: &MemberSummary) -> Job {
        Job {
            interval: Interval {
                member: m.member,
                start_step: m.step,
                units: self.config.interval,
            },
            hp: m.hp.clone(),
            load: m.checkpoint.as_ref().map(|c| self.dir.join(c)),
            save: self
                .dir
                .join(checkpoint::relative_path(m.member, m.intervals)),
            sync_writes: self.config.sync_writes,
            always_reload: self.config.always_reload,
        }
    }

    fn dispatch(&self, pool: &Pool, m: &MemberSummary) -> Result<()> {
        let w = m.member % pool.jobs.len();
        pool.jobs[w]
            .send(self.job(m))
            .map_err(|_| PbtError::Config(format!("worker {w} stopped unexpectedly")))
    }

    fn receive(&self, pool: &Pool) -> Result<JobResult> {
        pool.results
            .recv()
            .map_err(|_| PbtError::Config("every worker stopped unexpectedly".to_string()))
    }

    /// The interval record and the member's new state for a job result.
    fn record(
        &self,
        store: &mut Store,
        m: &MemberSummary,
        r: JobResult,
    ) -> (IntervalEntry, MemberSummary) {
        let units = self.config.interval;
        let seq = store.next_seq();
        let mut next = m.clone();
        next.units += units;
        next.intervals += 1;
        let entry = match r.outcome {
            Ok((score, reported)) => {
                let rel = checkpoint::relative_path(m.member, m.intervals);
                next.step += units;
                next.checkpoint = Some(rel.clone());
                next.score = Some(score);
                next.start_score = Some(score);
                next.failed = false;
                next.error = None;
                IntervalEntry {
                    seq,
                    member: m.member,
                    generation: m.intervals,
                    step_start: m.step,
                    step_end: m.step + units,
                    hp: reported,
                    score: Some(score),
                    start_score: m.start_score,
                    error: None,
                    checkpoint: Some(rel),
                }
            }
            Err(msg) => {
                next.score = None;
                next.failed = true;
                next.error = Some(msg.clone());
                IntervalEntry {
                    seq,
                    member: m.member,
                    generation: m.intervals,
                    step_start: m.step,
                    step_end: m.step + units,
                    hp: m.hp.clone(),
                    score: None,
                    start_score: m.start_score,
                    error: Some(msg),
                    checkpoint: None,
                }
            }
        };
        (entry, next)
    }

    /// The member's state after copying `d.source`, and the policy log entry.
    fn apply_decision(
        &self,
        store: &mut Store,
        me: &MemberSummary,
        src: &MemberSummary,
        d: Decision,
        generation: u64,
    ) -> (PolicyEntry, MemberSummary) {
        let entry = PolicyEntry {
            seq: store.next_seq(),
            member: me.member,
            generation,
            step: src.step,
            source: src.member,
            source_score: src.score,
            old_score: me.score,
            old_hp: me.hp.clone(),
            new_hp: d.new_hp.clone(),
        };
        let mut next = me.clone();
        next.step = src.step;
        next.checkpoint = src.checkpoint.clone();
        next.hp = d.new_hp;
        next.score = src.score;
        next.start_score = src.score;
        next.failed = false;
        next.error = None;
        next.parent = Some(src.member);
        (entry, next)
    }

    fn history(&self, store: &Store) -> Result<Vec<Observation>> {
        if self.explore.needs_history() {
            Ok(observations(&store.intervals(None)?))
        } else {
            Ok(Vec::new())
        }
    }

    fn decide_one(
        &self,
        members: &[MemberSummary],
        history: &[Observation],
        member: usize,
        key: u64,
    ) -> Result<Option<Decision>> {
        let cands = candidates(members);
        let input = DecisionInput {
            members,
            candidates: &cands,
            space: &self.space,
            exploit: self.exploit.as_ref(),
            explore: self.explore.as_ref(),
            history,
            burn_in: self.config.burn_in,
            interval: self.config.interval,
        };
        let mut rng = stream(self.config.seed, Purpose::Decision, key, member as u64);
        decide(&input, member, &mut rng)
    }

    /// Deletes checkpoints no member refers to any more (never one a pending copy needs:
    /// a member that copied another refers to the copied checkpoint until it has trained).
    fn release(
        &self,
        members: &[MemberSummary],
        old: impl IntoIterator<Item = Option<String>>,
    ) -> Result<()> {
        for path in old.into_iter().flatten() {
            if !members
                .iter()
                .any(|m| m.checkpoint.as_deref() == Some(path.as_str()))
            {
                checkpoint::remove(&self.dir.join(path))?;
            }
        }
        Ok(())
    }

    fn all_failed(members: &[MemberSummary]) -> Result<()> {
        if members.iter().all(|m| m.failed) {
            let last_error = members
                .iter()
                .rev()
                .find_map(|m| m.error.clone())
                .unwrap_or_default();
            return Err(PbtError::AllMembersFailed { last_error });
        }
        Ok(())
    }

    fn run_sync(
        &self,
        store: &mut Store,
        pool: &mut Pool,
        mut members: Vec<MemberSummary>,
    ) -> Result<()> {
        let total = self.config.generations();
        loop {
            let g: u64 = store
                .meta("generation")?
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| PbtError::Corrupt {
                    path: store.path().to_path_buf(),
                    message: "meta `generation` missing or not an integer".to_string(),
                })?;
            if g >= total {
                return Ok(());
            }
            for m in &members {
                if m.intervals != g && m.intervals != g + 1 {
                    return Err(PbtError::Corrupt {
                        path: store.path().to_path_buf(),
                        message: format!(
                            "member {} has {} intervals in generation {g}",
                            m.member, m.intervals
                        ),
                    });
                }
            }
            // Train every member that has not finished this generation.
            let pending: Vec<usize> = members
                .iter()
                .filter(|m| m.intervals == g)
                .map(|m| m.member)
                .collect();
            for &m in &pending {
                self.dispatch(pool, &members[m])?;
            }
            for _ in 0..pending.len() {
                let r = self.receive(pool)?;
                let m = r.member;
                let (entry, next) = self.record(store, &members[m], r);
                store.apply(&[Write::Interval(entry), Write::Member(next.clone())])?;
                let old = std::mem::replace(&mut members[m], next).checkpoint;
                if old != members[m].checkpoint {
                    self.release(&members, [old])?;
                }
            }
            Self::all_failed(&members)?;
            if g + 1 == total {
                store.apply(&[Write::Meta("generation".into(), total.to_string())])?;
                return Ok(());
            }
            // Every member decides against the same ranking; one commit for the generation.
            let history = self.history(store)?;
            let mut next = members.clone();
            let mut writes = Vec::new();
            for m in 0..members.len() {
                if let Some(d) = self.decide_one(&members, &history, m, g)? {
                    let src = &members[d.source];
                    let (entry, state) = self.apply_decision(store, &members[m], src, d, g);
                    writes.push(Write::Policy(entry));
                    writes.push(Write::Member(state.clone()));
                    next[m] = state;
                }
            }
            writes.push(Write::Meta("generation".into(), (g + 1).to_string()));
            store.apply(&writes)?;
            let old: Vec<Option<String>> = members.iter().map(|m| m.checkpoint.clone()).collect();
            members = next;
            self.release(&members, old)?;
        }
    }

    fn run_async(
        &self,
        store: &mut Store,
        pool: &mut Pool,
        mut members: Vec<MemberSummary>,
    ) -> Result<()> {
        // Every member gets the same share of the budget, so a slow member is not starved.
        let interval = self.config.interval;
        let share = self.config.generations() * interval;
        let mut in_flight: HashSet<usize> = HashSet::new();
        loop {
            // Replace failed members waiting for a source, then start what the shares allow.
            let history = self.history(store)?;
            for f in 0..members.len() {
                if members[f].failed && !in_flight.contains(&f) {
                    let key = members[f].intervals;
                    if let Some(d) = self.decide_one(&members, &history, f, key)? {
                        let src = members[d.source].clone();
                        let (entry, state) = self.apply_decision(store, &members[f], &src, d, key);
                        store.apply(&[Write::Policy(entry), Write::Member(state.clone())])?;
                        members[f] = state;
                    }
                }
            }
            for me in &members {
                if !me.failed && !in_flight.contains(&me.member) && me.units + interval <= share {
                    self.dispatch(pool, me)?;
                    in_flight.insert(me.member);
                }
            }
            if in_flight.is_empty() {
                return Self::all_failed(&members);
            }
            let r = self.receive(pool)?;
            let m = r.member;
            in_flight.remove(&m);
            let (entry, mut next) = self.record(store, &members[m], r);
            let old = members[m].checkpoint.clone();
            let mut writes = vec![Write::Interval(entry)];
            members[m] = next.clone();
            let history = self.history(store)?;
            if let Some(d) = self.decide_one(&members, &history, m, next.intervals)? {
                let src = members[d.source].clone();
                let (p, state) = self.apply_decision(store, &next, &src, d, next.intervals);
                writes.push(Write::Policy(p));
                next = state;
            }
            writes.push(Write::Member(next.clone()));
            store.apply(&writes)?;
            let own = members[m].checkpoint.clone();
            members[m] = next;
            self.release(&members, [old, own])?;
        }
    }
}
