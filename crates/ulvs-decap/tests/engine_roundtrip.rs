//! Both ends agree byte for byte: the ulvs engine encapsulates a client packet in every tunnel
//! type and checksum option (as in its own fixtures), and `ulvs-decap`'s parser recovers exactly
//! the client's packet from what a raw or UDP socket on the real server would return.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::PacketBuilder;
use ulvs_decap::decap::{self, DecapError, DecapOptions};
use ulvs_engine::{
    Config, DestConfig, Director, Engine, EngineOptions, ForwardMethod, PacketBuf, Protocol,
    SchedulerKind, ServiceConfig, ServiceKey, Timestamp, TunnelChecksum, TunnelConfig, TunnelType,
    Verdict,
};

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 1, 1];
const RS4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const RS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 11);
const DIR4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const DIR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 1);

fn engine(proto: Protocol, rs: IpAddr, t: TunnelConfig) -> Engine {
    let mut s = ServiceConfig::new(ServiceKey {
        protocol: proto,
        addr: SocketAddr::new(IpAddr::from(VIP), 80),
    });
    s.scheduler = SchedulerKind::Rr;
    s.dests = vec![DestConfig {
        addr: SocketAddr::new(rs, 80),
        forward: ForwardMethod::Tunnel,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: t,
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

fn client_packet(proto: Protocol, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
    let b = PacketBuilder::ipv4(CLIENT, VIP, 64);
    let mut out = Vec::new();
    match proto {
        Protocol::Tcp => b
            .tcp(40000, 80, 1, 65535)
            .syn()
            .write(&mut out, &payload)
            .unwrap(),
        _ => b.udp(40000, 80).write(&mut out, &payload).unwrap(),
    }
    out
}

/// Runs the engine and returns the outer packet it would send.
fn encapsulate(e: &Engine, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + inner.len()];
    buf[128..].copy_from_slice(inner);
    let mut pkt = PacketBuf::new(&mut buf, 128, inner.len());
    let v = e.process(Timestamp(1000), &mut pkt);
    assert_eq!(v, Verdict::Forward);
    pkt.data().to_vec()
}

/// What the real server's socket returns for `outer`, and how `ulvs-decap` handles it.
fn receive(outer: &[u8], t: &TunnelConfig) -> Result<Vec<u8>, DecapError> {
    let opts = DecapOptions::default();
    let v6 = outer[0] >> 4 == 6;
    // The outer payload and protocol.
    let (proto, payload) = if v6 {
        (outer[6], &outer[40..])
    } else {
        decap::strip_outer_ipv4(outer)?
    };
    let got = if t.kind == TunnelType::Gue {
        assert_eq!(proto, 17);
        // A UDP socket bound to the tunnel port gets the UDP payload.
        assert_eq!(u16::from_be_bytes([payload[2], payload[3]]), t.port);
        decap::decap_gue(&payload[8..])?
    } else if v6 {
        // A raw IPv6 socket gets the payload only.
        decap::decap_ip(proto, payload, opts)?
    } else {
        // A raw IPv4 socket gets the header too.
        let (p, body) = decap::strip_outer_ipv4(outer)?;
        decap::decap_ip(p, body, opts)?
    };
    Ok(got.to_vec())
}

fn configs() -> Vec<TunnelConfig> {
    let mut v = vec![TunnelConfig::default()];
    for checksum in [
        TunnelChecksum::None,
        TunnelChecksum::Csum,
        TunnelChecksum::Remcsum,
    ] {
        v.push(TunnelConfig {
            kind: TunnelType::Gue,
            port: 6080,
            checksum,
        });
    }
    for checksum in [TunnelChecksum::None, TunnelChecksum::Csum] {
        v.push(TunnelConfig {
            kind: TunnelType::Gre,
            port: 0,
            checksum,
        });
    }
    v
}

#[test]
fn every_tunnel_type_round_trips_over_ipv4_and_ipv6_outer() {
    let mut cases = 0;
    for rs in [IpAddr::V4(RS4), IpAddr::V6(RS6)] {
        for t in configs() {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                for len in [0, 1, 700, 1400] {
                    let e = engine(proto, rs, t);
                    let inner = client_packet(proto, len);
                    let outer = encapsulate(&e, &inner);
                    assert_ne!(outer, inner);
                    let got = receive(&outer, &t)
                        .unwrap_or_else(|r| panic!("{t:?} to {rs}: dropped: {r}"));
                    assert_eq!(got, inner, "{t:?} to {rs}, {proto:?}, {len} bytes");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 6 * 2 * 4);
}

#[test]
fn a_corrupted_gre_checksum_is_refused() {
    let t = TunnelConfig {
        kind: TunnelType::Gre,
        port: 0,
        checksum: TunnelChecksum::Csum,
    };
    let e = engine(Protocol::Udp, IpAddr::V4(RS4), t);
    let mut outer = encapsulate(&e, &client_packet(Protocol::Udp, 100));
    let last = outer.len() - 1;
    outer[last] ^= 0x55;
    assert_eq!(receive(&outer, &t), Err(DecapError::GreChecksum));
}

#[test]
fn truncated_engine_output_is_a_counted_reason_never_a_panic() {
    for t in configs() {
        let e = engine(Protocol::Tcp, IpAddr::V4(RS4), t);
        let outer = encapsulate(&e, &client_packet(Protocol::Tcp, 64));
        let (proto, payload) = decap::strip_outer_ipv4(&outer).unwrap();
        for n in 0..payload.len() {
            let cut = &payload[..n];
            let r = if t.kind == TunnelType::Gue {
                decap::decap_gue(cut.get(8..).unwrap_or(&[]))
            } else {
                decap::decap_ip(proto, cut, DecapOptions::default())
            };
            assert!(r.is_err(), "{t:?} cut to {n} bytes was accepted");
        }
    }
}
