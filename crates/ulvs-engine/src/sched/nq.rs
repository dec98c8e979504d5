//! Never queue (`nq`): an idle real server if there is one, else shortest expected delay.

use super::sed::sed_overhead;
use super::{Ctx, Flow, Scheduler, available, name};
use crate::snapshot::Dest;

/// Never queue, as `ip_vs_nq.c`: the first available real server with no active connection
/// wins at once; otherwise the least `(active + 1) / weight`, first of equals.
#[derive(Debug)]
pub(crate) struct NeverQueue;

impl Scheduler for NeverQueue {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let mut least: Option<(usize, u128)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !available(d) {
                continue;
            }
            let doh = u128::from(sed_overhead(d));
            if d.state.active() == 0 {
                ctx.note(|| format!("nq: {} is idle (no active connection)", name(d)));
                return Some(i);
            }
            let better = match least {
                None => true,
                Some((l, loh)) => loh * u128::from(d.weight) > doh * u128::from(dests[l].weight),
            };
            if better {
                least = Some((i, doh));
            }
        }
        match least {
            Some((i, _)) => ctx.note(|| {
                let d = &dests[i];
                format!(
                    "nq: no idle server; {} has the shortest expected delay ({}+1)/{}",
                    name(d),
                    d.state.active(),
                    d.weight
                )
            }),
            None => ctx.note(|| "nq: every real server has weight 0 or is overloaded".to_owned()),
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn idle_first_then_sed() {
        let d = dests(&[(5, 3, 0), (1, 0, 9), (9, 0, 0)]);
        assert_eq!(pick(&NeverQueue, &d, &flow([1, 1, 1, 1], 1)), Some(1));
        let d = dests(&[(1, 1, 0), (2, 2, 0)]);
        assert_eq!(pick(&NeverQueue, &d, &flow([1, 1, 1, 1], 1)), Some(1));
        let d = dests(&[(0, 0, 0), (1, 2, 0)]);
        assert_eq!(pick(&NeverQueue, &d, &flow([1, 1, 1, 1], 1)), Some(1));
    }
}
