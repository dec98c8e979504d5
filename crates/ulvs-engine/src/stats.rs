//! Atomic counters of services, real servers and drops, the rate estimator, the per-service
//! new-connection rate cap, and their conversion to snapshots.
//!
//! Counter blocks live behind `Arc`s that configuration snapshots and connection entries share,
//! so a service or real server that survives a configuration change keeps its counters, and an
//! established connection counts its packets without touching the configuration.
//!
//! # Rates
//! Like IPVS's estimator (`ip_vs_est.c`), a periodic tick (every 2 s) takes the counter deltas
//! since the previous tick, turns them into per-second rates and folds them into an
//! exponentially weighted average with weight 1/4. Averages are kept in fixed point (x1024) so
//! low rates do not round away. Time is a parameter: the tick's caller passes `now`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::{Counters, DropReason, Rates, Timestamp};

/// Connection, packet and byte counters of a service or a real server, their rate estimate,
/// and (for services) the new-connection rate cap.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    conns: AtomicU64,
    in_pkts: AtomicU64,
    out_pkts: AtomicU64,
    in_bytes: AtomicU64,
    out_bytes: AtomicU64,
    est: Mutex<Estimator>,
    /// New connections per second allowed; 0 = no cap.
    cap: AtomicU32,
    /// The cap's theoretical arrival time (GCRA), in microseconds.
    cap_tat_us: AtomicU64,
}

/// Fixed-point scale of the averaged rates.
const RATE_ONE: u128 = 1024;

/// State of the rate estimator of one counter block.
#[derive(Debug, Default)]
struct Estimator {
    /// Counters at the previous tick, and when it was.
    last: Option<(Timestamp, Counters)>,
    /// Averaged rates per second, x [`RATE_ONE`]: conns, in pkts, out pkts, in bytes, out bytes.
    avg: [u64; 5],
}

fn fields(c: &Counters) -> [u64; 5] {
    [c.conns, c.in_pkts, c.out_pkts, c.in_bytes, c.out_bytes]
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

    /// Sets the new-connection rate cap (0 = none).
    pub(crate) fn set_cap(&self, per_second: u32) {
        self.cap.store(per_second, Relaxed);
    }

    /// Whether a new connection at `now` fits under the rate cap (and takes its share of it).
    ///
    /// A generic cell rate algorithm: one connection per `1 s / cap`, with a burst of up to one
    /// second's worth.
    pub(crate) fn admit(&self, now: Timestamp) -> bool {
        let cap = self.cap.load(Relaxed);
        if cap == 0 {
            return true;
        }
        let t = now.0.saturating_mul(1000);
        let interval = 1_000_000 / u64::from(cap);
        let burst = 1_000_000u64;
        let mut tat = self.cap_tat_us.load(Relaxed);
        loop {
            let base = tat.max(t);
            // Tolerance: a burst of `cap` connections (one second's worth) at once.
            if base - t > burst - interval {
                return false;
            }
            match self
                .cap_tat_us
                .compare_exchange_weak(tat, base + interval, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(v) => tat = v,
            }
        }
    }

    /// One estimator tick at `now`: folds the rates since the previous tick into the averages.
    pub(crate) fn estimate(&self, now: Timestamp) {
        let cur = self.read();
        let mut est = crate::sched::lock(&self.est);
        if let Some((at, last)) = est.last {
            let ms = now.0.saturating_sub(at.0);
            if ms == 0 {
                return;
            }
            let (cur_f, last_f) = (fields(&cur), fields(&last));
            for i in 0..5 {
                let delta = u128::from(cur_f[i].saturating_sub(last_f[i]));
                let rate =
                    u64::try_from(delta * 1000 * RATE_ONE / u128::from(ms)).unwrap_or(u64::MAX);
                let avg = est.avg[i];
                // avg += (rate - avg) / 4, in signed arithmetic.
                est.avg[i] = if rate >= avg {
                    avg + (rate - avg) / 4
                } else {
                    avg - (avg - rate) / 4
                };
            }
        }
        est.last = Some((now, cur));
    }

    /// The averaged rates per second.
    pub(crate) fn rates(&self) -> Rates {
        let avg = crate::sched::lock(&self.est).avg;
        let r = |v: u64| (u128::from(v) + RATE_ONE / 2).div_euclid(RATE_ONE) as u64;
        Rates {
            cps: r(avg[0]),
            in_pps: r(avg[1]),
            out_pps: r(avg[2]),
            in_bps: r(avg[3]),
            out_bps: r(avg[4]),
        }
    }

    /// Zeroes the counters and the rate estimate (ipvsadm `-Z`).
    pub(crate) fn zero(&self) {
        let mut est = crate::sched::lock(&self.est);
        for c in [
            &self.conns,
            &self.in_pkts,
            &self.out_pkts,
            &self.in_bytes,
            &self.out_bytes,
        ] {
            c.store(0, Relaxed);
        }
        est.avg = [0; 5];
        if let Some((_, last)) = est.last.as_mut() {
            *last = Counters::default();
        }
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
    /// The real server left the configuration (never set back: a re-added server is new).
    removed: AtomicBool,
    /// Weight 0 in the current configuration.
    quiescent: AtomicBool,
    /// Forwarding method and tunnel settings, packed by [`crate::tunnel::Fwd::pack`]. Set when
    /// the real server is created and by every configuration that keeps it.
    pub(crate) fwd: AtomicU32,
    /// MTU of the path to the real server (outer packets of tunnel mode); 0 = the engine's
    /// default.
    pub(crate) path_mtu: AtomicU32,
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
            removed: AtomicBool::new(false),
            quiescent: AtomicBool::new(false),
            fwd: AtomicU32::new(0),
            path_mtu: AtomicU32::new(0),
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

    /// Marks the real server as gone from the configuration.
    pub(crate) fn set_removed(&self) {
        self.removed.store(true, Relaxed);
    }

    /// Whether the real server left the configuration.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    /// Notes whether the current configuration gives the real server weight 0.
    pub(crate) fn set_quiescent(&self, q: bool) {
        self.quiescent.store(q, Relaxed);
    }

    /// Whether the real server has weight 0 (takes no new connections).
    pub(crate) fn is_quiescent(&self) -> bool {
        self.quiescent.load(Relaxed)
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
