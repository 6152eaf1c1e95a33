//! A failing member is replaced by exploit; the run stops only when every member fails.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::{Fault, Faulty};
use scalarize_pbt::toys::MovingOptimum;
use scalarize_pbt::{BoxError, Mode, Pbt, PbtError};

fn run(fault: Fault, mode: Mode, burn_in: u64) -> scalarize_pbt::RunReport {
    let fired = Arc::new(AtomicBool::new(false));
    let dir = tempfile::tempdir().unwrap();
    Pbt::builder(dir.path(), MovingOptimum::space())
        .population(4)
        .workers(2)
        .interval(5)
        .budget_units(4 * 5 * 6)
        .burn_in(burn_in)
        .mode(mode)
        .seed(11)
        .sync_writes(false)
        .build()
        .unwrap()
        .run(|m| Ok(Faulty::new(MovingOptimum::new(), m, 2, 10, fault, &fired)))
        .unwrap()
}

#[test]
fn failing_member_is_replaced_and_the_run_finishes() {
    for fault in [Fault::Error, Fault::NaN, Fault::Panic] {
        for mode in [Mode::Synchronous, Mode::Asynchronous] {
            // A burn-in longer than the run: only the failed member may be replaced.
            let report = run(fault, mode, 1000);
            assert!(report.finished);
            assert_eq!(report.intervals_recorded, 24, "{fault:?} {mode:?}");
            // Burn-in is longer than the run: the only copy replaces the failed member.
            assert_eq!(
                report.policy.len(),
                1,
                "{fault:?} {mode:?}: {:?}",
                report.policy
            );
            let p = &report.policy[0];
            assert_eq!(p.member, 2);
            assert_ne!(p.source, 2);
            assert_eq!(p.old_score, None, "the failed member had no score");
            let m2 = &report.members[2];
            assert!(!m2.failed && m2.score.is_some() && m2.parent == Some(p.source));
            assert!(report.members.iter().all(|m| m.units == 30));
            assert_eq!(p.generation, if mode == Mode::Synchronous { 2 } else { 3 });
        }
    }
}

#[test]
fn failure_reason_is_recorded_in_the_interval_history() {
    for (fault, text) in [
        (Fault::Error, "injected failure"),
        (Fault::NaN, "non-finite"),
        (Fault::Panic, "injected panic"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pbt = Pbt::builder(dir.path(), MovingOptimum::space())
            .population(3)
            .interval(5)
            .budget_units(3 * 5 * 4)
            .seed(3)
            .sync_writes(false)
            .build()
            .unwrap();
        let fired = Arc::new(AtomicBool::new(false));
        pbt.run(|m| Ok(Faulty::new(MovingOptimum::new(), m, 2, 10, fault, &fired)))
            .unwrap();
        let failed: Vec<_> = pbt
            .store()
            .unwrap()
            .intervals(Some(2))
            .unwrap()
            .into_iter()
            .filter(|i| i.error.is_some())
            .collect();
        assert_eq!(failed.len(), 1, "{fault:?}");
        assert_eq!(failed[0].step_start, 10);
        assert_eq!(failed[0].score, None);
        assert!(
            failed[0].error.as_deref().unwrap().contains(text),
            "{:?}",
            failed[0].error
        );
    }
}

#[test]
fn the_run_stops_when_every_member_fails() {
    for mode in [Mode::Synchronous, Mode::Asynchronous] {
        let dir = tempfile::tempdir().unwrap();
        let err = Pbt::builder(dir.path(), MovingOptimum::space())
            .population(3)
            .interval(5)
            .budget_units(60)
            .mode(mode)
            .sync_writes(false)
            .build()
            .unwrap()
            .run(|_| Err::<MovingOptimum, BoxError>("no device".into()))
            .unwrap_err();
        match err {
            PbtError::AllMembersFailed { last_error } => {
                assert!(last_error.contains("no device"), "{last_error}")
            }
            other => panic!("{mode:?}: unexpected {other}"),
        }
    }
}
