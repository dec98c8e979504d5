//! The connection table: entries keyed by both of their tuples in a sharded `DashMap`,
//! per-connection state and idle timeouts, and the incremental reaper.
//!
//! Every entry is in the map twice, under its original tuple (client -> virtual service) and its
//! reply tuple (real server -> client), both pointing at one `Arc<Conn>`. A packet of an
//! established flow costs one shard read lock, a few atomic operations and no allocation.
//!
//! Reaping is incremental: connections are also listed in `shards` reap buckets (by hash of the
//! original tuple), and each [`ConnTable::expire`] call scans a fraction of the buckets, moving a
//! rotating cursor. A lookup that finds an entry past its timeout treats it as gone, so expiry is
//! exact whatever the reaper's pace.
//!
//! The count of a connection on its real server (active when TCP ESTABLISHED, inactive
//! otherwise) follows its state with compare-and-swap on the state byte; removal swaps in
//! [`ConnState::Dead`], so exactly one thread uncounts an entry.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::Timestamp;
use crate::config::Protocol;
use crate::stats::{DestState, Traffic};
use crate::wire::TcpFlags;

/// One direction of a flow: protocol, source and destination with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tuple {
    pub(crate) proto: Protocol,
    pub(crate) src: IpAddr,
    pub(crate) sport: u16,
    pub(crate) dst: IpAddr,
    pub(crate) dport: u16,
}

/// Connection states: a simplified IPVS TCP state machine, and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ConnState {
    /// TCP: the client's SYN was seen (IPVS `SYN_RECV`).
    SynRecv = 0,
    /// TCP: the client acknowledged after the SYN (IPVS `ESTABLISHED`); counts as active.
    Established = 1,
    /// TCP: a FIN was seen (IPVS `FIN_WAIT` / `CLOSE_WAIT` / `LAST_ACK` collapsed).
    Fin = 2,
    /// TCP: a RST was seen (IPVS `CLOSE`).
    Close = 3,
    /// UDP.
    Udp = 4,
    /// Removed from the table; uncounted already.
    Dead = 5,
}

impl ConnState {
    fn from_u8(v: u8) -> ConnState {
        match v {
            0 => ConnState::SynRecv,
            1 => ConnState::Established,
            2 => ConnState::Fin,
            3 => ConnState::Close,
            4 => ConnState::Udp,
            _ => ConnState::Dead,
        }
    }

    /// Whether the connection counts as active on its real server (as in `ipvsadm -L`).
    pub(crate) fn is_active(self) -> bool {
        self == ConnState::Established
    }

    /// The TCP state after a segment with `flags` in direction `from_client`.
    fn next_tcp(self, from_client: bool, flags: TcpFlags) -> ConnState {
        match self {
            ConnState::Dead | ConnState::Udp => self,
            _ if flags.rst() => ConnState::Close,
            ConnState::Close => ConnState::Close,
            _ if flags.fin() => ConnState::Fin,
            ConnState::SynRecv if from_client && flags.ack() && !flags.syn() => {
                ConnState::Established
            }
            s => s,
        }
    }
}

/// Idle timeouts per state, in milliseconds. A connection with no packet for its state's
/// timeout is removed. (The full IPVS state table with its per-state timeouts can replace this.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP ESTABLISHED (ipvsadm `--set` tcp; IPVS default 900 s).
    pub tcp_established_ms: u64,
    /// TCP after a FIN or RST (ipvsadm tcpfin; 120 s).
    pub tcp_fin_ms: u64,
    /// TCP before the handshake completes (IPVS SYN_RECV; 120 s here).
    pub tcp_syn_ms: u64,
    /// UDP (ipvsadm udp; 300 s).
    pub udp_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established_ms: 900_000,
            tcp_fin_ms: 120_000,
            tcp_syn_ms: 120_000,
            udp_ms: 300_000,
        }
    }
}

/// Timeouts stored as atomics so they can change while packets flow.
#[derive(Debug)]
struct AtomicTimeouts {
    est: AtomicU64,
    fin: AtomicU64,
    syn: AtomicU64,
    udp: AtomicU64,
}

impl AtomicTimeouts {
    fn new(t: Timeouts) -> Self {
        AtomicTimeouts {
            est: AtomicU64::new(t.tcp_established_ms),
            fin: AtomicU64::new(t.tcp_fin_ms),
            syn: AtomicU64::new(t.tcp_syn_ms),
            udp: AtomicU64::new(t.udp_ms),
        }
    }

    fn set(&self, t: Timeouts) {
        self.est.store(t.tcp_established_ms, Relaxed);
        self.fin.store(t.tcp_fin_ms, Relaxed);
        self.syn.store(t.tcp_syn_ms, Relaxed);
        self.udp.store(t.udp_ms, Relaxed);
    }

    fn get(&self) -> Timeouts {
        Timeouts {
            tcp_established_ms: self.est.load(Relaxed),
            tcp_fin_ms: self.fin.load(Relaxed),
            tcp_syn_ms: self.syn.load(Relaxed),
            udp_ms: self.udp.load(Relaxed),
        }
    }

    fn for_state(&self, s: ConnState) -> u64 {
        match s {
            ConnState::SynRecv => self.syn.load(Relaxed),
            ConnState::Established => self.est.load(Relaxed),
            ConnState::Fin | ConnState::Close => self.fin.load(Relaxed),
            ConnState::Udp => self.udp.load(Relaxed),
            ConnState::Dead => 0,
        }
    }
}

/// One connection: both tuples, state, last activity and the counters it feeds.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Client -> virtual service.
    pub(crate) orig: Tuple,
    /// Real server -> client.
    pub(crate) reply: Tuple,
    state: AtomicU8,
    last_seen: AtomicU64,
    /// The real server's counters and connection counts.
    pub(crate) dest: Arc<DestState>,
    /// The service's counters.
    pub(crate) service: Arc<Traffic>,
}

impl Conn {
    pub(crate) fn new(
        orig: Tuple,
        reply: Tuple,
        now: Timestamp,
        dest: Arc<DestState>,
        service: Arc<Traffic>,
    ) -> Self {
        let state = match orig.proto {
            Protocol::Tcp => ConnState::SynRecv,
            Protocol::Udp => ConnState::Udp,
        };
        Conn {
            orig,
            reply,
            state: AtomicU8::new(state as u8),
            last_seen: AtomicU64::new(now.0),
            dest,
            service,
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Relaxed))
    }

    /// Notes activity at `now` (skipping the store when nothing changes, to spare the cache line).
    pub(crate) fn touch(&self, now: Timestamp) {
        if self.last_seen.load(Relaxed) < now.0 {
            self.last_seen.store(now.0, Relaxed);
        }
    }

    /// Advances the TCP state for a segment, moving the real server's active/inactive counts
    /// when the state crosses ESTABLISHED.
    pub(crate) fn on_tcp(&self, from_client: bool, flags: TcpFlags) {
        let mut cur = self.state.load(Relaxed);
        loop {
            let s = ConnState::from_u8(cur);
            let n = s.next_tcp(from_client, flags);
            if n == s {
                return;
            }
            match self
                .state
                .compare_exchange_weak(cur, n as u8, Relaxed, Relaxed)
            {
                Ok(_) => {
                    if s.is_active() != n.is_active() {
                        self.dest.add_conn(n.is_active());
                        self.dest.remove_conn(s.is_active());
                    }
                    return;
                }
                Err(v) => cur = v,
            }
        }
    }

    fn expired(&self, now: Timestamp, t: &AtomicTimeouts) -> bool {
        let s = self.state();
        s == ConnState::Dead || now.0 >= self.last_seen.load(Relaxed).saturating_add(t.for_state(s))
    }

    /// Marks the connection dead; returns its state before, or `None` if it was dead already.
    fn kill(&self) -> Option<ConnState> {
        match ConnState::from_u8(self.state.swap(ConnState::Dead as u8, Relaxed)) {
            ConnState::Dead => None,
            s => Some(s),
        }
    }
}

/// Why a new connection could not be entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// The table holds `max_connections` entries.
    Full,
    /// Another connection already uses the reply tuple.
    Conflict,
}

/// The connection table.
#[derive(Debug)]
pub(crate) struct ConnTable {
    map: DashMap<Tuple, Arc<Conn>, foldhash::fast::FixedState>,
    hasher: foldhash::fast::FixedState,
    buckets: Box<[Mutex<Vec<Arc<Conn>>>]>,
    cursor: AtomicUsize,
    count: AtomicUsize,
    max: usize,
    timeouts: AtomicTimeouts,
}

/// Each [`ConnTable::expire`] call scans this fraction (1/N) of the reap buckets.
const REAP_FRACTION: usize = 16;

impl ConnTable {
    /// A table of at most `max` connections in `shards` shards (rounded up to a power of two,
    /// at least 2), hashing with `seed`.
    pub(crate) fn new(max: usize, shards: usize, seed: u64) -> Self {
        let shards = shards.max(2).next_power_of_two();
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        ConnTable {
            map: DashMap::with_hasher_and_shard_amount(hasher.clone(), shards),
            hasher,
            buckets: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            cursor: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            max,
            timeouts: AtomicTimeouts::new(Timeouts::default()),
        }
    }

    /// Live connections.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// The table limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Whether a new connection would exceed the limit now.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.max
    }

    /// Current timeouts.
    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts.get()
    }

    /// Changes the timeouts; they apply to existing connections too.
    pub(crate) fn set_timeouts(&self, t: Timeouts) {
        self.timeouts.set(t);
    }

    /// Runs `f` on the live connection that `t` belongs to (either tuple), under the shard's
    /// read lock. An entry past its timeout is removed instead and `f` is not called.
    pub(crate) fn with<R>(
        &self,
        t: &Tuple,
        now: Timestamp,
        f: impl FnOnce(&Arc<Conn>) -> R,
    ) -> Option<R> {
        let stale = {
            let guard = self.map.get(t)?;
            let c = guard.value();
            if !c.expired(now, &self.timeouts) {
                return Some(f(c));
            }
            Arc::clone(c)
        };
        // The guard is dropped: removing takes the shard's write lock.
        self.remove(&stale);
        None
    }

    /// Removes `conn` from the map (both tuples) and uncounts it, if no one did yet. It stays in
    /// its reap bucket until the reaper passes.
    pub(crate) fn remove(&self, conn: &Arc<Conn>) -> bool {
        let Some(prev) = conn.kill() else {
            return false;
        };
        self.map.remove_if(&conn.orig, |_, v| Arc::ptr_eq(v, conn));
        self.map.remove_if(&conn.reply, |_, v| Arc::ptr_eq(v, conn));
        conn.dest.unbind(prev.is_active());
        self.count.fetch_sub(1, Relaxed);
        true
    }

    /// Enters a new connection under both tuples and counts it on its real server; returns it
    /// with `true`. If another thread entered the same original tuple first, that connection is
    /// returned instead, with `false`.
    pub(crate) fn insert(&self, conn: Conn) -> Result<(Arc<Conn>, bool), InsertError> {
        if self.count.fetch_add(1, Relaxed) >= self.max {
            self.count.fetch_sub(1, Relaxed);
            return Err(InsertError::Full);
        }
        let conn = Arc::new(conn);
        // Counted before it is reachable, so a concurrent removal never uncounts first.
        conn.dest.bind(false);
        let winner = {
            match self.map.entry(conn.orig) {
                dashmap::Entry::Occupied(o) => Some(Arc::clone(o.get())),
                dashmap::Entry::Vacant(v) => {
                    v.insert(Arc::clone(&conn));
                    None
                }
            }
        };
        if let Some(w) = winner {
            self.undo(&conn);
            return Ok((w, false));
        }
        let conflict = match self.map.entry(conn.reply) {
            dashmap::Entry::Occupied(_) => true,
            dashmap::Entry::Vacant(v) => {
                v.insert(Arc::clone(&conn));
                false
            }
        };
        if conflict {
            self.map.remove_if(&conn.orig, |_, v| Arc::ptr_eq(v, &conn));
            self.undo(&conn);
            return Err(InsertError::Conflict);
        }
        let b = self.hasher.hash_one(conn.orig) as usize & (self.buckets.len() - 1);
        crate::sched::lock(&self.buckets[b]).push(Arc::clone(&conn));
        Ok((conn, true))
    }

    fn undo(&self, conn: &Arc<Conn>) {
        if conn.kill().is_some() {
            conn.dest.unbind(false);
        }
        self.count.fetch_sub(1, Relaxed);
    }

    /// Scans the next 1/[`REAP_FRACTION`] of the reap buckets (at least one) and removes the
    /// connections idle past their timeout at `now`. Returns how many were removed.
    pub(crate) fn expire(&self, now: Timestamp) -> usize {
        let n = self.buckets.len();
        let slice = (n / REAP_FRACTION).max(1);
        let start = self.cursor.fetch_add(slice, Relaxed);
        let mut removed = 0;
        for k in 0..slice {
            let mut bucket = crate::sched::lock(&self.buckets[(start + k) % n]);
            bucket.retain(|c| {
                if c.state() == ConnState::Dead {
                    return false;
                }
                if c.expired(now, &self.timeouts) {
                    if self.remove(c) {
                        removed += 1;
                    }
                    return false;
                }
                true
            });
        }
        removed
    }

    /// How many [`ConnTable::expire`] calls make one full pass over the table.
    pub(crate) fn expire_calls_per_pass(&self) -> usize {
        let n = self.buckets.len();
        n.div_ceil((n / REAP_FRACTION).max(1))
    }
}
