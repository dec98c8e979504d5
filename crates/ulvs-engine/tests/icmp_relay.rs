//! ICMP relay fixtures for direct-routing and tunnel connections: an error that arrives at the
//! VIP (a router on the real server's direct path to the client answers a reply the real server
//! sent from the VIP) goes to the real server that owns the connection unchanged, as a frame to
//! its MAC (direct routing) or encapsulated (tunnel), IPv4 and IPv6.

mod common;

use common::*;
use etherparse::{Icmpv4Type, Icmpv6Type, IpNumber, Ipv4Header, PacketBuilder, icmpv4};
use ulvs_engine::{
    Director, DropReason, Engine, ForwardMethod, PacketBuf, Protocol, SchedulerKind, Timestamp,
    Verdict,
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

fn icmp4(src: [u8; 4], dst: [u8; 4], ty: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4(ty)
        .write(&mut out, quote)
        .unwrap();
    out
}

fn icmp6(src: &str, dst: &str, ty: Icmpv6Type, quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(v6(src), v6(dst), 64)
        .icmpv6(ty)
        .write(&mut out, quote)
        .unwrap();
    out
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
