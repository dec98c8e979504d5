//! NAT over IPv6 (NAT66) fixtures: packets in, verdicts and exact bytes out, both directions,
//! TCP and UDP, with extension headers and fragments. Expected packets are built independently
//! by etherparse (checksums from scratch, IPv6 pseudo-header).

mod common;

use common::*;
use ulvs_engine::{DropReason, ForwardMethod, Protocol, Verdict};

fn engine() -> ulvs_engine::Engine {
    engine_with(vec![
        service_at(
            Protocol::Tcp,
            sa6(VIP6, 80),
            vec![dest_at(sa6(RS6_1, 8080), ForwardMethod::Masq, 1)],
            vec![],
        ),
        service_at(
            Protocol::Udp,
            sa6(VIP6, 53),
            vec![dest_at(sa6(RS6_2, 5353), ForwardMethod::Masq, 1)],
            vec![],
        ),
    ])
}

#[test]
fn tcp_both_directions() {
    let e = engine();
    let body = b"GET / HTTP/1.0\r\n\r\n";
    expect(
        &e,
        1,
        "client SYN to the VIP goes to the real server",
        &tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]),
        Verdict::Forward,
        &tcp6(CLIENT6, 40000, RS6_1, 8080, SYN, &[]),
    );
    expect(
        &e,
        2,
        "SYN-ACK from the real server comes from the VIP",
        &tcp6(RS6_1, 8080, CLIENT6, 40000, SYN | ACK, &[]),
        Verdict::Forward,
        &tcp6(VIP6, 80, CLIENT6, 40000, SYN | ACK, &[]),
    );
    expect(
        &e,
        3,
        "data from the client",
        &tcp6(CLIENT6, 40000, VIP6, 80, ACK | PSH, body),
        Verdict::Forward,
        &tcp6(CLIENT6, 40000, RS6_1, 8080, ACK | PSH, body),
    );
    expect(
        &e,
        4,
        "data from the real server",
        &tcp6(
            RS6_1,
            8080,
            CLIENT6,
            40000,
            ACK | PSH,
            b"HTTP/1.0 200 OK\r\n",
        ),
        Verdict::Forward,
        &tcp6(VIP6, 80, CLIENT6, 40000, ACK | PSH, b"HTTP/1.0 200 OK\r\n"),
    );
    let s = e.stats();
    assert_eq!(s.services[0].counters.conns, 1);
    assert_eq!(s.services[0].counters.in_pkts, 2);
    assert_eq!(s.services[0].counters.out_pkts, 2);
}

#[test]
fn udp_both_directions_and_trailing_bytes_trimmed() {
    let e = engine();
    let mut q = udp6(CLIENT6, 5000, VIP6, 53, b"query");
    q.extend_from_slice(&[0xee; 3]);
    expect(
        &e,
        1,
        "query to the VIP (trailing bytes trimmed)",
        &q,
        Verdict::Forward,
        &udp6(CLIENT6, 5000, RS6_2, 5353, b"query"),
    );
    expect(
        &e,
        2,
        "answer from the VIP",
        &udp6(RS6_2, 5353, CLIENT6, 5000, b"answer"),
        Verdict::Forward,
        &udp6(VIP6, 53, CLIENT6, 5000, b"answer"),
    );
}

/// Inserts a hop-by-hop options header (8 bytes, PadN) in front of the upper layer.
fn with_hop_by_hop(p: &[u8]) -> Vec<u8> {
    let mut out = p[..40].to_vec();
    let next = out[6];
    out[6] = 0;
    let len = u16::from_be_bytes([out[4], out[5]]) + 8;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&p[40..]);
    out
}

#[test]
fn extension_headers_are_skipped() {
    let e = engine();
    expect(
        &e,
        1,
        "SYN behind a hop-by-hop header",
        &with_hop_by_hop(&tcp6(CLIENT6, 40001, VIP6, 80, SYN, &[])),
        Verdict::Forward,
        &with_hop_by_hop(&tcp6(CLIENT6, 40001, RS6_1, 8080, SYN, &[])),
    );
}

/// Splits an IPv6 packet's upper layer into a first fragment (first `n` bytes, M set) and the
/// rest (offset `n`), with identification `id`.
fn fragments(p: &[u8], n: usize, id: u32) -> (Vec<u8>, Vec<u8>) {
    let next = p[6];
    let frag = |off: usize, more: bool, body: &[u8]| {
        let mut out = p[..40].to_vec();
        out[6] = 44;
        out[4..6].copy_from_slice(&((8 + body.len()) as u16).to_be_bytes());
        let fo = (off as u16) | u16::from(more);
        out.extend_from_slice(&[next, 0]);
        out.extend_from_slice(&fo.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    (frag(0, true, &p[40..40 + n]), frag(n, false, &p[40 + n..]))
}

#[test]
fn first_fragment_is_rewritten_later_fragments_are_counted_drops() {
    let e = engine();
    let payload = [7u8; 64];
    let (first, rest) = fragments(&udp6(CLIENT6, 5000, VIP6, 53, &payload), 16, 77);
    let (want_first, _) = fragments(&udp6(CLIENT6, 5000, RS6_2, 5353, &payload), 16, 77);
    expect(
        &e,
        1,
        "first fragment",
        &first,
        Verdict::Forward,
        &want_first,
    );
    let before = e.stats();
    expect(
        &e,
        2,
        "later fragment to the VIP",
        &rest,
        Verdict::Drop(DropReason::Fragment),
        &rest,
    );
    assert_delta(&before, &e.stats(), &[("drop fragment", 1)]);
}

#[test]
fn unknown_port_and_stray_packets() {
    let e = engine();
    let p = tcp6(CLIENT6, 40000, VIP6, 81, SYN, &[]);
    expect(
        &e,
        1,
        "no service",
        &p,
        Verdict::Drop(DropReason::NoService),
        &p,
    );
    let p = tcp6(CLIENT6, 40000, "fd00:1b5:9::9", 80, SYN, &[]);
    expect(&e, 1, "not ours", &p, Verdict::Pass, &p);
    let p = tcp6(CLIENT6, 40000, VIP6, 80, ACK, &[]);
    expect(
        &e,
        1,
        "no connection",
        &p,
        Verdict::Drop(DropReason::NoConnection),
        &p,
    );
}
