//! Weighted round robin (`wrr`): round robin in passes of a descending current weight.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Ctx, Flow, Scheduler, name};
use crate::snapshot::Dest;

/// Weighted round robin, as `ip_vs_wrr.c`. Each pass walks the real servers in order and picks
/// those whose weight is at least the current weight; between passes the current weight drops
/// by the gcd of the weights and wraps to the maximum. Weights 3:1 give A A A B, repeated.
///
/// The cursor (last position and current weight) is one atomic word advanced with
/// compare-and-swap; the maximum weight and gcd are fixed per snapshot.
#[derive(Debug)]
pub(crate) struct WeightedRoundRobin {
    /// Packed [`Mark`].
    mark: AtomicU64,
    /// Maximum weight, less (gcd - 1).
    mw: i64,
    /// Gcd of the non-zero weights (1 when there are none): the step of `cw`.
    di: i64,
}

/// The cursor: the position picked last (`None` = list head) and the current weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    cl: Option<usize>,
    cw: i64,
}

impl Mark {
    fn pack(self) -> u64 {
        let cl = self.cl.map_or(u32::MAX, |i| i as u32);
        (u64::from(cl) << 32) | u64::from(self.cw as i32 as u32)
    }

    fn unpack(v: u64) -> Mark {
        let cl = (v >> 32) as u32;
        Mark {
            cl: (cl != u32::MAX).then_some(cl as usize),
            cw: i64::from(v as u32 as i32),
        }
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl WeightedRoundRobin {
    pub(crate) fn new(dests: &[Dest]) -> Self {
        let di = dests
            .iter()
            .map(|d| i64::from(d.weight))
            .filter(|&w| w > 0)
            .reduce(gcd)
            .unwrap_or(1);
        let max = dests.iter().map(|d| i64::from(d.weight)).max().unwrap_or(0);
        let mw = if max == 0 { 0 } else { max - (di - 1) };
        WeightedRoundRobin {
            mark: AtomicU64::new(Mark { cl: None, cw: mw }.pack()),
            mw,
            di,
        }
    }

    /// The pick after `m` and the cursor after it; a pure function of the cursor.
    fn step(&self, dests: &[Dest], m: Mark) -> (Option<usize>, Mark) {
        let mut m = m;
        if self.mw == 0 || dests.is_empty() {
            return (None, m);
        }
        let last = m.cl;
        let mut pos = m.cl;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        // Terminates: without a pick, cw falls to <= 0 within mw / di passes, wraps, and the
        // second wrap (or reaching `stop`) ends the search.
        loop {
            let start = pos.map_or(0, |i| i + 1);
            for (i, d) in dests.iter().enumerate().skip(start) {
                if !d.state.is_overloaded() && d.weight > 0 && i64::from(d.weight) >= m.cw {
                    m.cl = Some(i);
                    return (Some(i), m);
                }
                if stop == Some(i) {
                    m.cl = Some(i);
                    return (None, m);
                }
            }
            pos = None;
            m.cw -= self.di;
            if m.cw <= 0 {
                m.cw = self.mw;
                if last_pass || last.is_none() {
                    m.cl = None;
                    return (None, m);
                }
                restarted = true;
            }
            last_pass = m.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let mut cur = self.mark.load(Relaxed);
        loop {
            let m = Mark::unpack(cur);
            let (pick, next) = self.step(dests, m);
            if ctx.dry_run() {
                ctx.note(|| match pick {
                    Some(i) => format!(
                        "wrr: current weight {} (max {}, step {}); next real server with weight >= {} is {} (weight {})",
                        m.cw,
                        self.mw,
                        self.di,
                        next.cw,
                        name(&dests[i]),
                        dests[i].weight
                    ),
                    None => "wrr: every real server has weight 0 or is overloaded".to_owned(),
                });
                return pick;
            }
            match self
                .mark
                .compare_exchange_weak(cur, next.pack(), Relaxed, Relaxed)
            {
                Ok(_) => return pick,
                Err(v) => cur = v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    fn seq(w: &[u32], n: usize) -> Vec<usize> {
        let spec: Vec<_> = w.iter().map(|&w| (w, 0, 0)).collect();
        let d = dests(&spec);
        let s = WeightedRoundRobin::new(&d);
        (0..n)
            .map(|_| pick(&s, &d, &flow([1, 1, 1, 1], 1)).unwrap())
            .collect()
    }

    #[test]
    fn kernel_sequences() {
        // Hand-worked from ip_vs_wrr.c: mw = 4, di = 1; cw 4: a; 3: a b; 2: a b c; 1: a b c.
        assert_eq!(seq(&[4, 3, 2], 9), vec![0, 0, 1, 0, 1, 2, 0, 1, 2]);
        // 3:1 -> a a a b.
        assert_eq!(seq(&[3, 1], 8), vec![0, 0, 0, 1, 0, 0, 0, 1]);
        // 4:2:0 has gcd 2: behaves as 2:1.
        assert_eq!(seq(&[4, 2, 0], 6), vec![0, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn mark_round_trips() {
        for m in [
            Mark { cl: None, cw: 7 },
            Mark {
                cl: Some(999),
                cw: -3,
            },
        ] {
            assert_eq!(Mark::unpack(m.pack()), m);
        }
    }
}
