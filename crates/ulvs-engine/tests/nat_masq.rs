//! NAT (masquerading) fixtures: packets in, verdicts and exact bytes out, both directions, TCP
//! and UDP. Expected packets are built independently by etherparse (checksums from scratch).

mod common;

use common::*;
use ulvs_engine::{Protocol, SchedulerKind, Verdict};

struct Step {
    description: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    /// Expected bytes afterwards; `None` = unchanged input.
    output: Option<Vec<u8>>,
}

fn run_steps(steps: Vec<Step>) {
    let e = engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Rr,
            vec![dest(RS1, 8080, 1)],
        ),
        service(
            Protocol::Udp,
            VIP,
            53,
            SchedulerKind::Rr,
            vec![dest(RS2, 5353, 1)],
        ),
    ]);
    for (i, s) in steps.into_iter().enumerate() {
        let (v, out) = run(&e, 1000 + i as u64, &s.input);
        let want = s.output.unwrap_or_else(|| s.input.clone());
        assert!(
            v == s.verdict && out == want,
            "step {i}: {}\nverdict {v:?}, expected {:?}\ninput:\n{}output:\n{}expected:\n{}",
            s.description,
            s.verdict,
            hex(&s.input),
            hex(&out),
            hex(&want)
        );
    }
}

#[test]
fn tcp_both_directions() {
    let body = b"GET / HTTP/1.0\r\n\r\n";
    run_steps(vec![
        Step {
            description: "client SYN to the VIP goes to the real server",
            input: tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
            verdict: Verdict::Forward,
            output: Some(tcp(CLIENT, 40000, RS1, 8080, SYN, &[])),
        },
        Step {
            description: "SYN-ACK from the real server comes from the VIP",
            input: tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]),
            verdict: Verdict::Forward,
            output: Some(tcp(VIP, 80, CLIENT, 40000, SYN | ACK, &[])),
        },
        Step {
            description: "client ACK with data",
            input: tcp(CLIENT, 40000, VIP, 80, ACK | PSH, body),
            verdict: Verdict::Forward,
            output: Some(tcp(CLIENT, 40000, RS1, 8080, ACK | PSH, body)),
        },
        Step {
            description: "odd-length reply data",
            input: tcp(
                RS1,
                8080,
                CLIENT,
                40000,
                ACK | PSH,
                b"HTTP/1.0 200 OK\r\n\r\nhi!",
            ),
            verdict: Verdict::Forward,
            output: Some(tcp(
                VIP,
                80,
                CLIENT,
                40000,
                ACK | PSH,
                b"HTTP/1.0 200 OK\r\n\r\nhi!",
            )),
        },
        Step {
            description: "client FIN",
            input: tcp(CLIENT, 40000, VIP, 80, FIN | ACK, &[]),
            verdict: Verdict::Forward,
            output: Some(tcp(CLIENT, 40000, RS1, 8080, FIN | ACK, &[])),
        },
        Step {
            description: "traffic that is no one's passes unchanged",
            input: tcp(CLIENT, 40001, OTHER, 80, SYN, &[]),
            verdict: Verdict::Pass,
            output: None,
        },
        Step {
            description: "a real server's packet to someone without a connection passes",
            input: tcp(RS1, 8080, CLIENT2, 40000, ACK, &[]),
            verdict: Verdict::Pass,
            output: None,
        },
    ]);
}

#[test]
fn udp_both_directions() {
    run_steps(vec![
        Step {
            description: "client datagram to the VIP goes to the real server",
            input: udp(CLIENT, 5000, VIP, 53, b"query"),
            verdict: Verdict::Forward,
            output: Some(udp(CLIENT, 5000, RS2, 5353, b"query")),
        },
        Step {
            description: "reply comes from the VIP",
            input: udp(RS2, 5353, CLIENT, 5000, b"answer!"),
            verdict: Verdict::Forward,
            output: Some(udp(VIP, 53, CLIENT, 5000, b"answer!")),
        },
        Step {
            description: "a zero UDP checksum (none) stays zero, inbound",
            input: udp_no_csum(CLIENT, 5001, VIP, 53, b"q2"),
            verdict: Verdict::Forward,
            output: Some(udp_no_csum(CLIENT, 5001, RS2, 5353, b"q2")),
        },
        Step {
            description: "a zero UDP checksum stays zero, outbound",
            input: udp_no_csum(RS2, 5353, CLIENT, 5001, b"a2"),
            verdict: Verdict::Forward,
            output: Some(udp_no_csum(VIP, 53, CLIENT, 5001, b"a2")),
        },
    ]);
}

/// Ones' complement sum of the UDP pseudo-header and datagram (checksum field as is), folded.
fn udp_sum(pkt: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&pkt[12..20]);
    let l4 = &pkt[20..];
    add(&[0, 17]);
    add(&(l4.len() as u16).to_be_bytes());
    add(l4);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[test]
fn udp_checksum_that_comes_out_zero_is_written_as_ffff() {
    // Choose two payload bytes so that the rewritten datagram's checksum is 0 (its sum with the
    // checksum field zeroed is 0xffff).
    let mut out = udp_no_csum(CLIENT, 5002, RS2, 5353, &[0, 0, 7, 7]);
    let s = udp_sum(&out);
    let fill = 0xffff - s;
    out[28..30].copy_from_slice(&fill.to_be_bytes());
    assert_eq!(udp_sum(&out), 0xffff, "fixture construction");
    let payload = [out[28], out[29], 7, 7];
    let e = engine_with(vec![service(
        Protocol::Udp,
        VIP,
        53,
        SchedulerKind::Rr,
        vec![dest(RS2, 5353, 1)],
    )]);
    let input = udp(CLIENT, 5002, VIP, 53, &payload);
    assert_ne!(&input[26..28], &[0, 0], "input carries a checksum");
    let (v, got) = run(&e, 1, &input);
    assert_eq!(v, Verdict::Forward);
    let mut want = udp_no_csum(CLIENT, 5002, RS2, 5353, &payload);
    want[26..28].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(got, want, "\ngot:\n{}want:\n{}", hex(&got), hex(&want));
}

#[test]
fn trailing_bytes_past_total_length_are_trimmed() {
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![dest(RS1, 8080, 1)],
    )]);
    let mut input = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    input.extend_from_slice(&[0xaa; 6]);
    let (v, got) = run(&e, 1, &input);
    assert_eq!(v, Verdict::Forward);
    let want = tcp(CLIENT, 40000, RS1, 8080, SYN, &[]);
    assert_eq!(got, want, "\ngot:\n{}want:\n{}", hex(&got), hex(&want));
}

#[test]
fn port_zero_real_server_keeps_the_virtual_port() {
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        443,
        SchedulerKind::Wlc,
        vec![dest(RS1, 0, 1)],
    )]);
    let (v, got) = run(&e, 1, &tcp(CLIENT, 40000, VIP, 443, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(got, tcp(CLIENT, 40000, RS1, 443, SYN, &[]));
    let (v, got) = run(&e, 2, &tcp(RS1, 443, CLIENT, 40000, SYN | ACK, &[]));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(got, tcp(VIP, 443, CLIENT, 40000, SYN | ACK, &[]));
}
