//! Weighted round robin (`wrr`): round robin in passes of a descending current weight.

use std::sync::Mutex;

use super::{Flow, Scheduler, lock};
use crate::snapshot::Dest;

/// The cursor of `ip_vs_wrr.c`: current position, current weight, gcd and start weight.
#[derive(Debug)]
struct Mark {
    /// Index of the real server picked last; `None` is the list head.
    cl: Option<usize>,
    /// Current weight: a pass picks real servers whose weight is at least this.
    cw: i64,
    /// Maximum weight, less (gcd - 1).
    mw: i64,
    /// Gcd of the non-zero weights (1 when there are none): the step of `cw`.
    di: i64,
}

/// Weighted round robin. Each pass walks the real servers in order and picks those whose weight
/// is at least the current weight; between passes the current weight drops by the gcd of the
/// weights and wraps to the maximum. Weights 3:1 give A A A B, repeated.
#[derive(Debug)]
pub(crate) struct WeightedRoundRobin {
    mark: Mutex<Mark>,
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
            mark: Mutex::new(Mark {
                cl: None,
                cw: mw,
                mw,
                di,
            }),
        }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn schedule(&self, dests: &[Dest], _flow: &Flow) -> Option<usize> {
        let mut m = lock(&self.mark);
        if m.mw == 0 || dests.is_empty() {
            return None;
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
                if !d.state.is_overloaded() && i64::from(d.weight) >= m.cw {
                    m.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    m.cl = Some(i);
                    return None;
                }
            }
            pos = None;
            m.cw -= m.di;
            if m.cw <= 0 {
                m.cw = m.mw;
                if last_pass || last.is_none() {
                    m.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = m.cw <= m.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}
