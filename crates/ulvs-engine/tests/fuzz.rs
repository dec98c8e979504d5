//! Property tests: arbitrary bytes and mutated real packets through `process` never panic,
//! always give a verdict, and a forwarded packet is a well-formed IPv4 packet with valid
//! checksums.

mod common;

use common::*;
use proptest::prelude::*;
use ulvs_engine::wire::{Ipv4Packet, TcpPacket, UdpPacket};
use ulvs_engine::{Engine, Protocol, SchedulerKind, Verdict};

fn engine() -> Engine {
    engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Wrr,
            vec![dest(RS1, 8080, 2), dest(RS2, 8080, 1)],
        ),
        service(
            Protocol::Udp,
            VIP,
            53,
            SchedulerKind::Lc,
            vec![dest(RS2, 5353, 1)],
        ),
    ])
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        tcp(CLIENT, 40000, VIP, 80, ACK, b"data"),
        tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]),
        udp(CLIENT, 5000, VIP, 53, b"query"),
        udp(RS2, 5353, CLIENT, 5000, b"answer"),
    ]
}

fn check_forwarded(out: &[u8], input: &[u8]) {
    let ip = Ipv4Packet::new_checked(out).expect("forwarded packet parses");
    let input_ip = Ipv4Packet::new_checked(input).expect("input parsed before");
    // Only a packet whose checksums were right before is required to be right after.
    if !input_ip.verify_checksum() {
        return;
    }
    assert!(ip.verify_checksum(), "IP checksum\n{}", hex(out));
    if ip.more_frags() {
        return;
    }
    let (s, d) = (ip.src_bytes(), ip.dst_bytes());
    let (is, id) = (input_ip.src_bytes(), input_ip.dst_bytes());
    match ip.protocol() {
        6 => {
            let before = TcpPacket::new_checked(input_ip.payload()).unwrap();
            if before.verify_checksum_v4(is, id) {
                let t = TcpPacket::new_checked(ip.payload()).unwrap();
                assert!(t.verify_checksum_v4(s, d), "TCP checksum\n{}", hex(out));
            }
        }
        17 => {
            let before = UdpPacket::new_checked(input_ip.payload()).unwrap();
            if before.verify_checksum_v4(is, id) {
                let u = UdpPacket::new_checked(ip.payload()).unwrap();
                assert!(u.verify_checksum_v4(s, d), "UDP checksum\n{}", hex(out));
            }
        }
        1 => {}
        p => panic!("forwarded protocol {p}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let e = engine();
        let (v, out) = run(&e, 1, &bytes);
        match v {
            Verdict::Forward => check_forwarded(&out, &bytes),
            Verdict::Pass => prop_assert_eq!(out, bytes),
            Verdict::Drop(_) => prop_assert_eq!(out, bytes),
            Verdict::Reply => prop_assert!(Ipv4Packet::new_checked(&out[..]).is_ok()),
            Verdict::ForwardFrame => prop_assert!(false, "a TUN-only engine made a frame"),
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        seed in 0usize..5,
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in 0usize..80,
    ) {
        let e = engine();
        // Establish state first so mutated packets also hit the connection path.
        for p in seeds() {
            run(&e, 0, &p);
        }
        let mut p = seeds()[seed].clone();
        for (at, v) in flips {
            if let Some(b) = p.get_mut(at) {
                *b = v;
            }
        }
        p.truncate(p.len().saturating_sub(cut % 8));
        let (v, out) = run(&e, 1, &p);
        match v {
            Verdict::Forward => check_forwarded(&out, &p),
            _ => prop_assert_eq!(out, p),
        }
    }
}
