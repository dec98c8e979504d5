//! Weighted failover (`fo`): the available real server with the highest weight.

use super::{Ctx, Flow, Scheduler, available, name};
use crate::snapshot::Dest;

/// Weighted failover, as `ip_vs_fo.c`: the available (weight > 0, not overloaded) real server
/// with the highest weight; the first of equals wins.
#[derive(Debug)]
pub(crate) struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, d) in dests.iter().enumerate() {
            if available(d) && best.is_none_or(|b| d.weight > dests[b].weight) {
                best = Some(i);
            }
        }
        match best {
            Some(i) => ctx.note(|| {
                format!(
                    "fo: {} has the highest weight ({}) among available servers",
                    name(&dests[i]),
                    dests[i].weight
                )
            }),
            None => ctx.note(|| "fo: every real server has weight 0 or is overloaded".to_owned()),
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn highest_weight_first_of_equals() {
        let d = dests(&[(2, 100, 0), (5, 9, 0), (5, 0, 0)]);
        assert_eq!(pick(&WeightedFailover, &d, &flow([1, 1, 1, 1], 1)), Some(1));
        d[1].state.set_thresholds(1, 0);
        d[1].state.bind(false);
        assert_eq!(pick(&WeightedFailover, &d, &flow([1, 1, 1, 1], 1)), Some(2));
    }
}
