//! Weighted least connections (`wlc`, the default): smallest overhead per unit of weight.

use super::{Flow, Scheduler, available};
use crate::snapshot::Dest;

/// Weighted least connections. Like `ip_vs_wlc.c`: start from the first available real server,
/// then a later one replaces the current pick when `pick_overhead * weight > overhead *
/// pick_weight` (strictly, so the first of equals wins). Overhead is `active * 256 + inactive`.
#[derive(Debug)]
pub(crate) struct WeightedLeastConn;

impl Scheduler for WeightedLeastConn {
    fn schedule(&self, dests: &[Dest], _flow: &Flow) -> Option<usize> {
        let first = dests.iter().position(available)?;
        let mut least = first;
        let mut loh = u128::from(dests[first].state.overhead());
        for (i, d) in dests.iter().enumerate().skip(first + 1) {
            if d.state.is_overloaded() {
                continue;
            }
            // Weight 0 never wins: loh * 0 > doh * w is false.
            let doh = u128::from(d.state.overhead());
            if loh * u128::from(d.weight) > doh * u128::from(dests[least].weight) {
                least = i;
                loh = doh;
            }
        }
        Some(least)
    }
}
