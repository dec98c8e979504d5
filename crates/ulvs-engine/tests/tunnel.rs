//! Tunnel-mode fixtures: client packets in, encapsulated packets out, byte for byte, in the
//! formats the kernel's tunnel devices decode (RFC 2003 IPIP, RFC 2784 GRE, GUE version 0).
//! Expected outer headers are built independently (etherparse, a test-local checksum).

mod common;

use common::*;
use etherparse::{IpDscp, IpEcn, IpNumber, Ipv4Header, UdpHeader};
use ulvs_engine::{
    Director, DropReason, ForwardMethod, Protocol, SchedulerKind, Timestamp, TunnelChecksum,
    TunnelConfig, TunnelType, Verdict,
};

const DIRECTOR: [u8; 4] = [198, 19, 0, 1];

fn tun_engine(t: TunnelConfig, proto: Protocol, vport: u16) -> ulvs_engine::Engine {
    let mut d = dest(RS1, vport, 1);
    d.forward = ForwardMethod::Tunnel;
    d.tunnel = t;
    let e = engine_with(vec![service(proto, VIP, vport, SchedulerKind::Rr, vec![d])]);
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR.into()),
        ..Director::default()
    });
    e
}

/// A test-local Internet checksum (RFC 1071), independent of the engine's.
fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An outer IPv4 header (director -> RS1) carrying `payload`, copying TOS, TTL, DF and ID of
/// the IPv4 packet `inner`.
fn outer_v4(proto: u8, inner: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(
        payload.len() as u16,
        inner[8],
        IpNumber(proto),
        DIRECTOR,
        RS1,
    )
    .unwrap();
    h.dscp = IpDscp::try_new(inner[1] >> 2).unwrap();
    h.ecn = IpEcn::try_new(inner[1] & 3).unwrap();
    h.dont_fragment = inner[6] & 0x40 != 0;
    h.identification = u16::from_be_bytes([inner[4], inner[5]]);
    h.header_checksum = h.calc_header_checksum();
    let mut out = Vec::new();
    h.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

fn run_big(e: &ulvs_engine::Engine, input: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 128 + input.len()];
    buf[128..].copy_from_slice(input);
    let mut pkt = ulvs_engine::PacketBuf::new(&mut buf, 128, input.len());
    let v = e.process(Timestamp(1000), &mut pkt);
    (v, pkt.data().to_vec())
}

fn check(e: &ulvs_engine::Engine, input: &[u8], want: &[u8]) {
    let (v, out) = run_big(e, input);
    assert!(
        v == Verdict::Forward && out == want,
        "verdict {v:?}\ninput:\n{}output:\n{}expected:\n{}",
        hex(input),
        hex(&out),
        hex(want)
    );
}

#[test]
fn ipip_wraps_the_client_packet_in_ipv4_protocol_4() {
    let e = tun_engine(TunnelConfig::default(), Protocol::Tcp, 80);
    let before = e.stats();
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    check(&e, &syn, &outer_v4(4, &syn, &syn));
    // An established packet of the same flow: same tunnel, inner packet untouched.
    let data = tcp(CLIENT, 40000, VIP, 80, ACK | PSH, b"hello");
    check(&e, &data, &outer_v4(4, &data, &data));
    assert_delta(
        &before,
        &e.stats(),
        &[
            ("TCP 198.18.1.1:80 conns", 1),
            ("TCP 198.18.1.1:80 in_pkts", 2),
            (
                "TCP 198.18.1.1:80 in_bytes",
                (syn.len() + data.len()) as i64,
            ),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 conns", 1),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 in_pkts", 2),
            (
                "TCP 198.18.1.1:80 -> 198.19.0.11:80 in_bytes",
                (syn.len() + data.len()) as i64,
            ),
            ("TCP 198.18.1.1:80 -> 198.19.0.11:80 active", 1),
            ("connections", 1),
        ],
    );
}

#[test]
fn ipip_pins_every_outer_byte() {
    // The same encapsulation written out by hand: version/IHL 0x45, TOS 0, total length
    // 20 + inner, the inner ID, DF as the inner (etherparse sets DF), TTL 64, protocol 4.
    let e = tun_engine(TunnelConfig::default(), Protocol::Udp, 53);
    let inner = udp(CLIENT, 5000, VIP, 53, b"q");
    let (v, out) = run_big(&e, &inner);
    assert_eq!(v, Verdict::Forward);
    let tl = (20 + inner.len()) as u16;
    let mut want = vec![0x45, 0x00];
    want.extend_from_slice(&tl.to_be_bytes());
    want.extend_from_slice(&inner[4..8]);
    want.extend_from_slice(&[64, 4, 0, 0]);
    want.extend_from_slice(&DIRECTOR);
    want.extend_from_slice(&RS1);
    let c = csum(&want);
    want[10..12].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&inner);
    assert_eq!(out, want, "output:\n{}", hex(&out));
}

#[test]
fn ecn_ce_is_ect0_outside_and_dscp_is_copied() {
    let e = tun_engine(TunnelConfig::default(), Protocol::Udp, 53);
    let mut inner = udp(CLIENT, 5000, VIP, 53, b"q");
    inner[1] = 0xb8 | 3; // EF, CE
    inner[10..12].copy_from_slice(&[0, 0]);
    let c = csum(&inner[..20]);
    inner[10..12].copy_from_slice(&c.to_be_bytes());
    let (v, out) = run_big(&e, &inner);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out[1], 0xb8 | 2);
    assert_eq!(csum(&out[..20]), 0);
    assert_eq!(&out[20..], &inner[..]);
}

fn gue(port: u16, checksum: TunnelChecksum) -> TunnelConfig {
    TunnelConfig {
        kind: TunnelType::Gue,
        port,
        checksum,
    }
}

/// The GUE encapsulation of `inner`: UDP from `sport` to `port`, GUE version 0 for IPv4.
fn gue_v4(inner: &[u8], sport: u16, port: u16, with_csum: bool) -> Vec<u8> {
    let mut payload = vec![0, 4, 0, 0];
    payload.extend_from_slice(inner);
    let ip = Ipv4Header::new((8 + payload.len()) as u16, 64, IpNumber::UDP, DIRECTOR, RS1).unwrap();
    let udp = if with_csum {
        UdpHeader::with_ipv4_checksum(sport, port, &ip, &payload).unwrap()
    } else {
        UdpHeader {
            source_port: sport,
            destination_port: port,
            length: (8 + payload.len()) as u16,
            checksum: 0,
        }
    };
    let mut body = udp.to_bytes().to_vec();
    body.extend_from_slice(&payload);
    outer_v4(17, inner, &body)
}

#[test]
fn gue_with_and_without_udp_checksum() {
    for (checksum, with) in [
        (TunnelChecksum::None, false),
        (TunnelChecksum::Csum, true),
        (TunnelChecksum::Remcsum, true),
    ] {
        let e = tun_engine(gue(6080, checksum), Protocol::Tcp, 80);
        let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
        let (v, out) = run_big(&e, &syn);
        assert_eq!(v, Verdict::Forward, "{checksum:?}");
        // The source port is a per-flow hash in 49152-65535, the same for every packet.
        let sport = u16::from_be_bytes([out[20], out[21]]);
        assert!(sport >= 0xc000, "{sport}");
        check(&e, &syn, &gue_v4(&syn, sport, 6080, with));
        let data = tcp(CLIENT, 40000, VIP, 80, ACK, b"x");
        check(&e, &data, &gue_v4(&data, sport, 6080, with));
    }
}

#[test]
fn gre_with_and_without_checksum() {
    for checksum in [TunnelChecksum::None, TunnelChecksum::Csum] {
        let e = tun_engine(
            TunnelConfig {
                kind: TunnelType::Gre,
                port: 0,
                checksum,
            },
            Protocol::Udp,
            53,
        );
        let inner = udp(CLIENT, 5000, VIP, 53, b"abc");
        let mut gre = if checksum == TunnelChecksum::Csum {
            vec![0x80, 0, 0x08, 0x00, 0, 0, 0, 0]
        } else {
            vec![0, 0, 0x08, 0x00]
        };
        gre.extend_from_slice(&inner);
        if checksum == TunnelChecksum::Csum {
            let c = csum(&gre);
            gre[4..6].copy_from_slice(&c.to_be_bytes());
        }
        check(&e, &inner, &outer_v4(47, &inner, &gre));
    }
}

#[test]
fn without_a_tunnel_source_it_is_a_counted_drop() {
    let e = tun_engine(TunnelConfig::default(), Protocol::Tcp, 80);
    e.set_director(Director::default());
    let before = e.stats();
    let (v, _) = run_big(&e, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    assert_eq!(v, Verdict::Drop(DropReason::NoTunnelSource));
    let after = e.stats();
    let drops = after
        .drops
        .iter()
        .find(|(r, _)| *r == DropReason::NoTunnelSource);
    assert_eq!(drops.unwrap().1, 1);
    assert_eq!(before.connections + 1, after.connections);
}

#[test]
fn too_little_headroom_is_a_counted_drop() {
    let e = tun_engine(gue(6080, TunnelChecksum::None), Protocol::Tcp, 80);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let (v, _) = run(&e, 1000, &syn); // 32 bytes of headroom, GUE needs 32: fits
    assert_eq!(v, Verdict::Forward);
    let mut buf = vec![0u8; 16 + syn.len()];
    buf[16..].copy_from_slice(&syn);
    let mut pkt = ulvs_engine::PacketBuf::new(&mut buf, 16, syn.len());
    assert_eq!(
        e.process(Timestamp(1001), &mut pkt),
        Verdict::Drop(DropReason::NoHeadroom)
    );
}

#[test]
fn tunnel_settings_are_validated() {
    let mut d = dest(RS1, 80, 1);
    d.forward = ForwardMethod::Tunnel;
    for bad in [
        gue(0, TunnelChecksum::None),
        TunnelConfig {
            kind: TunnelType::Ipip,
            port: 0,
            checksum: TunnelChecksum::Csum,
        },
        TunnelConfig {
            kind: TunnelType::Gre,
            port: 0,
            checksum: TunnelChecksum::Remcsum,
        },
    ] {
        d.tunnel = bad;
        let cfg = ulvs_engine::Config {
            services: vec![service(Protocol::Tcp, VIP, 80, SchedulerKind::Rr, vec![d])],
        };
        assert!(matches!(
            cfg.validate(),
            Err(ulvs_engine::ConfigError::BadTunnel(..))
        ));
    }
    assert_eq!(gue(6080, TunnelChecksum::Remcsum).info(), "gue:6080:r+c");
    assert_eq!(TunnelConfig::default().info(), "ipip");
}

// ---- path MTU ------------------------------------------------------------------------------

/// An ICMP error from `src` to `dst` quoting `quote`, built by etherparse (its checksums are
/// computed from scratch there); an IPv4 error goes out with DF clear and ID 0.
fn icmp4_error(src: [u8; 4], dst: [u8; 4], mtu: u16, quote: &[u8]) -> Vec<u8> {
    use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    let ty = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    });
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4(ty)
        .write(&mut out, quote)
        .unwrap();
    let (mut h, _) = Ipv4Header::from_slice(&out).unwrap();
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    out[..20].copy_from_slice(&h.to_bytes());
    out
}

fn icmp6_too_big(src: &str, dst: &str, mtu: u32, quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv6(v6(src), v6(dst), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu })
        .write(&mut out, quote)
        .unwrap();
    out
}

/// Checks the Internet checksums of an ICMP error with etherparse's own parser and sums.
fn assert_checksums_valid(out: &[u8]) {
    let p = etherparse::SlicedPacket::from_ip(out).expect("parses");
    match p.net.expect("ip") {
        etherparse::NetSlice::Ipv4(ip) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            let Some(etherparse::TransportSlice::Icmpv4(m)) = p.transport else {
                panic!("not ICMPv4");
            };
            assert_eq!(m.checksum(), m.icmp_type().calc_checksum(m.payload()));
        }
        etherparse::NetSlice::Ipv6(ip) => {
            let h = ip.header();
            let Some(etherparse::TransportSlice::Icmpv6(m)) = p.transport else {
                panic!("not ICMPv6");
            };
            let want = m
                .icmp_type()
                .calc_checksum(h.source(), h.destination(), m.payload())
                .unwrap();
            assert_eq!(m.checksum(), want);
        }
        _ => panic!("not IP"),
    }
}

/// A tunnel engine whose path to RS1 has MTU `mtu`, with an established flow CLIENT:40000 ->
/// VIP:80 (its SYN forwarded).
fn pmtu_engine(t: TunnelConfig, mtu: u32) -> ulvs_engine::Engine {
    let e = tun_engine(t, Protocol::Tcp, 80);
    e.set_path_mtu(RS1.into(), mtu);
    let (v, _) = run_big(&e, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    e
}

#[test]
fn oversize_df_packet_to_a_tunnel_gets_frag_needed_with_the_reduced_mtu() {
    for (t, overhead) in [
        (TunnelConfig::default(), 20),
        (gue(6080, TunnelChecksum::None), 32),
    ] {
        let e = pmtu_engine(t, 1400);
        let room = 1400 - overhead;
        // The largest packet that fits goes through the tunnel.
        let fits = tcp(CLIENT, 40000, VIP, 80, ACK, &vec![0x33; room - 40]);
        assert_eq!(fits[6] & 0x40, 0x40, "etherparse sets DF");
        let (v, out) = run_big(&e, &fits);
        assert_eq!(v, Verdict::Forward);
        assert_eq!(out.len(), 1400);
        // One byte more is answered: FRAG_NEEDED from the VIP to the client, next-hop MTU
        // the room inside the tunnel, quoting the first 576 - 28 bytes.
        let big = tcp(CLIENT, 40000, VIP, 80, ACK, &vec![0x33; room - 39]);
        let before = e.stats();
        let (v, out) = run_big(&e, &big);
        let want = icmp4_error(VIP, CLIENT, room as u16, &big[..548]);
        assert!(
            v == Verdict::Reply && out == want,
            "{t:?}: verdict {v:?}\noutput:\n{}expected:\n{}",
            hex(&out),
            hex(&want)
        );
        assert_checksums_valid(&out);
        // The client's packet reached the connection (counted in), nothing was dropped.
        let n = big.len() as i64;
        assert_delta(
            &before,
            &e.stats(),
            &[
                ("TCP 198.18.1.1:80 in_pkts", 1),
                ("TCP 198.18.1.1:80 in_bytes", n),
                ("TCP 198.18.1.1:80 -> 198.19.0.11:80 in_pkts", 1),
                ("TCP 198.18.1.1:80 -> 198.19.0.11:80 in_bytes", n),
            ],
        );
    }
}

#[test]
fn the_frag_needed_bytes_are_pinned() {
    // IPIP, path MTU 1400: a 1401-byte DF packet gets type 3 code 4 with MTU 1380.
    let e = pmtu_engine(TunnelConfig::default(), 1400);
    let big = tcp(CLIENT, 40000, VIP, 80, ACK, &[0x44; 1361]);
    let (v, out) = run_big(&e, &big);
    assert_eq!(v, Verdict::Reply);
    let mut want = vec![0x45, 0, 0x02, 0x40, 0, 0, 0, 0, 64, 1, 0, 0];
    want.extend_from_slice(&VIP);
    want.extend_from_slice(&CLIENT);
    let c = csum(&want);
    want[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x64];
    icmp.extend_from_slice(&big[..548]);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&icmp);
    assert_eq!(out, want, "output:\n{}", hex(&out));
}

#[test]
fn oversize_ipv4_without_df_is_encapsulated_for_the_kernel_to_fragment() {
    let e = pmtu_engine(TunnelConfig::default(), 1400);
    let mut big = tcp(CLIENT, 40000, VIP, 80, ACK, &[0x55; 1400]);
    big[6] &= !0x40;
    big[10..12].copy_from_slice(&[0, 0]);
    let c = csum(&big[..20]);
    big[10..12].copy_from_slice(&c.to_be_bytes());
    let before = e.stats();
    check(&e, &big, &outer_v4(4, &big, &big));
    let n = big.len() as i64;
    // The flow's first ACK also establishes it (inactive -> active).
    assert_establishing_ack(&before, &e.stats(), n);
}

fn tun6_engine(mtu: u32) -> ulvs_engine::Engine {
    let mut d = dest_at(sa6(RS6_1, 80), ForwardMethod::Tunnel, 1);
    d.tunnel = TunnelConfig::default();
    let e = engine_with(vec![service_at(
        Protocol::Tcp,
        sa6(VIP6, 80),
        vec![d],
        vec![],
    )]);
    e.set_director(Director {
        tunnel_source_v6: Some("fd00:1b5:9::1".parse().unwrap()),
        ..Director::default()
    });
    e.set_path_mtu(RS6_1.parse().unwrap(), mtu);
    let (v, _) = run_big(&e, &tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    e
}

#[test]
fn oversize_ipv6_to_a_tunnel_gets_packet_too_big_of_at_least_1280() {
    // Path MTU 1400, IPv6-in-IPv6: 1360 left; a 1361-byte packet is answered, quoting as
    // much as fits in 1280 bytes.
    let e = tun6_engine(1400);
    let fits = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x66; 1360 - 60]);
    assert_eq!(run_big(&e, &fits).0, Verdict::Forward);
    let big = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x66; 1361 - 60]);
    let before = e.stats();
    let (v, out) = run_big(&e, &big);
    let want = icmp6_too_big(VIP6, CLIENT6, 1360, &big[..1280 - 48]);
    assert!(
        v == Verdict::Reply && out == want,
        "verdict {v:?}\noutput:\n{}expected:\n{}",
        hex(&out),
        hex(&want)
    );
    assert_checksums_valid(&out);
    let n = big.len() as i64;
    assert_delta(
        &before,
        &e.stats(),
        &[
            ("TCP [fd00:1b5:1::1]:80 in_pkts", 1),
            ("TCP [fd00:1b5:1::1]:80 in_bytes", n),
            ("TCP [fd00:1b5:1::1]:80 -> [fd00:1b5:2::11]:80 in_pkts", 1),
            ("TCP [fd00:1b5:1::1]:80 -> [fd00:1b5:2::11]:80 in_bytes", n),
        ],
    );

    // Path MTU 1300: 1260 left, below the IPv6 minimum. A 1300-byte packet is told 1280; a
    // 1280-byte one, which no announcement can shrink, is a counted drop.
    let e = tun6_engine(1300);
    let big = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x77; 1300 - 60]);
    let (v, out) = run_big(&e, &big);
    assert_eq!(v, Verdict::Reply);
    assert_eq!(out, icmp6_too_big(VIP6, CLIENT6, 1280, &big[..1280 - 48]));
    let min = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x77; 1280 - 60]);
    let before = e.stats();
    assert_eq!(run_big(&e, &min).0, Verdict::Drop(DropReason::TooBig));
    assert_delta(
        &before,
        &e.stats(),
        &[
            ("TCP [fd00:1b5:1::1]:80 in_pkts", 1),
            ("TCP [fd00:1b5:1::1]:80 in_bytes", 1280),
            ("TCP [fd00:1b5:1::1]:80 -> [fd00:1b5:2::11]:80 in_pkts", 1),
            (
                "TCP [fd00:1b5:1::1]:80 -> [fd00:1b5:2::11]:80 in_bytes",
                1280,
            ),
            ("drop too_big", 1),
        ],
    );
}

/// An IPv6 service tunnelled to the IPv4 real server RS1 (IPv6-in-IPv4) over a path of MTU
/// `mtu`, with an established flow.
fn tun6in4_engine(mtu: u32) -> ulvs_engine::Engine {
    let mut d = dest_at(sa(RS1, 80), ForwardMethod::Tunnel, 1);
    d.tunnel = TunnelConfig::default();
    let e = engine_with(vec![service_at(
        Protocol::Tcp,
        sa6(VIP6, 80),
        vec![d],
        vec![],
    )]);
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR.into()),
        ..Director::default()
    });
    e.set_path_mtu(RS1.into(), mtu);
    let (v, _) = run_big(&e, &tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    e
}

#[test]
fn minimum_size_ipv6_over_a_small_ipv4_path_goes_without_df_for_the_kernel_to_fragment() {
    // Path MTU 1290, IPv6-in-IPv4: 1270 left, below the IPv6 minimum. A 1300-byte packet is
    // told 1280; a 1280-byte one is encapsulated anyway, DF clear, 1300 bytes for the
    // kernel to fragment (RFC 4213 3.2).
    let e = tun6in4_engine(1290);
    let big = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x77; 1300 - 60]);
    let (v, out) = run_big(&e, &big);
    assert_eq!(v, Verdict::Reply);
    assert_eq!(out, icmp6_too_big(VIP6, CLIENT6, 1280, &big[..1280 - 48]));
    let min = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[0x77; 1280 - 60]);
    let before = e.stats();
    let (v, out) = run_big(&e, &min);
    assert_eq!(v, Verdict::Forward, "output:\n{}", hex(&out));
    let (h, payload) = Ipv4Header::from_slice(&out).unwrap();
    assert_eq!(h.protocol, IpNumber(41));
    assert!(!h.dont_fragment, "DF must be clear: {h:?}");
    assert_eq!((h.source, h.destination), (DIRECTOR, RS1));
    assert_eq!(usize::from(h.total_len), 1300);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(payload, &min[..]);
    let n = min.len() as i64;
    assert_delta(
        &before,
        &e.stats(),
        &[
            ("TCP [fd00:1b5:1::1]:80 in_pkts", 1),
            ("TCP [fd00:1b5:1::1]:80 in_bytes", n),
            ("TCP [fd00:1b5:1::1]:80 -> 198.19.0.11:80 in_pkts", 1),
            ("TCP [fd00:1b5:1::1]:80 -> 198.19.0.11:80 in_bytes", n),
        ],
    );
}
