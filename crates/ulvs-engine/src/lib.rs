//! Sans-IO dataplane core of ulvs.
//!
//! The engine takes IP packets as byte buffers, decides what to do with them (schedule a new
//! connection, rewrite for the chosen real server, rewrite a reply back, drop with a reason) and
//! rewrites them in place. It does no I/O, reads no clock (time is a parameter), spawns nothing
//! and knows nothing of tokio, tonic or file descriptors, so every forwarding test is a plain
//! byte-buffer test that runs without root.
//!
//! # Invariants
//! - The per-packet path ([`Engine::process`]) does not allocate, takes no lock on the
//!   configuration (it reads an `arc-swap` snapshot) and logs nothing.
//! - Counters are atomics; reading them ([`Engine::stats`]) happens off the packet path.
//! - Configuration changes ([`Engine::apply_config`]) build a new snapshot off the packet path and
//!   swap it in whole; counters of services and real servers that survive a change are kept.

//!
//! # Layout
//! - [`config`]: the configuration value and its validation.
//! - `snapshot`: the immutable snapshot built from a configuration, read by the packet path.
//! - [`wire`], [`checksum`]: in-place packet views and RFC 1624 checksum updates.
//! - [`offload`]: partial checksums and GSO super-packets (finishing, software segmentation).
//! - `path`: the packet path (IPv4/IPv6 parsing, classification, conntrack lookup).
//! - `fwd`: the forwarding methods, one module each (NAT, FULLNAT with its local-port pools).
//! - [`icmp`]: ICMP/ICMPv6 handling (echo replies for virtual addresses, translation of errors
//!   that belong to a connection) and the FRAG_NEEDED / Packet Too Big builder.
//! - `conntrack`: the sharded connection table, the IPVS TCP state machine, timeouts, the
//!   reaper, the table limit with flood defence.
//! - `sched`: the schedulers (all fourteen of IPVS), one module each.
//! - `persist`: persistence templates and the choice of a real server for a new connection.
//! - `explain`: [`Engine::explain`], the pure "which real server, and why" query.
//! - `stats`: atomic counters, the rate estimator, the per-service new-connection cap.

#[doc(hidden)]
pub mod bench_support;
pub mod checksum;
pub mod config;
mod conntrack;
mod explain;
mod fwd;
pub mod icmp;
mod l2;
mod neigh;
pub mod offload;
mod path;
mod persist;
mod sched;
mod snapshot;
mod stats;
mod tunnel;
pub mod wire;
mod xmit;

pub use xmit::DEFAULT_PATH_MTU;

pub use config::{
    Config, ConfigError, DestConfig, ForwardMethod, Persistence, Protocol, SchedFlags,
    SchedulerKind, ServiceConfig, ServiceKey, TunnelChecksum, TunnelConfig, TunnelType,
};
pub use conntrack::{ConnectionInfo, ConntrackSettings, Direction, TcpState, Timeouts};
pub use explain::{ExplainError, ExplainOutcome, Explanation};
pub use persist::TemplateEntry;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A point in time, in milliseconds since an origin the caller chooses (monotonic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// Options fixed when an engine is created.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Maximum number of connection entries; new connections beyond it are a counted drop.
    pub max_connections: usize,
    /// Number of conntrack shards (a power of two).
    pub shards: usize,
    /// Seed of the conntrack hasher and of the scheduler's pseudo-random source (twos); random
    /// per process in production, fixed in tests.
    pub hash_seed: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_connections: 1 << 20,
            shards: 64,
            hash_seed: 0,
        }
    }
}

/// How the TCP/UDP checksum field of a packet is to be read and patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4Csum {
    /// The field holds the complete checksum (for UDP over IPv4, 0 means "none"). Rewrites
    /// patch it as `HC' = ~(~HC + ~old + new)` for every changed word (RFC 1624).
    #[default]
    Complete,
    /// Checksum offload (`VIRTIO_NET_HDR_F_NEEDS_CSUM` from a TUN with `IFF_VNET_HDR`): the
    /// field holds the folded, non-complemented pseudo-header sum, and whoever sends the
    /// packet on finishes the checksum over the L4 bytes. Rewrites patch the field only for
    /// pseudo-header changes (addresses), as `sum' = sum + ~old + new` without the final
    /// complement, and leave it alone for port changes (the ports are summed at the end).
    Partial,
}

/// What a packet's offload metadata says (from the `virtio_net_hdr` in front of it on a TUN
/// with `IFF_VNET_HDR`); the default is a plain packet with complete checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// How to treat the TCP/UDP checksum field.
    pub csum: L4Csum,
    /// For a GSO super-packet (one IP header in front of many segments' worth of payload, cut
    /// up by the kernel after the engine), the payload bytes per segment; 0 for an ordinary
    /// packet. Rewrites that keep the header layout (NAT, FULLNAT) handle a super-packet
    /// exactly like one packet; methods whose output cannot carry the GSO type (IPIP/GUE/GRE
    /// encapsulation) must refuse it with [`DropReason::GsoNotSplit`] until it is split.
    pub gso_size: u16,
}

impl Offload {
    /// A packet whose L4 checksum is partial (pseudo-header sum only), not a super-packet.
    pub const PARTIAL: Offload = Offload {
        csum: L4Csum::Partial,
        gso_size: 0,
    };

    /// Whether this is a GSO super-packet.
    pub fn is_gso(&self) -> bool {
        self.gso_size != 0
    }
}

/// An IP packet (as read from a TUN device, no link-layer header) inside a buffer that has
/// headroom in front of it for encapsulation.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    offload: Offload,
}

impl<'a> PacketBuf<'a> {
    /// The packet is `buf[start..start + len]`; `buf[..start]` is headroom.
    ///
    /// # Panics
    /// If `start + len > buf.len()`.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        assert!(start + len <= buf.len(), "packet outside its buffer");
        PacketBuf {
            buf,
            start,
            end: start + len,
            offload: Offload::default(),
        }
    }

    /// Like [`PacketBuf::new`], for a packet that came with offload metadata (a partial L4
    /// checksum, a GSO super-packet).
    ///
    /// # Panics
    /// If `start + len > buf.len()`.
    pub fn with_offload(buf: &'a mut [u8], start: usize, len: usize, offload: Offload) -> Self {
        let mut p = PacketBuf::new(buf, start, len);
        p.offload = offload;
        p
    }

    /// The packet's offload metadata.
    pub fn offload(&self) -> Offload {
        self.offload
    }

    /// The packet bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The packet bytes, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Bytes of headroom in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Length of the packet.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Shortens (or lengthens, within the buffer) the packet to `len` bytes from its start.
    pub(crate) fn set_len(&mut self, len: usize) {
        self.end = (self.start + len).min(self.buf.len());
    }

    /// The whole buffer with the packet's position in it, for moves into the headroom.
    pub(crate) fn raw(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.start, self.end)
    }

    /// Makes `buf[start..end]` the packet.
    pub(crate) fn set_bounds(&mut self, start: usize, end: usize) {
        debug_assert!(start <= end && end <= self.buf.len());
        self.start = start.min(self.buf.len());
        self.end = end.clamp(self.start, self.buf.len());
    }
}

/// The director's own addresses and limits that the forwarding methods need (set by the
/// daemon from its command line, not part of the service configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Director {
    /// Outer source address of IPv4 tunnel packets (tunnel mode to IPv4 real servers).
    pub tunnel_source_v4: Option<Ipv4Addr>,
    /// Outer source address of IPv6 tunnel packets.
    pub tunnel_source_v6: Option<Ipv6Addr>,
    /// The engine's MAC address behind the TAP device (direct routing): the source of
    /// forwarded frames and the address ARP/NDP answers give for virtual addresses. It must
    /// differ from the TAP device's own address, which the bridge treats as its own. `None`: no TAP, direct routing
    /// drops with [`DropReason::NoL2Device`].
    pub mac: Option<[u8; 6]>,
    /// Sender protocol address of the engine's ARP requests (0.0.0.0 when `None`).
    pub arp_source: Option<Ipv4Addr>,
    /// MTU of the path to tunnel-mode real servers unless one was set per real server
    /// ([`Engine::set_path_mtu`]).
    pub path_mtu: u32,
    /// The TAP takes frames with a `virtio_net_hdr` (`IFF_VNET_HDR`): a direct-routing
    /// super-packet goes out as one frame, its partial checksum and GSO metadata kept (the
    /// sender moves them past the Ethernet header), and the kernel segments it where the path
    /// needs it. Without it such super-packets are split first ([`DropReason::GsoNotSplit`]).
    pub frame_offload: bool,
}

impl Default for Director {
    fn default() -> Self {
        Director {
            tunnel_source_v4: None,
            tunnel_source_v6: None,
            mac: None,
            arp_source: None,
            path_mtu: DEFAULT_PATH_MTU,
            frame_offload: false,
        }
    }
}

/// What the caller must do with a processed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet was rewritten in place: send [`PacketBuf::data`] on. It is an IP packet (NAT
    /// rewrite or tunnel encapsulation, possibly moved into the headroom): write it to the TUN,
    /// whether it came from the TUN or, as a frame, from the TAP.
    Forward,
    /// The packet became an Ethernet frame for a direct-routing real server (the real server's
    /// MAC as destination, the TAP's as source, possibly moved into the headroom): write it to
    /// the TAP.
    ForwardFrame,
    /// The packet was turned into an answer to its sender: an ARP reply or NDP neighbour
    /// advertisement for a virtual address (a frame, from [`Engine::process_frame`]: write it
    /// to the TAP), or an ICMP echo reply for a virtual or local address or an ICMP error (from [`Engine::process`]: write it to the TUN, which
    /// routes it to the sender; from [`Engine::process_frame`] it is a frame to the sender's
    /// MAC).
    Reply,
    /// The packet belongs to no service or connection: from the TUN, send it on unchanged;
    /// from the TAP, ignore it (writing it back would duplicate it on the bridge).
    Pass,
    /// Drop the packet; the reason's counter has been incremented.
    Drop(DropReason),
}

/// Why a packet was dropped. Every reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Too short or inconsistent headers (bad version, IHL, total length, L4 header).
    Malformed,
    /// A new connection to a service that has no real server with a non-zero weight.
    NoDestination,
    /// A new connection while the connection table is full.
    TableFull,
    /// A packet for a service that is not a connection start (TCP without SYN) and matches no
    /// connection.
    NoConnection,
    /// A non-first IP fragment (fragments are not reassembled).
    Fragment,
    /// An IP protocol the engine does not handle, addressed to a virtual service address.
    UnsupportedProtocol,
    /// A TCP or UDP packet to a virtual address on a port (or protocol) that has no service.
    /// Passing it on would route it back into the TUN device.
    NoService,
    /// A new connection whose reply tuple (real server -> client) another connection already
    /// uses, so replies could not be told apart.
    TupleConflict,
    /// A new connection over its service's `max_new_connections_per_second`.
    RateLimited,
    /// A packet for a direct-routing real server whose link-layer address is not (or no
    /// longer) known; the engine's neighbour requests resolve it.
    Unresolved,
    /// A packet for a direct-routing real server while the engine has no TAP device
    /// ([`Director::mac`] unset).
    NoL2Device,
    /// A packet for a tunnel-mode real server while no tunnel source address of its family is
    /// set ([`Director::tunnel_source_v4`] / [`Director::tunnel_source_v6`]).
    NoTunnelSource,
    /// The buffer had too little headroom for the headers to add.
    NoHeadroom,
    /// A packet that would exceed the path MTU once encapsulated and may not be fragmented
    /// (IPv4 DF, or IPv6), for which no FRAG_NEEDED / Packet Too Big could be sent instead (it
    /// is an ICMP error or a later fragment, the announced MTU would not help, or the buffer
    /// cannot hold the error).
    TooBig,
    /// A GSO super-packet (see [`Offload::gso_size`]) for a forwarding method whose output
    /// cannot carry the GSO type (encapsulation). The packet is left unchanged, so the caller
    /// can split it into segments and submit each one.
    GsoNotSplit,
    /// A new FULLNAT connection while every local port towards the chosen real server is in
    /// use on every local address of the service.
    LocalPortExhausted,
}

impl DropReason {
    /// Every reason, for iterating counters.
    pub const ALL: [DropReason; 16] = [
        DropReason::Malformed,
        DropReason::NoDestination,
        DropReason::TableFull,
        DropReason::NoConnection,
        DropReason::Fragment,
        DropReason::UnsupportedProtocol,
        DropReason::NoService,
        DropReason::TupleConflict,
        DropReason::RateLimited,
        DropReason::Unresolved,
        DropReason::NoL2Device,
        DropReason::NoTunnelSource,
        DropReason::NoHeadroom,
        DropReason::TooBig,
        DropReason::GsoNotSplit,
        DropReason::LocalPortExhausted,
    ];

    /// The reason's position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name (used as a metric label).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoDestination => "no_destination",
            DropReason::TableFull => "table_full",
            DropReason::NoConnection => "no_connection",
            DropReason::Fragment => "fragment",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::NoService => "no_service",
            DropReason::TupleConflict => "tuple_conflict",
            DropReason::RateLimited => "rate_limited",
            DropReason::Unresolved => "unresolved",
            DropReason::NoL2Device => "no_l2_device",
            DropReason::NoTunnelSource => "no_tunnel_source",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::TooBig => "too_big",
            DropReason::GsoNotSplit => "gso_not_split",
            DropReason::LocalPortExhausted => "local_port_exhausted",
        }
    }
}

/// Traffic counters of a service or real server, as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients.
    pub in_pkts: u64,
    /// Packets to clients.
    pub out_pkts: u64,
    /// Bytes from clients (IP packet lengths).
    pub in_bytes: u64,
    /// Bytes to clients.
    pub out_bytes: u64,
}

/// Estimated rates per second (ipvsadm `--rate`), from [`Engine::estimate`] ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub in_pps: u64,
    /// Packets per second to clients.
    pub out_pps: u64,
    /// Bytes per second from clients.
    pub in_bps: u64,
    /// Bytes per second to clients.
    pub out_bps: u64,
}

/// Counters of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestStats {
    /// Real server address.
    pub addr: SocketAddr,
    /// Traffic counters.
    pub counters: Counters,
    /// Estimated rates.
    pub rates: Rates,
    /// Connections in ESTABLISHED (TCP) state.
    pub active_conns: u32,
    /// Other connections (TCP not established, UDP).
    pub inactive_conns: u32,
    /// Persistence templates pointing at this server.
    pub persistent_conns: u32,
}

/// Counters of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStats {
    /// Service key.
    pub key: ServiceKey,
    /// Traffic counters.
    pub counters: Counters,
    /// Estimated rates.
    pub rates: Rates,
    /// Per real server, in configuration order.
    pub dests: Vec<DestStats>,
}

/// Everything the engine counts, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Per service, in configuration order.
    pub services: Vec<ServiceStats>,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: Vec<(DropReason, u64)>,
    /// Live connection entries.
    pub connections: usize,
    /// The connection table's limit.
    pub max_connections: usize,
    /// Entries evicted (half-open first, never established) to make room in a full table.
    pub evicted_connections: u64,
}

/// The engine: configuration snapshot, connection table, schedulers and counters.
///
/// `Engine` is `Send + Sync`; worker threads share one through an `Arc` and call
/// [`Engine::process`] concurrently.
#[derive(Debug)]
pub struct Engine {
    config: ArcSwap<snapshot::Snapshot>,
    /// Serialises configuration changes (never taken by the packet path).
    apply_lock: Mutex<()>,
    conns: conntrack::ConnTable,
    templates: persist::Templates,
    rng: sched::Rng,
    /// Where new FULLNAT port pools start handing out ports (see
    /// [`Engine::set_local_port_seed`]); 0 = at the first port.
    port_seed: std::sync::atomic::AtomicU64,
    drops: stats::DropCounters,
    /// The director's addresses (tunnel sources, TAP MAC), swapped whole.
    director: ArcSwap<Director>,
    /// Link-layer addresses of direct-routing real servers.
    neigh: neigh::NeighTable,
}

impl Engine {
    /// A new engine with no services. `opts.shards` is rounded up to a power of two (at least 2).
    pub fn new(opts: EngineOptions) -> Self {
        Engine {
            config: ArcSwap::from_pointee(snapshot::Snapshot::default()),
            apply_lock: Mutex::new(()),
            conns: conntrack::ConnTable::new(opts.max_connections, opts.shards, opts.hash_seed),
            templates: persist::Templates::new(opts.shards, opts.hash_seed),
            rng: sched::Rng::new(opts.hash_seed),
            port_seed: std::sync::atomic::AtomicU64::new(0),
            drops: stats::DropCounters::default(),
            director: ArcSwap::from_pointee(Director::default()),
            neigh: neigh::NeighTable::default(),
        }
    }

    /// Sets the director's addresses and limits (tunnel sources, TAP MAC, path MTU).
    pub fn set_director(&self, d: Director) {
        self.director.store(Arc::new(d));
    }

    /// The director settings in use.
    pub fn director(&self) -> Director {
        Director::clone(&self.director.load())
    }

    /// Sets the MTU of the path to the real server at `ip` (every service's entry for it), as
    /// the daemon learns it from the kernel's routes; 0 returns to [`Director::path_mtu`].
    /// Tunnel-mode packets that would exceed it once encapsulated are answered with
    /// FRAG_NEEDED / Packet Too Big.
    pub fn set_path_mtu(&self, ip: IpAddr, mtu: u32) {
        let snap = self.config.load();
        for d in snap.services.iter().flat_map(|s| s.dests.iter()) {
            if d.addr.ip() == ip {
                d.state.path_mtu.store(mtu, Relaxed);
            }
        }
    }

    /// Processes one Ethernet frame read from the TAP device (direct routing) at time `now`.
    ///
    /// Never panics, whatever the bytes. ARP requests and NDP solicitations for virtual
    /// addresses are answered ([`Verdict::Reply`], a frame for the TAP); ARP and NDP messages of
    /// direct-routing real servers teach the neighbour table; IP packets addressed to the TAP's
    /// MAC are classified as [`Engine::process`] does and come out as a frame for a
    /// direct-routing real server ([`Verdict::ForwardFrame`]) or as an IP packet for the TUN
    /// ([`Verdict::Forward`], NAT or tunnel real servers). Anything else is
    /// [`Verdict::Pass`]: not ours, to be ignored.
    pub fn process_frame(&self, now: Timestamp, frame: &mut PacketBuf<'_>) -> Verdict {
        l2::process_frame(self, now, frame)
    }

    /// ARP requests and NDP neighbour solicitations (Ethernet frames for the TAP) that resolve
    /// the direct-routing real servers: one for each that is unknown or due for a refresh and
    /// was not asked in the last second. Also forgets addresses no longer configured. Call it
    /// on a timer (for example every 100 ms); it allocates, and is not on the packet path.
    pub fn neighbour_requests(&self, now: Timestamp) -> Vec<Vec<u8>> {
        let Some(our) = self.director.load().mac else {
            return Vec::new();
        };
        let arp_source = self.director.load().arp_source;
        let snap = self.config.load();
        self.neigh.retain(|ip| snap.route_dests.contains(ip));
        let mut ips: Vec<IpAddr> = snap.route_dests.iter().copied().collect();
        ips.sort();
        ips.into_iter()
            .filter(|ip| self.neigh.request_due(*ip, now))
            .map(|ip| l2::request(ip, our, arp_source))
            .collect()
    }

    /// The usable entries of the neighbour table (address, MAC), sorted by address.
    pub fn neighbours(&self, now: Timestamp) -> Vec<(IpAddr, [u8; 6])> {
        self.neigh.entries(now)
    }

    /// Makes FULLNAT port pools created from now on start handing out ports at a point chosen
    /// by `seed` and the pool (protocol, local address, real server) instead of at 1024. A
    /// daemon sets a random seed at start, so a restarted daemon does not hand out first the
    /// ports its previous instance used, which real servers may still hold in closing sockets
    /// (they would ignore the new SYNs). Tests leave it at 0 for fixed ports.
    pub fn set_local_port_seed(&self, seed: u64) {
        self.port_seed
            .store(seed, std::sync::atomic::Ordering::Relaxed);
    }

    /// Validates `cfg` and swaps it in as the new configuration. On error nothing changes.
    ///
    /// Besides [`Config::validate`], refuses what the engine does not implement yet
    /// ([`ConfigError::UnsupportedForward`], [`ConfigError::UnsupportedFeature`]); every
    /// forwarding method and both address families are supported. Scheduler tables (Maglev, sh,
    /// dh) are rebuilt here, off the packet path; lblc/lblcr tables carry over when a service
    /// keeps its scheduler.
    ///
    /// Connections to a real server that got weight 0 keep flowing (a client SYN on them is
    /// rescheduled with `conn_reuse_reschedule`). Connections to a real server that left the
    /// configuration expire at once with `expire_nodest_conn` (the default), else they keep
    /// flowing until their idle timeout. See [`ConntrackSettings`].
    pub fn apply_config(&self, cfg: &Config) -> Result<(), ConfigError> {
        let _serial = sched::lock(&self.apply_lock);
        let old = self.config.load();
        let port_seed = self.port_seed.load(std::sync::atomic::Ordering::Relaxed);
        let snap = snapshot::Snapshot::build(cfg, &old, port_seed)?;
        snap.apply_thresholds(cfg);
        for (svc, c) in snap.services.iter().zip(&cfg.services) {
            svc.traffic.set_cap(c.max_new_connections_per_second);
            for d in &svc.dests {
                d.state.set_quiescent(d.weight == 0);
            }
        }
        let snap = Arc::new(snap);
        let old = self.config.swap(Arc::clone(&snap));
        // Real servers that did not survive: their connections are judged by
        // `expire_nodest_conn` from now on.
        for d in old.services.iter().flat_map(|s| &s.dests) {
            let kept = snap
                .services
                .iter()
                .flat_map(|s| &s.dests)
                .any(|n| Arc::ptr_eq(&n.state, &d.state));
            if !kept {
                d.state.set_removed();
            }
        }
        Ok(())
    }

    /// Processes one packet read from the TUN device at time `now`.
    ///
    /// Never panics, whatever the bytes. On [`Verdict::Forward`] the packet was rewritten in
    /// place (and trimmed to its IP total length); on [`Verdict::Reply`] it was turned into an
    /// answer to its sender (it may have moved into the headroom).
    pub fn process(&self, now: Timestamp, pkt: &mut PacketBuf<'_>) -> Verdict {
        path::process(self, now, pkt)
    }

    /// Reaps a bounded slice of the connection table: entries idle past their timeout at `now`
    /// are removed. Returns how many were removed. Call it on a timer (for example every 100 ms).
    ///
    /// Each call scans 1/16 of the shards (at least one), moving a rotating cursor;
    /// [`Engine::expire_calls_per_pass`] calls cover the whole table. Packets never match an
    /// entry past its timeout, whether or not it has been reaped yet.
    ///
    /// The same call reaps persistence templates (a template expires once no connection holds
    /// it and it has been unused for the service's persistence timeout; it does not count in the
    /// return value) and lets lblc/lblcr drop stale locality entries.
    pub fn expire(&self, now: Timestamp) -> usize {
        let removed = self.conns.expire(now);
        self.templates.expire(now);
        for svc in &self.config.load().services {
            svc.scheduler.expire(now);
        }
        removed
    }

    /// The live persistence templates at `now` (for the connection listing, where they show
    /// with `template: true`).
    pub fn templates(&self, now: Timestamp) -> Vec<TemplateEntry> {
        self.templates.list(now)
    }

    /// How many persistence templates are live (reaped or not yet).
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// The latest time passed to [`Engine::expire`] or [`Engine::estimate`]: the engine's idea
    /// of "now" for callers without the daemon's clock (connection listings).
    pub fn clock(&self) -> Timestamp {
        self.conns.clock()
    }

    /// The connection table's limit.
    pub fn max_connections(&self) -> usize {
        self.conns.max()
    }

    /// How many [`Engine::expire`] calls make one full pass over the connection table.
    pub fn expire_calls_per_pass(&self) -> usize {
        self.conns.expire_calls_per_pass()
    }

    /// The connection idle timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.conns.timeouts()
    }

    /// Changes the connection idle timeouts (ipvsadm `--set`); existing connections are judged
    /// by the new values from now on.
    pub fn set_timeouts(&self, t: Timeouts) {
        self.conns.set_timeouts(t);
    }

    /// The connection-table settings.
    pub fn conntrack_settings(&self) -> ConntrackSettings {
        self.conns.settings()
    }

    /// Changes the connection-table settings; existing connections are judged by them from now.
    pub fn set_conntrack_settings(&self, s: ConntrackSettings) {
        self.conns.set_settings(s);
    }

    /// One rate-estimator tick at `now`; call it every 2 seconds (as IPVS does). Rates in
    /// [`Engine::stats`] are averages over these ticks.
    pub fn estimate(&self, now: Timestamp) {
        self.conns.note_time(now);
        let snap = self.config.load();
        for s in &snap.services {
            s.traffic.estimate(now);
            for d in &s.dests {
                d.state.traffic.estimate(now);
            }
        }
    }

    /// Zeroes the traffic counters and rates of one service and its real servers, or of all
    /// services (ipvsadm `-Z`). Returns `false` if `key` names no service. Connection counts
    /// and drop counters are not traffic counters and stay.
    pub fn zero_counters(&self, key: Option<&ServiceKey>) -> bool {
        let snap = self.config.load();
        let mut found = false;
        for s in snap
            .services
            .iter()
            .filter(|s| key.is_none_or(|k| *k == s.key))
        {
            found = true;
            s.traffic.zero();
            for d in &s.dests {
                d.state.traffic.zero();
            }
        }
        found || key.is_none()
    }

    /// How many pages [`Engine::connections`] lists the table in.
    pub fn connection_pages(&self) -> usize {
        self.conns.shard_count()
    }

    /// Page `page` (`0..connection_pages()`) of the live connection entries at `now`, of one
    /// service if `service` is set. Each page is read under one shard's read lock, so listing a
    /// large table page by page never holds the packet path up for long.
    pub fn connections(
        &self,
        page: usize,
        now: Timestamp,
        service: Option<&ServiceKey>,
    ) -> Vec<ConnectionInfo> {
        self.conns.list_shard(page, now, service)
    }

    /// Reads every counter.
    pub fn stats(&self) -> StatsSnapshot {
        let snap = self.config.load();
        let services = snap
            .services
            .iter()
            .map(|s| ServiceStats {
                key: s.key,
                counters: s.traffic.read(),
                rates: s.traffic.rates(),
                dests: s
                    .dests
                    .iter()
                    .map(|d| DestStats {
                        addr: d.addr,
                        counters: d.state.traffic.read(),
                        rates: d.state.traffic.rates(),
                        active_conns: d.state.active(),
                        inactive_conns: d.state.inactive(),
                        persistent_conns: d.state.persistent.load(Relaxed),
                    })
                    .collect(),
            })
            .collect();
        StatsSnapshot {
            services,
            drops: self.drops.read(),
            connections: self.conns.len(),
            max_connections: self.conns.max(),
            evicted_connections: self.conns.evicted(),
        }
    }
}
