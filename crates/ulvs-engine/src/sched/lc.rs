//! Least connections (`lc`): the available real server with the smallest connection overhead.

use super::{Ctx, Flow, Scheduler, available, name};
use crate::snapshot::Dest;

/// Least connections. Like `ip_vs_lc.c`: overhead is `active * 256 + inactive`, real servers
/// with weight 0 or overloaded are skipped, and the first of equals wins.
#[derive(Debug)]
pub(crate) struct LeastConn;

impl Scheduler for LeastConn {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !available(d) {
                continue;
            }
            let oh = d.state.overhead();
            if least.is_none_or(|(_, l)| oh < l) {
                least = Some((i, oh));
            }
        }
        match least {
            Some((i, oh)) => ctx.note(|| {
                let d = &dests[i];
                format!(
                    "lc: {} has the least overhead {}*256+{}={oh} (first of equals wins)",
                    name(d),
                    d.state.active(),
                    d.state.inactive()
                )
            }),
            None => ctx.note(|| "lc: every real server has weight 0 or is overloaded".to_owned()),
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn active_weighs_256_inactive() {
        // 1*256 = 256 > 255 inactive.
        let d = dests(&[(1, 1, 0), (1, 0, 255), (1, 0, 256)]);
        assert_eq!(pick(&LeastConn, &d, &flow([1, 1, 1, 1], 1)), Some(1));
    }

    #[test]
    fn ignores_weight_except_zero() {
        let d = dests(&[(0, 0, 0), (100, 0, 2), (1, 0, 1)]);
        assert_eq!(pick(&LeastConn, &d, &flow([1, 1, 1, 1], 1)), Some(2));
    }
}
