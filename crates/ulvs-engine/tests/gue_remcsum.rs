//! GUE remote checksum offload (`--tun-remcsum`) fixtures: a client packet with a partial
//! checksum (checksum offload from the TUN) goes out with the REMCSUM option (flag P, private
//! flag REMCSUM, `start` and `offset`) and its inner checksum field still holding the
//! pseudo-header sum; a packet with a complete checksum goes out without the option, as in
//! IPVS. Every outer byte is pinned.

mod common;

use common::*;
use ulvs_engine::{
    Director, Engine, ForwardMethod, L4Csum, Offload, PacketBuf, Protocol, SchedulerKind,
    Timestamp, TunnelChecksum, TunnelConfig, TunnelType, Verdict,
};

const DIRECTOR: [u8; 4] = [198, 19, 0, 1];

fn engine(proto: Protocol) -> Engine {
    let mut d = dest(RS1, 80, 1);
    d.forward = ForwardMethod::Tunnel;
    d.tunnel = TunnelConfig {
        kind: TunnelType::Gue,
        port: 6080,
        checksum: TunnelChecksum::Remcsum,
    };
    let e = engine_with(vec![service(proto, VIP, 80, SchedulerKind::Rr, vec![d])]);
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR.into()),
        ..Director::default()
    });
    e
}

/// One's-complement sum of `data`, folded (not complemented).
fn sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// `p` (IPv4, TCP or UDP) with its L4 checksum field replaced by the folded pseudo-header sum,
/// as a sender with checksum offload hands it to the TUN.
fn partial(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    let l4_len = p.len() - 20;
    let mut ph = p[12..20].to_vec();
    ph.extend_from_slice(&[0, p[9]]);
    ph.extend_from_slice(&(l4_len as u16).to_be_bytes());
    let at = 20 + if p[9] == 6 { 16 } else { 6 };
    p[at..at + 2].copy_from_slice(&sum(&ph).to_be_bytes());
    p
}

fn run(e: &Engine, input: &[u8], csum: L4Csum) -> (Verdict, Vec<u8>, Offload) {
    let mut buf = vec![0u8; 128 + input.len()];
    buf[128..].copy_from_slice(input);
    let offload = Offload { csum, gso_size: 0 };
    let mut pkt = PacketBuf::with_offload(&mut buf, 128, input.len(), offload);
    let v = e.process(Timestamp(1), &mut pkt);
    (v, pkt.data().to_vec(), pkt.offload())
}

/// The outer IPv4 + UDP + GUE headers in front of `inner`, with `gue` as the GUE header and
/// options, the UDP checksum computed from scratch.
fn outer(inner: &[u8], sport: u16, gue: &[u8]) -> Vec<u8> {
    let udp_len = 8 + gue.len() + inner.len();
    let total = 20 + udp_len;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&inner[4..6]);
    p.extend_from_slice(&[inner[6] & 0x40, 0, inner[8], 17, 0, 0]);
    p.extend_from_slice(&DIRECTOR);
    p.extend_from_slice(&RS1);
    let c = !sum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&6080u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(gue);
    p.extend_from_slice(inner);
    let mut ph = p[12..20].to_vec();
    ph.extend_from_slice(&[0, 17]);
    ph.extend_from_slice(&(udp_len as u16).to_be_bytes());
    ph.extend_from_slice(&p[20..]);
    let c = match !sum(&ph) {
        0 => 0xffff,
        c => c,
    };
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn a_partial_tcp_checksum_goes_out_with_the_remcsum_option() {
    let e = engine(Protocol::Tcp);
    let syn = partial(&tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    let (v, out, off) = run(&e, &syn, L4Csum::Partial);
    assert_eq!(v, Verdict::Forward);
    let sport = u16::from_be_bytes([out[20], out[21]]);
    assert!(sport >= 0xc000, "{sport}");
    // Hlen 2, protocol 4, flag P; REMCSUM; start 20 (the TCP header), offset 36 (its checksum).
    let gue = [2, 4, 0, 1, 0x80, 0, 0, 0, 0, 20, 0, 36];
    let want = outer(&syn, sport, &gue);
    assert!(
        out == want,
        "output:\n{}expected:\n{}",
        hex(&out),
        hex(&want)
    );
    // Nothing left for the sender to finish: no NEEDS_CSUM on the way out.
    assert_eq!(off.csum, L4Csum::Complete);

    // Data on the same connection, still partial.
    let data = partial(&tcp(CLIENT, 40000, VIP, 80, ACK, b"hello, remcsum"));
    let (v, out, _) = run(&e, &data, L4Csum::Partial);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, outer(&data, sport, &gue), "{}", hex(&out));
}

#[test]
fn a_partial_udp_checksum_goes_out_with_the_remcsum_option() {
    let e = engine(Protocol::Udp);
    let q = partial(&udp(CLIENT, 5353, VIP, 80, b"query"));
    let (v, out, off) = run(&e, &q, L4Csum::Partial);
    assert_eq!(v, Verdict::Forward);
    let sport = u16::from_be_bytes([out[20], out[21]]);
    let gue = [2, 4, 0, 1, 0x80, 0, 0, 0, 0, 20, 0, 26];
    assert_eq!(out, outer(&q, sport, &gue), "{}", hex(&out));
    assert_eq!(off.csum, L4Csum::Complete);
}

#[test]
fn a_complete_checksum_goes_out_without_the_option() {
    let e = engine(Protocol::Tcp);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let (v, out, _) = run(&e, &syn, L4Csum::Complete);
    assert_eq!(v, Verdict::Forward);
    let sport = u16::from_be_bytes([out[20], out[21]]);
    assert_eq!(out, outer(&syn, sport, &[0, 4, 0, 0]), "{}", hex(&out));
}

#[test]
fn the_option_counts_against_the_path_mtu() {
    let e = engine(Protocol::Tcp);
    // 1500 - 20 (IPv4) - 8 (UDP) - 4 (GUE) = 1468 fits without the option; with it 1460.
    let e2 = engine(Protocol::Tcp);
    let body = vec![7u8; 1468 - 40];
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let mut big = tcp(CLIENT, 40000, VIP, 80, ACK, &body);
    big[6] |= 0x40;
    big[10] = 0;
    big[11] = 0;
    let c = !sum(&big[..20]);
    big[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run(&e, &syn, L4Csum::Complete).0, Verdict::Forward);
    assert_eq!(run(&e, &big, L4Csum::Complete).0, Verdict::Forward);
    assert_eq!(run(&e2, &syn, L4Csum::Complete).0, Verdict::Forward);
    let (v, out, _) = run(&e2, &partial(&big), L4Csum::Partial);
    assert_eq!(v, Verdict::Reply, "FRAG_NEEDED:\n{}", hex(&out));
    // FRAG_NEEDED announces 1500 - 20 - 8 - 12.
    assert_eq!(out[20], 3);
    assert_eq!(out[21], 4);
    assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1460);
}
