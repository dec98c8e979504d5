//! The "every mode" test bed shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/engine_*`),
//! the proptests and the regression replay (`tests/fuzz*.rs`): one engine configured with every
//! forwarding method and family, and a driver that feeds it a sequence of frames the way the
//! dataplane workers do, checking after each frame that it ended forwarded, answered, passed or
//! dropped with a counted reason, and that the counters stay consistent.
//!
//! # Input format
//! An input is a sequence of records, each `ctl: u8`, `len: u16` (little-endian, cut to what is
//! left), then `len` bytes of frame. `ctl`:
//! - bits 0-2: how far the clock moves before the frame: 0, 1 ms, 10 ms, 100 ms, 1 s, 10 s,
//!   100 s, 1000 s (past every idle and persistence timeout);
//! - bit 3: run a whole reaper pass ([`Engine::expire`]) and a rate-estimator tick first;
//! - bit 4 (L3 only): the frame starts with the 10-byte `virtio_net_hdr` of a TUN with
//!   `IFF_VNET_HDR` (partial checksum flag, GSO type and size), as the worker reads it;
//! - bits 5-6: headroom in front of the packet: 128 (the workers'), 0, 24 or 60 bytes;
//! - bit 7: swap to the other of two configurations first (weights, methods, tunnel types,
//!   schedulers and persistence change; the set of real servers stays, so counters survive).
//!
//! Everything here panics on a violated invariant: that is its job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{
    Config, DestConfig, Director, DropReason, Engine, EngineOptions, ForwardMethod, L4Csum,
    Offload, PacketBuf, Persistence, Protocol, SchedulerKind, ServiceConfig, ServiceKey,
    StatsSnapshot, Timestamp, TunnelChecksum, TunnelConfig, TunnelType, Verdict,
};

/// A client (198.18.0.0/15 test range).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The IPv4 virtual address (TCP 80, UDP 53, and a persistent port-0 TCP service).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// A second IPv4 virtual address (rate-limited TCP 443, one-packet UDP 123).
pub const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// IPv4 real servers; `RS[i]` listens on port 8080 (TCP) and 53 (UDP).
pub const RS: [Ipv4Addr; 8] = [
    Ipv4Addr::new(198, 19, 0, 11),
    Ipv4Addr::new(198, 19, 0, 12),
    Ipv4Addr::new(198, 19, 0, 13),
    Ipv4Addr::new(198, 19, 0, 14),
    Ipv4Addr::new(198, 19, 0, 15),
    Ipv4Addr::new(198, 19, 0, 16),
    Ipv4Addr::new(198, 19, 0, 17),
    Ipv4Addr::new(198, 19, 0, 18),
];
/// The FULLNAT local address of the IPv4 services.
pub const LADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 1);
/// The director's own IPv4 address (tunnel source, ARP sender).
pub const DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// An IPv6 client.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 0, 0, 0, 0, 0x10);
/// The IPv6 virtual address (TCP 80, UDP 53).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 1, 0, 0, 0, 0, 1);
/// IPv6 real servers.
pub const RS6: [Ipv6Addr; 6] = [
    Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 0x11),
    Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 0x12),
    Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 0x13),
    Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 0x14),
    Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 0x15),
    Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 0x16),
];
/// The FULLNAT local address of the IPv6 services.
pub const LADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 3, 0, 0, 0, 0, 1);
/// The director's own IPv6 address (tunnel source).
pub const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 2, 0, 0, 0, 0, 1);
/// The engine's MAC behind the TAP.
pub const TAP_MAC: [u8; 6] = [0x02, 0x75, 0, 0, 0, 1];
/// MAC of the direct-routing real servers ([`RS`]`[2]`, [`RS6`]`[2]`), learned at setup.
pub const RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x13];
/// Connection-table limit of the test bed (small, so that a fuzz input can fill it).
pub const MAX_CONNECTIONS: usize = 48;
/// The workers' headroom in front of a packet.
pub const HEADROOM: usize = 128;
/// Largest packet the workers read.
pub const MAX_PACKET: usize = 65535;
/// Length of the `virtio_net_hdr` in front of a TUN packet with offload on.
pub const VNET_HDR_LEN: usize = 10;
/// At most this many segments of one super-packet are processed (each is an ordinary packet;
/// the rest would only cost time).
pub const MAX_SEGMENTS: usize = 64;

fn dest(addr: SocketAddr, forward: ForwardMethod, tunnel: TunnelConfig) -> DestConfig {
    DestConfig {
        addr,
        forward,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel,
    }
}

fn tun(kind: TunnelType, checksum: TunnelChecksum) -> TunnelConfig {
    TunnelConfig {
        kind,
        port: if kind == TunnelType::Gue { 6080 } else { 0 },
        checksum,
    }
}

/// The real servers of a TCP service with every method: NAT, FULLNAT, DR, IPIP, GUE (with a
/// checksum, with remote checksum offload), GRE (with and without a checksum). `alt` rotates
/// the methods by one, so each real server changes method on a configuration swap.
fn every_method(ips: &[IpAddr], port: u16, alt: bool) -> Vec<DestConfig> {
    let none = TunnelConfig::default();
    let methods = [
        (ForwardMethod::Masq, none),
        (ForwardMethod::FullNat, none),
        (ForwardMethod::Route, none),
        (ForwardMethod::Tunnel, none),
        (
            ForwardMethod::Tunnel,
            tun(TunnelType::Gue, TunnelChecksum::Csum),
        ),
        (
            ForwardMethod::Tunnel,
            tun(TunnelType::Gue, TunnelChecksum::Remcsum),
        ),
        (
            ForwardMethod::Tunnel,
            tun(TunnelType::Gre, TunnelChecksum::Csum),
        ),
        (
            ForwardMethod::Tunnel,
            tun(TunnelType::Gre, TunnelChecksum::None),
        ),
    ];
    ips.iter()
        .enumerate()
        .map(|(i, &ip)| {
            // Direct routing keeps the port; it stays on the real server that has a MAC.
            let j = if alt && i != 2 {
                let k = (i + 1) % methods.len();
                if k == 2 { 3 } else { k }
            } else {
                i
            };
            let (m, t) = methods[j % methods.len()];
            let p = if m == ForwardMethod::Route { 80 } else { port };
            dest(SocketAddr::new(ip, p), m, t)
        })
        .collect()
}

/// One of the two configurations the test bed swaps between (`alt` false is the start).
pub fn config(alt: bool) -> Config {
    let v4: Vec<IpAddr> = RS.iter().map(|&a| IpAddr::V4(a)).collect();
    let v6: Vec<IpAddr> = RS6.iter().map(|&a| IpAddr::V6(a)).collect();
    let key = |protocol, ip: IpAddr, port| ServiceKey {
        protocol,
        addr: SocketAddr::new(ip, port),
    };
    let mut services = Vec::new();

    // IPv4 TCP 80: every method, round robin so consecutive connections visit them all.
    let mut s = ServiceConfig::new(key(Protocol::Tcp, IpAddr::V4(VIP), 80));
    s.scheduler = if alt {
        SchedulerKind::Mh
    } else {
        SchedulerKind::Rr
    };
    s.dests = every_method(&v4, 8080, alt);
    s.local_addresses = vec![IpAddr::V4(LADDR)];
    services.push(s);

    // IPv4 UDP 53: persistent per /24, NAT, DR, GUE without checksum, IPv6 real server by IPIP.
    let mut s = ServiceConfig::new(key(Protocol::Udp, IpAddr::V4(VIP), 53));
    s.scheduler = SchedulerKind::Wlc;
    s.persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: if alt { 32 } else { 24 },
    });
    s.dests = vec![
        dest(SocketAddr::new(v4[0], 53), ForwardMethod::Masq, tun_none()),
        dest(SocketAddr::new(v4[2], 53), ForwardMethod::Route, tun_none()),
        dest(
            SocketAddr::new(v4[4], 53),
            ForwardMethod::Tunnel,
            tun(TunnelType::Gue, TunnelChecksum::None),
        ),
        dest(
            SocketAddr::new(v6[3], 53),
            ForwardMethod::Tunnel,
            tun_none(),
        ),
    ];
    if alt {
        s.dests[0].weight = 0;
    }
    services.push(s);

    // IPv4 TCP port 0 (every port), persistent: NAT and IPIP real servers on port 0.
    let mut s = ServiceConfig::new(key(Protocol::Tcp, IpAddr::V4(VIP), 0));
    s.scheduler = SchedulerKind::Sh;
    s.persistence = Some(Persistence {
        timeout_secs: 60,
        prefix_len: 32,
    });
    s.dests = vec![
        dest(SocketAddr::new(v4[5], 0), ForwardMethod::Masq, tun_none()),
        dest(SocketAddr::new(v4[6], 0), ForwardMethod::Tunnel, tun_none()),
    ];
    services.push(s);

    // Second IPv4 address: rate-limited TCP 443 (FULLNAT), one-packet UDP 123 (NAT).
    let mut s = ServiceConfig::new(key(Protocol::Tcp, IpAddr::V4(VIP2), 443));
    s.scheduler = SchedulerKind::Twos;
    s.max_new_connections_per_second = if alt { 1 } else { 3 };
    s.local_addresses = vec![IpAddr::V4(LADDR)];
    s.dests = vec![
        dest(
            SocketAddr::new(v4[1], 8443),
            ForwardMethod::FullNat,
            tun_none(),
        ),
        dest(
            SocketAddr::new(v4[7], 8443),
            ForwardMethod::Masq,
            tun_none(),
        ),
    ];
    services.push(s);
    let mut s = ServiceConfig::new(key(Protocol::Udp, IpAddr::V4(VIP2), 123));
    s.one_packet = true;
    s.dests = vec![dest(
        SocketAddr::new(v4[3], 123),
        ForwardMethod::Masq,
        tun_none(),
    )];
    services.push(s);

    // IPv6 TCP 80: every method but GRE without checksum (six real servers).
    let mut s = ServiceConfig::new(key(Protocol::Tcp, IpAddr::V6(VIP6), 80));
    s.scheduler = if alt {
        SchedulerKind::Lc
    } else {
        SchedulerKind::Rr
    };
    s.dests = every_method(&v6, 8080, alt);
    s.local_addresses = vec![IpAddr::V6(LADDR6)];
    services.push(s);

    // IPv6 UDP 53: persistent per /64, NAT and FULLNAT, an IPv4 real server by GUE.
    let mut s = ServiceConfig::new(key(Protocol::Udp, IpAddr::V6(VIP6), 53));
    s.scheduler = SchedulerKind::Wrr;
    s.persistence = Some(Persistence {
        timeout_secs: 120,
        prefix_len: 64,
    });
    s.local_addresses = vec![IpAddr::V6(LADDR6)];
    s.dests = vec![
        dest(SocketAddr::new(v6[0], 53), ForwardMethod::Masq, tun_none()),
        dest(
            SocketAddr::new(v6[1], 53),
            if alt {
                ForwardMethod::Masq
            } else {
                ForwardMethod::FullNat
            },
            tun_none(),
        ),
        dest(
            SocketAddr::new(v4[4], 53),
            ForwardMethod::Tunnel,
            tun(TunnelType::Gue, TunnelChecksum::Remcsum),
        ),
    ];
    services.push(s);
    Config { services }
}

fn tun_none() -> TunnelConfig {
    TunnelConfig::default()
}

/// The engine of the test bed: [`config`]`(false)`, the director's tunnel sources, TAP MAC and
/// a 1400-byte path MTU (1300 towards [`RS`]`[3]`), and the direct-routing real servers'
/// MACs learned from their ARP reply and neighbour advertisement, as on a live TAP.
pub fn every_mode_engine() -> Engine {
    let e = Engine::new(EngineOptions {
        max_connections: MAX_CONNECTIONS,
        shards: 4,
        hash_seed: 7,
    });
    e.apply_config(&config(false))
        .expect("the every-mode configuration is valid");
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR),
        tunnel_source_v6: Some(DIRECTOR6),
        mac: Some(TAP_MAC),
        arp_source: Some(DIRECTOR),
        path_mtu: 1400,
        // Direct-routing super-packets are split, so every output is a whole frame.
        frame_offload: false,
    });
    e.set_path_mtu(IpAddr::V4(RS[3]), 1300);
    for frame in [arp_reply(RS_MAC, RS[2]), neighbour_advert(RS_MAC, RS6[2])] {
        let mut buf = frame;
        let len = buf.len();
        let mut pkt = PacketBuf::new(&mut buf, 0, len);
        e.process_frame(Timestamp(0), &mut pkt);
    }
    assert_eq!(
        e.neighbours(Timestamp(0)).len(),
        2,
        "the DR real servers' MACs were learned"
    );
    e
}

/// An ARP reply from `ip` at `mac` to the TAP.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&DIRECTOR.octets());
    f
}

/// An unsolicited neighbour advertisement for `ip` at `mac` (with the target link-layer
/// address option) to all nodes.
pub fn neighbour_advert(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + 32);
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
    let msg_at = f.len();
    f.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[2, 1]);
    f.extend_from_slice(&mac);
    // ICMPv6 checksum over the pseudo-header and the message.
    let mut sum: u64 = 0;
    for chunk in f[22..54].chunks(2) {
        sum += u64::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    sum += 32 + 58;
    for chunk in f[msg_at..].chunks(2) {
        sum += u64::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    let c = !crate::checksum::fold(sum);
    f[msg_at + 2..msg_at + 4].copy_from_slice(&c.to_be_bytes());
    f
}

/// What became of the frames of one input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records read from the input.
    pub frames: usize,
    /// Packets the engine processed (a super-packet split into segments counts each segment).
    pub packets: usize,
    /// Forwarded ([`Verdict::Forward`] or [`Verdict::ForwardFrame`]).
    pub forwarded: usize,
    /// Answered ([`Verdict::Reply`]).
    pub answered: usize,
    /// Not ours ([`Verdict::Pass`]).
    pub passed: usize,
    /// Dropped, with the reason counted.
    pub dropped: usize,
    /// Records the worker would not hand to the engine (shorter than the `virtio_net_hdr`).
    pub unread: usize,
}

/// Where a frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An IP packet read from the TUN ([`Engine::process`]).
    Tun,
    /// An Ethernet frame read from the TAP ([`Engine::process_frame`]).
    Tap,
}

/// The frames of an input: `(ctl, bytes)` records (see the module doc).
pub fn records(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&ctl, rest) = input.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let len = len.min(rest.len());
        let (frame, rest) = rest.split_at(len);
        input = rest;
        Some((ctl, frame))
    })
}

/// Encodes frames as an input (`ctl`, length, bytes each): the inverse of [`records`].
pub fn encode(frames: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ctl, f) in frames {
        let len = u16::try_from(f.len()).expect("a frame fits 16 bits");
        out.push(*ctl);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The test bed's state across the frames of one input.
#[derive(Debug)]
pub struct Bed {
    engine: Engine,
    now: u64,
    alt: bool,
    buf: Vec<u8>,
    seg: Vec<u8>,
    input: Vec<u8>,
    tally: Tally,
}

impl Default for Bed {
    fn default() -> Self {
        Bed::new()
    }
}

impl Bed {
    /// A fresh [`every_mode_engine`] at time 1 s.
    pub fn new() -> Self {
        Bed {
            engine: every_mode_engine(),
            now: 1000,
            alt: false,
            buf: vec![0; HEADROOM + MAX_PACKET],
            seg: vec![0; HEADROOM + MAX_PACKET],
            input: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What happened so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Feeds every record of `input` from `source`, checking the invariants after each.
    pub fn run(&mut self, source: Source, input: &[u8]) -> Tally {
        for (ctl, frame) in records(input) {
            self.frame(source, ctl, frame);
        }
        self.tally
    }

    /// One record.
    pub fn frame(&mut self, source: Source, ctl: u8, frame: &[u8]) {
        self.tally.frames += 1;
        const STEP: [u64; 8] = [0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000];
        self.now += STEP[usize::from(ctl & 7)];
        let now = Timestamp(self.now);
        if ctl & 0x80 != 0 {
            self.alt = !self.alt;
            self.engine
                .apply_config(&config(self.alt))
                .expect("both configurations are valid");
        }
        if ctl & 0x08 != 0 {
            self.engine.estimate(now);
            for _ in 0..self.engine.expire_calls_per_pass() {
                self.engine.expire(now);
            }
            let _ = self.engine.neighbour_requests(now);
        }
        let headroom = [HEADROOM, 0, 24, 60][usize::from((ctl >> 5) & 3)];
        let (offload, packet) = if source == Source::Tun && ctl & 0x10 != 0 {
            let Some((hdr, packet)) = frame.split_at_checked(VNET_HDR_LEN) else {
                // The worker counts a read error and hands nothing to the engine.
                self.tally.unread += 1;
                return;
            };
            (vnet_offload(hdr), packet)
        } else {
            (Offload::default(), frame)
        };
        let packet = &packet[..packet.len().min(MAX_PACKET)];
        let v = self.process(source, now, headroom, packet, offload);
        if v == Verdict::Drop(DropReason::GsoNotSplit) {
            // As the worker: split the super-packet and submit each segment.
            let gso = usize::from(offload.gso_size);
            for i in 0..MAX_SEGMENTS {
                let seg = &mut self.seg[HEADROOM..];
                match crate::offload::segment(packet, gso, i, seg) {
                    Ok(Some(len)) => {
                        let seg = self.seg[HEADROOM..HEADROOM + len].to_vec();
                        self.process(source, now, HEADROOM, &seg, Offload::default());
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    /// One packet through the engine; checks and counts its outcome.
    fn process(
        &mut self,
        source: Source,
        now: Timestamp,
        headroom: usize,
        packet: &[u8],
        offload: Offload,
    ) -> Verdict {
        self.tally.packets += 1;
        self.input.clear();
        self.input.extend_from_slice(packet);
        let before = self.engine.stats();
        let buf = &mut self.buf[HEADROOM - headroom..];
        buf[headroom..headroom + packet.len()].copy_from_slice(packet);
        let mut pkt = PacketBuf::with_offload(buf, headroom, packet.len(), offload);
        let v = match source {
            Source::Tun => self.engine.process(now, &mut pkt),
            Source::Tap => self.engine.process_frame(now, &mut pkt),
        };
        let out = pkt.data();
        check_output(source, v, &self.input, out, offload);
        let after = self.engine.stats();
        check_counters(v, &before, &after);
        match v {
            Verdict::Forward | Verdict::ForwardFrame => self.tally.forwarded += 1,
            Verdict::Reply => self.tally.answered += 1,
            Verdict::Pass => self.tally.passed += 1,
            Verdict::Drop(_) => self.tally.dropped += 1,
        }
        v
    }
}

/// Feeds `input` (records of IP packets, as from the TUN) through a fresh test bed.
pub fn run_l3(input: &[u8]) -> Tally {
    Bed::new().run(Source::Tun, input)
}

/// Feeds `input` (records of Ethernet frames, as from the TAP) through a fresh test bed.
pub fn run_l2(input: &[u8]) -> Tally {
    Bed::new().run(Source::Tap, input)
}

/// What a `virtio_net_hdr` (flags, GSO type, GSO size) tells the engine, as the dataplane's
/// `VnetHdr::offload` reads it.
pub fn vnet_offload(hdr: &[u8]) -> Offload {
    let flags = hdr[0];
    let gso_type = hdr[1];
    let gso_size = u16::from_le_bytes([hdr[4], hdr[5]]);
    Offload {
        csum: if flags & 1 != 0 {
            L4Csum::Partial
        } else {
            L4Csum::Complete
        },
        gso_size: if gso_type & 0x7f != 0 {
            gso_size.max(1)
        } else {
            0
        },
    }
}

/// Whether `b` is an IP packet whose length field matches its length.
fn ip_length_ok(b: &[u8]) -> bool {
    match b.first().map(|v| v >> 4) {
        Some(4) => {
            b.len() >= 20
                && usize::from(b[0] & 0x0f) * 4 >= 20
                && usize::from(u16::from_be_bytes([b[2], b[3]])) == b.len()
        }
        Some(6) => b.len() >= 40 && usize::from(u16::from_be_bytes([b[4], b[5]])) + 40 == b.len(),
        _ => false,
    }
}

fn check_output(source: Source, v: Verdict, input: &[u8], out: &[u8], offload: Offload) {
    let hex = |b: &[u8]| -> String { b.iter().map(|x| format!("{x:02x}")).collect() };
    let ctx = || {
        format!(
            "{source:?} {v:?} {offload:?}\n in: {}\nout: {}",
            hex(input),
            hex(out)
        )
    };
    match (source, v) {
        // From the TAP a passed frame is ignored; the engine may leave its start past the
        // Ethernet header, but must not change the bytes.
        (Source::Tap, Verdict::Pass) => assert!(
            out == input || input.get(14..) == Some(out),
            "a passed frame was changed: {}",
            ctx()
        ),
        (Source::Tun, Verdict::Pass) => {
            assert_eq!(input, out, "a passed packet was changed: {}", ctx())
        }
        (_, Verdict::Drop(DropReason::GsoNotSplit)) => {
            assert_eq!(input, out, "a super-packet to split was changed: {}", ctx());
            assert!(
                offload.is_gso(),
                "GsoNotSplit for a plain packet: {}",
                ctx()
            );
        }
        (_, Verdict::Drop(_)) => {}
        (Source::Tun, Verdict::Forward | Verdict::Reply) | (Source::Tap, Verdict::Forward) => {
            assert!(ip_length_ok(out), "not a whole IP packet: {}", ctx());
        }
        (Source::Tap, Verdict::Reply | Verdict::ForwardFrame) => {
            assert!(
                out.len() >= 14,
                "a frame shorter than its header: {}",
                ctx()
            );
            assert_eq!(
                out[6..12],
                TAP_MAC,
                "a frame not from the TAP's MAC: {}",
                ctx()
            );
            let et = u16::from_be_bytes([out[12], out[13]]);
            match et {
                0x0806 => assert_eq!(out.len(), 42, "ARP frame length: {}", ctx()),
                0x0800 | 0x86dd => {
                    assert!(ip_length_ok(&out[14..]), "IP in the frame: {}", ctx())
                }
                _ => panic!("frame of ethertype {et:#06x}: {}", ctx()),
            }
        }
        (Source::Tun, Verdict::ForwardFrame) => {
            // A TUN packet for a direct-routing real server becomes a frame for the TAP.
            assert!(out.len() >= 14 + 20, "a DR frame too short: {}", ctx());
            assert_eq!(
                out[6..12],
                TAP_MAC,
                "a DR frame not from the TAP: {}",
                ctx()
            );
            assert_eq!(out[0..6], RS_MAC, "a DR frame to an unknown MAC: {}", ctx());
            assert!(ip_length_ok(&out[14..]), "IP in the DR frame: {}", ctx());
        }
    }
}

fn check_counters(v: Verdict, before: &StatsSnapshot, after: &StatsSnapshot) {
    for ((reason, b), (_, a)) in before.drops.iter().zip(&after.drops) {
        let want = u64::from(v == Verdict::Drop(*reason));
        assert_eq!(
            a - b,
            want,
            "drop counter {} moved by {} for verdict {v:?}",
            reason.name(),
            a - b
        );
    }
    assert!(after.connections <= after.max_connections);
    let mut live = 0u64;
    for s in &after.services {
        let sum = s.dests.iter().fold([0u64; 5], |mut acc, d| {
            let c = d.counters;
            for (x, y) in
                acc.iter_mut()
                    .zip([c.conns, c.in_pkts, c.out_pkts, c.in_bytes, c.out_bytes])
            {
                *x += y;
            }
            acc
        });
        let c = s.counters;
        assert_eq!(
            [c.conns, c.in_pkts, c.out_pkts, c.in_bytes, c.out_bytes],
            sum,
            "service {} counters are not the sum of its real servers' after {v:?}",
            s.key
        );
        live += s
            .dests
            .iter()
            .map(|d| u64::from(d.active_conns) + u64::from(d.inactive_conns))
            .sum::<u64>();
    }
    // Real servers shared by several services are listed once per service.
    assert_eq!(
        live, after.connections as u64,
        "live connections by real server vs table after {v:?}"
    );
}
