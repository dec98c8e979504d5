//! Scheduler behaviour through real packets: rr cycles, wrr keeps exact weight ratios, weight 0
//! is quiescent, lc and wlc pick the minimum (IPVS kernel semantics).

mod common;

use common::*;
use ulvs_engine::{Config, DestConfig, Engine, Protocol, SchedulerKind, Verdict};

/// Opens a TCP connection (SYN only) from `CLIENT:port` to VIP:80; returns the real server's
/// address octets it went to.
fn open(e: &Engine, port: u16) -> [u8; 4] {
    let (v, out) = run(e, 1, &tcp(CLIENT, port, VIP, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward, "SYN from port {port}");
    [out[16], out[17], out[18], out[19]]
}

/// Completes the handshake of `CLIENT:port` (so the connection counts as active).
fn establish(e: &Engine, port: u16) {
    assert_eq!(
        run(e, 2, &tcp(CLIENT, port, VIP, 80, ACK, &[])).0,
        Verdict::Forward
    );
}

fn web(kind: SchedulerKind, dests: Vec<DestConfig>) -> Engine {
    engine_with(vec![service(Protocol::Tcp, VIP, 80, kind, dests)])
}

#[test]
fn rr_cycles_in_order_and_skips_weight_zero() {
    let e = web(
        SchedulerKind::Rr,
        vec![dest(RS1, 80, 1), dest(RS2, 80, 0), dest(RS3, 80, 5)],
    );
    let picks: Vec<[u8; 4]> = (0..6).map(|i| open(&e, 1000 + i)).collect();
    assert_eq!(picks, vec![RS1, RS3, RS1, RS3, RS1, RS3]);
}

#[test]
fn wrr_three_to_one_is_exact() {
    let e = web(SchedulerKind::Wrr, vec![dest(RS1, 80, 3), dest(RS2, 80, 1)]);
    let picks: Vec<[u8; 4]> = (0..400).map(|i| open(&e, 1000 + i)).collect();
    assert_eq!(&picks[..8], &[RS1, RS1, RS1, RS2, RS1, RS1, RS1, RS2]);
    assert_eq!(picks.iter().filter(|p| **p == RS1).count(), 300);
    assert_eq!(picks.iter().filter(|p| **p == RS2).count(), 100);
}

#[test]
fn wrr_steps_by_the_gcd() {
    // Weights 4:2:0 behave as 2:1, the quiescent server gets nothing.
    let e = web(
        SchedulerKind::Wrr,
        vec![dest(RS1, 80, 4), dest(RS2, 80, 2), dest(RS3, 80, 0)],
    );
    let picks: Vec<[u8; 4]> = (0..6).map(|i| open(&e, 1000 + i)).collect();
    assert_eq!(picks, vec![RS1, RS1, RS2, RS1, RS1, RS2]);
}

#[test]
fn weight_zero_takes_no_new_connections_but_existing_ones_flow() {
    let e = web(SchedulerKind::Wlc, vec![dest(RS1, 80, 1), dest(RS2, 80, 1)]);
    assert_eq!(open(&e, 1000), RS1);
    establish(&e, 1000);
    e.apply_config(&Config {
        services: vec![service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 80, 0), dest(RS2, 80, 1)],
        )],
    })
    .unwrap();
    for p in 2000..2010 {
        assert_eq!(open(&e, p), RS2);
    }
    // The existing connection still flows both ways.
    let (v, out) = run(&e, 3, &tcp(CLIENT, 1000, VIP, 80, ACK, b"more"));
    assert_eq!(
        (v, out),
        (Verdict::Forward, tcp(CLIENT, 1000, RS1, 80, ACK, b"more"))
    );
    let (v, out) = run(&e, 3, &tcp(RS1, 80, CLIENT, 1000, ACK, b"ok"));
    assert_eq!(
        (v, out),
        (Verdict::Forward, tcp(VIP, 80, CLIENT, 1000, ACK, b"ok"))
    );
    let s = e.stats();
    let rs1 = &s.services[0].dests[0];
    assert_eq!(
        (rs1.counters.conns, rs1.active_conns),
        (1, 1),
        "counters survived the change"
    );
    assert_eq!(rs1.counters.in_pkts, 3);
}

#[test]
fn all_weights_zero_is_no_destination_for_every_scheduler() {
    for kind in [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
    ] {
        let e = web(kind, vec![dest(RS1, 80, 0), dest(RS2, 80, 0)]);
        let (v, _) = run(&e, 1, &tcp(CLIENT, 1000, VIP, 80, SYN, &[]));
        assert_eq!(
            v,
            Verdict::Drop(ulvs_engine::DropReason::NoDestination),
            "{kind}"
        );
    }
}

#[test]
fn lc_picks_the_least_overhead_ignoring_weight() {
    let e = web(SchedulerKind::Lc, vec![dest(RS1, 80, 10), dest(RS2, 80, 1)]);
    // Equal overhead: the first wins.
    assert_eq!(open(&e, 1000), RS1);
    assert_eq!(open(&e, 1001), RS2);
    assert_eq!(open(&e, 1002), RS1);
    // RS1 has 2 inactive (overhead 2), RS2 has 1: RS2 is the minimum despite its weight.
    assert_eq!(open(&e, 1003), RS2);
    // One active connection costs 256: establish one on RS1 (port 1000).
    establish(&e, 1000);
    // RS1: 1 active + 1 inactive = 257, RS2: 2 inactive = 2.
    for p in 1100..1110 {
        assert_eq!(open(&e, p), RS2);
    }
}

#[test]
fn wlc_weighs_overhead_by_weight() {
    let e = web(SchedulerKind::Wlc, vec![dest(RS1, 80, 3), dest(RS2, 80, 1)]);
    // Overheads 0/0: first wins.
    assert_eq!(open(&e, 1000), RS1);
    // 1*1 > 0*3: RS2.
    assert_eq!(open(&e, 1001), RS2);
    // RS1 1/3 vs RS2 1/1: RS1; then 2/3 vs 1: RS1; then 3/3 vs 1/1: tie, first wins.
    assert_eq!(open(&e, 1002), RS1);
    assert_eq!(open(&e, 1003), RS1);
    assert_eq!(open(&e, 1004), RS1);
    // 4/3 > 1/1: RS2 (lc would have picked RS2 long ago).
    assert_eq!(open(&e, 1005), RS2);
    let s = e.stats();
    let d = &s.services[0].dests;
    assert_eq!((d[0].inactive_conns, d[1].inactive_conns), (4, 2));
}

#[test]
fn upper_threshold_overloads_a_real_server() {
    let mut d1 = dest(RS1, 80, 1);
    d1.upper_threshold = 2;
    let e = web(SchedulerKind::Rr, vec![d1, dest(RS2, 80, 1)]);
    let picks: Vec<[u8; 4]> = (0..5).map(|i| open(&e, 1000 + i)).collect();
    assert_eq!(picks, vec![RS1, RS2, RS1, RS2, RS2]);
}
