//! ICMP errors from a router between the director and a NAT or FULLNAT real server (its outer
//! source is the router, not the real server): FRAG_NEEDED / Packet Too Big for a link on the
//! way that is smaller, time exceeded, host unreachable. The quoted packet (what the director
//! sent to the real server) identifies the connection; the error reaches the client from the
//! virtual address, quoting the client's own packet, as IPVS's `ip_vs_out_icmp` rewrites the
//! outer source to the virtual address. IPv4 and IPv6; expected packets are built from scratch
//! by etherparse, so every checksum is checked.

mod common;

use std::net::IpAddr;

use common::*;
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
use ulvs_engine::{Engine, ForwardMethod, Protocol, Verdict};

/// The NAT66 real server.
const RS6: &str = RS6_2;

fn frag_needed(mtu: u16) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// NAT TCP VIP:80 -> RS1:8080, NAT UDP VIP:53 -> RS2:5353, FULLNAT TCP VIP2:80 -> RS3:8080
/// (local address LADDR1), NAT66 TCP VIP6:80 -> RS6:8080, FULLNAT66 TCP VIP6:81 -> RS6_1:8080
/// (local address LADDR6_1).
fn engine() -> Engine {
    engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            ulvs_engine::SchedulerKind::Rr,
            vec![dest(RS1, 8080, 1)],
        ),
        service(
            Protocol::Udp,
            VIP,
            53,
            ulvs_engine::SchedulerKind::Rr,
            vec![dest(RS2, 5353, 1)],
        ),
        service_at(
            Protocol::Tcp,
            sa(VIP2, 80),
            vec![dest_at(sa(RS3, 8080), ForwardMethod::FullNat, 1)],
            vec![IpAddr::from(LADDR1)],
        ),
        service_at(
            Protocol::Tcp,
            sa6(VIP6, 80),
            vec![dest_at(sa6(RS6, 8080), ForwardMethod::Masq, 1)],
            vec![],
        ),
        service_at(
            Protocol::Tcp,
            sa6(VIP6, 81),
            vec![dest_at(sa6(RS6_1, 8080), ForwardMethod::FullNat, 1)],
            vec![ip(LADDR6_1)],
        ),
    ])
}

/// A client packet of 1400 data bytes and what the director forwards for it (after the
/// handshake), IPv4.
fn big_v4(e: &Engine, vip: [u8; 4], rs: [u8; 4], rs_side_client: ([u8; 4], u16)) -> Vec<u8> {
    let data = [0x33u8; 1400];
    let (v, _) = run(e, 1, &tcp(CLIENT, 40000, vip, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    let (c, cp) = rs_side_client;
    let (v, _) = run(e, 2, &tcp(rs, 8080, c, cp, SYN | ACK, &[]));
    assert_eq!(v, Verdict::Forward);
    let (v, fwd) = run(e, 3, &tcp(CLIENT, 40000, vip, 80, ACK, &data));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(fwd, tcp(c, cp, rs, 8080, ACK, &data));
    fwd
}

#[test]
fn nat_v4_frag_needed_from_a_router_before_the_real_server_reaches_the_client() {
    let e = engine();
    let fwd = big_v4(&e, VIP, RS1, (CLIENT, 40000));
    let client_pkt = tcp(CLIENT, 40000, VIP, 80, ACK, &[0x33; 1400]);
    // A router quotes as much as fits in 576 bytes.
    let q = 576 - 28;
    expect(
        &e,
        4,
        "FRAG_NEEDED 1300 from the router, to the client, quoting client -> RS1",
        &icmp4(ROUTER, CLIENT, frag_needed(1300), &fwd[..q]),
        Verdict::Forward,
        &icmp4(VIP, CLIENT, frag_needed(1300), &client_pkt[..q]),
    );
    // RFC 792 routers quote only the IP header and 8 bytes.
    let host = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Host);
    expect(
        &e,
        5,
        "host unreachable from the router, 28-byte quote",
        &icmp4(ROUTER, CLIENT, host.clone(), &fwd[..28]),
        Verdict::Forward,
        &icmp4(VIP, CLIENT, host, &client_pkt[..28]),
    );
}

#[test]
fn nat_v4_time_exceeded_from_a_router_about_a_datagram() {
    let e = engine();
    let (v, fwd) = run(&e, 1, &udp(CLIENT, 5000, VIP, 53, b"query"));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(fwd, udp(CLIENT, 5000, RS2, 5353, b"query"));
    let ttl = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
    expect(
        &e,
        2,
        "time exceeded from the router",
        &icmp4(ROUTER, CLIENT, ttl.clone(), &fwd),
        Verdict::Forward,
        &icmp4(VIP, CLIENT, ttl, &udp(CLIENT, 5000, VIP, 53, b"query")),
    );
}

#[test]
fn fullnat_v4_frag_needed_to_the_local_address_reaches_the_client() {
    let e = engine();
    let fwd = big_v4(&e, VIP2, RS3, (LADDR1, 1024));
    let client_pkt = tcp(CLIENT, 40000, VIP2, 80, ACK, &[0x33; 1400]);
    let q = 576 - 28;
    expect(
        &e,
        4,
        "FRAG_NEEDED from the router to LADDR1, quoting LADDR1 -> RS3",
        &icmp4(ROUTER, LADDR1, frag_needed(1300), &fwd[..q]),
        Verdict::Forward,
        &icmp4(VIP2, CLIENT, frag_needed(1300), &client_pkt[..q]),
    );
}

/// The IPv6 handshake and a 1300-byte segment through `vip_port`; returns what the director
/// forwarded.
fn big_v6(e: &Engine, vport: u16, rs: &str, rs_side_client: (&str, u16)) -> Vec<u8> {
    let data = [0x44u8; 1300];
    let (v, _) = run(e, 1, &tcp6(CLIENT6, 40000, VIP6, vport, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    let (c, cp) = rs_side_client;
    let (v, _) = run(e, 2, &tcp6(rs, 8080, c, cp, SYN | ACK, &[]));
    assert_eq!(v, Verdict::Forward);
    let (v, fwd) = run(e, 3, &tcp6(CLIENT6, 40000, VIP6, vport, ACK, &data));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(fwd, tcp6(c, cp, rs, 8080, ACK, &data));
    fwd
}

#[test]
fn nat66_packet_too_big_from_a_router_reaches_the_client() {
    let e = engine();
    let fwd = big_v6(&e, 80, RS6, (CLIENT6, 40000));
    let client_pkt = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x44; 1300]);
    // An ICMPv6 error is at most 1280 bytes.
    let q = 1280 - 48;
    let ptb = Icmpv6Type::PacketTooBig { mtu: 1280 };
    expect(
        &e,
        4,
        "Packet Too Big from the router, to the client, quoting client -> RS6",
        &icmp6(ROUTER6, CLIENT6, ptb, &fwd[..q]),
        Verdict::Forward,
        &icmp6(VIP6, CLIENT6, ptb, &client_pkt[..q]),
    );
    let unreach = Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Address);
    expect(
        &e,
        5,
        "address unreachable from the router",
        &icmp6(ROUTER6, CLIENT6, unreach, &fwd[..q]),
        Verdict::Forward,
        &icmp6(VIP6, CLIENT6, unreach, &client_pkt[..q]),
    );
}

#[test]
fn fullnat66_packet_too_big_to_the_local_address_reaches_the_client() {
    let e = engine();
    let fwd = big_v6(&e, 81, RS6_1, (LADDR6_1, 1024));
    let client_pkt = tcp6(CLIENT6, 40000, VIP6, 81, ACK, &[0x44; 1300]);
    let q = 1280 - 48;
    let ptb = Icmpv6Type::PacketTooBig { mtu: 1280 };
    expect(
        &e,
        4,
        "Packet Too Big from the router to LADDR6_1, quoting LADDR6_1 -> RS6_1",
        &icmp6(ROUTER6, LADDR6_1, ptb, &fwd[..q]),
        Verdict::Forward,
        &icmp6(VIP6, CLIENT6, ptb, &client_pkt[..q]),
    );
    let hops = Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded);
    expect(
        &e,
        5,
        "hop limit exceeded from the router",
        &icmp6(ROUTER6, LADDR6_1, hops, &fwd[..q]),
        Verdict::Forward,
        &icmp6(VIP6, CLIENT6, hops, &client_pkt[..q]),
    );
}

#[test]
fn untracked_icmp_from_a_router_passes() {
    let e = engine();
    // No connection: an error about some other flow of the client, and the router's ping.
    let p = icmp4(
        ROUTER,
        CLIENT,
        frag_needed(1300),
        &tcp(CLIENT, 40001, RS1, 8080, ACK, &[0; 100]),
    );
    expect(&e, 1, "error about an unknown flow", &p, Verdict::Pass, &p);
    let mut ping = Vec::new();
    PacketBuilder::ipv4(ROUTER, CLIENT, 64)
        .icmpv4_echo_request(3, 1)
        .write(&mut ping, b"hi")
        .unwrap();
    expect(
        &e,
        1,
        "the router pings the client",
        &ping,
        Verdict::Pass,
        &ping,
    );
    let mut ping6 = Vec::new();
    PacketBuilder::ipv6(v6(ROUTER6), v6(CLIENT6), 64)
        .icmpv6_echo_reply(3, 1)
        .write(&mut ping6, b"hi")
        .unwrap();
    expect(
        &e,
        1,
        "the router answers the client's ping",
        &ping6,
        Verdict::Pass,
        &ping6,
    );
}
