//! Schedulers: pick the real server of a new connection, with the kernel IPVS semantics.
//!
//! One module per scheduler, each a port of the behaviour of the kernel's `ip_vs_<name>.c`
//! (written from the algorithm, not the code). A scheduler instance belongs to one service in one
//! configuration snapshot; it is called only for a new connection, never while a connection-table
//! shard guard is held. Schedulers that keep a cursor (rr, wrr) hold it in a small `Mutex` that is
//! taken only there; the least-connection ones read the per-real-server atomics.
//!
//! To add a scheduler (sh, dh, mh, lblc, ...): add a module with a type implementing
//! [`Scheduler`], construct it in [`build`], and drop its kind from [`is_supported`]'s refusal.

mod lc;
mod rr;
mod wlc;
mod wrr;

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use crate::config::SchedulerKind;
use crate::snapshot::Dest;

/// What a scheduler may look at about the new connection (hashing schedulers will need it).
#[derive(Debug, Clone, Copy)]
#[expect(
    dead_code,
    reason = "read by the hashing schedulers (sh, mh) still to come"
)]
pub(crate) struct Flow {
    /// Client address.
    pub(crate) src: std::net::IpAddr,
    /// Client port.
    pub(crate) src_port: u16,
}

/// Picks a real server for a new connection.
pub(crate) trait Scheduler: Send + Sync + fmt::Debug {
    /// The index into `dests` of the chosen real server, or `None` when none is available
    /// (every real server has weight 0 or is overloaded).
    fn schedule(&self, dests: &[Dest], flow: &Flow) -> Option<usize>;
}

/// Whether the engine implements `kind`.
pub(crate) fn is_supported(kind: SchedulerKind) -> bool {
    matches!(
        kind,
        SchedulerKind::Rr | SchedulerKind::Wrr | SchedulerKind::Lc | SchedulerKind::Wlc
    )
}

/// A fresh scheduler of `kind` for the real servers `dests` (in configuration order), or `None`
/// if the engine does not implement `kind`.
pub(crate) fn build(kind: SchedulerKind, dests: &[Dest]) -> Option<Box<dyn Scheduler>> {
    Some(match kind {
        SchedulerKind::Rr => Box::new(rr::RoundRobin::new()),
        SchedulerKind::Wrr => Box::new(wrr::WeightedRoundRobin::new(dests)),
        SchedulerKind::Lc => Box::new(lc::LeastConn),
        SchedulerKind::Wlc => Box::new(wlc::WeightedLeastConn),
        _ => return None,
    })
}

/// Whether a real server may take a new connection at all: weight above 0 and not overloaded.
pub(crate) fn available(d: &Dest) -> bool {
    d.weight > 0 && !d.state.is_overloaded()
}

/// Locks a scheduler cursor. A poisoned lock only means another thread panicked while it
/// held it; the cursor is still a valid value, so scheduling goes on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
