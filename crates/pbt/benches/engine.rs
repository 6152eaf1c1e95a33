//! Engine overhead with 64 members: one exploit/explore decision, one whole member-interval
//! through the engine (no-op training: scheduling, checkpoint file, SQLite commit), and the
//! size of the SQLite state per 1,000 member-intervals (printed).
//!
//! `cargo bench -p scalarize-pbt --bench engine`

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use scalarize_pbt::decision::{DecisionInput, candidates, decide};
use scalarize_pbt::explore::Observation;
use scalarize_pbt::report::MemberSummary;
use scalarize_pbt::rng::{Purpose, stream};
use scalarize_pbt::{
    BoxError, Domain, Exploit, Explore, Hyperparams, Interval, Pb2, Pbt, Perturb, SearchSpace,
    Trainable, Truncation,
};

const MEMBERS: usize = 64;

fn space() -> SearchSpace {
    SearchSpace::new()
        .with("p", Domain::simplex_with_floor(8, 0.01))
        .with("lr", Domain::log_uniform(1e-4, 1e-1))
        .with("wd", Domain::uniform(0.0, 0.1))
}

/// Trains nothing; its checkpoint is a few bytes.
struct Noop {
    hp: Hyperparams,
    score: f64,
}

impl Trainable for Noop {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        self.hp = hp.clone();
        Ok(())
    }
    fn hyperparameters(&self) -> Hyperparams {
        self.hp.clone()
    }
    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        self.score += self.hp.f64("lr").unwrap_or(0.0) * interval.units as f64;
        Ok(())
    }
    fn evaluate(&mut self) -> Result<f64, BoxError> {
        Ok(self.score)
    }
    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        Ok(std::fs::write(path, self.score.to_le_bytes())?)
    }
    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        let b = std::fs::read(path)?;
        self.score = f64::from_le_bytes(b[..8].try_into()?);
        Ok(())
    }
}

fn run(dir: &Path, generations: u64, sync_writes: bool) -> Result<(), Box<dyn std::error::Error>> {
    Pbt::builder(dir, space())
        .population(MEMBERS)
        .workers(2)
        .interval(1)
        .budget_units(MEMBERS as u64 * generations)
        .sync_writes(sync_writes)
        .build()?
        .run(|_| {
            Ok(Noop {
                hp: Hyperparams::new(),
                score: 0.0,
            })
        })?;
    Ok(())
}

fn sqlite_size() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let generations = 16; // 64 x 16 = 1,024 member-intervals
    let t = Instant::now();
    run(dir.path(), generations, false)?;
    let secs = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(dir.path().join("state.sqlite"))?.len();
    let intervals = MEMBERS as f64 * generations as f64;
    println!(
        "sqlite state: {bytes} bytes for {intervals} member-intervals = {:.1} KB per 1,000 (target < 1000 KB); whole run {:.3} s = {:.3} ms per member-interval",
        bytes as f64 / intervals,
        secs,
        secs * 1e3 / intervals
    );
    Ok(())
}

fn population() -> Vec<MemberSummary> {
    let s = space();
    (0..MEMBERS)
        .map(|m| MemberSummary {
            member: m,
            step: 100,
            units: 100,
            intervals: 10,
            hp: s.sample(&mut stream(1, Purpose::Init, m as u64, 0)),
            checkpoint: Some(format!("checkpoints/m{m}")),
            score: Some((m * 37 % 64) as f64),
            start_score: None,
            failed: false,
            error: None,
            parent: None,
        })
        .collect()
}

fn bench_decision(c: &mut Criterion) {
    let members = population();
    let s = space();
    let exploit: Box<dyn Exploit> = Box::new(Truncation::default());
    let explore: Box<dyn Explore> = Box::new(Perturb::default());
    let mut g = c.benchmark_group("decision");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function(
        "truncation+perturb, 64 members, all decisions of a generation",
        |b| {
            b.iter(|| {
                let cands = candidates(&members);
                let input = DecisionInput {
                    members: &members,
                    candidates: &cands,
                    space: &s,
                    exploit: exploit.as_ref(),
                    explore: explore.as_ref(),
                    history: &[],
                    burn_in: 0,
                    interval: 1,
                };
                for m in 0..MEMBERS {
                    let mut rng = stream(3, Purpose::Decision, 7, m as u64);
                    black_box(decide(&input, m, &mut rng).ok());
                }
            })
        },
    );
    // PB2 with 200 observations: the GP is fitted once per generation and reused.
    let pb2: Box<dyn Explore> = Box::new(Pb2::default());
    let history: Vec<Observation> = (0..200)
        .map(|i| Observation {
            member: i % MEMBERS,
            step_end: 10 + i as u64 / 8,
            hp: members[i % MEMBERS].hp.clone(),
            reward_change: ((i * 13 % 17) as f64 - 8.0) / 8.0,
        })
        .collect();
    g.bench_function(
        "truncation+pb2 (200 observations), 64 members, all decisions of a generation",
        |b| {
            b.iter(|| {
                let cands = candidates(&members);
                let input = DecisionInput {
                    members: &members,
                    candidates: &cands,
                    space: &s,
                    exploit: exploit.as_ref(),
                    explore: pb2.as_ref(),
                    history: &history,
                    burn_in: 0,
                    interval: 1,
                };
                for m in 0..MEMBERS {
                    let mut rng = stream(3, Purpose::Decision, 7, m as u64);
                    black_box(decide(&input, m, &mut rng).ok());
                }
            })
        },
    );
    g.finish();
}

fn bench_engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    let generations = 4;
    g.throughput(Throughput::Elements(MEMBERS as u64 * generations));
    for sync in [false, true] {
        let name =
            format!("64 members x {generations} generations, no-op trainable, sync_writes={sync}");
        g.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("temp dir"),
                |dir| run(dir.path(), generations, sync).expect("run"),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn main() {
    if let Err(e) = sqlite_size() {
        eprintln!("sqlite size measurement failed: {e}");
    }
    let mut c = Criterion::default().configure_from_args();
    bench_decision(&mut c);
    bench_engine(&mut c);
    c.final_summary();
}
