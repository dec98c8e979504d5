//! Shared helpers of the engine tests: packet builders (etherparse, checksums from scratch),
//! engine setup, hex dumps and whole-counter-delta assertions.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, PacketBuilderStep, TcpHeader};
use ulvs_engine::{
    Config, Counters, DestConfig, Engine, EngineOptions, ForwardMethod, PacketBuf, Protocol,
    SchedulerKind, ServiceConfig, ServiceKey, StatsSnapshot, Timestamp, Verdict,
};

pub const CLIENT: [u8; 4] = [198, 18, 0, 10];
pub const CLIENT2: [u8; 4] = [198, 18, 0, 20];
pub const VIP: [u8; 4] = [198, 18, 1, 1];
pub const VIP2: [u8; 4] = [198, 18, 1, 2];
pub const RS1: [u8; 4] = [198, 19, 0, 11];
pub const RS2: [u8; 4] = [198, 19, 0, 12];
pub const RS3: [u8; 4] = [198, 19, 0, 13];
pub const OTHER: [u8; 4] = [198, 18, 9, 9];

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;

pub fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

/// An IPv4 TCP segment with checksums computed from scratch by etherparse.
pub fn tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_segment(
        PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535),
        flags,
        payload,
    )
}

/// Sets `flags` (any of SYN, ACK with ack number 2000, FIN, RST, PSH) on a TCP builder over
/// IPv4 or IPv6 and writes the packet.
fn tcp_segment(mut b: PacketBuilderStep<TcpHeader>, flags: u8, payload: &[u8]) -> Vec<u8> {
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(2000);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build tcp");
    out
}

/// An IPv4 UDP datagram with checksums computed from scratch by etherparse.
pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 64).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build udp");
    out
}

/// The same datagram without a UDP checksum (field 0).
pub fn udp_no_csum(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = udp(src, sport, dst, dport, payload);
    p[26] = 0;
    p[27] = 0;
    p
}

pub fn dest(ip: [u8; 4], port: u16, weight: u32) -> DestConfig {
    DestConfig {
        addr: sa(ip, port),
        forward: ForwardMethod::Masq,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: Default::default(),
    }
}

pub fn service(
    protocol: Protocol,
    vip: [u8; 4],
    vport: u16,
    scheduler: SchedulerKind,
    dests: Vec<DestConfig>,
) -> ServiceConfig {
    let mut s = ServiceConfig::new(ServiceKey {
        protocol,
        addr: sa(vip, vport),
    });
    s.scheduler = scheduler;
    s.dests = dests;
    s
}

pub fn opts() -> EngineOptions {
    EngineOptions {
        max_connections: 1024,
        shards: 16,
        hash_seed: 42,
    }
}

pub fn engine_with(services: Vec<ServiceConfig>) -> Engine {
    let e = Engine::new(opts());
    e.apply_config(&Config { services }).expect("valid config");
    e
}

/// Runs `input` through the engine in a buffer with 32 bytes of headroom; returns the verdict
/// and the packet bytes afterwards.
pub fn run(e: &Engine, now: u64, input: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 32 + input.len()];
    buf[32..].copy_from_slice(input);
    let mut pkt = PacketBuf::new(&mut buf, 32, input.len());
    let v = e.process(Timestamp(now), &mut pkt);
    (v, pkt.data().to_vec())
}

/// A hex dump, 16 bytes a line.
pub fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let h: Vec<String> = c.iter().map(|x| format!("{x:02x}")).collect();
            format!("{:04x}  {}\n", i * 16, h.join(" "))
        })
        .collect()
}

/// Every counter and gauge of a snapshot under a readable name.
pub fn flat(s: &StatsSnapshot) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for svc in &s.services {
        let k = svc.key.to_string();
        for (n, v) in traffic(&svc.counters) {
            m.insert(format!("{k} {n}"), v as i64);
        }
        for d in &svc.dests {
            let dk = format!("{k} -> {}", d.addr);
            let gauges = [
                ("active", u64::from(d.active_conns)),
                ("inactive", u64::from(d.inactive_conns)),
                ("persistent", u64::from(d.persistent_conns)),
            ];
            for (n, v) in traffic(&d.counters).into_iter().chain(gauges) {
                m.insert(format!("{dk} {n}"), v as i64);
            }
        }
    }
    for (r, v) in &s.drops {
        m.insert(format!("drop {}", r.name()), *v as i64);
    }
    m.insert("connections".into(), s.connections as i64);
    m
}

/// The traffic counters of a service or real server under their names in [`flat`].
fn traffic(c: &Counters) -> [(&'static str, u64); 5] {
    [
        ("conns", c.conns),
        ("in_pkts", c.in_pkts),
        ("out_pkts", c.out_pkts),
        ("in_bytes", c.in_bytes),
        ("out_bytes", c.out_bytes),
    ]
}

/// Asserts that from `before` to `after` exactly the listed counters moved, by the listed
/// amounts (keys may be given by a unique suffix-free full name as in [`flat`]).
/// The counters moved by one client packet of `bytes` bytes to the TCP service VIP:80 whose
/// real server is RS1:80, the first ACK of its connection (which it establishes).
#[allow(dead_code)] // not every test file uses it
pub fn assert_establishing_ack(before: &StatsSnapshot, after: &StatsSnapshot, bytes: i64) {
    assert_delta(
        before,
        after,
        &[
            ("TCP 198.18.1.1:80 in_pkts", 1),
            ("TCP 198.18.1.1:80 in_bytes", bytes),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 in_pkts", 1),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 in_bytes", bytes),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 active", 1),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 inactive", -1),
        ],
    );
}

pub fn assert_delta(before: &StatsSnapshot, after: &StatsSnapshot, expected: &[(&str, i64)]) {
    let (b, a) = (flat(before), flat(after));
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in expected {
        assert!(
            a.contains_key(*k),
            "no counter named {k:?}; have {:#?}",
            a.keys()
        );
        want.insert((*k).to_string(), *v);
    }
    let mut diffs = Vec::new();
    for (k, av) in &a {
        let d = av - b.get(k).copied().unwrap_or(0);
        let w = want.get(k).copied().unwrap_or(0);
        if d != w {
            diffs.push(format!("{k}: moved by {d}, expected {w}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "counter delta mismatch:\n{}",
        diffs.join("\n")
    );
}

// ---- IPv6 and FULLNAT helpers -------------------------------------------------------------

pub const CLIENT6: &str = "fd00:1b5::10";
pub const VIP6: &str = "fd00:1b5:1::1";
pub const RS6_1: &str = "fd00:1b5:2::11";
pub const RS6_2: &str = "fd00:1b5:2::12";
pub const LADDR6_1: &str = "fd00:1b5:3::1";
pub const LADDR6_2: &str = "fd00:1b5:3::2";
pub const LADDR1: [u8; 4] = [198, 19, 3, 1];
pub const LADDR2: [u8; 4] = [198, 19, 3, 2];
pub const ROUTER: [u8; 4] = [198, 18, 5, 5];
pub const ROUTER6: &str = "fd00:1b5:5::5";

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("ipv6").octets()
}

pub fn sa6(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V6(ip.parse().expect("ipv6")), port)
}

/// An IPv6 TCP segment with checksums computed from scratch by etherparse.
pub fn tcp6(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_segment(
        PacketBuilder::ipv6(v6(src), v6(dst), 64).tcp(sport, dport, 1000, 65535),
        flags,
        payload,
    )
}

/// An IPv6 UDP datagram with checksums computed from scratch by etherparse.
pub fn udp6(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(v6(src), v6(dst), 64).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build udp6");
    out
}

/// A real server with an explicit forwarding method.
pub fn dest_at(addr: SocketAddr, forward: ForwardMethod, weight: u32) -> DestConfig {
    DestConfig {
        addr,
        forward,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: Default::default(),
    }
}

/// A service on any address with explicit real servers and FULLNAT local addresses.
pub fn service_at(
    protocol: Protocol,
    vaddr: SocketAddr,
    dests: Vec<DestConfig>,
    local_addresses: Vec<std::net::IpAddr>,
) -> ServiceConfig {
    let mut s = ServiceConfig::new(ServiceKey {
        protocol,
        addr: vaddr,
    });
    s.scheduler = SchedulerKind::Rr;
    s.dests = dests;
    s.local_addresses = local_addresses;
    s
}

/// Asserts the verdict and the exact output bytes, hex-dumping all three packets otherwise.
pub fn expect(e: &Engine, now: u64, what: &str, input: &[u8], verdict: Verdict, want: &[u8]) {
    let (v, out) = run(e, now, input);
    assert!(
        v == verdict && out == want,
        "{what}\nverdict {v:?}, expected {verdict:?}\ninput:\n{}output:\n{}expected:\n{}",
        hex(input),
        hex(&out),
        hex(want)
    );
}

/// An ICMPv4 message of type `ty` from `src` to `dst` (TTL 64) carrying `quote`.
pub fn icmp4(src: [u8; 4], dst: [u8; 4], ty: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4(ty)
        .write(&mut out, quote)
        .expect("build icmp4");
    out
}

/// An ICMPv6 message of type `ty` from `src` to `dst` (hop limit 64) carrying `quote`.
pub fn icmp6(src: &str, dst: &str, ty: Icmpv6Type, quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(v6(src), v6(dst), 64)
        .icmpv6(ty)
        .write(&mut out, quote)
        .expect("build icmp6");
    out
}
