//! Fails when a declared instrument (or one of its enumerated attribute values: every drop
//! reason, both directions, every connection and real-server state) is never moved by the
//! engine: fixtures drive real engines with real packets, and every data point series must
//! read non-zero through [`Metrics`] in at least one of them.
//!
//! A new [`DropReason`] variant or a new instrument therefore needs a fixture here that makes
//! the engine produce it; a counter nothing increments cannot be exported silently. The
//! histograms ([`HISTOGRAMS`]) count as well: each series must have recorded a value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use etherparse::PacketBuilder;
use ulvs_engine::{
    Config, DestConfig, Director, DropReason, Engine, EngineOptions, ForwardMethod, Offload,
    PacketBuf, Persistence, Protocol, SchedulerKind, ServiceConfig, ServiceKey, Timestamp,
    TunnelConfig, TunnelType, Verdict,
};
use ulvs_telemetry::registry::{HISTOGRAMS, INSTRUMENTS, REAL_SERVER_STATES};
use ulvs_telemetry::{AppliedConfig, Metrics};

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 1, 1];
const VIP2: [u8; 4] = [198, 18, 1, 2];
const VIP3: [u8; 4] = [198, 18, 1, 3];
const RS1: [u8; 4] = [198, 19, 0, 11];
const RS2: [u8; 4] = [198, 19, 0, 12];
const RS3: [u8; 4] = [198, 19, 0, 13];
const DIRECTOR: [u8; 4] = [198, 19, 0, 1];

const SYN: u8 = 1;
const ACK: u8 = 2;
const SYNACK: u8 = 3;

fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(ip), port))
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(2000);
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("build tcp");
    out
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("build udp");
    out
}

/// Sets the IPv4 flags/fragment field and fixes the header checksum.
fn set_frag_field(p: &mut [u8], value: u16) {
    p[6..8].copy_from_slice(&value.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let mut s: u32 = 0;
    for c in p[..20].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    p[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

fn dest(ip: [u8; 4], port: u16, weight: u32) -> DestConfig {
    DestConfig {
        addr: sa(ip, port),
        forward: ForwardMethod::Masq,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: TunnelConfig::default(),
    }
}

fn service(protocol: Protocol, vip: [u8; 4], port: u16, dests: Vec<DestConfig>) -> ServiceConfig {
    let mut s = ServiceConfig::new(ServiceKey {
        protocol,
        addr: sa(vip, port),
    });
    s.scheduler = SchedulerKind::Rr;
    s.dests = dests;
    s
}

/// Runs `input` with `headroom` bytes in front of it.
fn run_with(e: &Engine, now: u64, input: &[u8], headroom: usize) -> Verdict {
    let mut buf = vec![0u8; headroom + input.len()];
    buf[headroom..].copy_from_slice(input);
    let mut pkt = PacketBuf::new(&mut buf, headroom, input.len());
    e.process(Timestamp(now), &mut pkt)
}

fn run(e: &Engine, now: u64, input: &[u8]) -> Verdict {
    run_with(e, now, input, 64)
}

fn drop_of(e: &Engine, now: u64, input: &[u8], reason: DropReason) {
    assert_eq!(
        run(e, now, input),
        Verdict::Drop(reason),
        "expected {reason:?}"
    );
}

/// Which data point series read non-zero: (instrument, enumerated attribute values).
type Seen = BTreeSet<(String, Vec<String>)>;

/// Attribute keys whose values are enumerable (and so must each be seen).
const ENUMERATED: [&str; 4] = ["direction", "state", "reason", "result"];

fn collect(metrics: &Metrics, seen: &mut Seen) {
    for h in metrics.observe_histograms() {
        for p in h.points.iter().filter(|p| p.count > 0) {
            let enumerated = h
                .spec
                .attributes
                .iter()
                .zip(&p.attributes)
                .filter(|(k, _)| ENUMERATED.contains(k))
                .map(|(_, v)| v.clone())
                .collect();
            seen.insert((h.spec.name.to_owned(), enumerated));
        }
    }
    for o in metrics.observe_now().iter() {
        for p in o.points.iter().filter(|p| p.value > 0) {
            let enumerated = o
                .spec
                .attributes
                .iter()
                .zip(&p.attributes)
                .filter(|(k, _)| ENUMERATED.contains(k))
                .map(|(_, v)| v.clone())
                .collect();
            seen.insert((o.spec.name.to_owned(), enumerated));
        }
    }
}

fn attach(cfg: &Config, opts: EngineOptions) -> (Arc<Engine>, Arc<Metrics>) {
    let engine = Arc::new(Engine::new(opts));
    engine.apply_config(cfg).expect("valid config");
    let applied = Arc::new(AppliedConfig::default());
    applied.set(cfg);
    let metrics = Metrics::new();
    metrics.attach(Arc::clone(&engine), applied);
    (engine, metrics)
}

fn opts(max_connections: usize) -> EngineOptions {
    EngineOptions {
        max_connections,
        shards: 4,
        hash_seed: 7,
    }
}

/// NAT traffic both ways, rates, states, persistence, and the drops of the NAT path.
fn nat_fixture(seen: &mut Seen) {
    let mut overloaded = dest(RS1, 8080, 1);
    overloaded.upper_threshold = 1;
    let web = service(
        Protocol::Tcp,
        VIP,
        80,
        vec![overloaded, dest(RS2, 8080, 0), dest(RS3, 8080, 1)],
    );
    let mut dns = service(Protocol::Udp, VIP, 53, vec![dest(RS2, 5353, 1)]);
    dns.persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: 32,
    });
    let empty = service(Protocol::Tcp, VIP, 81, vec![dest(RS2, 8081, 0)]);
    let mut capped = service(Protocol::Tcp, VIP2, 80, vec![dest(RS3, 9090, 1)]);
    capped.max_new_connections_per_second = 1;
    // Shares RS1:8080 with `web`: the same client port to both conflicts on the reply tuple.
    let twin = service(Protocol::Tcp, VIP3, 80, vec![dest(RS1, 8080, 1)]);
    let cfg = Config {
        services: vec![web, dns, empty, capped, twin],
    };
    let (e, metrics) = attach(&cfg, opts(1024));
    let ctl = Arc::clone(&metrics);
    // A finished control request: counted (ulvs.control.operations) and timed
    // (ulvs.control.duration), as the daemon's request observer does.
    ctl.record_request("AddService", tonic::Code::Ok, Duration::from_micros(300));

    e.estimate(Timestamp(0));
    // A connection to RS1 (which it overloads), answered and established: active.
    assert_eq!(
        run(&e, 10, &tcp(CLIENT, 40000, VIP, 80, SYN, &[])),
        Verdict::Forward
    );
    assert_eq!(
        run(&e, 11, &tcp(RS1, 8080, CLIENT, 40000, SYNACK, &[])),
        Verdict::Forward
    );
    assert_eq!(
        run(&e, 12, &tcp(CLIENT, 40000, VIP, 80, ACK, b"hello")),
        Verdict::Forward
    );
    assert_eq!(
        run(&e, 13, &tcp(RS1, 8080, CLIENT, 40000, ACK, b"world")),
        Verdict::Forward
    );
    // A second one goes to RS3 (RS1 overloaded, RS2 quiescent) and stays half-open: inactive.
    assert_eq!(
        run(&e, 14, &tcp(CLIENT, 40001, VIP, 80, SYN, &[])),
        Verdict::Forward
    );
    // A persistent UDP flow: a template on RS2.
    assert_eq!(
        run(&e, 15, &udp(CLIENT, 5000, VIP, 53, b"q")),
        Verdict::Forward
    );
    // Enough traffic within one estimator period for the averaged rates to round above zero.
    for i in 0..20u16 {
        assert_eq!(
            run(&e, 16, &tcp(CLIENT, 42000 + i, VIP, 80, SYN, &[])),
            Verdict::Forward
        );
        assert_eq!(
            run(&e, 17, &tcp(CLIENT, 40000, VIP, 80, ACK, b"more")),
            Verdict::Forward
        );
        assert_eq!(
            run(&e, 18, &tcp(RS1, 8080, CLIENT, 40000, ACK, b"data")),
            Verdict::Forward
        );
    }
    e.estimate(Timestamp(2000));

    drop_of(&e, 20, &[], DropReason::Malformed);
    drop_of(
        &e,
        21,
        &tcp(CLIENT, 40002, VIP, 81, SYN, &[]),
        DropReason::NoDestination,
    );
    drop_of(
        &e,
        22,
        &tcp(CLIENT, 40003, VIP, 80, ACK, &[]),
        DropReason::NoConnection,
    );
    let mut frag = udp(CLIENT, 5001, VIP, 53, &[0; 16]);
    set_frag_field(&mut frag, 1);
    drop_of(&e, 23, &frag, DropReason::Fragment);
    // SCTP (132) to a virtual address: not balanced (ICMP echo requests are answered).
    let mut sctp = udp(CLIENT, 5002, VIP, 53, b"sctp");
    sctp[9] = 132;
    set_frag_field(&mut sctp, 0);
    drop_of(&e, 24, &sctp, DropReason::UnsupportedProtocol);
    drop_of(
        &e,
        25,
        &tcp(CLIENT, 40004, VIP, 82, SYN, &[]),
        DropReason::NoService,
    );
    assert_eq!(
        run(&e, 26, &tcp(CLIENT, 40005, VIP3, 80, SYN, &[])),
        Verdict::Forward
    );
    // The client port `web` already uses towards RS1:8080: the reply tuple is taken.
    drop_of(
        &e,
        27,
        &tcp(CLIENT, 40000, VIP3, 80, SYN, &[]),
        DropReason::TupleConflict,
    );
    assert_eq!(
        run(&e, 28, &tcp(CLIENT, 41000, VIP2, 80, SYN, &[])),
        Verdict::Forward
    );
    drop_of(
        &e,
        28,
        &tcp(CLIENT, 41001, VIP2, 80, SYN, &[]),
        DropReason::RateLimited,
    );
    collect(&metrics, seen);
}

/// Direct routing and tunnel drops.
fn l2_and_tunnel_fixture(seen: &mut Seen) {
    let mut dr = dest(RS1, 80, 1);
    dr.forward = ForwardMethod::Route;
    let mut tun = dest(RS2, 80, 1);
    tun.forward = ForwardMethod::Tunnel;
    tun.tunnel = TunnelConfig {
        kind: TunnelType::Gue,
        port: 6080,
        ..TunnelConfig::default()
    };
    let cfg = Config {
        services: vec![
            service(Protocol::Tcp, VIP, 80, vec![dr]),
            service(Protocol::Tcp, VIP2, 80, vec![tun]),
        ],
    };
    let (e, metrics) = attach(&cfg, opts(1024));
    // No TAP: direct routing cannot send.
    drop_of(
        &e,
        1,
        &tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        DropReason::NoL2Device,
    );
    // A TAP, but RS1's MAC is unknown.
    e.set_director(Director {
        mac: Some([2, 0, 0, 0, 0, 1]),
        ..Director::default()
    });
    drop_of(
        &e,
        2,
        &tcp(CLIENT, 40001, VIP, 80, SYN, &[]),
        DropReason::Unresolved,
    );
    // No tunnel source.
    drop_of(
        &e,
        3,
        &tcp(CLIENT, 40002, VIP2, 80, SYN, &[]),
        DropReason::NoTunnelSource,
    );
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR.into()),
        // Leaves less than IPv4's minimum MTU (68) inside the tunnel: no FRAG_NEEDED can help.
        path_mtu: 80,
        ..Director::default()
    });
    // A GSO super-packet on the connection above cannot be encapsulated whole.
    let gso = tcp(CLIENT, 40002, VIP2, 80, ACK, &[0; 400]);
    let mut buf = vec![0u8; 64 + gso.len()];
    buf[64..].copy_from_slice(&gso);
    let offload = Offload {
        gso_size: 100,
        ..Offload::default()
    };
    let mut pkt = PacketBuf::with_offload(&mut buf, 64, gso.len(), offload);
    assert_eq!(
        e.process(Timestamp(4), &mut pkt),
        Verdict::Drop(DropReason::GsoNotSplit)
    );
    // Too little room in front of the packet for the GUE headers.
    assert_eq!(
        run_with(&e, 4, &tcp(CLIENT, 40003, VIP2, 80, SYN, &[]), 8),
        Verdict::Drop(DropReason::NoHeadroom)
    );
    // Too big for the path once encapsulated, DF set, and too small a path to announce.
    let mut big = tcp(CLIENT, 40004, VIP2, 80, SYN, &[0; 200]);
    set_frag_field(&mut big, 0x4000);
    drop_of(&e, 5, &big, DropReason::TooBig);
    collect(&metrics, seen);
}

/// A one-entry table: full of an established connection, then that entry (expired, not yet
/// reaped) evicted to make room.
fn full_table_fixture(seen: &mut Seen) {
    let cfg = Config {
        services: vec![service(Protocol::Tcp, VIP, 80, vec![dest(RS1, 8080, 1)])],
    };
    let (e, metrics) = attach(&cfg, opts(1));
    // Established entries are never evicted.
    assert_eq!(
        run(&e, 1, &tcp(CLIENT, 40000, VIP, 80, SYN, &[])),
        Verdict::Forward
    );
    assert_eq!(
        run(&e, 2, &tcp(RS1, 8080, CLIENT, 40000, SYNACK, &[])),
        Verdict::Forward
    );
    assert_eq!(
        run(&e, 3, &tcp(CLIENT, 40000, VIP, 80, ACK, &[])),
        Verdict::Forward
    );
    drop_of(
        &e,
        4,
        &tcp(CLIENT, 40001, VIP, 80, SYN, &[]),
        DropReason::TableFull,
    );
    // Long after the first entry's timeout, unreaped: evicted for the new one.
    assert_eq!(
        run(&e, 3_600_000, &tcp(CLIENT, 40002, VIP, 80, SYN, &[])),
        Verdict::Forward
    );
    collect(&metrics, seen);
}

/// FULLNAT with one local address: every source port towards the real server taken.
fn fullnat_fixture(seen: &mut Seen) {
    let mut svc = service(Protocol::Udp, VIP, 53, vec![dest(RS2, 53, 1)]);
    svc.dests[0].forward = ForwardMethod::FullNat;
    svc.local_addresses = vec![DIRECTOR.into()];
    let cfg = Config {
        services: vec![svc],
    };
    let (e, metrics) = attach(&cfg, opts(1 << 17));
    for i in 0..(65536 - 1024) {
        let client = [198, 18, (i >> 8) as u8, i as u8];
        assert_eq!(
            run(&e, 1, &udp(client, 5000, VIP, 53, b"q")),
            Verdict::Forward
        );
    }
    drop_of(
        &e,
        2,
        &udp(CLIENT, 6000, VIP, 53, b"q"),
        DropReason::LocalPortExhausted,
    );
    collect(&metrics, seen);
}

#[test]
fn every_declared_instrument_is_driven_by_the_engine() {
    let mut seen = Seen::new();
    nat_fixture(&mut seen);
    l2_and_tunnel_fixture(&mut seen);
    full_table_fixture(&mut seen);
    fullnat_fixture(&mut seen);

    // What must be seen: every instrument, with each value of its enumerated attributes.
    let mut expected: BTreeMap<&str, Vec<Vec<String>>> = BTreeMap::new();
    for spec in INSTRUMENTS {
        let values: Vec<Vec<&str>> = spec
            .attributes
            .iter()
            .filter(|k| ENUMERATED.contains(k))
            .map(|k| match (*k, spec.name) {
                ("direction", _) => vec!["in", "out"],
                ("reason", _) => DropReason::ALL.iter().map(|r| r.name()).collect(),
                ("state", "ulvs.real_server.state") => REAL_SERVER_STATES.to_vec(),
                ("state", "ulvs.real_server.connection.count") => {
                    vec!["active", "inactive", "persistent"]
                }
                ("state", _) => vec!["active", "inactive"],
                ("result", _) => vec!["ok"],
                (k, n) => panic!("{n}: no expected values for attribute {k}"),
            })
            .collect();
        // The cartesian product of the enumerated values (instruments have at most one).
        assert!(
            values.len() <= 1,
            "{}: more than one enumerated key",
            spec.name
        );
        let combos = match values.first() {
            Some(vs) => vs.iter().map(|v| vec![(*v).to_owned()]).collect(),
            None => vec![Vec::new()],
        };
        expected.insert(spec.name, combos);
    }
    for spec in HISTOGRAMS {
        let result = spec.attributes.iter().filter(|k| ENUMERATED.contains(k));
        let combo: Vec<String> = result
            .map(|k| match *k {
                "result" => "ok".to_owned(),
                k => panic!("{}: no expected values for attribute {k}", spec.name),
            })
            .collect();
        expected.insert(spec.name, vec![combo]);
    }
    let mut missing = Vec::new();
    for (name, combos) in &expected {
        for c in combos {
            if !seen.contains(&((*name).to_owned(), c.clone())) {
                missing.push(format!("{name} {c:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "declared but never non-zero in any fixture:\n  {}",
        missing.join("\n  ")
    );
}
