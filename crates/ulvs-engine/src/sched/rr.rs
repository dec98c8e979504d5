//! Round robin (`rr`): the next available real server after the one picked last.

use std::sync::Mutex;

use super::{Flow, Scheduler, available, lock};
use crate::snapshot::Dest;

/// Round robin. Like `ip_vs_rr.c`, the cursor starts at the list head (so the first pick is the
/// first available real server) and real servers with weight 0 or overloaded are skipped.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// Index of the real server picked last; `None` is the list head.
    last: Mutex<Option<usize>>,
}

impl RoundRobin {
    pub(crate) fn new() -> Self {
        RoundRobin {
            last: Mutex::new(None),
        }
    }
}

impl Scheduler for RoundRobin {
    fn schedule(&self, dests: &[Dest], _flow: &Flow) -> Option<usize> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        let mut last = lock(&self.last);
        let start = last.map_or(0, |i| i + 1);
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| available(&dests[i]))?;
        *last = Some(pick);
        Some(pick)
    }
}
