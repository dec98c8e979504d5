//! Least connections (`lc`): the available real server with the smallest connection overhead.

use super::{Flow, Scheduler, available};
use crate::snapshot::Dest;

/// Least connections. Like `ip_vs_lc.c`: overhead is `active * 256 + inactive`, real servers
/// with weight 0 or overloaded are skipped, and the first of equals wins.
#[derive(Debug)]
pub(crate) struct LeastConn;

impl Scheduler for LeastConn {
    fn schedule(&self, dests: &[Dest], _flow: &Flow) -> Option<usize> {
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
        least.map(|(i, _)| i)
    }
}
