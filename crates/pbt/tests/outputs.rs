//! Policy log, schedule replay, summary, JSON export, SQL queries, config checks.

use scalarize_pbt::toys::MovingOptimum;
use scalarize_pbt::{BoxError, Hyperparams, Interval, Pbt, PbtError, RunReport, Trainable};

fn run(dir: &std::path::Path, seed: u64) -> (Pbt, RunReport) {
    let pbt = Pbt::builder(dir, MovingOptimum::space())
        .population(6)
        .workers(2)
        .interval(10)
        .budget_units(6 * 10 * 25)
        .seed(seed)
        .sync_writes(false)
        .build()
        .unwrap();
    let report = pbt.run(|_| Ok(MovingOptimum::new())).unwrap();
    (pbt, report)
}

#[test]
fn replaying_the_best_schedule_from_scratch_reproduces_the_best_member() {
    let dir = tempfile::tempdir().unwrap();
    let (_, report) = run(dir.path(), 3);
    let best = report.best_member().unwrap();
    let schedule = &report.best_schedule;
    assert_eq!(schedule[0].step, 0);
    assert!(
        schedule.len() > 1,
        "the best member's lr should change: {schedule:?}"
    );
    assert!(
        schedule
            .windows(2)
            .all(|w| w[0].step < w[1].step && w[0].hp != w[1].hp)
    );
    // Retrain a fresh trainable with the schedule, one unit at a time.
    let mut t = MovingOptimum::new();
    for step in 0..best.step {
        let entry = schedule.iter().rev().find(|e| e.step <= step).unwrap();
        t.set_hyperparameters(&entry.hp).unwrap();
        t.train(&Interval {
            member: 0,
            start_step: step,
            units: 1,
        })
        .unwrap();
    }
    assert_eq!(
        t.evaluate().unwrap().to_bits(),
        best.score.unwrap().to_bits()
    );
}

#[test]
fn policy_log_summary_and_export_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (pbt, report) = run(dir.path(), 4);
    let space = MovingOptimum::space();
    assert!(!report.policy.is_empty());
    for p in &report.policy {
        assert_ne!(p.member, p.source);
        space.check(&p.new_hp).unwrap();
        // Truncation: a bottom member copies a top member.
        assert!(p.source_score.unwrap() >= p.old_score.unwrap(), "{p:?}");
        assert_eq!(p.step, (p.generation + 1) * 10);
    }
    // Per-member logs partition the whole log.
    let store = pbt.store().unwrap();
    // No interval failed: in particular every copied checkpoint was still there to load
    // (pruning never removed one a pending exploit needed).
    let errors: Vec<_> = store
        .intervals(None)
        .unwrap()
        .into_iter()
        .filter_map(|i| i.error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let total: usize = (0..6).map(|m| store.policy(Some(m)).unwrap().len()).sum();
    assert_eq!(total, report.policy.len());
    assert_eq!(
        report.policy_of(1).len(),
        store.policy(Some(1)).unwrap().len()
    );
    // Summary: every member trained 25 intervals; the best has the top score.
    assert!(
        report
            .members
            .iter()
            .all(|m| m.intervals == 25 && m.step == 250)
    );
    let top = report
        .members
        .iter()
        .filter_map(|m| m.score)
        .fold(f64::MIN, f64::max);
    assert_eq!(report.best_member().unwrap().score, Some(top));
    // JSON export round-trips.
    let path = dir.path().join("report.json");
    store.export_json(&path).unwrap();
    let back: RunReport = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back, report);
    // The database answers SQL with JSON functions.
    let conn = rusqlite::Connection::open(dir.path().join("state.sqlite")).unwrap();
    let (n, max_lr): (i64, f64) = conn
        .query_row(
            "SELECT COUNT(*), MAX(json_extract(hparams, '$.lr')) FROM intervals WHERE score IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, 150);
    assert!(max_lr > 0.0 && max_lr <= 0.02);
}

#[test]
fn a_finished_run_is_not_retrained_and_a_changed_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pbt, report) = run(dir.path(), 5);
    let again = pbt
        .run(|_| Err::<MovingOptimum, BoxError>("must not be called".into()))
        .unwrap();
    assert_eq!(again, report);
    let other = Pbt::builder(dir.path(), MovingOptimum::space())
        .population(6)
        .workers(2)
        .interval(10)
        .budget_units(6 * 10 * 25)
        .seed(6)
        .build()
        .unwrap();
    match other.run(|_| Ok(MovingOptimum::new())) {
        Err(PbtError::ConfigMismatch {
            key, stored, given, ..
        }) => {
            assert_eq!(
                (key.as_str(), stored.as_str(), given.as_str()),
                ("seed", "5", "6")
            );
        }
        r => panic!("expected a config mismatch, got {r:?}"),
    }
}

#[test]
fn initial_hyperparameters_and_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let init = vec![
        Hyperparams::new().with("lr", 0.0001),
        Hyperparams::new().with("lr", 0.02),
    ];
    let pbt = Pbt::builder(dir.path(), MovingOptimum::space())
        .population(4)
        .interval(5)
        .budget_units(4 * 5)
        .initial(init.clone())
        .sync_writes(false)
        .build()
        .unwrap();
    let r = pbt.run(|_| Ok(MovingOptimum::new())).unwrap();
    let lrs: Vec<f64> = r.members.iter().map(|m| m.hp.f64("lr").unwrap()).collect();
    assert_eq!(lrs, vec![0.0001, 0.02, 0.0001, 0.02]);
    let bad =
        |b: scalarize_pbt::PbtBuilder| b.build().err().map(|e| e.to_string()).unwrap_or_default();
    let b = || Pbt::builder(dir.path(), MovingOptimum::space());
    assert!(bad(b().population(0)).contains("population"));
    assert!(bad(b().interval(0)).contains("interval"));
    assert!(bad(b().population(4).interval(5).budget_units(10)).contains("budget_units"));
    assert!(bad(b().initial(vec![Hyperparams::new().with("lr", 1.0)])).contains("lr"));
}

#[test]
fn custom_explore_functions_drive_the_run_and_are_checked() {
    use scalarize_pbt::FnExplore;
    // Halve the copied lr (down to the bound): a hand-written schedule policy.
    let halve = FnExplore::new("halve", |ctx, hp, _rng| {
        let lr = hp.f64("lr").ok_or("no lr")?;
        assert!(ctx.member != ctx.source);
        Ok(hp.clone().with("lr", (lr / 2.0).max(1e-4)))
    });
    let dir = tempfile::tempdir().unwrap();
    let r = Pbt::builder(dir.path(), MovingOptimum::space())
        .population(4)
        .interval(10)
        .budget_units(4 * 10 * 5)
        .explore(halve)
        .sync_writes(false)
        .build()
        .unwrap()
        .run(|_| Ok(MovingOptimum::new()))
        .unwrap();
    assert!(!r.policy.is_empty());
    for p in &r.policy {
        // Every lr started at most 0.02 and only ever halves.
        let new = p.new_hp.f64("lr").unwrap();
        assert!((1e-4..=0.01).contains(&new), "{p:?}");
    }
    // An explore that leaves the search space stops the run with a clear error.
    let out = FnExplore::new("out", |_, hp, _| Ok(hp.clone().with("lr", 5.0)));
    let dir = tempfile::tempdir().unwrap();
    let err = Pbt::builder(dir.path(), MovingOptimum::space())
        .population(4)
        .interval(10)
        .budget_units(4 * 10 * 3)
        .explore(out)
        .sync_writes(false)
        .build()
        .unwrap()
        .run(|_| Ok(MovingOptimum::new()))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("custom(out)") && msg.contains("lr"), "{msg}");
}

#[test]
fn reloading_before_every_interval_changes_nothing_for_a_checkpointed_trainable() {
    let results: Vec<RunReport> = [false, true]
        .into_iter()
        .map(|reload| {
            let dir = tempfile::tempdir().unwrap();
            Pbt::builder(dir.path(), MovingOptimum::space())
                .population(5)
                .workers(2)
                .interval(7)
                .budget_units(5 * 7 * 6)
                .always_reload(reload)
                .sync_writes(false)
                .build()
                .unwrap()
                .run(|_| Ok(MovingOptimum::new()))
                .unwrap()
        })
        .collect();
    assert_eq!(results[0].members, results[1].members);
    assert_eq!(results[0].best_schedule, results[1].best_schedule);
}
