//! PBT finds good hyperparameters on toy problems.

use scalarize_pbt::toys::{MovingOptimum, SimplexQuadratic};
use scalarize_pbt::{Mode, NoExploit, Pb2, Pbt, Perturb, SimplexMove, Tournament, Truncation};

fn quadratic_run(seed: u64, explore_dirichlet: bool) -> (Vec<f64>, f64) {
    let target = vec![0.1, 0.2, 0.3, 0.4];
    let dir = tempfile::tempdir().unwrap();
    let mv = if explore_dirichlet {
        SimplexMove::Dirichlet {
            concentration: 100.0,
        }
    } else {
        SimplexMove::Multiplicative
    };
    let pbt = Pbt::builder(dir.path(), SimplexQuadratic::space(4, 0.02))
        .population(16)
        .workers(2)
        .interval(5)
        .budget_units(16 * 5 * 40)
        .seed(seed)
        .sync_writes(false)
        .explore(Perturb::default().with_simplex_move(mv))
        .build()
        .unwrap();
    let t = target.clone();
    let report = pbt.run(|_| Ok(SimplexQuadratic::new(t.clone()))).unwrap();
    assert!(report.finished);
    let best = report.best_member().unwrap();
    (
        best.hp.vector("weights").unwrap().to_vec(),
        best.score.unwrap(),
    )
}

#[test]
fn pbt_finds_the_optimum_of_a_quadratic_on_the_simplex() {
    let target = [0.1, 0.2, 0.3, 0.4];
    for (seed, dirichlet) in [(1, false), (2, true)] {
        let (w, score) = quadratic_run(seed, dirichlet);
        let err = w
            .iter()
            .zip(target)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 0.05, "seed {seed}: weights {w:?}, max error {err}");
        assert!(score > -0.005, "seed {seed}: score {score}");
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(w.iter().all(|&x| x >= 0.02 - 1e-12));
    }
}

fn moving_run(seed: u64, exploit_on: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let b = Pbt::builder(dir.path(), MovingOptimum::space())
        .population(8)
        .workers(2)
        .interval(10)
        .budget_units(8 * 400)
        .seed(seed)
        .sync_writes(false);
    let b = if exploit_on {
        b.exploit(Truncation::default())
    } else {
        b.exploit(NoExploit)
    };
    let report = b
        .build()
        .unwrap()
        .run(|_| Ok(MovingOptimum::new()))
        .unwrap();
    report.best_member().unwrap().score.unwrap()
}

#[test]
fn pbt_beats_random_search_when_the_best_hyperparameter_moves() {
    let mut wins = 0;
    let mut log = Vec::new();
    for seed in 0..4 {
        let pbt = moving_run(seed, true);
        let random = moving_run(seed, false);
        log.push((pbt, random));
        if pbt > random {
            wins += 1;
        }
    }
    let mean = |f: fn(&(f64, f64)) -> f64| log.iter().map(f).sum::<f64>() / log.len() as f64;
    let (pbt, random) = (mean(|x| x.0), mean(|x| x.1));
    println!("PBT vs random search best accuracy per seed: {log:?}");
    assert_eq!(wins, 4, "{log:?}");
    assert!(pbt > random * 1.3, "mean PBT {pbt} vs random {random}");
}

#[test]
fn tournament_pb2_and_async_modes_run_the_whole_budget() {
    for variant in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let b = Pbt::builder(dir.path(), MovingOptimum::space())
            .population(6)
            .workers(3)
            .interval(10)
            .budget_units(6 * 200)
            .seed(5)
            .sync_writes(false);
        let b = match variant {
            0 => b.exploit(Tournament),
            1 => b.explore(Pb2::default()),
            _ => b.mode(Mode::Asynchronous).burn_in(30),
        };
        let report = b
            .build()
            .unwrap()
            .run(|_| Ok(MovingOptimum::new()))
            .unwrap();
        assert!(report.finished);
        assert_eq!(report.intervals_recorded, 6 * 20, "variant {variant}");
        let units: u64 = report.members.iter().map(|m| m.units).sum();
        assert_eq!(units, 6 * 200);
        assert!(
            !report.policy.is_empty(),
            "variant {variant}: no exploit happened"
        );
        if variant == 2 {
            // Burn-in: a member copies only once its model has trained 30 units, i.e. after
            // at least 3 of its own intervals (no earlier copy can have advanced it).
            assert!(
                report.policy.iter().all(|p| p.generation >= 3),
                "{:?}",
                report.policy
            );
        }
        let best = report.best_member().unwrap().score.unwrap();
        assert!(best > 20.0, "variant {variant}: best accuracy {best}");
    }
}
