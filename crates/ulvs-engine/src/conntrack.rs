//! The connection table: the IPVS TCP state machine with per-state timeouts, a sharded table
//! that finds an entry by either of its tuples, the incremental reaper, the table limit and the
//! SYN-flood defence (half-open entries are evicted first when the table is full).
//!
//! # Layout of the table
//! The table is `shards` shards, each an `RwLock` over two `hashbrown::HashTable`s of
//! `Arc<Conn>`: one keyed by the original tuple (client -> virtual service), one keyed by the
//! reply tuple (real server -> client). A slot is one pointer (8 bytes); the key is read from the
//! entry itself, so a connection costs its entry plus two pointer slots, not two copies of its
//! tuples. A tuple's shard is taken from high bits of its hash (the tables use the low bits).
//!
//! A packet of an established flow costs one shard read lock, one or two probes, a few relaxed
//! atomic operations on the entry and no allocation.
//!
//! # Expiry
//! Each [`ConnTable::expire`] call scans the original-tuple tables of 1/16 of the shards under
//! their read locks and removes what is idle past its state's timeout (or bound to a removed real
//! server, with `expire_nodest_conn`), moving a rotating cursor. A lookup that finds an entry
//! past its timeout treats it as gone, so expiry is exact whatever the reaper's pace.
//!
//! # Counting
//! The count of a connection on its real server (active when TCP ESTABLISHED, inactive
//! otherwise) follows its state with compare-and-swap on the state byte; removal swaps in a dead
//! marker, so exactly one thread uncounts an entry.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use crate::Timestamp;
use crate::config::{ForwardMethod, Protocol, ServiceKey};
use crate::fwd::fullnat::{PortLease, PortPool};
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

/// The IPVS TCP connection states, in IPVS's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    /// Entry created, no segment judged yet (IPVS `NONE`).
    None = 0,
    /// Handshake completed (`ESTABLISHED`); the only state counted as active.
    Established = 1,
    /// The real server sent a SYN (`SYN_SENT`).
    SynSent = 2,
    /// The client's SYN was seen (`SYN_RECV`).
    SynRecv = 3,
    /// One side sent a FIN (`FIN_WAIT`); ipvsadm's `tcpfin` timeout.
    FinWait = 4,
    /// Both sides closed (`TIME_WAIT`).
    TimeWait = 5,
    /// Reset or closed (`CLOSE`).
    Close = 6,
    /// The client closed first (`CLOSE_WAIT`).
    CloseWait = 7,
    /// Last ACK awaited (`LAST_ACK`).
    LastAck = 8,
    /// `LISTEN` (kept for IPVS parity; only reachable through the table).
    Listen = 9,
    /// The real server answered a SYN (`SYNACK`).
    SynAck = 10,
}

impl TcpState {
    /// Every state, in IPVS order (the index of a state is its `u8` value).
    pub const ALL: [TcpState; 11] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// IPVS's name (`"ESTABLISHED"`), as `ipvsadm -L -c` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// IPVS's default timeout of the state, in milliseconds.
    pub const fn default_timeout_ms(self) -> u64 {
        match self {
            TcpState::None => 2_000,
            TcpState::Established => 900_000,
            TcpState::SynSent => 120_000,
            TcpState::SynRecv => 60_000,
            TcpState::FinWait => 120_000,
            TcpState::TimeWait => 120_000,
            TcpState::Close => 10_000,
            TcpState::CloseWait => 60_000,
            TcpState::LastAck => 30_000,
            TcpState::Listen => 120_000,
            TcpState::SynAck => 120_000,
        }
    }

    /// Half-open: the handshake has not completed. These entries go first when the table is full.
    pub fn is_half_open(self) -> bool {
        matches!(
            self,
            TcpState::None | TcpState::SynRecv | TcpState::SynAck | TcpState::SynSent
        )
    }

    /// Closing or closed: a client SYN on such an entry starts a new connection.
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            TcpState::FinWait
                | TcpState::TimeWait
                | TcpState::Close
                | TcpState::CloseWait
                | TcpState::LastAck
        )
    }

    /// The state after a segment with `flags` from `dir`, per IPVS's `tcp_states` table;
    /// `self` when the flags carry no event (no SYN, FIN, ACK or RST).
    pub fn next(self, dir: Direction, flags: TcpFlags) -> TcpState {
        // Event precedence as IPVS's tcp_state_idx: rst, syn, fin, ack.
        let event = if flags.rst() {
            3
        } else if flags.syn() {
            0
        } else if flags.fin() {
            1
        } else if flags.ack() {
            2
        } else {
            return self;
        };
        TcpState::ALL[usize::from(TCP_STATES[dir as usize][event][self as usize])]
    }
}

/// Which way a segment goes, as IPVS's state table distinguishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client -> real server, when replies come through the director too.
    Input = 0,
    /// Real server -> client.
    Output = 1,
    /// Client -> real server, when replies bypass the director (DR, tunnel) and no output
    /// segment has been seen.
    InputOnly = 2,
}

// NONE and SYNACK are never a transition's target in IPVS's default table (SYNACK is in its
// secure_tcp table only); named for the table's column comments.
#[allow(dead_code)]
const NO: u8 = TcpState::None as u8;
const ES: u8 = TcpState::Established as u8;
const SS: u8 = TcpState::SynSent as u8;
const SR: u8 = TcpState::SynRecv as u8;
const FW: u8 = TcpState::FinWait as u8;
const TW: u8 = TcpState::TimeWait as u8;
const CL: u8 = TcpState::Close as u8;
const CW: u8 = TcpState::CloseWait as u8;
const LA: u8 = TcpState::LastAck as u8;
const LI: u8 = TcpState::Listen as u8;
#[allow(dead_code)]
const SA: u8 = TcpState::SynAck as u8;

/// IPVS's TCP transition table: `[direction][event: syn fin ack rst][current state]`.
#[rustfmt::skip]
const TCP_STATES: [[[u8; 11]; 4]; 3] = [
    // Input.  NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // Output.
    [
        /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // Input only.
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// State byte of a UDP entry (after the TCP states).
const UDP: u8 = 11;
/// State byte of an entry removed from the table (uncounted already).
const DEAD: u8 = 0xff;
/// Flag: replies bypass the director (DR, tunnel) and none has been seen (IPVS NOOUTPUT).
const F_NOOUTPUT: u8 = 1;

/// Idle timeouts, in milliseconds: one per TCP state, and UDP.
///
/// ipvsadm's `--set tcp tcpfin udp` sets [`TcpState::Established`], [`TcpState::FinWait`] and
/// `udp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per TCP state, indexed by `state as usize`.
    pub tcp_ms: [u64; 11],
    /// UDP entries.
    pub udp_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_ms: TcpState::ALL.map(TcpState::default_timeout_ms),
            udp_ms: 300_000,
        }
    }
}

impl Timeouts {
    /// The timeout of a TCP state.
    pub fn tcp(&self, s: TcpState) -> u64 {
        self.tcp_ms[s as usize]
    }

    /// Sets the timeout of a TCP state.
    pub fn set_tcp(&mut self, s: TcpState, ms: u64) {
        self.tcp_ms[s as usize] = ms;
    }
}

/// Timeouts stored as atomics so they can change while packets flow.
#[derive(Debug)]
struct AtomicTimeouts {
    /// TCP states, then UDP.
    ms: [AtomicU64; 12],
}

impl AtomicTimeouts {
    fn new(t: Timeouts) -> Self {
        let a = AtomicTimeouts {
            ms: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        a.set(t);
        a
    }

    fn set(&self, t: Timeouts) {
        for (a, v) in self.ms.iter().zip(t.tcp_ms.iter().chain([&t.udp_ms])) {
            a.store(*v, Relaxed);
        }
    }

    fn get(&self) -> Timeouts {
        Timeouts {
            tcp_ms: std::array::from_fn(|i| self.ms[i].load(Relaxed)),
            udp_ms: self.ms[usize::from(UDP)].load(Relaxed),
        }
    }

    fn for_state(&self, s: u8) -> u64 {
        self.ms.get(usize::from(s)).map_or(0, |a| a.load(Relaxed))
    }
}

/// How the connection table treats removed real servers and reused ports (IPVS sysctls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Entries bound to a real server that left the configuration expire at once (IPVS
    /// `expire_nodest_conn`): their next packet is scheduled anew if it can start a
    /// connection (UDP, TCP SYN), so flows are not stranded on a removed server. Default on.
    pub expire_nodest_conn: bool,
    /// Persistence templates pointing at a quiescent real server expire (IPVS
    /// `expire_quiescent_template`). Default on.
    pub expire_quiescent_template: bool,
    /// A client SYN that hits an entry in a closing state (FIN_WAIT, TIME_WAIT, CLOSE,
    /// CLOSE_WAIT, LAST_ACK), or bound to a removed or quiescent real server, replaces the entry
    /// and is scheduled at once, never dropped (IPVS `conn_reuse_mode` without its one-second
    /// stall). Off: the SYN reuses the old entry and its real server. Default on.
    pub conn_reuse_reschedule: bool,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        ConntrackSettings {
            expire_nodest_conn: true,
            expire_quiescent_template: true,
            conn_reuse_reschedule: true,
        }
    }
}

#[derive(Debug)]
struct AtomicSettings {
    expire_nodest_conn: AtomicBool,
    expire_quiescent_template: AtomicBool,
    conn_reuse_reschedule: AtomicBool,
}

impl AtomicSettings {
    fn new(s: ConntrackSettings) -> Self {
        AtomicSettings {
            expire_nodest_conn: AtomicBool::new(s.expire_nodest_conn),
            expire_quiescent_template: AtomicBool::new(s.expire_quiescent_template),
            conn_reuse_reschedule: AtomicBool::new(s.conn_reuse_reschedule),
        }
    }

    fn set(&self, s: ConntrackSettings) {
        self.expire_nodest_conn.store(s.expire_nodest_conn, Relaxed);
        self.expire_quiescent_template
            .store(s.expire_quiescent_template, Relaxed);
        self.conn_reuse_reschedule
            .store(s.conn_reuse_reschedule, Relaxed);
    }

    fn get(&self) -> ConntrackSettings {
        ConntrackSettings {
            expire_nodest_conn: self.expire_nodest_conn.load(Relaxed),
            expire_quiescent_template: self.expire_quiescent_template.load(Relaxed),
            conn_reuse_reschedule: self.conn_reuse_reschedule.load(Relaxed),
        }
    }
}

/// One connection: both tuples, state, last activity, packet counts and the counters it feeds.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Client -> virtual service.
    pub(crate) orig: Tuple,
    /// Real server -> client (or -> local address, for FULLNAT).
    pub(crate) reply: Tuple,
    /// A [`TcpState`] value, [`UDP`] or [`DEAD`].
    state: AtomicU8,
    flags: AtomicU8,
    in_pkts: AtomicU32,
    out_pkts: AtomicU32,
    last_seen: AtomicU64,
    /// The real server's counters and connection counts.
    pub(crate) dest: Arc<DestState>,
    /// The service's counters.
    pub(crate) service: Arc<Traffic>,
    /// The persistence template that chose the real server (released when the entry goes).
    pub(crate) template: Option<Arc<crate::persist::Template>>,
    /// How packets reach the real server.
    pub(crate) forward: ForwardMethod,
    /// FULLNAT: the pool of the local port this connection holds (the local address and port
    /// are the reply tuple's destination); the port is freed when the entry is dropped.
    lease: Option<Arc<PortPool>>,
}

/// How many gone entries holding a new connection's tuple [`ConnTable::insert`] removes before
/// it gives up (only concurrent inserts of the same tuple can make it loop at all).
const STALE_RETRIES: u32 = 8;

/// Whether a new TCP connection may take the reply slot of `old`: `old` is finished (TIME_WAIT
/// or CLOSE), so no reply of it can still arrive. This is the case of a client that reuses a
/// source port towards another VIP balanced onto the same real server port (the reply tuples
/// are equal) within TIME_WAIT; IPVS keeps both and refuses neither.
fn supersedes(new: &Conn, old: &Conn) -> bool {
    new.orig.proto == Protocol::Tcp
        && matches!(old.tcp_state(), Some(TcpState::TimeWait | TcpState::Close))
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(pool) = self.lease.take() {
            pool.free(self.reply.dport);
        }
    }
}

impl Conn {
    /// A new entry, TCP in state NONE (the first segment moves it) or UDP. Entries to a direct
    /// routing or tunnel real server, whose replies bypass the director, follow IPVS's
    /// input-only TCP table until a reply is seen (IPVS `IP_VS_CONN_F_NOOUTPUT`).
    pub(crate) fn new(
        orig: Tuple,
        reply: Tuple,
        now: Timestamp,
        dest: Arc<DestState>,
        service: Arc<Traffic>,
    ) -> Self {
        let state = match orig.proto {
            Protocol::Tcp => TcpState::None as u8,
            Protocol::Udp => UDP,
        };
        let bypass = matches!(
            crate::tunnel::Fwd::unpack(dest.fwd.load(Relaxed)).method,
            ForwardMethod::Route | ForwardMethod::Tunnel
        );
        Conn {
            orig,
            reply,
            state: AtomicU8::new(state),
            flags: AtomicU8::new(if bypass { F_NOOUTPUT } else { 0 }),
            in_pkts: AtomicU32::new(0),
            out_pkts: AtomicU32::new(0),
            last_seen: AtomicU64::new(now.0),
            dest,
            service,
            template: None,
            forward: ForwardMethod::Masq,
            lease: None,
        }
    }

    /// The same connection with another forwarding method and, for FULLNAT, the lease of its
    /// local port (which must be the reply tuple's destination port).
    pub(crate) fn with_forward(mut self, forward: ForwardMethod, lease: Option<PortLease>) -> Self {
        self.forward = forward;
        self.lease = lease.and_then(|l| {
            debug_assert_eq!(l.port(), self.reply.dport);
            l.into_pool()
        });
        self
    }

    /// Whether the real server answers the client directly (direct routing, tunnel).
    pub(crate) fn replies_bypass(&self) -> bool {
        matches!(self.forward, ForwardMethod::Route | ForwardMethod::Tunnel)
    }

    /// The TCP state, or `None` for UDP and dead entries.
    pub(crate) fn tcp_state(&self) -> Option<TcpState> {
        TcpState::ALL
            .get(usize::from(self.state.load(Relaxed)))
            .copied()
    }

    pub(crate) fn state_name(&self) -> &'static str {
        match self.state.load(Relaxed) {
            UDP => "UDP",
            DEAD => "NONE",
            s => TcpState::ALL
                .get(usize::from(s))
                .map_or("NONE", |t| t.name()),
        }
    }

    fn is_dead(&self) -> bool {
        self.state.load(Relaxed) == DEAD
    }

    /// Notes a packet at `now`: activity, packet count and, for TCP, the state transition
    /// (moving the real server's active/inactive counts when the state crosses ESTABLISHED).
    pub(crate) fn on_packet(&self, now: Timestamp, from_client: bool, flags: TcpFlags) {
        // Skip the store when nothing changes, to spare the cache line.
        if self.last_seen.load(Relaxed) < now.0 {
            self.last_seen.store(now.0, Relaxed);
        }
        let pkts = if from_client {
            &self.in_pkts
        } else {
            &self.out_pkts
        };
        pkts.fetch_add(1, Relaxed);
        if self.orig.proto != Protocol::Tcp {
            return;
        }
        let dir = if !from_client {
            if self.flags.load(Relaxed) & F_NOOUTPUT != 0 {
                self.flags.fetch_and(!F_NOOUTPUT, Relaxed);
            }
            Direction::Output
        } else if self.flags.load(Relaxed) & F_NOOUTPUT != 0 {
            Direction::InputOnly
        } else {
            Direction::Input
        };
        let mut cur = self.state.load(Relaxed);
        loop {
            let Some(&s) = TcpState::ALL.get(usize::from(cur)) else {
                return; // dead
            };
            let n = s.next(dir, flags);
            if n == s {
                return;
            }
            match self
                .state
                .compare_exchange_weak(cur, n as u8, Relaxed, Relaxed)
            {
                Ok(_) => {
                    let (was, is) = (s == TcpState::Established, n == TcpState::Established);
                    if was != is {
                        self.dest.add_conn(is);
                        self.dest.remove_conn(was);
                    }
                    return;
                }
                Err(v) => cur = v,
            }
        }
    }

    /// When the entry expires if idle, given the timeouts.
    fn expires_at(&self, t: &AtomicTimeouts) -> u64 {
        self.last_seen
            .load(Relaxed)
            .saturating_add(t.for_state(self.state.load(Relaxed)))
    }

    /// Marks the entry dead; returns whether it was active (ESTABLISHED), or `None` if it was
    /// dead already.
    fn kill(&self) -> Option<bool> {
        match self.state.swap(DEAD, Relaxed) {
            DEAD => None,
            s => Some(s == TcpState::Established as u8),
        }
    }
}

/// Why a new connection could not be entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// The table holds `max_connections` entries and none could be evicted.
    Full,
    /// Another connection already uses the reply tuple.
    Conflict,
}

/// One connection entry as listed (`ipvsadm -L -c`, `ListConnections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port.
    pub virtual_addr: SocketAddr,
    /// Real server address and port.
    pub real_server: SocketAddr,
    /// Where the real server's replies are addressed: the client for NAT, a local address for
    /// FULLNAT.
    pub reply_to: SocketAddr,
    /// IPVS state name (`"ESTABLISHED"`, `"SYN_RECV"`, ..., `"UDP"`).
    pub state: &'static str,
    /// Milliseconds until the entry expires if idle.
    pub expires_in_ms: u64,
    /// Packets from the client.
    pub in_packets: u64,
    /// Packets to the client.
    pub out_packets: u64,
}

/// The two tables of a shard.
#[derive(Debug, Default)]
struct Tables {
    /// Keyed by `conn.orig`.
    orig: HashTable<Arc<Conn>>,
    /// Keyed by `conn.reply`.
    reply: HashTable<Arc<Conn>>,
}

/// A shard on its own cache line(s), so shard locks do not share lines.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(RwLock<Tables>);

impl Shard {
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connection table.
#[derive(Debug)]
pub(crate) struct ConnTable {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::FixedState,
    cursor: AtomicUsize,
    evict_cursor: AtomicUsize,
    count: AtomicUsize,
    max: usize,
    evicted: AtomicU64,
    /// The latest time given to `expire` or `note_time`.
    clock: AtomicU64,
    timeouts: AtomicTimeouts,
    settings: AtomicSettings,
}

/// Each [`ConnTable::expire`] call scans this fraction (1/N) of the shards.
const REAP_FRACTION: usize = 16;
/// Entries evicted at most per eviction round when the table is full.
const EVICT_BATCH: usize = 8;
/// Entries inspected at most per shard in an eviction round.
const EVICT_SCAN: usize = 512;
/// Shards visited at most per eviction round.
const EVICT_SHARDS: usize = 4;

impl ConnTable {
    /// A table of at most `max` connections in `shards` shards (rounded up to a power of two,
    /// at least 2), hashing with `seed`.
    pub(crate) fn new(max: usize, shards: usize, seed: u64) -> Self {
        let shards = shards.clamp(2, 1 << 16).next_power_of_two();
        ConnTable {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            cursor: AtomicUsize::new(0),
            evict_cursor: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            max,
            evicted: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            timeouts: AtomicTimeouts::new(Timeouts::default()),
            settings: AtomicSettings::new(ConntrackSettings::default()),
        }
    }

    fn hash(&self, t: &Tuple) -> u64 {
        self.hasher.hash_one(t)
    }

    fn shard(&self, h: u64) -> &Shard {
        // High bits: the tables index buckets with the low ones.
        &self.shards[(h >> 40) as usize & (self.shards.len() - 1)]
    }

    /// Live connections.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// The table limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Notes the time of a periodic caller (see [`ConnTable::clock`]).
    pub(crate) fn note_time(&self, now: Timestamp) {
        self.clock.fetch_max(now.0, Relaxed);
    }

    /// The latest time given to [`ConnTable::expire`] or [`ConnTable::note_time`].
    pub(crate) fn clock(&self) -> Timestamp {
        Timestamp(self.clock.load(Relaxed))
    }

    /// Entries evicted to make room for new connections since the start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    /// Current timeouts.
    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts.get()
    }

    /// Changes the timeouts; they apply to existing connections too.
    pub(crate) fn set_timeouts(&self, t: Timeouts) {
        self.timeouts.set(t);
    }

    /// Current settings.
    pub(crate) fn settings(&self) -> ConntrackSettings {
        self.settings.get()
    }

    /// Changes the settings; they apply to existing connections too.
    pub(crate) fn set_settings(&self, s: ConntrackSettings) {
        self.settings.set(s);
    }

    /// Whether `c` is gone at `now`: dead, idle past its state's timeout, or bound to a removed
    /// real server with `expire_nodest_conn`.
    fn expired(&self, c: &Conn, now: Timestamp) -> bool {
        c.is_dead()
            || now.0 >= c.expires_at(&self.timeouts)
            || (c.dest.is_removed() && self.settings.expire_nodest_conn.load(Relaxed))
    }

    /// Whether a client segment with `flags` on `c` starts a new connection that must be
    /// scheduled afresh (`conn_reuse_reschedule`): a SYN on a closing entry, or on one bound to
    /// a removed or quiescent real server.
    pub(crate) fn reschedules(&self, c: &Conn, flags: TcpFlags) -> bool {
        if !flags.is_connection_start() || !self.settings.conn_reuse_reschedule.load(Relaxed) {
            return false;
        }
        match c.tcp_state() {
            Some(s) if s.is_closing() => true,
            Some(_) => c.dest.is_removed() || c.dest.is_quiescent(),
            None => false,
        }
    }

    /// Runs `f` on the live connection that `t` belongs to (either tuple) with whether `t` is
    /// its original tuple, under the shard's read lock. An entry that is gone (see `expired`)
    /// is removed instead and `f` is not called.
    pub(crate) fn with<R>(
        &self,
        t: &Tuple,
        now: Timestamp,
        f: impl FnOnce(&Arc<Conn>, bool) -> R,
    ) -> Option<R> {
        let h = self.hash(t);
        let stale = {
            let tables = self.shard(h).read();
            let (c, from_client) = match tables.orig.find(h, |c| c.orig == *t) {
                Some(c) => (c, true),
                None => (tables.reply.find(h, |c| c.reply == *t)?, false),
            };
            if !self.expired(c, now) {
                return Some(f(c, from_client));
            }
            Arc::clone(c)
        };
        // The guard is dropped: removing takes the shard's write lock.
        self.remove(&stale);
        None
    }

    /// The live connection `t` is the original tuple of, at `now`, touching and removing
    /// nothing (explain).
    pub(crate) fn peek(&self, t: &Tuple, now: Timestamp) -> Option<Arc<Conn>> {
        let h = self.hash(t);
        let tables = self.shard(h).read();
        let c = tables.orig.find(h, |c| c.orig == *t)?;
        (!self.expired(c, now)).then(|| Arc::clone(c))
    }

    /// Removes `conn` from the table (both tuples) and uncounts it, if no one did yet.
    pub(crate) fn remove(&self, conn: &Arc<Conn>) -> bool {
        let Some(active) = conn.kill() else {
            return false;
        };
        self.unlink(conn);
        conn.dest.unbind(active);
        if let Some(t) = &conn.template {
            t.release();
        }
        self.count.fetch_sub(1, Relaxed);
        true
    }

    /// Takes both of `conn`'s slots out of the tables (those that point at it).
    fn unlink(&self, conn: &Arc<Conn>) {
        let h = self.hash(&conn.orig);
        if let Ok(e) = self
            .shard(h)
            .write()
            .orig
            .find_entry(h, |c| Arc::ptr_eq(c, conn))
        {
            e.remove();
        }
        let h = self.hash(&conn.reply);
        if let Ok(e) = self
            .shard(h)
            .write()
            .reply
            .find_entry(h, |c| Arc::ptr_eq(c, conn))
        {
            e.remove();
        }
    }

    /// Makes sure a new connection fits: if the table is full, evicts up to a few entries that
    /// are half-open (first) or closing (second), never an established one. Returns whether
    /// there is room now.
    pub(crate) fn make_room(&self, now: Timestamp) -> bool {
        if self.len() < self.max {
            return true;
        }
        if self.max == 0 {
            return false;
        }
        self.evict(now, true) || self.evict(now, false)
    }

    /// One eviction round: removes up to [`EVICT_BATCH`] entries that are gone, half-open
    /// (`half_open`) or closing (otherwise). Returns whether any went.
    fn evict(&self, now: Timestamp, half_open: bool) -> bool {
        let n = self.shards.len();
        let start = self.evict_cursor.fetch_add(1, Relaxed);
        let mut victims: [Option<Arc<Conn>>; EVICT_BATCH] = Default::default();
        let mut found = 0;
        'shards: for k in 0..EVICT_SHARDS.min(n) {
            let tables = self.shards[(start + k) % n].read();
            for c in tables.orig.iter().take(EVICT_SCAN) {
                let pick = match c.tcp_state() {
                    _ if self.expired(c, now) => true,
                    Some(s) if half_open => s.is_half_open(),
                    Some(s) => s.is_closing(),
                    None => false,
                };
                if pick {
                    victims[found] = Some(Arc::clone(c));
                    found += 1;
                    if found == EVICT_BATCH {
                        break 'shards;
                    }
                }
            }
        }
        let mut removed = 0;
        for c in victims.iter().flatten() {
            if self.remove(c) {
                removed += 1;
            }
        }
        self.evicted.fetch_add(removed, Relaxed);
        removed > 0
    }

    /// Enters a new connection under both tuples and counts it on its real server; returns it
    /// with `true`. If another thread entered the same original tuple first, that connection is
    /// returned instead, with `false`. A full table first evicts (see [`ConnTable::make_room`]).
    pub(crate) fn insert(
        &self,
        conn: Conn,
        now: Timestamp,
    ) -> Result<(Arc<Conn>, bool), InsertError> {
        loop {
            if self.count.fetch_add(1, Relaxed) < self.max {
                break;
            }
            self.count.fetch_sub(1, Relaxed);
            if !self.make_room(now) {
                if let Some(t) = &conn.template {
                    t.release();
                }
                return Err(InsertError::Full);
            }
        }
        let conn = Arc::new(conn);
        // Counted before it is reachable, so a concurrent removal never uncounts first.
        conn.dest.bind(false);
        let h = self.hash(&conn.orig);
        let mut attempts = 0;
        loop {
            let mut tables = self.shard(h).write();
            let Some(w) = tables.orig.find(h, |c| c.orig == conn.orig) else {
                let hasher = |c: &Arc<Conn>| self.hash(&c.orig);
                tables.orig.insert_unique(h, Arc::clone(&conn), hasher);
                break;
            };
            if !self.expired(w, now) {
                let w = Arc::clone(w);
                drop(tables);
                self.undo(&conn);
                return Ok((w, false));
            }
            // A gone entry holds the tuple: take it out and try again with this very entry
            // (its forwarding method, local-port lease and template stay as they are).
            let stale = Arc::clone(w);
            drop(tables);
            self.remove(&stale);
            attempts += 1;
            if attempts == STALE_RETRIES {
                self.undo(&conn);
                return Err(InsertError::Conflict);
            }
        }
        let hr = self.hash(&conn.reply);
        let conflict = {
            let mut tables = self.shard(hr).write();
            match tables.reply.find_entry(hr, |c| c.reply == conn.reply) {
                Ok(mut e) => {
                    let o = e.get();
                    let gone = self.expired(o, now) || supersedes(&conn, o);
                    if gone || o.replies_bypass() {
                        // A gone or finished entry, or one whose replies never come this way,
                        // held the slot: hand the slot over. A gone or finished entry is then
                        // removed (its reply slot no longer points at it); a direct-routing or
                        // tunnel one lives on without it.
                        let old = std::mem::replace(e.get_mut(), Arc::clone(&conn));
                        drop(tables);
                        if gone {
                            self.remove(&old);
                        }
                        false
                    } else {
                        true
                    }
                }
                Err(_) => {
                    let hasher = |c: &Arc<Conn>| self.hash(&c.reply);
                    tables.reply.insert_unique(hr, Arc::clone(&conn), hasher);
                    false
                }
            }
        };
        // Replies of direct-routing and tunnel connections bypass the director: such an entry
        // lives without the reply slot rather than being refused (IPVS never refuses them).
        if conflict && !conn.replies_bypass() {
            if let Ok(e) = self
                .shard(h)
                .write()
                .orig
                .find_entry(h, |c| Arc::ptr_eq(c, &conn))
            {
                e.remove();
            }
            self.undo(&conn);
            return Err(InsertError::Conflict);
        }
        Ok((conn, true))
    }

    fn undo(&self, conn: &Arc<Conn>) {
        if conn.kill().is_some() {
            conn.dest.unbind(false);
            if let Some(t) = &conn.template {
                t.release();
            }
        }
        self.count.fetch_sub(1, Relaxed);
    }

    /// Scans the next 1/[`REAP_FRACTION`] of the shards (at least one) and removes the
    /// connections that are gone at `now`. Returns how many were removed.
    ///
    /// The scan holds each shard's read lock only (packets keep flowing); removals take the
    /// write locks one entry at a time. Tables left mostly empty (after a flood) are shrunk.
    pub(crate) fn expire(&self, now: Timestamp) -> usize {
        self.note_time(now);
        let n = self.shards.len();
        let slice = (n / REAP_FRACTION).max(1);
        let start = self.cursor.fetch_add(slice, Relaxed);
        let mut removed = 0;
        let mut gone = Vec::new();
        for k in 0..slice {
            let shard = &self.shards[(start + k) % n];
            gone.clear();
            {
                let tables = shard.read();
                gone.extend(tables.orig.iter().filter(|c| self.expired(c, now)).cloned());
            }
            for c in &gone {
                if self.remove(c) {
                    removed += 1;
                }
            }
            self.shrink(shard);
        }
        removed
    }

    /// Gives memory back when a shard's tables are at most 1/8 full.
    fn shrink(&self, shard: &Shard) {
        let big = |t: &HashTable<Arc<Conn>>| t.capacity() > 1024 && t.len() * 8 < t.capacity();
        {
            let tables = shard.read();
            if !big(&tables.orig) && !big(&tables.reply) {
                return;
            }
        }
        let mut tables = shard.write();
        let n = tables.orig.len().max(tables.reply.len()) * 2;
        tables.orig.shrink_to(n, |c| self.hash(&c.orig));
        tables.reply.shrink_to(n, |c| self.hash(&c.reply));
    }

    /// How many [`ConnTable::expire`] calls make one full pass over the table.
    pub(crate) fn expire_calls_per_pass(&self) -> usize {
        let n = self.shards.len();
        n.div_ceil((n / REAP_FRACTION).max(1))
    }

    /// Number of shards (listing goes shard by shard).
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The live entries of shard `i` (of a service, if `filter` is set), as listed.
    pub(crate) fn list_shard(
        &self,
        i: usize,
        now: Timestamp,
        filter: Option<&ServiceKey>,
    ) -> Vec<ConnectionInfo> {
        let Some(shard) = self.shards.get(i) else {
            return Vec::new();
        };
        let tables = shard.read();
        tables
            .orig
            .iter()
            .filter(|c| !self.expired(c, now))
            .filter(|c| {
                filter.is_none_or(|k| {
                    k.protocol == c.orig.proto
                        && k.addr.ip() == c.orig.dst
                        && (k.addr.port() == 0 || k.addr.port() == c.orig.dport)
                })
            })
            .map(|c| ConnectionInfo {
                protocol: c.orig.proto,
                client: SocketAddr::new(c.orig.src, c.orig.sport),
                virtual_addr: SocketAddr::new(c.orig.dst, c.orig.dport),
                real_server: SocketAddr::new(c.reply.src, c.reply.sport),
                reply_to: SocketAddr::new(c.reply.dst, c.reply.dport),
                state: c.state_name(),
                expires_in_ms: c.expires_at(&self.timeouts).saturating_sub(now.0),
                in_packets: u64::from(c.in_pkts.load(Relaxed)),
                out_packets: u64::from(c.out_pkts.load(Relaxed)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_stays_small() {
        // Two tuples, two pointers, state, counters, the persistence template, the forwarding
        // method and FULLNAT's port pool pointer: the entry itself (without the Arc header).
        assert!(
            std::mem::size_of::<Conn>() <= 136,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
