//! ICMP relay fixtures for direct-routing and tunnel connections: an error that arrives at the
//! VIP (a router on the real server's direct path to the client answers a reply the real server
//! sent from the VIP) goes to the real server that owns the connection unchanged, as a frame to
//! its MAC (direct routing) or encapsulated (tunnel), IPv4 and IPv6. And errors sent to the
//! director's tunnel source about its own tunnel packets ([`Engine::process_local_icmp`]):
//! relayed to the client, FRAG_NEEDED / Packet Too Big with the tunnel overhead taken off.

mod common;

use common::*;
use etherparse::{Icmpv4Type, Icmpv6Type, IpNumber, Ipv4Header, PacketBuilder, icmpv4};
use ulvs_engine::{
    Director, DropReason, Engine, ForwardMethod, PacketBuf, Protocol, SchedulerKind, Timestamp,
    TunnelChecksum, TunnelConfig, TunnelType, Verdict,
};

const TAP: [u8; 6] = [0x02, 0x75, 0, 0, 0, 1];
const RS1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const RS6_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x16];
const DIRECTOR: [u8; 4] = [198, 19, 0, 1];
const DIRECTOR6: &str = "fd00:1b5:9::1";

/// Runs `input` through [`Engine::process`] with 128 bytes of headroom (room for any outer
/// header).
fn run_h(e: &Engine, now: u64, input: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 128 + input.len()];
    buf[128..].copy_from_slice(input);
    let mut pkt = PacketBuf::new(&mut buf, 128, input.len());
    let v = e.process(Timestamp(now), &mut pkt);
    (v, pkt.data().to_vec())
}

fn frame_run(e: &Engine, now: u64, input: &[u8]) -> Verdict {
    let mut buf = vec![0u8; 128 + input.len()];
    buf[128..].copy_from_slice(input);
    let mut pkt = PacketBuf::new(&mut buf, 128, input.len());
    e.process_frame(Timestamp(now), &mut pkt)
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn frag_needed(mtu: u16) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    })
}

fn engine_for(forward: ForwardMethod) -> Engine {
    let d4 = {
        let mut d = dest(RS1, 80, 1);
        d.forward = forward;
        d
    };
    let d6 = dest_at(sa6(RS6_1, 80), forward, 1);
    let e = engine_with(vec![
        service(Protocol::Tcp, VIP, 80, SchedulerKind::Rr, vec![d4]),
        service_at(Protocol::Tcp, sa6(VIP6, 80), vec![d6], vec![]),
    ]);
    e.set_director(Director {
        mac: Some(TAP),
        arp_source: Some(DIRECTOR.into()),
        tunnel_source_v4: Some(DIRECTOR.into()),
        tunnel_source_v6: Some(DIRECTOR6.parse().unwrap()),
        ..Director::default()
    });
    e
}

/// An ARP reply from RS1 and a neighbour advertisement from RS6_1, so both are resolved.
fn resolve(e: &Engine) {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&RS1_MAC);
    arp.extend_from_slice(&RS1);
    arp.extend_from_slice(&TAP);
    arp.extend_from_slice(&DIRECTOR);
    assert_eq!(
        frame_run(e, 1, &eth(TAP, RS1_MAC, 0x0806, &arp)),
        Verdict::Pass
    );
    let mut na = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    na.extend_from_slice(&v6(RS6_1));
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&RS6_MAC);
    let mut ip = Vec::new();
    PacketBuilder::ipv6(v6(RS6_1), v6("fe80::1"), 255)
        .icmpv6(Icmpv6Type::Unknown {
            type_u8: 136,
            code_u8: 0,
            bytes5to8: [0x60, 0, 0, 0],
        })
        .write(&mut ip, &na[8..])
        .unwrap();
    assert_eq!(
        frame_run(e, 1, &eth(TAP, RS6_MAC, 0x86dd, &ip)),
        Verdict::Pass
    );
    assert_eq!(e.neighbours(Timestamp(1)).len(), 2);
}

#[test]
fn errors_at_the_vip_for_direct_routing_go_to_the_real_servers_mac_unchanged() {
    let e = engine_for(ForwardMethod::Route);
    resolve(&e);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    assert_eq!(run_h(&e, 2, &syn).0, Verdict::ForwardFrame);
    let syn6 = tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]);
    assert_eq!(run_h(&e, 2, &syn6).0, Verdict::ForwardFrame);
    let before = e.stats();

    // The real server's SYN+ACK went straight to the client; a router on that path answers
    // to its source, the VIP, which is routed to the director.
    let reply = tcp(VIP, 80, CLIENT, 40000, SYN | ACK, &[0x33; 1400]);
    let err = icmp4(ROUTER, VIP, frag_needed(1300), &reply[..548]);
    let (v, out) = run_h(&e, 3, &err);
    assert_eq!(v, Verdict::ForwardFrame);
    let want = eth(RS1_MAC, TAP, 0x0800, &err);
    assert_eq!(out, want, "output:\n{}expected:\n{}", hex(&out), hex(&want));

    let reply6 = tcp6(VIP6, 80, CLIENT6, 40000, SYN | ACK, &[0x44; 1400]);
    let err6 = icmp6(
        ROUTER6,
        VIP6,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        &reply6[..1232],
    );
    let (v, out) = run_h(&e, 3, &err6);
    assert_eq!(v, Verdict::ForwardFrame);
    let want = eth(RS6_MAC, TAP, 0x86dd, &err6);
    assert_eq!(out, want, "output:\n{}expected:\n{}", hex(&out), hex(&want));
    // Relayed errors are not traffic of the connection, and nothing was dropped.
    assert_delta(&before, &e.stats(), &[]);

    // An error about a connection the director does not know is still a counted drop.
    let other = tcp(VIP, 80, CLIENT, 40001, SYN | ACK, &[]);
    let err = icmp4(ROUTER, VIP, frag_needed(1300), &other);
    assert_eq!(
        run_h(&e, 4, &err).0,
        Verdict::Drop(DropReason::NoConnection)
    );
}

#[test]
fn errors_at_the_vip_for_tunnels_go_to_the_real_server_encapsulated() {
    let e = engine_for(ForwardMethod::Tunnel);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    assert_eq!(run_h(&e, 2, &syn).0, Verdict::Forward);
    let syn6 = tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]);
    assert_eq!(run_h(&e, 2, &syn6).0, Verdict::Forward);
    let before = e.stats();

    let reply = tcp(VIP, 80, CLIENT, 40000, SYN | ACK, &[0x33; 600]);
    let ttl = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
    let err = icmp4(ROUTER, VIP, ttl, &reply[..548]);
    let (v, out) = run_h(&e, 3, &err);
    assert_eq!(v, Verdict::Forward);
    // IPIP: an outer header director -> RS1, protocol 4, TTL, DF and ID copied from the error.
    let mut h = Ipv4Header::new(err.len() as u16, err[8], IpNumber(4), DIRECTOR, RS1).unwrap();
    h.dont_fragment = err[6] & 0x40 != 0;
    h.identification = u16::from_be_bytes([err[4], err[5]]);
    h.header_checksum = h.calc_header_checksum();
    let mut want = h.to_bytes().to_vec();
    want.extend_from_slice(&err);
    assert_eq!(out, want, "output:\n{}expected:\n{}", hex(&out), hex(&want));

    let reply6 = tcp6(VIP6, 80, CLIENT6, 40000, SYN | ACK, &[0x44; 1400]);
    let err6 = icmp6(
        ROUTER6,
        VIP6,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        &reply6[..1232],
    );
    let (v, out) = run_h(&e, 3, &err6);
    assert_eq!(v, Verdict::Forward);
    // IPv6-in-IPv6: next header 41, director -> RS6_1, the error whole behind it.
    assert_eq!(out.len(), 40 + err6.len(), "\n{}", hex(&out));
    assert_eq!(out[0] >> 4, 6);
    assert_eq!(out[6], 41);
    assert_eq!(
        usize::from(u16::from_be_bytes([out[4], out[5]])),
        err6.len()
    );
    assert_eq!(out[8..24], v6(DIRECTOR6));
    assert_eq!(out[24..40], v6(RS6_1));
    assert_eq!(out[40..], err6[..]);
    assert_delta(&before, &e.stats(), &[]);
}

#[test]
fn errors_from_the_real_server_side_of_a_tunnel_connection_pass() {
    // A tunnel real server's own error to the client (about a packet it got through the
    // tunnel) does not normally pass the director; if it does, it is left alone.
    let e = engine_for(ForwardMethod::Tunnel);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    assert_eq!(run_h(&e, 2, &syn).0, Verdict::Forward);
    let unreach = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port);
    let err = icmp4(RS1, CLIENT, unreach, &syn);
    let (v, out) = run_h(&e, 3, &err);
    assert_eq!(v, Verdict::Pass);
    assert_eq!(out, err);
}

// ---- Errors to the director's tunnel source about its own tunnel packets ----

fn clear_df(p: &mut [u8]) {
    let (mut h, _) = Ipv4Header::from_slice(p).unwrap();
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    p[..20].copy_from_slice(&h.to_bytes());
}

/// Runs an ICMP message (without its IP header) through [`Engine::process_local_icmp`].
fn local(e: &Engine, now: u64, msg: &[u8], v6: bool) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 128 + msg.len()];
    buf[128..].copy_from_slice(msg);
    let mut pkt = PacketBuf::new(&mut buf, 128, msg.len());
    let v = e.process_local_icmp(Timestamp(now), &mut pkt, v6);
    (v, pkt.data().to_vec())
}

fn tunnel_engine(t: TunnelConfig) -> Engine {
    let mut d4 = dest(RS1, 80, 1);
    d4.forward = ForwardMethod::Tunnel;
    d4.tunnel = t;
    let mut d6 = dest_at(sa6(RS6_1, 80), ForwardMethod::Tunnel, 1);
    d6.tunnel = t;
    let e = engine_with(vec![
        service(Protocol::Tcp, VIP, 80, SchedulerKind::Rr, vec![d4]),
        service_at(Protocol::Tcp, sa6(VIP6, 80), vec![d6], vec![]),
    ]);
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR.into()),
        tunnel_source_v6: Some(DIRECTOR6.parse().unwrap()),
        ..Director::default()
    });
    e
}

#[test]
fn frag_needed_for_a_tunnel_packet_reaches_the_client_minus_the_overhead() {
    let gue = TunnelConfig {
        kind: TunnelType::Gue,
        port: 6080,
        checksum: TunnelChecksum::None,
    };
    let gre = TunnelConfig {
        kind: TunnelType::Gre,
        port: 0,
        checksum: TunnelChecksum::Csum,
    };
    for (t, overhead) in [(TunnelConfig::default(), 20u16), (gue, 32), (gre, 28)] {
        let e = tunnel_engine(t);
        assert_eq!(
            run_h(&e, 1, &tcp(CLIENT, 40000, VIP, 80, SYN, &[])).0,
            Verdict::Forward
        );
        // 1420 bytes plus the tunnel fit the director's 1500, not the router's 1400.
        let big = tcp(CLIENT, 40000, VIP, 80, ACK, &[0x55; 1380]);
        let (v, encapsulated) = run_h(&e, 2, &big);
        assert_eq!(v, Verdict::Forward, "{t:?}");
        let before = e.stats();
        // The router quotes 548 bytes of the encapsulated packet (576 minus its headers).
        let err = icmp4(ROUTER, DIRECTOR, frag_needed(1400), &encapsulated[..548]);
        let (v, out) = local(&e, 3, &err[20..], false);
        assert_eq!(v, Verdict::Reply, "{t:?}");
        let mut want = icmp4(
            VIP,
            CLIENT,
            frag_needed(1400 - overhead),
            &big[..548 - usize::from(overhead)],
        );
        clear_df(&mut want);
        assert_eq!(
            out,
            want,
            "{t:?}\noutput:\n{}expected:\n{}",
            hex(&out),
            hex(&want)
        );
        assert_delta(&before, &e.stats(), &[]);
        // The path MTU was learned: the next big packet is answered by the engine itself.
        let (v, out) = run_h(&e, 4, &big);
        assert_eq!(v, Verdict::Reply, "{t:?}");
        assert_eq!(
            u16::from_be_bytes([out[26], out[27]]),
            1400 - overhead,
            "{t:?}"
        );
    }
}

#[test]
fn packet_too_big_for_an_ipv6_tunnel_packet_reaches_the_client() {
    let e = tunnel_engine(TunnelConfig::default());
    assert_eq!(
        run_h(&e, 1, &tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[])).0,
        Verdict::Forward
    );
    let big = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x66; 1380]);
    let (v, encapsulated) = run_h(&e, 2, &big);
    assert_eq!(v, Verdict::Forward);
    let err = icmp6(
        ROUTER6,
        DIRECTOR6,
        Icmpv6Type::PacketTooBig { mtu: 1420 },
        &encapsulated[..1232],
    );
    let (v, out) = local(&e, 3, &err[40..], true);
    assert_eq!(v, Verdict::Reply);
    let want = icmp6(
        VIP6,
        CLIENT6,
        Icmpv6Type::PacketTooBig { mtu: 1380 },
        &big[..1192],
    );
    assert_eq!(out, want, "output:\n{}expected:\n{}", hex(&out), hex(&want));
}

#[test]
fn other_local_icmp_is_not_the_engines() {
    let e = tunnel_engine(TunnelConfig::default());
    run_h(&e, 1, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    let small = tcp(CLIENT, 40000, VIP, 80, ACK, b"x");
    let (_, encapsulated) = run_h(&e, 2, &small);
    let before = e.stats();
    let pass = |what: &str, msg: &[u8], v6: bool| {
        let (v, out) = local(&e, 3, msg, v6);
        assert_eq!(v, Verdict::Pass, "{what}");
        assert_eq!(out, msg, "{what}: left unchanged");
    };
    // From another source address of the host.
    let mut other = encapsulated.clone();
    other[12..16].copy_from_slice(&OTHER);
    pass(
        "another source",
        &icmp4(ROUTER, OTHER, frag_needed(1400), &other)[20..],
        false,
    );
    // An unknown connection.
    let unknown = {
        let inner = tcp(CLIENT, 40001, VIP, 80, ACK, b"x");
        let mut p = encapsulated[..20].to_vec();
        p.extend_from_slice(&inner);
        p
    };
    pass(
        "no connection",
        &icmp4(ROUTER, DIRECTOR, frag_needed(1400), &unknown)[20..],
        false,
    );
    // Not an error, garbage, truncated, the wrong family.
    let mut echo = Vec::new();
    PacketBuilder::ipv4(ROUTER, DIRECTOR, 64)
        .icmpv4_echo_reply(1, 1)
        .write(&mut echo, &encapsulated)
        .unwrap();
    pass("echo reply", &echo[20..], false);
    pass("garbage", &[3, 4, 0, 0, 0, 0, 5, 120, 0x45, 1, 2], false);
    let err = icmp4(ROUTER, DIRECTOR, frag_needed(1400), &encapsulated);
    pass("truncated", &err[20..40], false);
    pass("an ICMPv4 message read as ICMPv6", &err[20..], true);
    assert_delta(&before, &e.stats(), &[]);
    // A client packet without DF only teaches the path MTU: a big DF packet is answered now.
    let mut nodf = tcp(CLIENT, 40000, VIP, 80, ACK, b"y");
    clear_df(&mut nodf);
    let (_, enc) = run_h(&e, 4, &nodf);
    pass(
        "no DF",
        &icmp4(ROUTER, DIRECTOR, frag_needed(1400), &enc)[20..],
        false,
    );
    let (v, out) = run_h(&e, 5, &tcp(CLIENT, 40000, VIP, 80, ACK, &[1; 1380]));
    assert_eq!(v, Verdict::Reply);
    assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1380);
    // Arbitrary bytes never panic.
    let mut seed = 0x9e37_79b9_u32;
    for len in 0..200 {
        let mut msg = vec![0u8; len];
        for b in &mut msg {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        if len > 0 {
            msg[0] = 3;
        }
        let _ = local(&e, 5, &msg, len % 2 == 0);
    }
}
