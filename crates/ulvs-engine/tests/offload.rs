//! Checksum offload fixtures: packets whose TCP/UDP checksum field holds a partial
//! (pseudo-header only) sum, as a TUN with `IFF_VNET_HDR` hands them over, including GSO
//! super-packets. Every output is checked by finishing its checksum here, independently of the
//! engine's checksum code, and comparing it with a packet built from scratch by etherparse.

mod common;

use common::*;
use ulvs_engine::{L4Csum, Offload, PacketBuf, Protocol, SchedulerKind, Timestamp, Verdict};

/// Ones' complement sum of big-endian words, folded (written here, not taken from the engine).
fn ones_sum(chunks: &[&[u8]]) -> u16 {
    let mut acc: u64 = 0;
    for c in chunks {
        let mut it = c.chunks(2);
        for w in &mut it {
            let hi = u64::from(w[0]) << 8;
            let lo = w.get(1).copied().map_or(0, u64::from);
            acc += hi | lo;
        }
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Offset of the L4 checksum field for an IPv4 packet with a 20-byte header.
fn csum_at(proto: Protocol) -> usize {
    match proto {
        Protocol::Tcp => 20 + 16,
        Protocol::Udp => 20 + 6,
    }
}

/// Turns a packet with a complete L4 checksum into what checksum offload hands over: the field
/// holds the folded pseudo-header sum, not complemented.
fn make_partial(mut p: Vec<u8>, proto: Protocol) -> Vec<u8> {
    let l4_len = (p.len() - 20) as u16;
    let pnum = match proto {
        Protocol::Tcp => 6u8,
        Protocol::Udp => 17u8,
    };
    let pseudo = ones_sum(&[&p[12..20], &[0, pnum], &l4_len.to_be_bytes()]);
    let at = csum_at(proto);
    p[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    p
}

/// Finishes a partial checksum as the kernel would on transmit: sum the L4 bytes (the field
/// included), complement, store.
fn finish(mut p: Vec<u8>, proto: Protocol) -> Vec<u8> {
    let c = !ones_sum(&[&p[20..]]);
    let c = if proto == Protocol::Udp && c == 0 {
        0xffff
    } else {
        c
    };
    let at = csum_at(proto);
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

fn run_offload(
    e: &ulvs_engine::Engine,
    now: u64,
    input: &[u8],
    off: Offload,
) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 32 + input.len()];
    buf[32..].copy_from_slice(input);
    let mut pkt = PacketBuf::with_offload(&mut buf, 32, input.len(), off);
    assert_eq!(pkt.offload(), off);
    let v = e.process(Timestamp(now), &mut pkt);
    (v, pkt.data().to_vec())
}

fn check(got: Vec<u8>, want: &[u8], proto: Protocol, what: &str) {
    let finished = finish(got.clone(), proto);
    assert!(
        finished == want,
        "{what}: finished output differs\ngot (partial):\n{}got (finished):\n{}want:\n{}",
        hex(&got),
        hex(&finished),
        hex(want)
    );
    // The IP header checksum is always complete.
    assert_eq!(
        ones_sum(&[&got[..20]]),
        0xffff,
        "{what}: IP header checksum"
    );
}

fn web(proto: Protocol) -> ulvs_engine::Engine {
    engine_with(vec![service(
        proto,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![dest(RS1, 8080, 1)],
    )])
}

#[test]
fn tcp_partial_checksum_both_directions() {
    let e = web(Protocol::Tcp);
    let cases = [
        (
            "client SYN",
            tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
            tcp(CLIENT, 40000, RS1, 8080, SYN, &[]),
        ),
        (
            "server SYN-ACK",
            tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]),
            tcp(VIP, 80, CLIENT, 40000, SYN | ACK, &[]),
        ),
        (
            "client data",
            tcp(CLIENT, 40000, VIP, 80, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n"),
            tcp(
                CLIENT,
                40000,
                RS1,
                8080,
                ACK | PSH,
                b"GET / HTTP/1.1\r\n\r\n",
            ),
        ),
        (
            "server data (odd length)",
            tcp(RS1, 8080, CLIENT, 40000, ACK, b"HTTP/1.1 200 OK\r\n\r\nx"),
            tcp(VIP, 80, CLIENT, 40000, ACK, b"HTTP/1.1 200 OK\r\n\r\nx"),
        ),
    ];
    for (i, (what, input, want)) in cases.iter().enumerate() {
        let (v, out) = run_offload(
            &e,
            i as u64,
            &make_partial(input.clone(), Protocol::Tcp),
            Offload::PARTIAL,
        );
        assert_eq!(v, Verdict::Forward, "{what}");
        check(out, want, Protocol::Tcp, what);
    }
}

#[test]
fn udp_partial_checksum_both_directions() {
    let e = web(Protocol::Udp);
    for (i, len) in [0usize, 1, 64, 1400].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|b| (b * 31 + 7) as u8).collect();
        let (v, out) = run_offload(
            &e,
            2 * i as u64,
            &make_partial(udp(CLIENT, 5353, VIP, 80, &payload), Protocol::Udp),
            Offload::PARTIAL,
        );
        assert_eq!(v, Verdict::Forward);
        check(
            out,
            &udp(CLIENT, 5353, RS1, 8080, &payload),
            Protocol::Udp,
            "to server",
        );
        let (v, out) = run_offload(
            &e,
            2 * i as u64 + 1,
            &make_partial(udp(RS1, 8080, CLIENT, 5353, &payload), Protocol::Udp),
            Offload::PARTIAL,
        );
        assert_eq!(v, Verdict::Forward);
        check(
            out,
            &udp(VIP, 80, CLIENT, 5353, &payload),
            Protocol::Udp,
            "to client",
        );
    }
}

#[test]
fn gso_super_packet_is_rewritten_once_and_counted_whole() {
    let e = web(Protocol::Tcp);
    let gso = Offload {
        csum: L4Csum::Partial,
        gso_size: 1448,
    };
    assert!(gso.is_gso());
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    assert_eq!(
        run_offload(&e, 0, &make_partial(syn, Protocol::Tcp), Offload::PARTIAL).0,
        Verdict::Forward
    );
    // 44 segments' worth of payload behind one header, as TSO hands it over.
    let payload: Vec<u8> = (0..1448 * 44).map(|b: usize| (b % 251) as u8).collect();
    let input = tcp(CLIENT, 40000, VIP, 80, ACK, &payload);
    assert!(input.len() > 60_000);
    let before = e.stats().services[0].counters;
    let (v, out) = run_offload(&e, 1, &make_partial(input.clone(), Protocol::Tcp), gso);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out.len(), input.len());
    check(
        out,
        &tcp(CLIENT, 40000, RS1, 8080, ACK, &payload),
        Protocol::Tcp,
        "super-packet to server",
    );
    let after = e.stats().services[0].counters;
    assert_eq!(after.in_pkts - before.in_pkts, 1);
    assert_eq!(after.in_bytes - before.in_bytes, input.len() as u64);

    let reply = tcp(RS1, 8080, CLIENT, 40000, ACK, &payload);
    let (v, out) = run_offload(&e, 2, &make_partial(reply, Protocol::Tcp), gso);
    assert_eq!(v, Verdict::Forward);
    check(
        out,
        &tcp(VIP, 80, CLIENT, 40000, ACK, &payload),
        Protocol::Tcp,
        "super-packet to client",
    );
}

#[test]
fn complete_checksums_are_unaffected_by_the_offload_default() {
    let e = web(Protocol::Tcp);
    let (v, out) = run_offload(
        &e,
        0,
        &tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        Offload::default(),
    );
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, tcp(CLIENT, 40000, RS1, 8080, SYN, &[]));
}

#[test]
fn partial_packets_that_match_nothing_pass_unchanged() {
    let e = web(Protocol::Tcp);
    let other = make_partial(tcp(CLIENT, 40000, OTHER, 80, SYN, &[]), Protocol::Tcp);
    let (v, out) = run_offload(&e, 0, &other, Offload::PARTIAL);
    assert_eq!(v, Verdict::Pass);
    assert_eq!(out, other);
}

/// A real server behind an IPIP tunnel: its output cannot carry GSO or a partial checksum.
fn tunnel_engine() -> ulvs_engine::Engine {
    let mut d = dest(RS1, 80, 1);
    d.forward = ulvs_engine::ForwardMethod::Tunnel;
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![d],
    )]);
    e.set_director(ulvs_engine::Director {
        tunnel_source_v4: Some([198, 19, 0, 1].into()),
        ..ulvs_engine::Director::default()
    });
    e
}

#[test]
fn tunnel_refuses_super_packets_unchanged_and_takes_their_segments() {
    let e = tunnel_engine();
    let syn = make_partial(tcp(CLIENT, 40000, VIP, 80, SYN, &[]), Protocol::Tcp);
    let (v, out) = run_offload(&e, 0, &syn, Offload::PARTIAL);
    assert_eq!(v, Verdict::Forward);
    // The inner checksum was finished before encapsulation.
    assert_eq!(&out[20..], &tcp(CLIENT, 40000, VIP, 80, SYN, &[])[..]);

    // Segments small enough for the tunnel's path MTU (1500 - 20 bytes of IPIP).
    let payload: Vec<u8> = (0..1400 * 3 + 100)
        .map(|b: usize| (b % 249) as u8)
        .collect();
    let sup = make_partial(tcp(CLIENT, 40000, VIP, 80, ACK, &payload), Protocol::Tcp);
    let gso = Offload {
        csum: L4Csum::Partial,
        gso_size: 1400,
    };
    let before = e.stats();
    let (v, out) = run_offload(&e, 1, &sup, gso);
    assert_eq!(v, Verdict::Drop(ulvs_engine::DropReason::GsoNotSplit));
    assert_eq!(out, sup, "refused super-packet must be unchanged");
    assert_delta(&before, &e.stats(), &[("drop gso_not_split", 1)]);

    let n = ulvs_engine::offload::segment_count(&sup, 1400).unwrap();
    assert_eq!(n, 4);
    let mut seg = vec![0u8; 2000];
    let mut joined = Vec::new();
    for i in 0..n {
        let len = ulvs_engine::offload::segment(&sup, 1400, i, &mut seg)
            .unwrap()
            .unwrap();
        let (v, out) = run(&e, 2, &seg[..len]);
        assert_eq!(v, Verdict::Forward, "segment {i}");
        let inner = &out[20..];
        assert_eq!(ones_sum(&[&inner[..20]]), 0xffff, "inner IP checksum {i}");
        let l4_len = (inner.len() - 20) as u16;
        let pseudo = ones_sum(&[&inner[12..20], &[0, 6], &l4_len.to_be_bytes()]);
        assert_eq!(
            ones_sum(&[&pseudo.to_be_bytes(), &inner[20..]]),
            0xffff,
            "inner TCP checksum {i}"
        );
        joined.extend_from_slice(&inner[40..]);
    }
    assert_eq!(joined, payload);
    assert_eq!(
        ulvs_engine::offload::segment(&sup, 1400, n, &mut seg),
        Ok(None)
    );
}
