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
