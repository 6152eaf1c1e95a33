//! One member's exploit/explore decision, shared by both schedules.

use crate::error::{PbtError, Result};
use crate::exploit::{Candidate, Exploit};
use crate::explore::{Explore, ExploreContext, Observation};
use crate::report::{IntervalEntry, MemberSummary};
use crate::rng::PbtRng;
use crate::space::SearchSpace;
use crate::value::Hyperparams;

/// The outcome of a decision that changes the member.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The member copied (weights, optimizer state, step and hyperparameters).
    pub source: usize,
    /// The explored hyperparameters for the next interval.
    pub new_hp: Hyperparams,
}

/// Everything a decision reads.
pub struct DecisionInput<'a> {
    /// Current member states, in member order.
    pub members: &'a [MemberSummary],
    /// The same members as exploit candidates (see [`candidates`]).
    pub candidates: &'a [Candidate],
    /// The search space.
    pub space: &'a SearchSpace,
    /// The exploit strategy.
    pub exploit: &'a dyn Exploit,
    /// The explore strategy.
    pub explore: &'a dyn Explore,
    /// Completed intervals (only filled when the explore strategy needs them).
    pub history: &'a [Observation],
    /// Units before a live member may be exploited.
    pub burn_in: u64,
    /// Units until the next decision.
    pub interval: u64,
}

/// Exploit candidates from member states.
pub fn candidates(members: &[MemberSummary]) -> Vec<Candidate> {
    members
        .iter()
        .map(|m| Candidate {
            member: m.member,
            score: if m.failed { None } else { m.score },
            failed: m.failed,
            has_checkpoint: m.checkpoint.is_some(),
        })
        .collect()
}

/// PB2 observations from the interval history (intervals with a start and an end score).
pub fn observations(intervals: &[IntervalEntry]) -> Vec<Observation> {
    intervals
        .iter()
        .filter_map(|i| match (i.score, i.start_score) {
            (Some(s), Some(s0)) => Some(Observation {
                member: i.member,
                step_end: i.step_end,
                hp: i.hp.clone(),
                reward_change: s - s0,
            }),
            _ => None,
        })
        .collect()
}

/// Decides for `member`: `None` keeps its state; otherwise it copies `source` and explores.
/// Live members inside the burn-in period are left alone; failed ones are always replaced
/// when any member can be copied.
pub fn decide(
    input: &DecisionInput<'_>,
    member: usize,
    rng: &mut PbtRng,
) -> Result<Option<Decision>> {
    let Some(me) = input.members.get(member) else {
        return Ok(None);
    };
    if !me.failed && me.step < input.burn_in {
        return Ok(None);
    }
    let Some(source) = input.exploit.select(member, input.candidates, rng) else {
        return Ok(None);
    };
    let Some(src) = input.members.get(source).filter(|_| source != member) else {
        return Err(PbtError::Explore {
            strategy: input.exploit.name(),
            message: format!(
                "exploit chose member {source} for member {member}, which it cannot copy"
            ),
        });
    };
    let ctx = ExploreContext {
        space: input.space,
        member,
        source,
        step: src.step,
        interval: input.interval,
        history: input.history,
    };
    let new_hp = input
        .explore
        .explore(&ctx, &src.hp, rng)
        .map_err(|e| PbtError::Explore {
            strategy: input.explore.name(),
            message: e.to_string(),
        })?;
    input.space.check(&new_hp).map_err(|e| PbtError::Explore {
        strategy: input.explore.name(),
        message: format!("produced hyperparameters outside the search space: {e}"),
    })?;
    Ok(Some(Decision { source, new_hp }))
}
