//! Locality-based least connections (`lblc`): a destination address keeps its real server
//! until that server is quiescent or overloaded.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;

use super::wlc::least_weighted;
use super::{Ctx, Flow, Scheduler, name};
use crate::Timestamp;
use crate::snapshot::Dest;

/// Entries unused this long are removed by the periodic full check (kernel
/// `lblc_expiration`, default one day).
pub(crate) const EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;
/// When the table holds more than [`MAX_ENTRIES`], entries unused this long go (kernel
/// `ENTRY_TIMEOUT`).
pub(crate) const ENTRY_TIMEOUT_MS: u64 = 6 * 60 * 1000;
/// The table size above which stale entries are collected (kernel: 16 per bucket of 1024).
pub(crate) const MAX_ENTRIES: usize = 1024 * 16;
/// How often the table is checked (kernel `CHECK_EXPIRE_INTERVAL`).
pub(crate) const CHECK_INTERVAL_MS: u64 = 60 * 1000;
/// Every this many checks is a full expiration check (kernel `COUNT_FOR_FULL_EXPIRATION`).
pub(crate) const FULL_CHECK_EVERY: u64 = 30;

/// When the next check is due and how many checks ran, shared by lblc and lblcr.
#[derive(Debug, Default)]
pub(crate) struct ExpiryClock {
    next_check: AtomicU64,
    checks: AtomicU64,
}

/// What a check at some time must do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Not due yet.
    None,
    /// Remove entries unused for [`EXPIRATION_MS`].
    Full,
    /// If the table is over [`MAX_ENTRIES`], remove entries unused for [`ENTRY_TIMEOUT_MS`].
    Partial,
}

impl ExpiryClock {
    /// The check due at `now`, if any (claimed by one caller).
    pub(crate) fn due(&self, now: Timestamp) -> Check {
        let next = self.next_check.load(Relaxed);
        if now.0 < next
            || self
                .next_check
                .compare_exchange(next, now.0 + CHECK_INTERVAL_MS, Relaxed, Relaxed)
                .is_err()
        {
            return Check::None;
        }
        if self.checks.fetch_add(1, Relaxed) % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 {
            Check::Full
        } else {
            Check::Partial
        }
    }
}

/// One lblc entry: the real server a destination address goes to.
#[derive(Debug)]
pub(crate) struct Entry {
    dest: SocketAddr,
    last_use: AtomicU64,
}

/// The lblc table: destination address -> real server. Shared by the snapshots of one service.
#[derive(Debug, Default)]
pub(crate) struct LocalityTable {
    map: DashMap<IpAddr, Entry, foldhash::fast::FixedState>,
    clock: ExpiryClock,
}

impl LocalityTable {
    fn expire(&self, now: Timestamp) {
        let max_idle = match self.clock.due(now) {
            Check::None => return,
            Check::Full => EXPIRATION_MS,
            Check::Partial if self.map.len() > MAX_ENTRIES => ENTRY_TIMEOUT_MS,
            Check::Partial => return,
        };
        self.map
            .retain(|_, e| now.0 < e.last_use.load(Relaxed).saturating_add(max_idle));
    }

    /// Entries (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The lblc/lblcr notion of a busy server: more active connections than its weight while some
/// real server of the service has fewer than half its weight.
pub(crate) fn is_busy(d: &Dest, dests: &[Dest]) -> bool {
    d.state.active() > d.weight
        && dests
            .iter()
            .any(|o| u64::from(o.state.active()) * 2 < u64::from(o.weight))
}

/// Locality-based least connections, as `ip_vs_lblc.c`: the destination address's entry names a
/// real server; it is used while it has weight > 0, is not overloaded by its threshold and is not
/// busy ([`is_busy`]); otherwise wlc picks one and the entry is set to it. Entries expire after
/// a day unused (six minutes when the table is over 16384 entries).
#[derive(Debug)]
pub(crate) struct Lblc {
    table: std::sync::Arc<LocalityTable>,
}

impl Lblc {
    pub(crate) fn new(table: std::sync::Arc<LocalityTable>) -> Self {
        Lblc { table }
    }
}

impl Scheduler for Lblc {
    fn schedule(&self, dests: &[Dest], flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        if let Some(e) = self.table.map.get(&flow.dst) {
            if !ctx.dry_run() {
                e.last_use.store(ctx.now.0, Relaxed);
            }
            match dests.iter().position(|d| d.addr == e.dest) {
                Some(i) => {
                    let d = &dests[i];
                    if d.weight > 0 && !d.state.is_overloaded() && !is_busy(d, dests) {
                        ctx.note(|| {
                            format!("lblc: destination {} is cached on {}", flow.dst, name(d))
                        });
                        return Some(i);
                    }
                    ctx.note(|| {
                        format!(
                            "lblc: destination {} is cached on {}, which has weight 0, is overloaded or is busy (active {} > weight {} while another server is under half its weight)",
                            flow.dst,
                            name(d),
                            d.state.active(),
                            d.weight
                        )
                    });
                }
                None => ctx.note(|| {
                    format!(
                        "lblc: destination {} was cached on {}, no longer a real server",
                        flow.dst, e.dest
                    )
                }),
            }
        }
        let Some(i) = least_weighted(dests, |d| d.state.overhead()) else {
            ctx.note(|| "lblc: every real server has weight 0 or is overloaded".to_owned());
            return None;
        };
        ctx.note(|| {
            format!(
                "lblc: wlc picks {} (overhead/weight least); it becomes the entry of {}",
                name(&dests[i]),
                flow.dst
            )
        });
        if !ctx.dry_run() {
            self.table.map.insert(
                flow.dst,
                Entry {
                    dest: dests[i].addr,
                    last_use: AtomicU64::new(ctx.now.0),
                },
            );
        }
        Some(i)
    }

    fn carry(&self) -> super::Carry {
        super::Carry::Lblc(std::sync::Arc::clone(&self.table))
    }

    fn expire(&self, now: Timestamp) {
        self.table.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;
    use crate::sched::{Ctx, Rng};

    #[test]
    fn sticks_until_busy_then_moves() {
        let table = std::sync::Arc::new(LocalityTable::default());
        let s = Lblc::new(table.clone());
        let f = flow([1, 1, 1, 1], 1);
        // wlc: both idle, the first wins; the entry sticks even when the second is less loaded.
        let d = dests(&[(2, 0, 0), (2, 0, 0)]);
        assert_eq!(pick(&s, &d, &f), Some(0));
        let d = dests(&[(2, 2, 0), (2, 0, 0)]);
        assert_eq!(pick(&s, &d, &f), Some(0));
        // Active 3 > weight 2 and the other has 0*2 < 2: busy, moves to the second.
        let d = dests(&[(2, 3, 0), (2, 0, 0)]);
        assert_eq!(pick(&s, &d, &f), Some(1));
        let d = dests(&[(2, 0, 0), (2, 0, 0)]);
        assert_eq!(pick(&s, &d, &f), Some(1));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn dry_run_creates_no_entry_and_entries_expire() {
        let table = std::sync::Arc::new(LocalityTable::default());
        let s = Lblc::new(table.clone());
        let d = dests(&[(1, 0, 0)]);
        let rng = Rng::new(1);
        let mut trace = Vec::new();
        let f = flow([1, 1, 1, 1], 1);
        s.schedule(&d, &f, &mut Ctx::explain(Timestamp(0), &rng, &mut trace));
        assert_eq!(table.len(), 0);
        assert!(!trace.is_empty());
        pick(&s, &d, &f);
        assert_eq!(table.len(), 1);
        // Checks at 0, 60 s, ...: the 30th is a full check; the entry (used at 0) is a day old
        // only by then if time says so.
        for k in 0..FULL_CHECK_EVERY {
            s.expire(Timestamp(EXPIRATION_MS + k * CHECK_INTERVAL_MS));
        }
        assert_eq!(table.len(), 0);
    }
}
