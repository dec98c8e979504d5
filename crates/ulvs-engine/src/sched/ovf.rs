//! Weighted overflow (`ovf`): the highest-weight server until its active connections exceed its
//! weight, then the next.

use super::{Ctx, Flow, Scheduler, name};
use crate::snapshot::Dest;

/// Overflow, as `ip_vs_ovf.c`: among real servers with weight > 0, not overloaded and with no
/// more active connections than their weight, the one with the highest weight (first of
/// equals).
#[derive(Debug)]
pub(crate) struct Overflow;

impl Scheduler for Overflow {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.weight == 0 || d.state.is_overloaded() || d.state.active() > d.weight {
                continue;
            }
            if best.is_none_or(|b| d.weight > dests[b].weight) {
                best = Some(i);
            }
        }
        match best {
            Some(i) => ctx.note(|| {
                let d = &dests[i];
                format!(
                    "ovf: {} has the highest weight ({}) among servers whose active connections ({}) do not exceed their weight",
                    name(d),
                    d.weight,
                    d.state.active()
                )
            }),
            None => ctx.note(|| {
                "ovf: every real server has weight 0, is overloaded or has more active connections than its weight".to_owned()
            }),
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn overflows_past_weight() {
        // Active 3 <= weight 3: still the top server.
        let d = dests(&[(1, 0, 0), (3, 3, 0)]);
        assert_eq!(pick(&Overflow, &d, &flow([1, 1, 1, 1], 1)), Some(1));
        // Active 4 > weight 3: overflow to the next.
        let d = dests(&[(1, 0, 0), (3, 4, 0)]);
        assert_eq!(pick(&Overflow, &d, &flow([1, 1, 1, 1], 1)), Some(0));
        let d = dests(&[(1, 2, 0), (3, 4, 0)]);
        assert_eq!(pick(&Overflow, &d, &flow([1, 1, 1, 1], 1)), None);
    }
}
