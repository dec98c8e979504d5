//! ICMP fixtures: echo replies for virtual and local addresses, translation of errors that
//! belong to a connection (NAT and FULLNAT, IPv4 and IPv6, both directions), and the
//! FRAG_NEEDED / Packet Too Big builder. Expected packets are built independently by etherparse,
//! so every checksum (outer IPv4 header, ICMP, quoted IPv4 header, quoted TCP/UDP) is checked
//! against one computed from scratch.

mod common;

use std::net::IpAddr;

use common::*;
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
use ulvs_engine::icmp::{BuildError, packet_too_big};
use ulvs_engine::{DropReason, Engine, ForwardMethod, PacketBuf, Protocol, Verdict};

fn port_unreachable() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port)
}

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
            sa6(VIP6, 80),
            vec![dest_at(sa6(RS6_1, 8080), ForwardMethod::FullNat, 1)],
            vec![LADDR6_1.parse::<IpAddr>().unwrap()],
        ),
    ])
}

#[test]
fn echo_requests_to_virtual_and_local_addresses_are_answered() {
    let e = engine();
    let mut req = Vec::new();
    PacketBuilder::ipv4(CLIENT, VIP, 9)
        .icmpv4_echo_request(7, 1)
        .write(&mut req, b"ping")
        .unwrap();
    let mut want = Vec::new();
    PacketBuilder::ipv4(VIP, CLIENT, 64)
        .icmpv4_echo_reply(7, 1)
        .write(&mut want, b"ping")
        .unwrap();
    expect(&e, 1, "v4 ping to the VIP", &req, Verdict::Reply, &want);

    let mut req = Vec::new();
    PacketBuilder::ipv6(v6(CLIENT6), v6(VIP6), 3)
        .icmpv6_echo_request(9, 2)
        .write(&mut req, b"ping6")
        .unwrap();
    let mut want = Vec::new();
    PacketBuilder::ipv6(v6(VIP6), v6(CLIENT6), 64)
        .icmpv6_echo_reply(9, 2)
        .write(&mut want, b"ping6")
        .unwrap();
    expect(&e, 1, "v6 ping to the VIP", &req, Verdict::Reply, &want);

    let mut req = Vec::new();
    PacketBuilder::ipv6(v6(RS6_1), v6(LADDR6_1), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut req, b"")
        .unwrap();
    let mut want = Vec::new();
    PacketBuilder::ipv6(v6(LADDR6_1), v6(RS6_1), 64)
        .icmpv6_echo_reply(1, 1)
        .write(&mut want, b"")
        .unwrap();
    expect(
        &e,
        1,
        "v6 ping to a local address",
        &req,
        Verdict::Reply,
        &want,
    );

    let mut req = Vec::new();
    PacketBuilder::ipv4(CLIENT, OTHER, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut req, b"ping")
        .unwrap();
    expect(
        &e,
        1,
        "ping to another host passes",
        &req,
        Verdict::Pass,
        &req,
    );
    let mut rep = Vec::new();
    PacketBuilder::ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_reply(7, 1)
        .write(&mut rep, b"ping")
        .unwrap();
    expect(
        &e,
        1,
        "an echo reply to the VIP is not ours to handle",
        &rep,
        Verdict::Drop(DropReason::UnsupportedProtocol),
        &rep,
    );
}

#[test]
fn nat_v4_error_from_the_real_server_goes_to_the_client_from_the_vip() {
    let e = engine();
    let (v, fwd) = run(&e, 1, &udp(CLIENT, 5000, VIP, 53, b"query"));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(fwd, udp(CLIENT, 5000, RS2, 5353, b"query"));
    let before = e.stats();
    expect(
        &e,
        2,
        "port unreachable from RS2 quoting the whole forwarded datagram",
        &icmp4(RS2, CLIENT, port_unreachable(), &fwd),
        Verdict::Forward,
        &icmp4(
            VIP,
            CLIENT,
            port_unreachable(),
            &udp(CLIENT, 5000, VIP, 53, b"query"),
        ),
    );
    assert_delta(&before, &e.stats(), &[]);
}

#[test]
fn nat_v4_error_from_the_client_side_goes_to_the_real_server() {
    let e = engine();
    run(&e, 1, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    let (_, reply) = run(&e, 2, &tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]));
    assert_eq!(reply, tcp(VIP, 80, CLIENT, 40000, SYN | ACK, &[]));
    let ttl = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
    // A router quotes the IP header and 8 bytes of TCP (no TCP checksum in the quote).
    expect(
        &e,
        3,
        "time exceeded from a router on the client's path",
        &icmp4(ROUTER, VIP, ttl.clone(), &reply[..28]),
        Verdict::Forward,
        &icmp4(
            ROUTER,
            RS1,
            ttl,
            &tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[])[..28],
        ),
    );
}

#[test]
fn fullnat_v6_errors_both_ways() {
    let e = engine();
    let data = [0x5au8; 100];
    run(&e, 1, &tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]));
    run(&e, 2, &tcp6(RS6_1, 8080, LADDR6_1, 1024, SYN | ACK, &[]));
    let (v, to_client) = run(&e, 3, &tcp6(RS6_1, 8080, LADDR6_1, 1024, ACK, &data));
    assert_eq!(v, Verdict::Forward);
    let ptb = Icmpv6Type::PacketTooBig { mtu: 1280 };
    expect(
        &e,
        4,
        "packet too big from the client's path reaches the real server from the local address",
        &icmp6(ROUTER6, VIP6, ptb, &to_client),
        Verdict::Forward,
        &icmp6(
            LADDR6_1,
            RS6_1,
            ptb,
            &tcp6(RS6_1, 8080, LADDR6_1, 1024, ACK, &data),
        ),
    );
    let (_, to_rs) = run(&e, 5, &tcp6(CLIENT6, 40000, VIP6, 80, ACK, b"x"));
    assert_eq!(to_rs, tcp6(LADDR6_1, 1024, RS6_1, 8080, ACK, b"x"));
    let unreach = Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port);
    expect(
        &e,
        6,
        "unreachable from the real server reaches the client from the VIP",
        &icmp6(RS6_1, LADDR6_1, unreach, &to_rs),
        Verdict::Forward,
        &icmp6(
            VIP6,
            CLIENT6,
            unreach,
            &tcp6(CLIENT6, 40000, VIP6, 80, ACK, b"x"),
        ),
    );
}

#[test]
fn errors_without_a_connection() {
    let e = engine();
    let p = icmp4(
        ROUTER,
        VIP,
        port_unreachable(),
        &udp(VIP, 53, CLIENT, 9999, b"x"),
    );
    expect(
        &e,
        1,
        "to the VIP: dropped",
        &p,
        Verdict::Drop(DropReason::NoConnection),
        &p,
    );
    let p = icmp4(
        ROUTER,
        OTHER,
        port_unreachable(),
        &udp(OTHER, 53, CLIENT, 9999, b"x"),
    );
    expect(&e, 1, "to another host: passed", &p, Verdict::Pass, &p);
    let p = icmp4(ROUTER, VIP, port_unreachable(), &[0x45, 0, 0]);
    expect(
        &e,
        1,
        "truncated quote",
        &p,
        Verdict::Drop(DropReason::Malformed),
        &p,
    );
}

fn clear_df(p: &mut [u8]) {
    let (mut h, _) = etherparse::Ipv4Header::from_slice(p).unwrap();
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    p[..20].copy_from_slice(&h.to_bytes());
}

fn build(
    input: &[u8],
    headroom: usize,
    tail: usize,
    mtu: u32,
) -> (Result<(), BuildError>, Vec<u8>) {
    let mut buf = vec![0u8; headroom + input.len() + tail];
    buf[headroom..headroom + input.len()].copy_from_slice(input);
    let mut pkt = PacketBuf::new(&mut buf, headroom, input.len());
    let r = packet_too_big(&mut pkt, mtu);
    (r, pkt.data().to_vec())
}

#[test]
fn frag_needed_and_packet_too_big_are_built_to_the_sender() {
    let big = tcp(CLIENT, 40000, VIP, 80, ACK, &[0x11; 1400]);
    let mut want = icmp4(
        VIP,
        CLIENT,
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1380,
        }),
        &big[..576 - 28],
    );
    clear_df(&mut want);
    for headroom in [64, 0] {
        let (r, out) = build(&big, headroom, 0, 1380);
        assert_eq!(r, Ok(()));
        assert_eq!(out, want, "headroom {headroom}\n{}", hex(&out));
    }

    let big6 = udp6(CLIENT6, 5000, VIP6, 53, &[0x22; 1400]);
    let want6 = icmp6(
        VIP6,
        CLIENT6,
        Icmpv6Type::PacketTooBig { mtu: 1300 },
        &big6[..1280 - 48],
    );
    let (r, out) = build(&big6, 48, 0, 1300);
    assert_eq!(r, Ok(()));
    assert_eq!(out, want6, "\n{}", hex(&out));

    let small = udp6(CLIENT6, 5000, VIP6, 53, b"x");
    let want_small = icmp6(
        VIP6,
        CLIENT6,
        Icmpv6Type::PacketTooBig { mtu: 1300 },
        &small,
    );
    assert_eq!(build(&small, 0, 48, 1300), (Ok(()), want_small));
    assert_eq!(
        build(&small, 0, 0, 1300),
        (Err(BuildError::NoRoom), small.clone())
    );
    let err = icmp4(
        VIP,
        CLIENT,
        port_unreachable(),
        &udp(CLIENT, 1, VIP, 2, b""),
    );
    assert_eq!(build(&err, 64, 0, 1300).0, Err(BuildError::NotAllowed));
    assert_eq!(build(&[0x45, 0], 64, 0, 1300).0, Err(BuildError::Malformed));
}
