//! Shortest expected delay (`sed`): the least `(active + 1) / weight`.

use super::wlc::least_weighted;
use super::{Ctx, Flow, Scheduler, name};
use crate::snapshot::Dest;

/// Shortest expected delay, as `ip_vs_sed.c`: the expected delay of a real server is
/// `(active + 1) / weight` (inactive connections do not count); first of equals wins.
#[derive(Debug)]
pub(crate) struct ShortestExpectedDelay;

/// sed's and nq's cost: active connections plus the new one.
pub(crate) fn sed_overhead(d: &Dest) -> u64 {
    u64::from(d.state.active()) + 1
}

impl Scheduler for ShortestExpectedDelay {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let pick = least_weighted(dests, sed_overhead);
        match pick {
            Some(i) => ctx.note(|| {
                let d = &dests[i];
                format!(
                    "sed: {} has the shortest expected delay ({}+1)/{} (first of equals wins)",
                    name(d),
                    d.state.active(),
                    d.weight
                )
            }),
            None => ctx.note(|| "sed: every real server has weight 0 or is overloaded".to_owned()),
        }
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn expected_delay() {
        // (1+1)/1 = 2 vs (2+1)/2 = 1.5: the second. Inactive connections do not count.
        let d = dests(&[(1, 1, 0), (2, 2, 1000)]);
        assert_eq!(
            pick(&ShortestExpectedDelay, &d, &flow([1, 1, 1, 1], 1)),
            Some(1)
        );
        // Idle servers: 1/1 vs 1/3 -> the heavier one, unlike nq which takes the first idle.
        let d = dests(&[(1, 0, 0), (3, 0, 0)]);
        assert_eq!(
            pick(&ShortestExpectedDelay, &d, &flow([1, 1, 1, 1], 1)),
            Some(1)
        );
    }
}
