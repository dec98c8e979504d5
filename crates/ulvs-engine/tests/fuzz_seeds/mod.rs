//! Seed packets for the every-mode proptests and the fuzz regression seeds: real packets (built
//! with etherparse, checksums from scratch) to the addresses of
//! `ulvs_engine::bench_support::testbed`, so mutations start from frames that reach every
//! forwarding method, the ICMP translation, fragments and IPv6 extension headers.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
use ulvs_engine::bench_support::testbed::{
    CLIENT, CLIENT6, LADDR, LADDR6, RS, RS_MAC, RS6, TAP_MAC, VIP, VIP2, VIP6,
};

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

fn v4(a: Ipv4Addr) -> [u8; 4] {
    a.octets()
}

fn v6(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

/// A TCP segment between two IPv4 addresses (DF set, as stacks send TCP).
pub fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(v4(src), v4(dst), 64).tcp(sport, dport, 1000, 65535);
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
    let mut out = Vec::new();
    b.write(&mut out, data).expect("tcp4");
    out[6] |= 0x40;
    fix_ipv4_checksum(&mut out);
    out
}

/// A TCP segment between two IPv6 addresses.
pub fn tcp6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv6(v6(src), v6(dst), 64).tcp(sport, dport, 1000, 65535);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(2000);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    let mut out = Vec::new();
    b.write(&mut out, data).expect("tcp6");
    out
}

/// A UDP datagram between two IPv4 addresses.
pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(v4(src), v4(dst), 64)
        .udp(sport, dport)
        .write(&mut out, data)
        .expect("udp4");
    out
}

/// A UDP datagram between two IPv6 addresses.
pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(v6(src), v6(dst), 64)
        .udp(sport, dport)
        .write(&mut out, data)
        .expect("udp6");
    out
}

fn fix_ipv4_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let mut sum: u32 = 0;
    for c in p[..ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// An ICMPv4 error from `from` to `to` quoting `quoted`.
pub fn icmp4_error(from: Ipv4Addr, to: Ipv4Addr, ty: Icmpv4Type, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(v4(from), v4(to), 64)
        .icmpv4(ty)
        .write(&mut out, quoted)
        .expect("icmp4");
    out
}

/// An ICMPv6 error from `from` to `to` quoting `quoted`.
pub fn icmp6_error(from: Ipv6Addr, to: Ipv6Addr, ty: Icmpv6Type, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(v6(from), v6(to), 64)
        .icmpv6(ty)
        .write(&mut out, quoted)
        .expect("icmp6");
    out
}

/// An IPv4 echo request to `dst`.
pub fn ping4(dst: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(v4(CLIENT), v4(dst), 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut out, b"ping")
        .expect("ping4");
    out
}

/// An IPv6 echo request to `dst`.
pub fn ping6(dst: Ipv6Addr) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(v6(CLIENT6), v6(dst), 64)
        .icmpv6(Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 }))
        .write(&mut out, b"ping")
        .expect("ping6");
    out
}

/// `p` (IPv6) with extension headers inserted after the fixed header: each `(kind, bytes)`
/// gets the next-header chain and the payload length fixed.
pub fn with_ext6(p: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = p[..40].to_vec();
    let upper = p[6];
    out[6] = exts.first().map_or(upper, |e| e.0);
    for (i, (_, body)) in exts.iter().enumerate() {
        let mut b = body.clone();
        b[0] = exts.get(i + 1).map_or(upper, |e| e.0);
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(&p[40..]);
    let plen = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&plen.to_be_bytes());
    out
}

/// An 8-byte hop-by-hop (or destination options) header of PadN.
pub fn padn_ext() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// A fragment header with `offset` (in 8-byte units) and the M flag.
pub fn frag_ext(offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    b
}

/// An Ethernet frame to the TAP's MAC from `src`.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The MAC of the test client.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// An IP packet in a frame from the client to the TAP.
pub fn to_tap(ip: &[u8]) -> Vec<u8> {
    let et = if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    eth(TAP_MAC, CLIENT_MAC, et, ip)
}

/// An ARP request from the client for `target`.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&CLIENT_MAC);
    a.extend_from_slice(&v4(CLIENT));
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&v4(target));
    eth([0xff; 6], CLIENT_MAC, 0x0806, &a)
}

/// A neighbour solicitation from the client for `target` (with its link-layer option).
pub fn neighbour_solicit(target: Ipv6Addr) -> Vec<u8> {
    let o = target.octets();
    let group = Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    let mut msg = vec![0u8; 4];
    msg.extend_from_slice(&o);
    msg.extend_from_slice(&[1, 1]);
    msg.extend_from_slice(&CLIENT_MAC);
    let mut ip = Vec::new();
    PacketBuilder::ipv6(v6(CLIENT6), v6(group), 255)
        .icmpv6(Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut ip, &msg[4..])
        .expect("ns");
    eth(
        [0x33, 0x33, 0xff, o[13], o[14], o[15]],
        CLIENT_MAC,
        0x86dd,
        &ip,
    )
}

/// IP packets (as from the TUN) that reach every mode of the test bed: connection starts on
/// every service (consecutive client ports visit every real server of the round-robin
/// services), data and replies, echo requests, ICMP errors quoting tracked and truncated
/// packets, fragments, extension headers and oversized DF packets for the tunnel MTU.
pub fn l3() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for port in 40000..40008 {
        v.push(tcp4(CLIENT, port, VIP, 80, SYN, &[]));
    }
    for port in 40000..40006 {
        v.push(tcp6(CLIENT6, port, VIP6, 80, SYN, &[]));
    }
    let big = vec![0x5a; 1380];
    v.extend([
        tcp4(CLIENT, 40000, VIP, 80, ACK, b"GET / HTTP/1.0\r\n\r\n"),
        tcp4(CLIENT, 40003, VIP, 80, ACK, &big),
        tcp4(CLIENT, 40001, VIP, 80, FIN | ACK, &[]),
        tcp4(RS[0], 8080, CLIENT, 40000, SYN | ACK, &[]),
        tcp4(RS[1], 8080, LADDR, 1025, SYN | ACK, &[]),
        tcp4(CLIENT, 41000, VIP, 8443, SYN, &[]),
        tcp4(CLIENT, 41001, VIP2, 443, SYN, &[]),
        tcp4(RS[5], 8443, CLIENT, 41000, ACK, b"x"),
        udp4(CLIENT, 5353, VIP, 53, b"query"),
        udp4(RS[0], 53, CLIENT, 5353, b"answer"),
        udp4(CLIENT, 1230, VIP2, 123, b"ntp"),
        tcp6(CLIENT6, 40004, VIP6, 80, ACK, &big),
        tcp6(RS6[0], 8080, CLIENT6, 40000, SYN | ACK, &[]),
        tcp6(RS6[1], 8080, LADDR6, 1025, ACK, b"y"),
        udp6(CLIENT6, 5353, VIP6, 53, b"q6"),
        ping4(VIP),
        ping4(LADDR),
        ping6(VIP6),
        ping6(LADDR6),
        icmp4_error(
            RS[0],
            CLIENT,
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
            &tcp4(CLIENT, 40000, RS[0], 8080, SYN, &[])[..28],
        ),
        icmp4_error(
            Ipv4Addr::new(198, 18, 5, 5),
            CLIENT,
            Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1200 },
            ),
            &tcp4(VIP, 80, CLIENT, 40000, ACK, &[]),
        ),
        icmp4_error(
            CLIENT,
            VIP,
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
            &tcp4(VIP, 80, CLIENT, 40000, ACK, b"zz")[..21],
        ),
        icmp6_error(
            RS6[0],
            CLIENT6,
            Icmpv6Type::PacketTooBig { mtu: 1280 },
            &tcp6(CLIENT6, 40000, RS6[0], 8080, ACK, &big)[..60],
        ),
        icmp6_error(
            CLIENT6,
            VIP6,
            Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
            &with_ext6(
                &udp6(VIP6, 53, CLIENT6, 5353, b"q6"),
                &[(0, padn_ext()), (44, frag_ext(0, true, 9))],
            )[..52],
        ),
        with_ext6(
            &tcp6(CLIENT6, 40005, VIP6, 80, SYN, &[]),
            &[(0, padn_ext()), (60, padn_ext())],
        ),
        with_ext6(
            &udp6(CLIENT6, 5354, VIP6, 53, &big[..100]),
            &[(44, frag_ext(0, true, 77))],
        ),
        with_ext6(
            &udp6(CLIENT6, 5354, VIP6, 53, &big[..100]),
            &[(44, frag_ext(8, false, 77))],
        ),
    ]);
    // An IPv4 first fragment and a later one.
    let mut f = udp4(CLIENT, 5355, VIP, 53, &big[..200]);
    f[6] = 0x20;
    fix_ipv4_checksum(&mut f);
    v.push(f.clone());
    f[6] = 0x00;
    f[7] = 0x19;
    fix_ipv4_checksum(&mut f);
    v.push(f);
    v
}

/// Ethernet frames (as from the TAP): ARP and NDP for the virtual addresses, the direct-routing
/// real servers' own ARP and NDP, and the [`l3`] packets as frames to the TAP's MAC.
pub fn l2() -> Vec<Vec<u8>> {
    let mut v = vec![
        arp_request(VIP),
        arp_request(VIP2),
        neighbour_solicit(VIP6),
        ulvs_engine::bench_support::testbed::arp_reply(RS_MAC, RS[2]),
        ulvs_engine::bench_support::testbed::neighbour_advert(RS_MAC, RS6[2]),
    ];
    v.extend(l3().iter().map(|p| to_tap(p)));
    v
}
