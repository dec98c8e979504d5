//! Round robin (`rr`): the next available real server after the one picked last.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Ctx, Flow, Scheduler, available, name, unavailable_reason};
use crate::snapshot::Dest;

/// The cursor value that stands for the list head (nothing picked yet).
const HEAD: usize = usize::MAX;

/// Round robin. Like `ip_vs_rr.c`, the cursor starts at the list head (so the first pick is the
/// first available real server) and real servers with weight 0 or overloaded are skipped. The
/// cursor is one atomic word, advanced with compare-and-swap.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// Index of the real server picked last; [`HEAD`] is the list head.
    last: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new() -> Self {
        RoundRobin {
            last: AtomicUsize::new(HEAD),
        }
    }
}

/// The pick after `last`, if any real server is available.
fn next(dests: &[Dest], last: usize) -> Option<usize> {
    let n = dests.len();
    let start = if last == HEAD { 0 } else { last + 1 };
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| available(&dests[i]))
}

impl Scheduler for RoundRobin {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        if dests.is_empty() {
            ctx.note(|| "rr: the service has no real servers".to_owned());
            return None;
        }
        let mut cur = self.last.load(Relaxed);
        loop {
            let Some(pick) = next(dests, cur) else {
                ctx.note(|| "rr: every real server has weight 0 or is overloaded".to_owned());
                return None;
            };
            if ctx.dry_run() {
                ctx.note(|| {
                    let after = if cur == HEAD || cur >= dests.len() {
                        "the list head".to_owned()
                    } else {
                        name(&dests[cur])
                    };
                    let mut skipped = Vec::new();
                    let start = if cur == HEAD { 0 } else { cur + 1 };
                    let mut i = start % dests.len();
                    while i != pick {
                        skipped.push(format!(
                            "{} {}",
                            name(&dests[i]),
                            unavailable_reason(&dests[i])
                        ));
                        i = (i + 1) % dests.len();
                    }
                    let skipped = if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" (skipping {})", skipped.join(", "))
                    };
                    format!("rr: next after {after} is {}{skipped}", name(&dests[pick]))
                });
                return Some(pick);
            }
            match self.last.compare_exchange_weak(cur, pick, Relaxed, Relaxed) {
                Ok(_) => return Some(pick),
                Err(v) => cur = v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn cycles_and_skips_quiescent() {
        let d = dests(&[(1, 0, 0), (0, 0, 0), (3, 0, 0)]);
        let s = RoundRobin::new();
        let f = flow([1, 2, 3, 4], 1);
        let picks: Vec<_> = (0..4).map(|_| pick(&s, &d, &f).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn none_available_is_none() {
        let d = dests(&[(0, 0, 0), (0, 0, 0)]);
        assert_eq!(pick(&RoundRobin::new(), &d, &flow([1, 2, 3, 4], 1)), None);
    }
}
