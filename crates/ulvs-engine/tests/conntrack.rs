//! Connection tracking with a manual clock: idle expiry per state, the bounded reaper, active
//! and inactive counts, port reuse.

mod common;

use common::*;
use ulvs_engine::{DropReason, Engine, Protocol, SchedulerKind, TcpState, Timeouts, Verdict};

const D1: &str = "TCP 198.18.1.1:80 -> 198.19.0.11:8080";
const U1: &str = "UDP 198.18.1.1:53 -> 198.19.0.12:5353";

fn engine() -> Engine {
    engine_with(vec![
        service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Rr,
            vec![dest(RS1, 8080, 1), dest(RS2, 8080, 1)],
        ),
        service(
            Protocol::Udp,
            VIP,
            53,
            SchedulerKind::Rr,
            vec![dest(RS2, 5353, 1)],
        ),
    ])
}

/// Runs enough `expire` calls for one full pass; returns how many entries went.
fn full_pass(e: &Engine, now: u64) -> usize {
    (0..e.expire_calls_per_pass())
        .map(|_| e.expire(ulvs_engine::Timestamp(now)))
        .sum()
}

fn gauge(e: &Engine, key: &str) -> i64 {
    flat(&e.stats())[key]
}

#[test]
fn udp_entry_lives_until_its_timeout() {
    let e = engine();
    let t0 = 5_000;
    let udp_ms = Timeouts::default().udp_ms;
    assert_eq!(
        run(&e, t0, &udp(CLIENT, 5000, VIP, 53, b"q")).0,
        Verdict::Forward
    );
    assert_eq!(gauge(&e, &format!("{U1} inactive")), 1);
    assert_eq!(
        full_pass(&e, t0 + udp_ms - 1),
        0,
        "alive just before the timeout"
    );
    assert_eq!(e.stats().connections, 1);
    assert_eq!(full_pass(&e, t0 + udp_ms), 1, "gone at the timeout");
    assert_eq!(e.stats().connections, 0);
    assert_eq!(gauge(&e, &format!("{U1} inactive")), 0);
    // The reply no longer matches: it is not for a VIP, so it passes unchanged.
    let reply = udp(RS2, 5353, CLIENT, 5000, b"a");
    assert_eq!(
        run(&e, t0 + udp_ms + 1, &reply),
        (Verdict::Pass, reply.clone())
    );
}

#[test]
fn traffic_keeps_an_entry_alive() {
    let e = engine();
    let udp_ms = Timeouts::default().udp_ms;
    assert_eq!(
        run(&e, 0, &udp(CLIENT, 5000, VIP, 53, b"q")).0,
        Verdict::Forward
    );
    assert_eq!(
        run(&e, udp_ms - 1, &udp(RS2, 5353, CLIENT, 5000, b"a")).0,
        Verdict::Forward
    );
    assert_eq!(full_pass(&e, udp_ms + 10), 0);
    assert_eq!(full_pass(&e, 2 * udp_ms - 1), 1);
}

#[test]
fn expired_entry_does_not_match_before_it_is_reaped() {
    let e = engine();
    let syn_ms = Timeouts::default().tcp(TcpState::SynRecv);
    assert_eq!(
        run(&e, 0, &tcp(CLIENT, 40000, VIP, 80, SYN, &[])).0,
        Verdict::Forward
    );
    assert_eq!(
        run(&e, syn_ms - 1, &tcp(CLIENT, 40000, VIP, 80, ACK, &[])).0,
        Verdict::Forward
    );
    // Established now: its timeout is the long one.
    let est = Timeouts::default().tcp(TcpState::Established);
    let late = syn_ms - 1 + est;
    let ack = tcp(CLIENT, 40000, VIP, 80, ACK, &[]);
    assert_eq!(
        run(&e, late, &ack).0,
        Verdict::Drop(DropReason::NoConnection)
    );
    assert_eq!(e.stats().connections, 0);
    assert_eq!(gauge(&e, &format!("{D1} active")), 0);
}

#[test]
fn tcp_states_move_active_and_inactive_counts() {
    let e = engine();
    let t = Timeouts::default();
    run(&e, 0, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    assert_eq!(
        (
            gauge(&e, &format!("{D1} active")),
            gauge(&e, &format!("{D1} inactive"))
        ),
        (0, 1)
    );
    run(&e, 1, &tcp(RS1, 8080, CLIENT, 40000, SYN | ACK, &[]));
    assert_eq!(
        gauge(&e, &format!("{D1} inactive")),
        1,
        "SYN-ACK does not establish"
    );
    run(&e, 2, &tcp(CLIENT, 40000, VIP, 80, ACK, &[]));
    assert_eq!(
        (
            gauge(&e, &format!("{D1} active")),
            gauge(&e, &format!("{D1} inactive"))
        ),
        (1, 0)
    );
    assert_eq!(full_pass(&e, 2 + t.tcp(TcpState::Established) - 1), 0);
    run(&e, 10, &tcp(RS1, 8080, CLIENT, 40000, FIN | ACK, &[]));
    assert_eq!(
        (
            gauge(&e, &format!("{D1} active")),
            gauge(&e, &format!("{D1} inactive"))
        ),
        (0, 1)
    );
    assert_eq!(full_pass(&e, 10 + t.tcp(TcpState::FinWait) - 1), 0);
    assert_eq!(full_pass(&e, 10 + t.tcp(TcpState::FinWait)), 1);
    assert_eq!(
        (
            gauge(&e, &format!("{D1} active")),
            gauge(&e, &format!("{D1} inactive"))
        ),
        (0, 0)
    );
}

#[test]
fn syn_on_a_closing_connection_is_a_new_connection() {
    let e = engine();
    run(&e, 0, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    // The real server refuses: CLOSE. (A client RST in SYN_RECV keeps SYN_RECV, as in IPVS.)
    run(&e, 1, &tcp(RS1, 8080, CLIENT, 40000, RST, &[]));
    // rr moves on: the reused port gets the second real server.
    let (v, out) = run(&e, 2, &tcp(CLIENT, 40000, VIP, 80, SYN, &[]));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, tcp(CLIENT, 40000, RS2, 8080, SYN, &[]));
    let s = e.stats();
    assert_eq!(s.connections, 1);
    assert_eq!(
        flat(&s)[&format!("{D1} inactive")],
        0,
        "the old entry was uncounted"
    );
}

#[test]
fn reaper_scans_a_bounded_slice_per_call() {
    let e = Engine::new(ulvs_engine::EngineOptions {
        max_connections: 10_000,
        shards: 64,
        hash_seed: 7,
    });
    e.apply_config(&ulvs_engine::Config {
        services: vec![service(
            Protocol::Udp,
            VIP,
            53,
            SchedulerKind::Rr,
            vec![dest(RS2, 5353, 1)],
        )],
    })
    .unwrap();
    for p in 0..2000u16 {
        assert_eq!(
            run(&e, 0, &udp(CLIENT, 10000 + p, VIP, 53, b"q")).0,
            Verdict::Forward
        );
    }
    let after = Timeouts::default().udp_ms;
    let calls = e.expire_calls_per_pass();
    assert!(calls > 1, "one call must not scan the whole table");
    let first = e.expire(ulvs_engine::Timestamp(after));
    assert!(first > 0 && first < 2000, "one call reaped {first}");
    let rest: usize = (1..calls)
        .map(|_| e.expire(ulvs_engine::Timestamp(after)))
        .sum();
    assert_eq!(first + rest, 2000);
    assert_eq!(e.stats().connections, 0);
}

#[test]
fn timeouts_can_be_changed() {
    let e = engine();
    e.set_timeouts(Timeouts {
        udp_ms: 1_000,
        ..Timeouts::default()
    });
    assert_eq!(e.timeouts().udp_ms, 1_000);
    run(&e, 0, &udp(CLIENT, 5000, VIP, 53, b"q"));
    assert_eq!(full_pass(&e, 999), 0);
    assert_eq!(full_pass(&e, 1_000), 1);
}
