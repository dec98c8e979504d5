//! Every drop reason, produced by a real packet, with the whole counter delta asserted (so a
//! counter that moves when it should not fails the test).

mod common;

use common::*;
use etherparse::PacketBuilder;
use ulvs_engine::{
    Config, Director, DropReason, Engine, EngineOptions, ForwardMethod, Protocol, SchedulerKind,
    Verdict,
};

const S: &str = "TCP 198.18.1.1:80";
const D: &str = "TCP 198.18.1.1:80 -> 198.19.0.11:8080";

fn web() -> Engine {
    engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Wlc,
        vec![dest(RS1, 8080, 1)],
    )])
}

/// Runs `input` and asserts the drop and that only its counter moved.
fn expect_drop(e: &Engine, input: &[u8], reason: DropReason) {
    let before = e.stats();
    let (v, out) = run(e, 10, input);
    assert_eq!(v, Verdict::Drop(reason), "input:\n{}", hex(input));
    assert_eq!(out, input, "a dropped packet is not rewritten");
    let name = format!("drop {}", reason.name());
    assert_delta(&before, &e.stats(), &[(name.as_str(), 1)]);
}

#[test]
fn reasons_have_distinct_names_and_indices() {
    let names: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), DropReason::ALL.len());
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}

#[test]
fn malformed() {
    let e = web();
    expect_drop(&e, &[], DropReason::Malformed);
    expect_drop(&e, &[0x45, 0, 0, 20], DropReason::Malformed);
    let mut bad_version = tcp(CLIENT, 1, VIP, 80, SYN, &[]);
    bad_version[0] = 0x55;
    expect_drop(&e, &bad_version, DropReason::Malformed);
    let mut long_total = tcp(CLIENT, 1, VIP, 80, SYN, &[]);
    long_total[3] += 1;
    expect_drop(&e, &long_total, DropReason::Malformed);
    let mut short_ihl = tcp(CLIENT, 1, VIP, 80, SYN, &[]);
    short_ihl[0] = 0x44;
    expect_drop(&e, &short_ihl, DropReason::Malformed);
    // TCP header cut short: IP total length says 30 bytes.
    let mut cut = tcp(CLIENT, 1, VIP, 80, SYN, &[]);
    cut.truncate(30);
    cut[2..4].copy_from_slice(&30u16.to_be_bytes());
    expect_drop(&e, &cut, DropReason::Malformed);
    // TCP data offset past the segment.
    let mut off = tcp(CLIENT, 1, VIP, 80, SYN, &[]);
    off[32] = 0xf0;
    expect_drop(&e, &off, DropReason::Malformed);
    // UDP length field larger than the datagram.
    let mut ul = udp(CLIENT, 1, VIP, 53, b"x");
    ul[24..26].copy_from_slice(&100u16.to_be_bytes());
    expect_drop(&e, &ul, DropReason::Malformed);
}

#[test]
fn no_destination_when_every_weight_is_zero() {
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Wlc,
        vec![dest(RS1, 8080, 0)],
    )]);
    expect_drop(
        &e,
        &tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        DropReason::NoDestination,
    );
}

#[test]
fn table_full() {
    let e = Engine::new(EngineOptions {
        max_connections: 1,
        ..opts()
    });
    e.apply_config(&Config {
        services: vec![service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 8080, 1)],
        )],
    })
    .unwrap();
    let before = e.stats();
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    assert_eq!(run(&e, 1, &syn).0, Verdict::Forward);
    let n = syn.len() as i64;
    assert_delta(
        &before,
        &e.stats(),
        &[
            (&format!("{S} conns"), 1),
            (&format!("{S} in_pkts"), 1),
            (&format!("{S} in_bytes"), n),
            (&format!("{D} conns"), 1),
            (&format!("{D} in_pkts"), 1),
            (&format!("{D} in_bytes"), n),
            (&format!("{D} inactive"), 1),
            ("connections", 1),
        ],
    );
    expect_drop(
        &e,
        &tcp(CLIENT, 40001, VIP, 80, SYN, &[]),
        DropReason::TableFull,
    );
}

#[test]
fn no_connection_for_tcp_without_syn() {
    let e = web();
    expect_drop(
        &e,
        &tcp(CLIENT, 40000, VIP, 80, ACK, &[]),
        DropReason::NoConnection,
    );
    expect_drop(
        &e,
        &tcp(CLIENT, 40000, VIP, 80, SYN | ACK, &[]),
        DropReason::NoConnection,
    );
}

#[test]
fn fragment_to_a_vip() {
    let e = web();
    let mut frag = udp(CLIENT, 5000, VIP, 80, &[0; 16]);
    // Fragment offset 8 (in 8-byte units: 1); the header checksum is not checked.
    frag[6..8].copy_from_slice(&1u16.to_be_bytes());
    expect_drop(&e, &frag, DropReason::Fragment);
    // The same fragment to someone else passes.
    let mut other = udp(CLIENT, 5000, OTHER, 80, &[0; 16]);
    other[6..8].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(run(&e, 1, &other).0, Verdict::Pass);
}

#[test]
fn unsupported_protocol_to_a_vip() {
    let e = web();
    // SCTP (132) to the VIP: not balanced (an echo request would be answered, see icmp.rs).
    let b = PacketBuilder::ipv4(CLIENT, VIP, 64).icmpv4_echo_request(1, 1);
    let mut sctp = Vec::new();
    b.write(&mut sctp, b"ping").unwrap();
    sctp[9] = 132;
    ulvs_engine::wire::Ipv4Packet::new_unchecked(&mut sctp[..]).fill_checksum();
    expect_drop(&e, &sctp, DropReason::UnsupportedProtocol);
    let b = PacketBuilder::ipv4(CLIENT, OTHER, 64).icmpv4_echo_request(1, 1);
    let mut ping = Vec::new();
    b.write(&mut ping, b"ping").unwrap();
    assert_eq!(run(&e, 1, &ping).0, Verdict::Pass);
}

#[test]
fn no_service_on_a_vip() {
    let e = web();
    expect_drop(
        &e,
        &tcp(CLIENT, 40000, VIP, 81, SYN, &[]),
        DropReason::NoService,
    );
    expect_drop(
        &e,
        &udp(CLIENT, 40000, VIP, 80, b"x"),
        DropReason::NoService,
    );
}

#[test]
fn tuple_conflict_when_two_services_share_a_real_server() {
    let e = engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 8080, 1)],
        ),
        service(
            Protocol::Tcp,
            VIP2,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 8080, 1)],
        ),
    ]);
    assert_eq!(
        run(&e, 1, &tcp(CLIENT, 40000, VIP, 80, SYN, &[])).0,
        Verdict::Forward
    );
    expect_drop(
        &e,
        &tcp(CLIENT, 40000, VIP2, 80, SYN, &[]),
        DropReason::TupleConflict,
    );
}

/// A client that reuses its source port towards a second VIP balanced onto the same real
/// server port, once the first connection is finished (here established then reset, so CLOSE;
/// TIME_WAIT is the same), gets the reply tuple: no `tuple_conflict` (the short-connection bench collapsed on
/// exactly this), and the real server's replies now go out from the second VIP.
#[test]
fn a_finished_connection_yields_its_reply_tuple_to_the_next() {
    let e = engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 8080, 1)],
        ),
        service(
            Protocol::Tcp,
            VIP2,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 8080, 1)],
        ),
    ]);
    for (now, p) in [
        tcp(CLIENT, 40000, VIP, 80, SYN, &[]),
        tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]),
        tcp(CLIENT, 40000, VIP, 80, ACK, &[]),
        tcp(CLIENT, 40000, VIP, 80, RST, &[]),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(run(&e, now as u64, p).0, Verdict::Forward, "{}", hex(p));
    }
    let before = e.stats();
    let (v, out) = run(&e, 5, &tcp(CLIENT, 40000, VIP2, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        (&out[16..20], &out[22..24]),
        (&RS1[..], &8080u16.to_be_bytes()[..])
    );
    let (v, out) = run(&e, 6, &tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        (&out[12..16], &out[20..22]),
        (&VIP2[..], &80u16.to_be_bytes()[..])
    );
    let after = e.stats();
    assert_eq!(after.drops, before.drops, "nothing dropped");
    // The finished entry went with its slot; the new one is the only connection left.
    assert_eq!(after.connections, 1);
}

/// Direct-routing and tunnel connections never see their replies, so two of them with equal
/// reply tuples (one client port, two VIPs, one real server) both live, as in IPVS.
#[test]
fn tunnel_connections_do_not_conflict_on_reply_tuples() {
    let rs = |forward| {
        let mut d = dest(RS1, 80, 1);
        d.forward = forward;
        d
    };
    let e = engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Rr,
            vec![rs(ForwardMethod::Tunnel)],
        ),
        service(
            Protocol::Tcp,
            VIP2,
            80,
            SchedulerKind::Rr,
            vec![rs(ForwardMethod::Tunnel)],
        ),
    ]);
    e.set_director(Director {
        tunnel_source_v4: Some([198, 19, 0, 1].into()),
        ..Director::default()
    });
    let before = e.stats();
    for (now, vip) in [VIP, VIP2].into_iter().enumerate() {
        let (v, _) = run(&e, now as u64, &tcp(CLIENT, 40000, vip, 80, SYN, &[]));
        assert_eq!(v, Verdict::Forward, "SYN to {vip:?}");
    }
    assert_eq!(e.stats().drops, before.drops, "nothing dropped");
    assert_eq!(e.stats().connections, 2);
}

/// A NAT connection takes the reply slot a live tunnel connection holds (that one never sees
/// its replies) and the tunnel connection keeps going: the bench's NAT runs after DR runs
/// collapsed on this.
#[test]
fn a_nat_connection_takes_the_reply_slot_of_a_tunnel_connection() {
    let mut tunnel = dest(RS1, 80, 1);
    tunnel.forward = ForwardMethod::Tunnel;
    let e = engine_with(vec![
        service(Protocol::Tcp, VIP, 80, SchedulerKind::Rr, vec![tunnel]),
        service(
            Protocol::Tcp,
            VIP2,
            80,
            SchedulerKind::Rr,
            vec![dest(RS1, 80, 1)],
        ),
    ]);
    e.set_director(Director {
        tunnel_source_v4: Some([198, 19, 0, 1].into()),
        ..Director::default()
    });
    let before = e.stats();
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    assert_eq!(run(&e, 0, &syn).0, Verdict::Forward);
    assert_eq!(
        run(&e, 1, &tcp(CLIENT, 40000, VIP2, 80, SYN, &[])).0,
        Verdict::Forward
    );
    let (v, out) = run(&e, 2, &tcp(RS1, 80, CLIENT, 40000, SYN | ACK, &[]));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        &out[12..16],
        &VIP2[..],
        "the reply belongs to the NAT connection"
    );
    let ack = tcp(CLIENT, 40000, VIP, 80, ACK, b"still here");
    let (v, out) = run(&e, 3, &ack);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        (out.len(), &out[20..]),
        (ack.len() + 20, &ack[..]),
        "still tunnelled"
    );
    assert_eq!(e.stats().drops, before.drops, "nothing dropped");
    assert_eq!(e.stats().connections, 2);
}

#[test]
fn forwarded_flow_moves_exactly_its_counters() {
    let e = web();
    let before = e.stats();
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let synack = tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]);
    let ack = tcp(CLIENT, 40000, VIP, 80, ACK, b"hello");
    for (i, p) in [&syn, &synack, &ack].into_iter().enumerate() {
        assert_eq!(run(&e, i as u64, p).0, Verdict::Forward);
    }
    let inb = (syn.len() + ack.len()) as i64;
    let outb = synack.len() as i64;
    assert_delta(
        &before,
        &e.stats(),
        &[
            (&format!("{S} conns"), 1),
            (&format!("{S} in_pkts"), 2),
            (&format!("{S} in_bytes"), inb),
            (&format!("{S} out_pkts"), 1),
            (&format!("{S} out_bytes"), outb),
            (&format!("{D} conns"), 1),
            (&format!("{D} in_pkts"), 2),
            (&format!("{D} in_bytes"), inb),
            (&format!("{D} out_pkts"), 1),
            (&format!("{D} out_bytes"), outb),
            (&format!("{D} active"), 1),
            ("connections", 1),
        ],
    );
}
