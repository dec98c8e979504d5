//! The IPVS TCP state machine with a manual clock: every transition of the table, each state's
//! timeout through the engine, the table limit with its counted drop, half-open eviction under
//! a SYN flood, the per-service rate cap, expire_nodest_conn, conn_reuse and the rate estimator.

mod common;

use common::*;
use ulvs_engine::wire::TcpFlags;
use ulvs_engine::{
    Config, ConntrackSettings, Direction, DropReason, Engine, EngineOptions, Protocol,
    SchedulerKind, ServiceKey, TcpState, Timeouts, Timestamp, Verdict,
};

/// IPVS's table (ip_vs_proto_tcp.c, `tcp_states`), written out by state name: per direction,
/// per event (syn fin ack rst), the next state for each current state in IPVS order
/// (NONE ESTABLISHED SYN_SENT SYN_RECV FIN_WAIT TIME_WAIT CLOSE CLOSE_WAIT LAST_ACK LISTEN SYNACK).
const EXPECTED: [(Direction, [&str; 4]); 3] = [
    (
        Direction::Input,
        [
            "SR ES ES SR SR SR SR SR SR SR SR",
            "CL CW SS TW TW TW CL CW LA LI TW",
            "CL ES SS ES FW TW CL CW CL LI ES",
            "CL CL CL SR CL CL CL CL LA LI SR",
        ],
    ),
    (
        Direction::Output,
        [
            "SS ES SS SR SS SS SS SS SS LI SR",
            "TW FW SS TW FW TW CL TW LA LI TW",
            "ES ES SS ES FW TW CL CW LA ES ES",
            "CL CL SS CL CL TW CL CL CL CL CL",
        ],
    ),
    (
        Direction::InputOnly,
        [
            "SR ES ES SR SR SR SR SR SR SR SR",
            "CL FW SS TW FW TW CL CW LA LI TW",
            "CL ES SS ES FW TW CL CW CL LI ES",
            "CL CL CL SR CL CL CL CL LA LI CL",
        ],
    ),
];

fn short(s: TcpState) -> &'static str {
    match s {
        TcpState::None => "NO",
        TcpState::Established => "ES",
        TcpState::SynSent => "SS",
        TcpState::SynRecv => "SR",
        TcpState::FinWait => "FW",
        TcpState::TimeWait => "TW",
        TcpState::Close => "CL",
        TcpState::CloseWait => "CW",
        TcpState::LastAck => "LA",
        TcpState::Listen => "LI",
        TcpState::SynAck => "SA",
    }
}

#[test]
fn every_transition_of_the_ipvs_table() {
    let events = [
        TcpFlags(TcpFlags::SYN),
        TcpFlags(TcpFlags::FIN),
        TcpFlags(TcpFlags::ACK),
        TcpFlags(TcpFlags::RST),
    ];
    for (dir, rows) in EXPECTED {
        for (event, row) in events.iter().zip(rows) {
            let want: Vec<&str> = row.split(' ').collect();
            for (s, w) in TcpState::ALL.iter().zip(&want) {
                assert_eq!(short(s.next(dir, *event)), *w, "{dir:?} {event:?} in {s:?}");
            }
        }
    }
    // Precedence as IPVS: rst over syn over fin over ack; no flag, no change.
    let e = TcpState::Established;
    assert_eq!(
        e.next(Direction::Input, TcpFlags(TcpFlags::RST | TcpFlags::SYN)),
        TcpState::Close
    );
    assert_eq!(
        TcpState::Established.next(Direction::Input, TcpFlags(TcpFlags::SYN | TcpFlags::FIN)),
        TcpState::Established
    );
    assert_eq!(
        e.next(Direction::Input, TcpFlags(TcpFlags::FIN | TcpFlags::ACK)),
        TcpState::CloseWait
    );
    assert_eq!(e.next(Direction::Input, TcpFlags(0)), e);
}

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
            vec![dest(RS1, 53, 1), dest(RS2, 53, 1)],
        ),
    ])
}

/// The single listed entry's (state, expires_in_ms, real server) at `now`.
fn entry(e: &Engine, now: u64) -> Option<(&'static str, u64, std::net::SocketAddr)> {
    let all: Vec<_> = (0..e.connection_pages())
        .flat_map(|p| e.connections(p, Timestamp(now), None))
        .collect();
    assert!(all.len() <= 1, "{all:?}");
    all.first()
        .map(|c| (c.state, c.expires_in_ms, c.real_server))
}

fn full_pass(e: &Engine, now: u64) -> usize {
    (0..e.expire_calls_per_pass())
        .map(|_| e.expire(Timestamp(now)))
        .sum()
}

/// Client segment (to the VIP) or real-server segment (from RS1, as the first rr pick).
fn c(flags: u8) -> Vec<u8> {
    tcp(CLIENT, 40000, VIP, 80, flags, &[])
}
fn s(flags: u8) -> Vec<u8> {
    tcp(RS1, 8080, CLIENT, 40000, flags, &[])
}

/// Distinct timeouts per state, so each check proves the entry uses its own state's value.
fn distinct_timeouts() -> Timeouts {
    let mut t = Timeouts::default();
    for (i, st) in TcpState::ALL.iter().enumerate() {
        t.set_tcp(*st, 10_000 + 1_000 * i as u64);
    }
    t.udp_ms = 7_777;
    t
}

#[test]
fn each_state_expires_at_its_own_timeout() {
    // (segments from t = 0 on, one per ms, the state they lead to)
    let cases: Vec<(Vec<Vec<u8>>, TcpState)> = vec![
        (vec![c(SYN)], TcpState::SynRecv),
        (vec![c(SYN), s(SYN | ACK)], TcpState::SynRecv),
        (vec![c(SYN), s(SYN | ACK), c(ACK)], TcpState::Established),
        (vec![c(SYN), c(ACK), c(FIN | ACK)], TcpState::CloseWait),
        (
            vec![c(SYN), c(ACK), c(FIN | ACK), s(FIN | ACK)],
            TcpState::TimeWait,
        ),
        (vec![c(SYN), c(ACK), s(FIN | ACK)], TcpState::FinWait),
        (
            vec![c(SYN), c(ACK), s(FIN | ACK), c(ACK)],
            TcpState::FinWait,
        ),
        (
            vec![c(SYN), c(ACK), s(FIN | ACK), c(FIN | ACK)],
            TcpState::TimeWait,
        ),
        (vec![c(SYN), c(ACK), c(RST)], TcpState::Close),
        (vec![c(SYN), c(ACK), s(RST)], TcpState::Close),
        (vec![c(SYN), s(RST)], TcpState::Close),
        // A client RST during the handshake keeps SYN_RECV (IPVS).
        (vec![c(SYN), c(RST)], TcpState::SynRecv),
        // The real server opens towards the client after the old connection closed.
        (vec![c(SYN), c(ACK), c(RST), s(SYN)], TcpState::SynSent),
    ];
    let t = distinct_timeouts();
    for (segments, want) in cases {
        let e = engine();
        e.set_timeouts(t);
        let mut now = 0;
        for seg in &segments {
            assert_eq!(run(&e, now, seg).0, Verdict::Forward, "{want:?}");
            now += 1;
        }
        let last = now - 1;
        let timeout = t.tcp(want);
        let (state, expires, _) = entry(&e, last).expect("entry");
        assert_eq!((state, expires), (want.name(), timeout), "{want:?}");
        assert_eq!(
            full_pass(&e, last + timeout - 1),
            0,
            "{want:?} alive before"
        );
        assert_eq!(
            full_pass(&e, last + timeout),
            1,
            "{want:?} gone at its timeout"
        );
        assert_eq!(entry(&e, last + timeout), None);
        let st = e.stats();
        assert_eq!(st.connections, 0);
        for d in &st.services[0].dests {
            assert_eq!((d.active_conns, d.inactive_conns), (0, 0), "{want:?}");
        }
    }
}

#[test]
fn udp_entries_use_the_udp_timeout() {
    let e = engine();
    e.set_timeouts(distinct_timeouts());
    assert_eq!(
        run(&e, 5, &udp(CLIENT, 5000, VIP, 53, b"q")).0,
        Verdict::Forward
    );
    assert_eq!(entry(&e, 5).map(|x| (x.0, x.1)), Some(("UDP", 7_777)));
    assert_eq!(full_pass(&e, 5 + 7_776), 0);
    assert_eq!(full_pass(&e, 5 + 7_777), 1);
}

#[test]
fn ipvsadm_defaults() {
    let t = Timeouts::default();
    assert_eq!(
        (
            t.tcp(TcpState::Established),
            t.tcp(TcpState::FinWait),
            t.udp_ms
        ),
        (900_000, 120_000, 300_000)
    );
    assert_eq!(t.tcp(TcpState::SynRecv), 60_000);
    assert_eq!(t.tcp(TcpState::Close), 10_000);
    assert_eq!(t.tcp(TcpState::None), 2_000);
}

fn small_engine(max: usize) -> Engine {
    let e = Engine::new(EngineOptions {
        max_connections: max,
        shards: 4,
        hash_seed: 3,
    });
    e.apply_config(&Config {
        services: vec![service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Rr,
            vec![dest(RS1, 8080, 1)],
        )],
    })
    .unwrap();
    e
}

fn establish(e: &Engine, now: u64, port: u16) {
    assert_eq!(
        run(e, now, &tcp(CLIENT, port, VIP, 80, SYN, &[])).0,
        Verdict::Forward
    );
    assert_eq!(
        run(e, now, &tcp(CLIENT, port, VIP, 80, ACK, &[])).0,
        Verdict::Forward
    );
}

#[test]
fn full_table_drops_new_flows_with_a_counter_and_keeps_established_ones() {
    let e = small_engine(16);
    for p in 0..16 {
        establish(&e, 0, 1000 + p);
    }
    assert_eq!(e.stats().connections, 16);
    let before = e.stats();
    for p in 0..5 {
        assert_eq!(
            run(&e, 1, &tcp(CLIENT2, 2000 + p, VIP, 80, SYN, &[])).0,
            Verdict::Drop(DropReason::TableFull)
        );
    }
    for p in 0..16 {
        assert_eq!(
            run(&e, 2, &tcp(CLIENT, 1000 + p, VIP, 80, ACK, b"x")).0,
            Verdict::Forward
        );
        assert_eq!(
            run(&e, 2, &tcp(RS1, 8080, CLIENT, 1000 + p, ACK, b"y")).0,
            Verdict::Forward
        );
    }
    let after = e.stats();
    let svc = "TCP 198.18.1.1:80";
    let rs = "TCP 198.18.1.1:80 -> 198.19.0.11:8080";
    assert_delta(
        &before,
        &after,
        &[
            ("drop table_full", 5),
            (&format!("{svc} in_pkts"), 16),
            (&format!("{svc} out_pkts"), 16),
            (&format!("{svc} in_bytes"), 16 * 41),
            (&format!("{svc} out_bytes"), 16 * 41),
            (&format!("{rs} in_pkts"), 16),
            (&format!("{rs} out_pkts"), 16),
            (&format!("{rs} in_bytes"), 16 * 41),
            (&format!("{rs} out_bytes"), 16 * 41),
        ],
    );
    assert_eq!(
        after.evicted_connections, 0,
        "established entries are never evicted"
    );
}

#[test]
fn syn_flood_evicts_half_open_entries_first() {
    let e = small_engine(64);
    for p in 0..16 {
        establish(&e, 0, 1000 + p);
    }
    // A flood of SYNs from many ports: the table fills with half-open entries, then each new
    // SYN evicts some of them.
    let mut forwarded = 0;
    for p in 0..2000u16 {
        if run(&e, 1, &tcp(OTHER, 10000 + p, VIP, 80, SYN, &[])).0 == Verdict::Forward {
            forwarded += 1;
        }
        assert!(e.stats().connections <= 64);
    }
    assert_eq!(forwarded, 2000, "room is made for every new SYN");
    let st = e.stats();
    assert!(
        st.evicted_connections >= 2000 - 48,
        "{}",
        st.evicted_connections
    );
    assert_eq!(st.services[0].dests[0].active_conns, 16);
    // Established flows still flow, and a legitimate client still gets in.
    for p in 0..16 {
        assert_eq!(
            run(&e, 2, &tcp(CLIENT, 1000 + p, VIP, 80, ACK, b"x")).0,
            Verdict::Forward
        );
    }
    establish(&e, 3, 3000);
    assert_eq!(e.stats().services[0].dests[0].active_conns, 17);
}

#[test]
fn new_connection_rate_cap_per_service() {
    let mut svc = service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![dest(RS1, 8080, 1)],
    );
    svc.max_new_connections_per_second = 10;
    let e = engine_with(vec![svc]);
    let syn = |now: u64, port: u16| run(&e, now, &tcp(CLIENT, port, VIP, 80, SYN, &[])).0;
    for p in 0..10 {
        assert_eq!(
            syn(1000, p + 1),
            Verdict::Forward,
            "burst of one second's worth"
        );
    }
    assert_eq!(syn(1000, 100), Verdict::Drop(DropReason::RateLimited));
    // Established traffic is not capped.
    assert_eq!(
        run(&e, 1000, &tcp(CLIENT, 1, VIP, 80, ACK, b"x")).0,
        Verdict::Forward
    );
    // One more per 100 ms.
    assert_eq!(syn(1099, 101), Verdict::Drop(DropReason::RateLimited));
    assert_eq!(syn(1100, 102), Verdict::Forward);
    assert_eq!(syn(1100, 103), Verdict::Drop(DropReason::RateLimited));
    let mut n = 0;
    for ms in (1200..3200).step_by(10) {
        if syn(ms, 200 + (ms / 10) as u16) == Verdict::Forward {
            n += 1;
        }
    }
    assert_eq!(n, 20, "10 per second sustained");
}

fn without(e: &Engine, dests: Vec<ulvs_engine::DestConfig>) {
    e.apply_config(&Config {
        services: vec![
            service(Protocol::Tcp, VIP, 80, SchedulerKind::Rr, dests.clone()),
            service(
                Protocol::Udp,
                VIP,
                53,
                SchedulerKind::Rr,
                dests
                    .iter()
                    .map(|d| dest(ip4(d.addr), 53, d.weight))
                    .collect(),
            ),
        ],
    })
    .unwrap();
}

fn ip4(a: std::net::SocketAddr) -> [u8; 4] {
    match a.ip() {
        std::net::IpAddr::V4(v) => v.octets(),
        _ => unreachable!(),
    }
}

#[test]
fn removed_real_server_flows_are_rescheduled_not_stranded() {
    let e = engine();
    let q = udp(CLIENT, 5000, VIP, 53, b"q");
    assert_eq!(run(&e, 0, &q).1, udp(CLIENT, 5000, RS1, 53, b"q"));
    without(&e, vec![dest(RS2, 8080, 1)]);
    // The next datagram goes to the remaining server at once.
    assert_eq!(run(&e, 1, &q).1, udp(CLIENT, 5000, RS2, 53, b"q"));
    assert_eq!(e.stats().connections, 1);
    // A TCP connection on the removed server: mid-stream segments find no entry; a new SYN
    // from the same port is scheduled.
    let e = engine();
    establish(&e, 0, 40000);
    without(&e, vec![dest(RS2, 8080, 1)]);
    assert_eq!(
        run(&e, 1, &c(ACK)).0,
        Verdict::Drop(DropReason::NoConnection)
    );
    assert_eq!(
        run(&e, 2, &c(SYN)).1,
        tcp(CLIENT, 40000, RS2, 8080, SYN, &[])
    );
}

#[test]
fn without_expire_nodest_conn_flows_stay_on_a_removed_server() {
    let e = engine();
    e.set_conntrack_settings(ConntrackSettings {
        expire_nodest_conn: false,
        ..ConntrackSettings::default()
    });
    let q = udp(CLIENT, 5000, VIP, 53, b"q");
    assert_eq!(run(&e, 0, &q).1, udp(CLIENT, 5000, RS1, 53, b"q"));
    without(&e, vec![dest(RS2, 8080, 1)]);
    assert_eq!(run(&e, 1, &q).1, udp(CLIENT, 5000, RS1, 53, b"q"));
}

#[test]
fn reused_port_in_time_wait_is_rescheduled_at_once() {
    let e = engine();
    for (i, seg) in [c(SYN), c(ACK), c(FIN | ACK), s(FIN | ACK)]
        .iter()
        .enumerate()
    {
        run(&e, i as u64, seg);
    }
    assert_eq!(entry(&e, 4).unwrap().0, "TIME_WAIT");
    // No drop, no stall: the SYN is forwarded to the next rr pick, a fresh entry.
    assert_eq!(
        run(&e, 5, &c(SYN)).1,
        tcp(CLIENT, 40000, RS2, 8080, SYN, &[])
    );
    assert_eq!(entry(&e, 5).unwrap().0, "SYN_RECV");
    assert_eq!(e.stats().connections, 1);

    // With reuse rescheduling off, the SYN reuses the old entry and server.
    let e = engine();
    e.set_conntrack_settings(ConntrackSettings {
        conn_reuse_reschedule: false,
        ..ConntrackSettings::default()
    });
    for (i, seg) in [c(SYN), c(ACK), c(FIN | ACK), s(FIN | ACK)]
        .iter()
        .enumerate()
    {
        run(&e, i as u64, seg);
    }
    assert_eq!(
        run(&e, 5, &c(SYN)).1,
        tcp(CLIENT, 40000, RS1, 8080, SYN, &[])
    );
    assert_eq!(entry(&e, 5).unwrap().0, "SYN_RECV");
}

#[test]
fn syn_on_an_entry_of_a_quiescent_server_is_rescheduled() {
    let e = engine();
    establish(&e, 0, 40000);
    // RS1 drained (weight 0): its established flow keeps going...
    without(&e, vec![dest(RS1, 8080, 0), dest(RS2, 8080, 1)]);
    assert_eq!(
        run(&e, 1, &c(ACK)).1,
        tcp(CLIENT, 40000, RS1, 8080, ACK, &[])
    );
    // ...but a new SYN from the same port goes elsewhere.
    assert_eq!(
        run(&e, 2, &c(SYN)).1,
        tcp(CLIENT, 40000, RS2, 8080, SYN, &[])
    );
}

#[test]
fn rate_estimator_and_zero() {
    let e = engine();
    let key = ServiceKey {
        protocol: Protocol::Udp,
        addr: sa(VIP, 53),
    };
    let q = udp(CLIENT, 5000, VIP, 53, b"q"); // 29 bytes
    e.estimate(Timestamp(0));
    // 100 packets per 2-second tick, steadily.
    let mut now = 0;
    for _ in 0..40 {
        for _ in 0..100 {
            run(&e, now, &q);
        }
        now += 2_000;
        e.estimate(Timestamp(now));
    }
    let st = e.stats();
    let svc = st.services.iter().find(|s| s.key == key).unwrap();
    assert_eq!(svc.rates.in_pps, 50);
    assert_eq!(svc.rates.in_bps, 50 * 29);
    assert_eq!(svc.rates.cps, 0, "one connection, long ago");
    assert_eq!(svc.counters.in_pkts, 4000);
    assert!(e.zero_counters(Some(&key)));
    let st = e.stats();
    let svc = st.services.iter().find(|s| s.key == key).unwrap();
    assert_eq!((svc.counters.in_pkts, svc.rates.in_pps), (0, 0));
    assert_eq!(svc.dests[0].counters.in_pkts, 0);
    assert_eq!(st.connections, 1, "zeroing keeps the connections");
    assert!(!e.zero_counters(Some(&ServiceKey {
        protocol: Protocol::Udp,
        addr: sa(VIP, 54),
    })));
    // The estimator restarts from zero, not from a huge negative delta.
    run(&e, now, &q);
    e.estimate(Timestamp(now + 2_000));
    let st = e.stats();
    let svc = st.services.iter().find(|s| s.key == key).unwrap();
    assert_eq!(svc.rates.in_pps, 0, "(1 packet / 2 s) / 4 rounds to 0");
}
