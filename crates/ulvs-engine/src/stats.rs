//! Atomic counters of services, real servers and drops, and their conversion to snapshots.
//!
//! Counter blocks live behind `Arc`s that configuration snapshots and connection entries share,
//! so a service or real server that survives a configuration change keeps its counters, and an
//! established connection counts its packets without touching the configuration.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::{Counters, DropReason};

/// Connection, packet and byte counters of a service or a real server.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    conns: AtomicU64,
    in_pkts: AtomicU64,
    out_pkts: AtomicU64,
    in_bytes: AtomicU64,
    out_bytes: AtomicU64,
}

impl Traffic {
    /// Counts a newly scheduled connection.
    pub(crate) fn conn(&self) {
        self.conns.fetch_add(1, Relaxed);
    }

    /// Counts a packet from a client of `bytes` bytes (IP total length).
    pub(crate) fn inbound(&self, bytes: usize) {
        self.in_pkts.fetch_add(1, Relaxed);
        self.in_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a packet to a client of `bytes` bytes.
    pub(crate) fn outbound(&self, bytes: usize) {
        self.out_pkts.fetch_add(1, Relaxed);
        self.out_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Reads the counters.
    pub(crate) fn read(&self) -> Counters {
        Counters {
            conns: self.conns.load(Relaxed),
            in_pkts: self.in_pkts.load(Relaxed),
            out_pkts: self.out_pkts.load(Relaxed),
            in_bytes: self.in_bytes.load(Relaxed),
            out_bytes: self.out_bytes.load(Relaxed),
        }
    }
}

/// State of a real server that outlives configuration snapshots: its address, traffic counters
/// and connection counts (which the least-connection schedulers read).
#[derive(Debug)]
pub(crate) struct DestState {
    /// Traffic counters.
    pub(crate) traffic: Traffic,
    /// Connections in the ESTABLISHED state.
    pub(crate) active: AtomicU32,
    /// Other connections.
    pub(crate) inactive: AtomicU32,
    /// Persistence templates (always 0 until persistence exists).
    pub(crate) persistent: AtomicU32,
    /// Upper connection threshold from the configuration (0 = none).
    pub(crate) upper: AtomicU32,
    /// Lower connection threshold from the configuration (0 = none).
    pub(crate) lower: AtomicU32,
    /// IPVS's `IP_VS_DEST_F_OVERLOAD`: set when the connections reach the upper threshold,
    /// cleared when they fall below the lower one (or 3/4 of the upper one without a lower).
    overloaded: AtomicBool,
}

impl DestState {
    /// A fresh real server with zero counters.
    pub(crate) fn new() -> Self {
        DestState {
            traffic: Traffic::default(),
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            persistent: AtomicU32::new(0),
            upper: AtomicU32::new(0),
            lower: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
        }
    }

    /// Sets the thresholds from a (new) configuration and re-evaluates the overload flag.
    pub(crate) fn set_thresholds(&self, upper: u32, lower: u32) {
        self.upper.store(upper, Relaxed);
        self.lower.store(lower, Relaxed);
        if upper == 0 {
            self.overloaded.store(false, Relaxed);
        } else if self.total() >= upper {
            self.overloaded.store(true, Relaxed);
        }
    }

    /// Whether the real server is overloaded (takes no new connections).
    pub(crate) fn is_overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    /// Active plus inactive connections.
    pub(crate) fn total(&self) -> u32 {
        self.active().saturating_add(self.inactive())
    }

    /// Connections counted as active.
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// Connections counted as inactive.
    pub(crate) fn inactive(&self) -> u32 {
        self.inactive.load(Relaxed)
    }

    /// IPVS's connection overhead, `active * 256 + inactive` (`ip_vs_dest_conn_overhead`).
    pub(crate) fn overhead(&self) -> u64 {
        (u64::from(self.active()) << 8) + u64::from(self.inactive())
    }

    /// Adds one to the active (`true`) or inactive (`false`) count.
    pub(crate) fn add_conn(&self, active: bool) {
        self.counter(active).fetch_add(1, Relaxed);
    }

    /// Counts a connection newly bound to this real server (inactive at first), setting the
    /// overload flag when the upper threshold is reached, as `ip_vs_bind_dest` does.
    pub(crate) fn bind(&self, active: bool) {
        self.add_conn(active);
        let upper = self.upper.load(Relaxed);
        if upper != 0 && self.total() >= upper {
            self.overloaded.store(true, Relaxed);
        }
    }

    /// Uncounts a connection that goes away, clearing the overload flag as `ip_vs_unbind_dest`
    /// does.
    pub(crate) fn unbind(&self, active: bool) {
        self.remove_conn(active);
        let (upper, lower) = (self.upper.load(Relaxed), self.lower.load(Relaxed));
        let total = u64::from(self.total());
        let clear = if lower != 0 {
            total < u64::from(lower)
        } else if upper != 0 {
            total * 4 < u64::from(upper) * 3
        } else {
            true
        };
        if clear {
            self.overloaded.store(false, Relaxed);
        }
    }

    /// Takes one from the active (`true`) or inactive (`false`) count, saturating at zero.
    pub(crate) fn remove_conn(&self, active: bool) {
        let _ = self
            .counter(active)
            .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }

    fn counter(&self, active: bool) -> &AtomicU32 {
        if active { &self.active } else { &self.inactive }
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub(crate) struct DropCounters {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Counts one drop and returns the verdict for it.
    pub(crate) fn count(&self, reason: DropReason) -> crate::Verdict {
        self.counts[reason.index()].fetch_add(1, Relaxed);
        crate::Verdict::Drop(reason)
    }

    /// Every reason with its count, in [`DropReason::ALL`] order.
    pub(crate) fn read(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.counts[r.index()].load(Relaxed)))
            .collect()
    }
}
