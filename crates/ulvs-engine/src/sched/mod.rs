//! Schedulers: pick the real server of a new connection, with the kernel IPVS semantics.
//!
//! One module per scheduler, each a port of the behaviour of the kernel's `ip_vs_<name>.c`
//! (written from the algorithm, not the code). A scheduler instance belongs to one service in one
//! configuration snapshot; it is called only for a new connection, never while a connection-table
//! shard guard is held.
//!
//! Scheduler state never sits behind a lock the packet path takes: rr and wrr keep their cursor
//! in one atomic word (compare-and-swap), the least-connection family reads the per-real-server
//! atomics, the hashing schedulers (dh, sh, mh) read lookup tables built off the packet path when
//! a snapshot is built, and lblc/lblcr keep their locality tables in sharded maps that survive
//! configuration changes (as the kernel keeps `sched_data` while real servers change).
//!
//! Every scheduler can run as a dry run ([`Ctx::dry_run`]) for [`crate::Engine::explain`]: it
//! then changes nothing (no cursor step, no table entry, no random draw) and writes its reasoning
//! into [`Ctx`]'s trace.

mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Timestamp;
use crate::config::{SchedFlags, SchedulerKind};
use crate::snapshot::Dest;

pub(crate) use lblc::LocalityTable;
pub(crate) use lblcr::LocalitySetTable;

/// What a scheduler may look at about the new connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    /// Client address.
    pub(crate) src: IpAddr,
    /// Client port.
    pub(crate) src_port: u16,
    /// Destination (virtual) address, which dh, lblc and lblcr hash.
    pub(crate) dst: IpAddr,
}

/// The engine's pseudo-random source (for twos): a splitmix64 sequence from a seed, advanced
/// with one atomic add, so it is deterministic for a given seed and order of draws and needs no
/// global RNG.
#[derive(Debug)]
pub(crate) struct Rng {
    state: AtomicU64,
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A sequence starting from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng {
            state: AtomicU64::new(seed),
        }
    }

    /// The next value, advancing the sequence.
    fn next(&self) -> u64 {
        splitmix(self.state.fetch_add(GOLDEN, Relaxed).wrapping_add(GOLDEN))
    }

    /// The value [`Rng::next`] would return now, without advancing.
    fn peek(&self) -> u64 {
        splitmix(self.state.load(Relaxed).wrapping_add(GOLDEN))
    }
}

/// The context of one pick: time, randomness, dry-run flag and the explain trace.
pub(crate) struct Ctx<'a> {
    /// Now (lblc/lblcr stamp their table entries).
    pub(crate) now: Timestamp,
    /// Randomness for twos.
    pub(crate) rng: &'a Rng,
    /// Explain mode: change no state, record reasons.
    trace: Option<&'a mut Vec<String>>,
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("now", &self.now)
            .field("dry_run", &self.dry_run())
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// A real pick (the packet path): state changes, no trace.
    pub(crate) fn live(now: Timestamp, rng: &'a Rng) -> Self {
        Ctx {
            now,
            rng,
            trace: None,
        }
    }

    /// A dry run that records its reasoning in `trace` and changes nothing.
    pub(crate) fn explain(now: Timestamp, rng: &'a Rng, trace: &'a mut Vec<String>) -> Self {
        Ctx {
            now,
            rng,
            trace: Some(trace),
        }
    }

    /// Whether this pick must leave every state as it is.
    pub(crate) fn dry_run(&self) -> bool {
        self.trace.is_some()
    }

    /// Records a reason (only in a dry run; the closure is not called otherwise).
    pub(crate) fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(f());
        }
    }

    /// A random 64-bit value: drawn on the packet path, peeked in a dry run.
    pub(crate) fn random(&self) -> u64 {
        if self.dry_run() {
            self.rng.peek()
        } else {
            self.rng.next()
        }
    }
}

/// Picks a real server for a new connection.
pub(crate) trait Scheduler: Send + Sync + fmt::Debug {
    /// The index into `dests` of the chosen real server, or `None` when none is available
    /// (every real server has weight 0 or is overloaded).
    fn schedule(&self, dests: &[Dest], flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize>;

    /// State to hand to the scheduler of the next snapshot of the same service.
    fn carry(&self) -> Carry {
        Carry::None
    }

    /// Drops stale state (lblc/lblcr table entries) at `now`. Called off the packet path.
    fn expire(&self, _now: Timestamp) {}
}

/// Scheduler state that survives a configuration change of its service.
#[derive(Debug, Clone, Default)]
pub(crate) enum Carry {
    /// Nothing to keep.
    #[default]
    None,
    /// The lblc table.
    Lblc(Arc<LocalityTable>),
    /// The lblcr table.
    Lblcr(Arc<LocalitySetTable>),
}

/// A fresh scheduler of `kind` for the real servers `dests` (in configuration order), taking over
/// `prev`'s state where the kernel would keep it.
pub(crate) fn build(
    kind: SchedulerKind,
    flags: SchedFlags,
    dests: &[Dest],
    prev: Carry,
) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::Rr => Box::new(rr::RoundRobin::new()),
        SchedulerKind::Wrr => Box::new(wrr::WeightedRoundRobin::new(dests)),
        SchedulerKind::Lc => Box::new(lc::LeastConn),
        SchedulerKind::Wlc => Box::new(wlc::WeightedLeastConn),
        SchedulerKind::Lblc => Box::new(lblc::Lblc::new(match prev {
            Carry::Lblc(t) => t,
            _ => Arc::default(),
        })),
        SchedulerKind::Lblcr => Box::new(lblcr::Lblcr::new(match prev {
            Carry::Lblcr(t) => t,
            _ => Arc::default(),
        })),
        SchedulerKind::Dh => Box::new(dh::DestHash::new(dests)),
        SchedulerKind::Sh => Box::new(sh::SourceHash::new(dests, flags)),
        SchedulerKind::Sed => Box::new(sed::ShortestExpectedDelay),
        SchedulerKind::Nq => Box::new(nq::NeverQueue),
        SchedulerKind::Fo => Box::new(fo::WeightedFailover),
        SchedulerKind::Ovf => Box::new(ovf::Overflow),
        SchedulerKind::Mh => Box::new(mh::Maglev::new(dests, flags)),
        SchedulerKind::Twos => Box::new(twos::TwoChoices),
    }
}

/// Whether a real server may take a new connection at all: weight above 0 and not overloaded
/// (IPVS `IP_VS_DEST_F_OVERLOAD`, set by the upper threshold).
pub(crate) fn available(d: &Dest) -> bool {
    d.weight > 0 && !d.state.is_overloaded()
}

/// Why a real server is skipped, for explain traces.
pub(crate) fn unavailable_reason(d: &Dest) -> &'static str {
    if d.weight == 0 {
        "weight 0 (quiescent)"
    } else if d.state.is_overloaded() {
        "overloaded (upper threshold reached)"
    } else {
        "available"
    }
}

/// Kernel `hash_32`: the golden-ratio multiplicative hash, keeping the top `bits` bits.
pub(crate) fn hash_32(v: u32, bits: u32) -> u32 {
    v.wrapping_mul(0x61c8_8647) >> (32 - bits)
}

/// An address folded to 32 bits in host order, as IPVS hashes it (IPv6: the four words xored).
pub(crate) fn addr_fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

/// Locks a mutex. A poisoned lock only means another thread panicked while it held it; the
/// value is still valid, so work goes on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address of a real server as explain prints it.
pub(crate) fn name(d: &Dest) -> String {
    d.addr.to_string()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the scheduler unit tests: real servers with given weights and counts.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use super::{Ctx, Flow, Rng, Scheduler};
    use crate::Timestamp;
    use crate::snapshot::Dest;
    use crate::stats::DestState;

    /// Real server `i` (10.0.0.i:80) with `weight`, `active` and `inactive` connections.
    pub(crate) fn dest(i: u8, weight: u32, active: u32, inactive: u32) -> Dest {
        let state = Arc::new(DestState::new());
        for _ in 0..active {
            state.add_conn(true);
        }
        for _ in 0..inactive {
            state.add_conn(false);
        }
        Dest {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 80),
            weight,
            last_weight: weight,
            state,
            forward: crate::config::ForwardMethod::Masq,
            pools: Vec::new(),
        }
    }

    /// Real servers from `(weight, active, inactive)` triples, numbered from 1.
    pub(crate) fn dests(spec: &[(u32, u32, u32)]) -> Vec<Dest> {
        spec.iter()
            .enumerate()
            .map(|(i, &(w, a, n))| dest(i as u8 + 1, w, a, n))
            .collect()
    }

    /// A flow from `src:sport` to 198.18.100.1.
    pub(crate) fn flow(src: [u8; 4], sport: u16) -> Flow {
        Flow {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            src_port: sport,
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)),
        }
    }

    /// One live pick at time 0 with a fixed-seed RNG.
    pub(crate) fn pick(s: &dyn Scheduler, d: &[Dest], f: &Flow) -> Option<usize> {
        let rng = Rng::new(7);
        s.schedule(d, f, &mut Ctx::live(Timestamp(0), &rng))
    }
}

#[cfg(test)]
mod props;
