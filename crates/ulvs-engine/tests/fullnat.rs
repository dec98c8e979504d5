//! FULLNAT fixtures, IPv4 and IPv6: the client's source becomes a local address and port, the
//! destination the real server; replies to the local address are rewritten back. Port
//! allocation, exhaustion and configuration checks. Expected packets are built independently by
//! etherparse (checksums from scratch).

mod common;

use std::net::IpAddr;

use common::*;
use ulvs_engine::{
    Config, ConfigError, DropReason, Engine, EngineOptions, ForwardMethod, Protocol, Verdict,
};

fn ip4(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

fn ip6(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn engine4() -> Engine {
    engine_with(vec![
        service_at(
            Protocol::Tcp,
            sa(VIP, 80),
            vec![dest_at(sa(RS1, 8080), ForwardMethod::FullNat, 1)],
            vec![ip4(LADDR1), ip4(LADDR2)],
        ),
        service_at(
            Protocol::Udp,
            sa(VIP, 53),
            vec![dest_at(sa(RS2, 5353), ForwardMethod::FullNat, 1)],
            vec![ip4(LADDR1)],
        ),
    ])
}

#[test]
fn tcp_v4_both_directions_and_local_addresses_round_robin() {
    let e = engine4();
    expect(
        &e,
        1,
        "SYN: source becomes LADDR1:1024, destination the real server",
        &tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        Verdict::Forward,
        &tcp(LADDR1, 1024, RS1, 8080, SYN, &[]),
    );
    expect(
        &e,
        2,
        "SYN-ACK to the local address comes from the VIP to the client",
        &tcp(RS1, 8080, LADDR1, 1024, SYN | ACK, &[]),
        Verdict::Forward,
        &tcp(VIP, 80, CLIENT, 40000, SYN | ACK, &[]),
    );
    expect(
        &e,
        3,
        "data from the client keeps its local port",
        &tcp(CLIENT, 40000, VIP, 80, ACK | PSH, b"hello"),
        Verdict::Forward,
        &tcp(LADDR1, 1024, RS1, 8080, ACK | PSH, b"hello"),
    );
    expect(
        &e,
        4,
        "a second client gets the next local address",
        &tcp(CLIENT2, 40000, VIP, 80, SYN, &[]),
        Verdict::Forward,
        &tcp(LADDR2, 1024, RS1, 8080, SYN, &[]),
    );
    expect(
        &e,
        5,
        "a third connection: LADDR1 again, the next port",
        &tcp(CLIENT, 40001, VIP, 80, SYN, &[]),
        Verdict::Forward,
        &tcp(LADDR1, 1025, RS1, 8080, SYN, &[]),
    );
    let s = e.stats();
    assert_eq!(s.services[0].counters.conns, 3);
    assert_eq!(s.services[0].counters.out_pkts, 1);
}

#[test]
fn udp_v4_both_directions() {
    let e = engine4();
    expect(
        &e,
        1,
        "query",
        &udp(CLIENT, 5000, VIP, 53, b"q"),
        Verdict::Forward,
        &udp(LADDR1, 1024, RS2, 5353, b"q"),
    );
    expect(
        &e,
        2,
        "answer",
        &udp(RS2, 5353, LADDR1, 1024, b"answer"),
        Verdict::Forward,
        &udp(VIP, 53, CLIENT, 5000, b"answer"),
    );
    expect(
        &e,
        3,
        "no checksum stays none",
        &udp_no_csum(CLIENT, 5001, VIP, 53, b"q"),
        Verdict::Forward,
        &udp_no_csum(LADDR1, 1025, RS2, 5353, b"q"),
    );
}

#[test]
fn stray_packet_to_a_local_address_is_dropped_not_passed() {
    let e = engine4();
    let p = tcp(RS1, 8080, LADDR1, 2000, ACK, &[]);
    expect(
        &e,
        1,
        "no connection on LADDR1:2000",
        &p,
        Verdict::Drop(DropReason::NoConnection),
        &p,
    );
}

#[test]
fn tcp_and_udp_v6() {
    let e = engine_with(vec![
        service_at(
            Protocol::Tcp,
            sa6(VIP6, 80),
            vec![dest_at(sa6(RS6_1, 8080), ForwardMethod::FullNat, 1)],
            vec![ip6(LADDR6_1), ip6(LADDR6_2)],
        ),
        service_at(
            Protocol::Udp,
            sa6(VIP6, 53),
            vec![dest_at(sa6(RS6_2, 53), ForwardMethod::FullNat, 1)],
            vec![ip6(LADDR6_2)],
        ),
    ]);
    expect(
        &e,
        1,
        "v6 SYN",
        &tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]),
        Verdict::Forward,
        &tcp6(LADDR6_1, 1024, RS6_1, 8080, SYN, &[]),
    );
    expect(
        &e,
        2,
        "v6 SYN-ACK",
        &tcp6(RS6_1, 8080, LADDR6_1, 1024, SYN | ACK, &[]),
        Verdict::Forward,
        &tcp6(VIP6, 80, CLIENT6, 40000, SYN | ACK, &[]),
    );
    expect(
        &e,
        3,
        "v6 query",
        &udp6(CLIENT6, 5000, VIP6, 53, b"q"),
        Verdict::Forward,
        &udp6(LADDR6_2, 1024, RS6_2, 53, b"q"),
    );
    expect(
        &e,
        4,
        "v6 answer",
        &udp6(RS6_2, 53, LADDR6_2, 1024, b"a"),
        Verdict::Forward,
        &udp6(VIP6, 53, CLIENT6, 5000, b"a"),
    );
}

#[test]
fn exhausted_ports_are_a_counted_drop_and_freed_ports_come_back() {
    let e = Engine::new(EngineOptions {
        max_connections: 70_000,
        shards: 16,
        hash_seed: 1,
    });
    e.apply_config(&Config {
        services: vec![service_at(
            Protocol::Udp,
            sa(VIP, 53),
            vec![dest_at(sa(RS2, 53), ForwardMethod::FullNat, 1)],
            vec![ip4(LADDR1)],
        )],
    })
    .unwrap();
    let ports = 65536 - 1024;
    let mut seen = std::collections::HashSet::new();
    for i in 0..ports {
        let client = [198, 18, (i >> 8) as u8, i as u8];
        let (v, out) = run(&e, 1, &udp(client, 5000, VIP, 53, b"q"));
        assert_eq!(v, Verdict::Forward);
        let port = u16::from_be_bytes([out[20], out[21]]);
        assert!(seen.insert(port), "port {port} handed out twice");
    }
    let before = e.stats();
    let p = udp(CLIENT, 6000, VIP, 53, b"q");
    expect(
        &e,
        2,
        "every port of LADDR1 towards RS2 is taken",
        &p,
        Verdict::Drop(DropReason::LocalPortExhausted),
        &p,
    );
    assert_delta(&before, &e.stats(), &[("drop local_port_exhausted", 1)]);
    // Idle UDP connections expire; their ports are free again.
    let later = 1 + e.timeouts().udp_ms;
    for _ in 0..e.expire_calls_per_pass() {
        e.expire(ulvs_engine::Timestamp(later));
    }
    assert_eq!(e.stats().connections, 0);
    let (v, _) = run(&e, later, &p);
    assert_eq!(v, Verdict::Forward);
}

#[test]
fn config_checks_local_addresses() {
    let e = Engine::new(opts());
    let fullnat = |laddrs: Vec<IpAddr>| Config {
        services: vec![service_at(
            Protocol::Tcp,
            sa(VIP, 80),
            vec![dest_at(sa(RS1, 80), ForwardMethod::FullNat, 1)],
            laddrs,
        )],
    };
    assert!(matches!(
        e.apply_config(&fullnat(vec![])),
        Err(ConfigError::NoLocalAddress(..))
    ));
    assert!(matches!(
        e.apply_config(&fullnat(vec![ip6(LADDR6_1)])),
        Err(ConfigError::LocalAddressFamily(..))
    ));
    assert!(matches!(
        e.apply_config(&fullnat(vec![ip4(LADDR1), ip4(LADDR1)])),
        Err(ConfigError::DuplicateLocalAddress(..))
    ));
    assert!(matches!(
        e.apply_config(&fullnat(vec![ip4(VIP)])),
        Err(ConfigError::LocalAddressIsVip(..))
    ));
    assert!(e.apply_config(&fullnat(vec![ip4(LADDR1)])).is_ok());
}

/// With a local-port seed (ulvsd sets a random one at start) pools start elsewhere than 1024,
/// differently per seed, and a reply to the port handed out is translated back.
#[test]
fn a_local_port_seed_moves_where_pools_start() {
    let first_port = |seed: u64| {
        let e = Engine::new(opts());
        e.set_local_port_seed(seed);
        e.apply_config(&Config {
            services: vec![service_at(
                Protocol::Udp,
                sa(VIP, 53),
                vec![dest_at(sa(RS2, 53), ForwardMethod::FullNat, 1)],
                vec![ip4(LADDR1)],
            )],
        })
        .unwrap();
        let (v, out) = run(&e, 1, &udp(CLIENT, 5000, VIP, 53, b"q"));
        assert_eq!(v, Verdict::Forward);
        let port = u16::from_be_bytes([out[20], out[21]]);
        expect(
            &e,
            2,
            "the reply to the seeded port",
            &udp(RS2, 53, LADDR1, port, b"a"),
            Verdict::Forward,
            &udp(VIP, 53, CLIENT, 5000, b"a"),
        );
        port
    };
    assert_eq!(first_port(0), 1024);
    let seeded: std::collections::HashSet<u16> = (1..=6).map(first_port).collect();
    assert!(seeded.len() >= 5 && !seeded.contains(&1024), "{seeded:?}");
}
