//! Property test: arbitrary and mutated IPv4/IPv6 frames (TCP, UDP, ICMP errors and echoes)
//! through an engine with NAT, FULLNAT, NAT66 and FULLNAT66 services never panic, and every
//! frame ends forwarded, answered, passed or dropped with a reason.

mod common;

use std::net::IpAddr;

use common::*;
use proptest::prelude::*;
use ulvs_engine::{Engine, ForwardMethod, Protocol, Verdict};

fn engine() -> Engine {
    let l6: IpAddr = LADDR6_1.parse().unwrap();
    engine_with(vec![
        service_at(
            Protocol::Tcp,
            sa(VIP, 80),
            vec![
                dest_at(sa(RS1, 8080), ForwardMethod::Masq, 1),
                dest_at(sa(RS2, 8080), ForwardMethod::FullNat, 1),
            ],
            vec![IpAddr::from(LADDR1)],
        ),
        service_at(
            Protocol::Udp,
            sa(VIP, 53),
            vec![dest_at(sa(RS2, 53), ForwardMethod::FullNat, 1)],
            vec![IpAddr::from(LADDR2)],
        ),
        service_at(
            Protocol::Tcp,
            sa6(VIP6, 80),
            vec![
                dest_at(sa6(RS6_1, 8080), ForwardMethod::Masq, 1),
                dest_at(sa6(RS6_2, 8080), ForwardMethod::FullNat, 1),
            ],
            vec![l6],
        ),
        service_at(
            Protocol::Udp,
            sa6(VIP6, 53),
            vec![dest_at(sa6(RS6_1, 53), ForwardMethod::Masq, 1)],
            vec![],
        ),
    ])
}

fn seeds() -> Vec<Vec<u8>> {
    let mut ping = Vec::new();
    etherparse::PacketBuilder::ipv6(v6(CLIENT6), v6(VIP6), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut ping, b"x")
        .unwrap();
    let mut err = Vec::new();
    etherparse::PacketBuilder::ipv4(RS1, CLIENT, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, &tcp(CLIENT, 40000, RS1, 8080, SYN, &[]))
        .unwrap();
    vec![
        tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]),
        tcp(RS2, 8080, LADDR1, 1024, SYN | ACK, &[]),
        udp(CLIENT, 5000, VIP, 53, b"q"),
        tcp6(CLIENT6, 40000, VIP6, 80, SYN, &[]),
        tcp6(RS6_2, 8080, LADDR6_1, 1024, ACK, b"data"),
        udp6(CLIENT6, 5000, VIP6, 53, b"q"),
        ping,
        err,
    ]
}

fn check(v: Verdict, out: &[u8], input: &[u8]) {
    match v {
        Verdict::Forward | Verdict::Reply => {
            assert!(!out.is_empty(), "empty output for {v:?}");
            assert!(
                matches!(out[0] >> 4, 4 | 6),
                "not an IP packet\n{}",
                hex(out)
            );
        }
        Verdict::Pass | Verdict::Drop(_) => assert_eq!(out, input),
        Verdict::ForwardFrame => panic!("no DR real server is configured"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic(
        v6 in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let e = engine();
        let mut b = bytes;
        if let Some(x) = b.first_mut() {
            *x = (*x & 0x0f) | if v6 { 0x60 } else { 0x40 };
        }
        let (v, out) = run(&e, 1, &b);
        check(v, &out, &b);
    }

    #[test]
    fn mutated_frames_never_panic(
        seed in 0usize..9,
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..5),
        cut in 0usize..16,
    ) {
        let e = engine();
        for p in seeds() {
            run(&e, 0, &p);
        }
        let mut p = seeds()[seed].clone();
        for (at, val) in flips {
            if let Some(b) = p.get_mut(at) {
                *b = val;
            }
        }
        p.truncate(p.len().saturating_sub(cut));
        let (v, out) = run(&e, 1, &p);
        check(v, &out, &p);
    }
}
