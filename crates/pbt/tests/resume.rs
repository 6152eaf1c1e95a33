//! A run killed with SIGKILL at random moments and restarted ends exactly like an
//! uninterrupted run: nothing lost, nothing done twice, same final population.
//!
//! The child process is this test binary re-executing its ignored `resume_child` test.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Slow;
use rand::{RngExt, SeedableRng};
use scalarize_pbt::report::IntervalEntry;
use scalarize_pbt::toys::MovingOptimum;
use scalarize_pbt::{Mode, Pb2, Pbt, PolicyEntry, RunReport, Store};

const POPULATION: usize = 4;
const INTERVAL: u64 = 3;
const GENERATIONS: u64 = 8;
const CHILD_ENV: &str = "SCALARIZE_PBT_RESUME_DIR";

const VARIANT_ENV: &str = "SCALARIZE_PBT_RESUME_VARIANT";

/// Variant 0: synchronous, truncation + perturbation; 1: synchronous PB2; 2: asynchronous.
fn pbt(dir: &Path, workers: usize, variant: u8) -> Pbt {
    let b = Pbt::builder(dir, MovingOptimum::space())
        .population(POPULATION)
        .workers(workers)
        .interval(INTERVAL)
        .budget_units(POPULATION as u64 * INTERVAL * GENERATIONS)
        .seed(42)
        .sync_writes(false);
    let b = match variant {
        0 => b,
        1 => b.explore(Pb2::default()),
        _ => b.mode(Mode::Asynchronous),
    };
    b.build().unwrap()
}

/// The child: runs (or resumes) the study in the folder the parent names.
#[test]
#[ignore = "entry point of the child process of `killed_runs_resume_to_the_same_population`"]
fn resume_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let variant: u8 = std::env::var(VARIANT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let slow = |_| {
        Ok(Slow {
            inner: MovingOptimum::new(),
            per_unit: Duration::from_millis(2),
        })
    };
    pbt(Path::new(&dir), 2, variant).run(slow).unwrap();
}

/// Intervals and policy without the event numbers (completion order within a synchronous
/// generation depends on thread timing; contents do not).
fn history(dir: &Path) -> (Vec<IntervalEntry>, Vec<PolicyEntry>) {
    let store = Store::open(dir, false).unwrap();
    let mut iv = store.intervals(None).unwrap();
    iv.iter_mut().for_each(|i| i.seq = 0);
    iv.sort_by_key(|i| (i.generation, i.member));
    let mut po = store.policy(None).unwrap();
    po.iter_mut().for_each(|p| p.seq = 0);
    (iv, po)
}

fn checkpoint_bytes(dir: &Path, report: &RunReport) -> Vec<Vec<u8>> {
    report
        .members
        .iter()
        .map(|m| std::fs::read(dir.join(m.checkpoint.as_ref().unwrap())).unwrap())
        .collect()
}

/// Starts the child on `dir` until it completes, killing it (SIGKILL) after a random delay
/// the first `max_kills` times. Returns the kills and, for each, the intervals committed.
fn kill_until_done(
    dir: &Path,
    variant: u8,
    max_kills: usize,
    rng: &mut rand::rngs::Xoshiro256PlusPlus,
) -> Vec<usize> {
    let exe = std::env::current_exe().unwrap();
    let mut progress = Vec::new();
    loop {
        let mut child = Command::new(&exe)
            .args(["resume_child", "--exact", "--ignored", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .env(VARIANT_ENV, variant.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = (progress.len() < max_kills)
            .then(|| Instant::now() + Duration::from_millis(rng.random_range(5..120)));
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        match status {
            Some(s) => {
                assert!(s.success(), "child failed: {s}");
                return progress;
            }
            None => {
                let committed = Store::open(dir, false)
                    .and_then(|s| s.intervals(None))
                    .map_or(0, |iv| iv.len());
                progress.push(committed);
            }
        }
    }
}

#[test]
fn killed_runs_resume_to_the_same_population() {
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = pbt(reference_dir.path(), 1, 0)
        .run(|_| Ok(MovingOptimum::new()))
        .unwrap();
    let (ref_iv, ref_po) = history(reference_dir.path());
    assert_eq!(ref_iv.len(), POPULATION * GENERATIONS as usize);
    assert!(
        !ref_po.is_empty(),
        "the reference run must exploit for the test to mean much"
    );
    let ref_ckpt = checkpoint_bytes(reference_dir.path(), &reference);

    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
    let mut kills = 0;
    let mut runs = 0;
    // Intervals committed when each kill struck.
    let mut progress = std::collections::BTreeSet::new();
    let started = Instant::now();
    while kills < 20 || runs < 3 {
        runs += 1;
        assert!(runs <= 20, "too many runs for {kills} kills");
        let dir = tempfile::tempdir().unwrap();
        let p = kill_until_done(dir.path(), 0, 8, &mut rng);
        kills += p.len();
        progress.extend(p.iter().copied());
        let kills_this_run = p.len();
        // Same final population, same history, same checkpoints; nothing lost or redone.
        let resumed = Store::open(dir.path(), false).unwrap().report().unwrap();
        assert!(resumed.finished);
        assert_eq!(
            resumed.members, reference.members,
            "run {runs} after {kills_this_run} kills"
        );
        assert_eq!(resumed.best_schedule, reference.best_schedule);
        let (iv, po) = history(dir.path());
        assert_eq!(iv, ref_iv, "interval history differs in run {runs}");
        assert_eq!(po, ref_po, "policy log differs in run {runs}");
        assert_eq!(checkpoint_bytes(dir.path(), &resumed), ref_ckpt);
        // Pruning left exactly the checkpoints still referenced.
        let files = std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .count();
        let referenced: std::collections::HashSet<_> = resumed
            .members
            .iter()
            .filter_map(|m| m.checkpoint.clone())
            .collect();
        assert_eq!(files, referenced.len());
    }
    println!(
        "{kills} kills over {runs} runs in {:.1} s; intervals committed at the kills: {progress:?}",
        started.elapsed().as_secs_f64()
    );
    let total = POPULATION * GENERATIONS as usize;
    let mid_run = progress.iter().filter(|&&p| p > 0 && p < total).count();
    assert!(
        mid_run >= 5,
        "kills struck mid-run at too few points: {progress:?}"
    );
}

/// Runs `variant` under kills until at least 3 kills struck mid-run; returns the run folders.
fn killed_runs(variant: u8, rng: &mut rand::rngs::Xoshiro256PlusPlus) -> Vec<tempfile::TempDir> {
    let total = POPULATION * GENERATIONS as usize;
    let mut dirs = Vec::new();
    let mut mid_run = 0;
    while mid_run < 3 {
        assert!(
            dirs.len() < 10,
            "variant {variant}: kills keep missing the run"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = kill_until_done(dir.path(), variant, 5, rng);
        mid_run += p.iter().filter(|&&c| c > 0 && c < total).count();
        dirs.push(dir);
    }
    dirs
}

#[test]
fn killed_pb2_and_asynchronous_runs_lose_and_redo_nothing() {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(8);
    // PB2 (synchronous): identical to an uninterrupted run, GP cache and all.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = pbt(reference_dir.path(), 3, 1)
        .run(|_| Ok(MovingOptimum::new()))
        .unwrap();
    for dir in killed_runs(1, &mut rng) {
        let resumed = Store::open(dir.path(), false).unwrap().report().unwrap();
        assert_eq!(resumed.members, reference.members);
        assert_eq!(history(dir.path()), history(reference_dir.path()));
    }

    // Asynchronous: timing decides who meets whom, but every member trains exactly its share,
    // each of its intervals once.
    for dir in killed_runs(2, &mut rng) {
        let report = Store::open(dir.path(), false).unwrap().report().unwrap();
        assert!(report.finished);
        let (iv, _) = history(dir.path());
        assert_eq!(iv.len(), POPULATION * GENERATIONS as usize);
        for m in 0..POPULATION {
            let own: Vec<&IntervalEntry> = iv.iter().filter(|i| i.member == m).collect();
            let gens: Vec<u64> = own.iter().map(|i| i.generation).collect();
            assert_eq!(gens, (0..GENERATIONS).collect::<Vec<_>>(), "member {m}");
            assert!(own.iter().all(|i| i.step_end - i.step_start == INTERVAL));
            assert_eq!(report.members[m].units, INTERVAL * GENERATIONS);
        }
    }
}
