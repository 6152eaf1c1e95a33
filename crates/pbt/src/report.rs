//! What a run leaves behind: member states, interval history, policy log, the best member's
//! hyperparameter schedule, and a JSON export of all of it.

use serde::{Deserialize, Serialize};

use crate::value::Hyperparams;

/// The current state of one member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberSummary {
    /// Member index.
    pub member: usize,
    /// Model step of its state (copied from the source on exploit).
    pub step: u64,
    /// Units this member slot trained.
    pub units: u64,
    /// Intervals this member slot completed (the generation, in synchronous mode).
    pub intervals: u64,
    /// Hyperparameters for its next interval (or the last, when the run is over).
    pub hp: Hyperparams,
    /// Checkpoint of its state, relative to the run folder.
    pub checkpoint: Option<String>,
    /// Latest score; `None` if it has none or failed.
    pub score: Option<f64>,
    /// Score of the state its next interval starts from (for PB2's reward change).
    pub start_score: Option<f64>,
    /// Whether its latest interval failed.
    pub failed: bool,
    /// The failure message, if failed.
    pub error: Option<String>,
    /// The member it last copied.
    pub parent: Option<usize>,
}

/// One completed (or failed) interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalEntry {
    /// Global order of events in the run.
    pub seq: u64,
    /// Member index.
    pub member: usize,
    /// Generation (synchronous) or the member's interval index (asynchronous).
    pub generation: u64,
    /// Model step before the interval.
    pub step_start: u64,
    /// Model step after it.
    pub step_end: u64,
    /// Hyperparameters used (as the trainable reported them).
    pub hp: Hyperparams,
    /// Score after the interval; `None` if it failed.
    pub score: Option<f64>,
    /// Score of the state it started from.
    pub start_score: Option<f64>,
    /// Failure message, if it failed.
    pub error: Option<String>,
    /// Checkpoint written, relative to the run folder (pruned later unless still in use).
    pub checkpoint: Option<String>,
}

/// One exploit/explore decision: `member` copied `source` and changed hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyEntry {
    /// Global order of events in the run.
    pub seq: u64,
    /// The member that changed.
    pub member: usize,
    /// Generation (synchronous) or the member's interval count (asynchronous).
    pub generation: u64,
    /// Model step of the copied state (the step from which `new_hp` applies).
    pub step: u64,
    /// The member copied.
    pub source: usize,
    /// Score of the member copied.
    pub source_score: Option<f64>,
    /// Score the member had (`None` if it failed).
    pub old_score: Option<f64>,
    /// Hyperparameters before.
    pub old_hp: Hyperparams,
    /// Hyperparameters after exploring.
    pub new_hp: Hyperparams,
}

/// From `step` on, train with `hp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    /// Model step at which these hyperparameters start.
    pub step: u64,
    /// The hyperparameters.
    pub hp: Hyperparams,
}

/// Everything about a run, as returned by [`crate::Pbt::run`] and exported as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Whether the budget is spent.
    pub finished: bool,
    /// Current state of every member.
    pub members: Vec<MemberSummary>,
    /// The member with the best latest score.
    pub best: Option<usize>,
    /// The best member's hyperparameter schedule along its lineage, to retrain from scratch.
    pub best_schedule: Vec<ScheduleEntry>,
    /// Every exploit/explore decision, in order.
    pub policy: Vec<PolicyEntry>,
    /// Number of intervals recorded (completed or failed).
    pub intervals_recorded: u64,
}

impl RunReport {
    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The best member's state, if any.
    pub fn best_member(&self) -> Option<&MemberSummary> {
        self.best.and_then(|b| self.members.get(b))
    }

    /// A plain-text table of the population, best first.
    pub fn summary_table(&self) -> String {
        let mut rows: Vec<&MemberSummary> = self.members.iter().collect();
        rows.sort_by(|a, b| {
            let key = |m: &MemberSummary| m.score.unwrap_or(f64::NEG_INFINITY);
            key(b).total_cmp(&key(a)).then(a.member.cmp(&b.member))
        });
        let mut out = String::from("member  step  score         parent  status  hyperparameters\n");
        for m in rows {
            let score = m.score.map_or("-".to_string(), |s| format!("{s:.6}"));
            let parent = m.parent.map_or("-".to_string(), |p| p.to_string());
            let status = if m.failed { "failed" } else { "ok" };
            out.push_str(&format!(
                "{:>6}  {:>4}  {:<12}  {:>6}  {:<6}  {}\n",
                m.member, m.step, score, parent, status, m.hp
            ));
        }
        out
    }

    /// The policy log of one member.
    pub fn policy_of(&self, member: usize) -> Vec<&PolicyEntry> {
        self.policy.iter().filter(|p| p.member == member).collect()
    }
}

/// The member with the highest score (ties: lowest index); `None` if none has a score.
pub fn best_member(members: &[MemberSummary]) -> Option<usize> {
    members
        .iter()
        .filter(|m| !m.failed)
        .filter_map(|m| m.score.map(|s| (m.member, s)))
        .fold(None, |best: Option<(usize, f64)>, (m, s)| match best {
            Some((_, bs)) if bs >= s => best,
            _ => Some((m, s)),
        })
        .map(|(m, _)| m)
}

/// The hyperparameter schedule that produced `member`'s current state: its intervals, and
/// before each exploit the copied member's intervals up to the copy, merged so that each
/// entry starts where the hyperparameters change.
pub fn schedule(
    member: usize,
    intervals: &[IntervalEntry],
    policy: &[PolicyEntry],
) -> Vec<ScheduleEntry> {
    let mut cur = member;
    let mut before = u64::MAX;
    let mut rev: Vec<ScheduleEntry> = Vec::new();
    loop {
        // The latest event of `cur` before `before`: an interval it trained or a copy.
        let last_interval = intervals
            .iter()
            .filter(|i| i.member == cur && i.seq < before && i.score.is_some())
            .max_by_key(|i| i.seq);
        let last_copy = policy
            .iter()
            .filter(|p| p.member == cur && p.seq < before)
            .max_by_key(|p| p.seq);
        match (last_interval, last_copy) {
            (Some(i), c) if c.is_none_or(|c| c.seq < i.seq) => {
                rev.push(ScheduleEntry {
                    step: i.step_start,
                    hp: i.hp.clone(),
                });
                before = i.seq;
            }
            (_, Some(c)) => {
                cur = c.source;
                before = c.seq;
            }
            _ => break,
        }
    }
    rev.reverse();
    let mut out: Vec<ScheduleEntry> = Vec::new();
    for e in rev {
        if out.last().is_none_or(|l| l.hp != e.hp) {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(seq: u64, member: usize, s0: u64, lr: f64) -> IntervalEntry {
        IntervalEntry {
            seq,
            member,
            generation: s0 / 10,
            step_start: s0,
            step_end: s0 + 10,
            hp: Hyperparams::new().with("lr", lr),
            score: Some(1.0),
            start_score: None,
            error: None,
            checkpoint: None,
        }
    }

    #[test]
    fn schedule_follows_the_lineage_through_copies() {
        // Member 1 trains 0..20 with 0.1, copies member 0 at step 20 (member 0 had 0.5, then
        // 0.6 from step 10), then trains with 0.7. Member 0's interval after the copy and
        // member 1's own early intervals are not in the lineage.
        let intervals = vec![
            iv(1, 0, 0, 0.5),
            iv(2, 1, 0, 0.1),
            iv(3, 0, 10, 0.6),
            iv(4, 1, 10, 0.1),
            iv(6, 1, 20, 0.7),
            iv(7, 0, 20, 0.9),
        ];
        let policy = vec![PolicyEntry {
            seq: 5,
            member: 1,
            generation: 2,
            step: 20,
            source: 0,
            source_score: Some(2.0),
            old_score: Some(1.0),
            old_hp: Hyperparams::new().with("lr", 0.1),
            new_hp: Hyperparams::new().with("lr", 0.7),
        }];
        let s = schedule(1, &intervals, &policy);
        let got: Vec<(u64, f64)> = s
            .iter()
            .map(|e| (e.step, e.hp.f64("lr").unwrap()))
            .collect();
        assert_eq!(got, vec![(0, 0.5), (10, 0.6), (20, 0.7)]);
        let s0 = schedule(0, &intervals, &policy);
        let got0: Vec<(u64, f64)> = s0
            .iter()
            .map(|e| (e.step, e.hp.f64("lr").unwrap()))
            .collect();
        assert_eq!(got0, vec![(0, 0.5), (10, 0.6), (20, 0.9)]);
    }

    #[test]
    fn best_member_ignores_failed_and_breaks_ties_by_index() {
        let m = |member, score: Option<f64>, failed| MemberSummary {
            member,
            step: 0,
            units: 0,
            intervals: 0,
            hp: Hyperparams::new(),
            checkpoint: None,
            score,
            start_score: None,
            failed,
            error: None,
            parent: None,
        };
        let report = RunReport {
            finished: true,
            members: vec![
                m(0, Some(1.0), false),
                m(1, None, true),
                m(2, Some(2.5), false),
            ],
            best: Some(2),
            best_schedule: vec![],
            policy: vec![],
            intervals_recorded: 0,
        };
        let table = report.summary_table();
        let order: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(order, vec!["2", "0", "1"], "{table}");
        assert!(table.contains("failed"));
        let ms = vec![
            m(0, Some(1.0), false),
            m(1, Some(3.0), false),
            m(2, Some(3.0), false),
            m(3, None, true),
        ];
        assert_eq!(best_member(&ms), Some(1));
        assert_eq!(best_member(&[m(0, None, true)]), None);
    }
}
