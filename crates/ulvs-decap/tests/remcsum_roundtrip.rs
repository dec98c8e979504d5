//! GUE remote checksum offload end to end: the ulvs engine encapsulates a client packet whose
//! TCP/UDP checksum is partial (checksum offload from the TUN) with `--tun-remcsum`, leaving the
//! inner checksum to the receiver; `ulvs-decap` completes it on receipt, and what it delivers is
//! exactly the client's packet with its complete checksum, over IPv4 and IPv6 outer headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::PacketBuilder;
use ulvs_decap::decap;
use ulvs_engine::{
    Config, DestConfig, Director, Engine, EngineOptions, ForwardMethod, L4Csum, Offload, PacketBuf,
    Protocol, SchedulerKind, ServiceConfig, ServiceKey, Timestamp, TunnelChecksum, TunnelConfig,
    TunnelType, Verdict,
};

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 1, 1];
const CLIENT6: [u8; 16] = [0xfd, 0, 0x01, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const VIP6: [u8; 16] = [0xfd, 0, 0x01, 0xb5, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const RS4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const RS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 11);
const DIR4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const DIR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 1);

fn engine(proto: Protocol, vip: IpAddr, rs: IpAddr) -> Engine {
    let mut s = ServiceConfig::new(ServiceKey {
        protocol: proto,
        addr: SocketAddr::new(vip, 80),
    });
    s.scheduler = SchedulerKind::Rr;
    s.dests = vec![DestConfig {
        addr: SocketAddr::new(rs, 80),
        forward: ForwardMethod::Tunnel,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: TunnelConfig {
            kind: TunnelType::Gue,
            port: 6080,
            checksum: TunnelChecksum::Remcsum,
        },
    }];
    let e = Engine::new(EngineOptions {
        max_connections: 64,
        shards: 4,
        hash_seed: 1,
    });
    e.apply_config(&Config { services: vec![s] })
        .expect("valid config");
    e.set_director(Director {
        tunnel_source_v4: Some(DIR4),
        tunnel_source_v6: Some(DIR6),
        ..Director::default()
    });
    e
}

/// The client's packet with complete checksums (etherparse computes them from scratch).
fn client_packet(proto: Protocol, v6: bool, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let b = if v6 {
        PacketBuilder::ipv6(CLIENT6, VIP6, 64)
    } else {
        PacketBuilder::ipv4(CLIENT, VIP, 64)
    };
    let mut out = Vec::new();
    match proto {
        Protocol::Tcp => b
            .tcp(40000, 80, 1, 65535)
            .syn()
            .write(&mut out, &payload)
            .unwrap(),
        Protocol::Udp => b.udp(40000, 80).write(&mut out, &payload).unwrap(),
    }
    out
}

/// `p` with its L4 checksum field holding the folded pseudo-header sum only.
fn partial(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    let (l3, proto, addrs) = if p[0] >> 4 == 6 {
        (40, p[6], p[8..40].to_vec())
    } else {
        (20, p[9], p[12..20].to_vec())
    };
    let l4_len = (p.len() - l3) as u32;
    let mut s: u32 = u32::from(proto) + (l4_len >> 16) + (l4_len & 0xffff);
    for c in addrs.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let at = l3 + if proto == 6 { 16 } else { 6 };
    p[at..at + 2].copy_from_slice(&(s as u16).to_be_bytes());
    p
}

/// The engine's outer packet for `inner` handed over with a partial checksum.
fn encapsulate(e: &Engine, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + inner.len()];
    buf[128..].copy_from_slice(inner);
    let offload = Offload {
        csum: L4Csum::Partial,
        gso_size: 0,
    };
    let mut pkt = PacketBuf::with_offload(&mut buf, 128, inner.len(), offload);
    assert_eq!(e.process(Timestamp(1000), &mut pkt), Verdict::Forward);
    assert_eq!(pkt.offload().csum, L4Csum::Complete);
    pkt.data().to_vec()
}

/// The UDP payload a socket on the real server returns for `outer`, after the kernel checked
/// the outer UDP checksum (which the engine computed over the partial inner packet).
fn udp_payload(outer: &[u8]) -> Vec<u8> {
    let sliced = etherparse::SlicedPacket::from_ip(outer).expect("outer parses");
    let Some(etherparse::TransportSlice::Udp(u)) = sliced.transport else {
        panic!("outer is not UDP");
    };
    let ok = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => u
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), u.payload()),
        Some(etherparse::NetSlice::Ipv6(ip)) => u
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), u.payload()),
        _ => panic!("no outer IP"),
    }
    .expect("checksum");
    assert_eq!(ok, u.checksum(), "outer UDP checksum");
    u.payload().to_vec()
}

#[test]
fn decap_completes_the_inner_checksum_the_engine_left_partial() {
    let cases = [
        (Protocol::Tcp, false, IpAddr::V4(RS4), 0),
        (Protocol::Tcp, false, IpAddr::V4(RS4), 1000),
        (Protocol::Udp, false, IpAddr::V4(RS4), 333),
        (Protocol::Tcp, false, IpAddr::V6(RS6), 77),
        (Protocol::Udp, false, IpAddr::V6(RS6), 0),
        (Protocol::Tcp, true, IpAddr::V6(RS6), 500),
        (Protocol::Udp, true, IpAddr::V4(RS4), 1),
    ];
    for (proto, v6, rs, len) in cases {
        let vip = if v6 {
            IpAddr::from(VIP6)
        } else {
            IpAddr::from(VIP)
        };
        let e = engine(proto, vip, rs);
        let want = client_packet(proto, v6, len);
        let outer = encapsulate(&e, &partial(&want));
        let mut gue = udp_payload(&outer);
        // The option is there: Hlen 2, flag P, REMCSUM.
        assert_eq!(gue[0], 2, "{proto:?} v6={v6} {rs}");
        assert_eq!(&gue[2..8], &[0, 1, 0x80, 0, 0, 0]);
        let got = decap::decap_gue_mut(&mut gue).expect("decapsulates");
        assert_eq!(got, &want[..], "{proto:?} v6={v6} {rs} len {len}");
    }
}

#[test]
fn corrupted_options_are_counted_reasons_never_a_panic() {
    let e = engine(Protocol::Tcp, IpAddr::from(VIP), IpAddr::V4(RS4));
    let outer = encapsulate(&e, &partial(&client_packet(Protocol::Tcp, false, 40)));
    let gue = udp_payload(&outer);
    for at in 0..16 {
        for v in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut g = gue.clone();
            g[at] = v;
            let _ = decap::decap_gue_mut(&mut g);
        }
    }
    for cut in 0..gue.len() {
        let mut g = gue[..cut].to_vec();
        assert!(decap::decap_gue_mut(&mut g).is_err(), "cut at {cut}");
    }
}
