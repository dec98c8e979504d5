//! Weighted least connections (`wlc`, the default): smallest overhead per unit of weight.

use super::{Ctx, Flow, Scheduler, available, name};
use crate::snapshot::Dest;

/// Weighted least connections. Like `ip_vs_wlc.c`: start from the first available real server,
/// then a later one replaces the current pick when `pick_overhead * weight > overhead *
/// pick_weight` (strictly, so the first of equals wins). Overhead is `active * 256 + inactive`.
#[derive(Debug)]
pub(crate) struct WeightedLeastConn;

impl Scheduler for WeightedLeastConn {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let Some(i) = least_weighted(dests, |d| d.state.overhead()) else {
            ctx.note(|| "wlc: every real server has weight 0 or is overloaded".to_owned());
            return None;
        };
        ctx.note(|| {
            let d = &dests[i];
            format!(
                "wlc: {} has the least overhead/weight ({}*256+{})/{} (first of equals wins)",
                name(d),
                d.state.active(),
                d.state.inactive(),
                d.weight
            )
        });
        Some(i)
    }
}

/// The available real server with the least `cost / weight`, comparing `cost_a * weight_b >
/// cost_b * weight_a` strictly in list order as wlc, sed and the lblc family do.
pub(crate) fn least_weighted(dests: &[Dest], cost: impl Fn(&Dest) -> u64) -> Option<usize> {
    least_weighted_among(dests, 0..dests.len(), cost)
}

/// [`least_weighted`] over the indices `among`, in that order.
pub(crate) fn least_weighted_among(
    dests: &[Dest],
    among: impl IntoIterator<Item = usize>,
    cost: impl Fn(&Dest) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u128)> = None;
    for i in among {
        let d = &dests[i];
        if !available(d) {
            continue;
        }
        let doh = u128::from(cost(d));
        match least {
            None => least = Some((i, doh)),
            Some((l, loh)) => {
                if loh * u128::from(d.weight) > doh * u128::from(dests[l].weight) {
                    least = Some((i, doh));
                }
            }
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn divides_by_weight() {
        // overheads 512/2 = 256 vs 300/1: the first wins.
        let d = dests(&[(2, 2, 0), (1, 1, 44)]);
        assert_eq!(
            pick(&WeightedLeastConn, &d, &flow([1, 1, 1, 1], 1)),
            Some(0)
        );
        // 512/2 = 256 vs 255/1: the second.
        let d = dests(&[(2, 2, 0), (1, 0, 255)]);
        assert_eq!(
            pick(&WeightedLeastConn, &d, &flow([1, 1, 1, 1], 1)),
            Some(1)
        );
    }

    #[test]
    fn first_of_equals_and_skips_zero_weight() {
        let d = dests(&[(0, 0, 0), (1, 0, 1), (2, 0, 2)]);
        assert_eq!(
            pick(&WeightedLeastConn, &d, &flow([1, 1, 1, 1], 1)),
            Some(1)
        );
    }
}
