//! Persistence through real packets: templates pin a client (or its network) to one real
//! server, count as persistent connections, survive while connections hold them and expire
//! after the timeout; port-0 services share one choice across ports; one-packet UDP scheduling
//! keeps no state; `Engine::explain` answers without creating state.

mod common;

use common::*;
use ulvs_engine::{
    Config, ConntrackSettings, Engine, ExplainError, ExplainOutcome, Persistence, Protocol,
    SchedulerKind, Timestamp, Verdict,
};

fn persistent(kind: SchedulerKind, port: u16, prefix_len: u8, timeout_secs: u32) -> Engine {
    let mut s = service(
        Protocol::Tcp,
        VIP,
        port,
        kind,
        vec![dest(RS1, 80, 1), dest(RS2, 80, 1), dest(RS3, 80, 1)],
    );
    s.persistence = Some(Persistence {
        timeout_secs,
        prefix_len,
    });
    engine_with(vec![s])
}

/// Opens a connection (SYN) from `client:port` to VIP:vport at `now`; returns the real server.
fn open(e: &Engine, now: u64, client: [u8; 4], port: u16, vport: u16) -> [u8; 4] {
    let (v, out) = run(e, now, &tcp(client, port, VIP, vport, SYN, &[]));
    assert_eq!(v, Verdict::Forward, "SYN {client:?}:{port}");
    [out[16], out[17], out[18], out[19]]
}

fn persistent_conns(e: &Engine) -> Vec<u32> {
    e.stats().services[0]
        .dests
        .iter()
        .map(|d| d.persistent_conns)
        .collect()
}

#[test]
fn one_client_sticks_while_clients_spread() {
    let e = persistent(SchedulerKind::Rr, 80, 32, 300);
    let first = open(&e, 1, CLIENT, 1000, 80);
    for p in 1001..1050 {
        assert_eq!(open(&e, 2, CLIENT, p, 80), first, "port {p}");
    }
    // rr moves on for other clients: three clients, three servers.
    let mut seen = vec![first];
    for c in 0..2u8 {
        let rs = open(&e, 3, [198, 18, 0, 100 + c], 2000, 80);
        assert!(!seen.contains(&rs), "{rs:?} again");
        seen.push(rs);
    }
    assert_eq!(persistent_conns(&e), vec![1, 1, 1]);
    assert_eq!(e.template_count(), 3);
    let t = e.templates(Timestamp(3));
    assert_eq!(t.len(), 3);
    let mine = t.iter().find(|t| t.client == sa(CLIENT, 0).ip()).unwrap();
    assert_eq!(mine.connections, 50);
    assert_eq!(mine.virtual_addr, sa(VIP, 80));
}

#[test]
fn netmask_groups_clients() {
    let e = persistent(SchedulerKind::Rr, 80, 24, 300);
    let a = open(&e, 1, [198, 18, 5, 1], 1, 80);
    for host in 2..20 {
        assert_eq!(open(&e, 1, [198, 18, 5, host], 1, 80), a);
    }
    assert_ne!(open(&e, 1, [198, 18, 6, 1], 1, 80), a);
}

#[test]
fn port_zero_service_shares_one_choice_across_ports() {
    let e = persistent(SchedulerKind::Rr, 0, 32, 300);
    let a = open(&e, 1, CLIENT, 1000, 80);
    assert_eq!(open(&e, 1, CLIENT, 1001, 443), a);
    assert_eq!(open(&e, 1, CLIENT, 1002, 8080), a);
    assert_ne!(open(&e, 1, CLIENT2, 1000, 443), a);
}

#[test]
fn template_outlives_connections_then_expires() {
    let e = persistent(SchedulerKind::Rr, 80, 32, 10);
    let a = open(&e, 0, CLIENT, 1000, 80);
    // Reap every 100 ms until the SYN_RECV connection idles out (bounded: one hour).
    let mut t = 0;
    while e.stats().connections > 0 {
        assert!(t < 3_600_000, "the connection never expired");
        t += 100;
        e.expire(Timestamp(t));
    }
    // The template stays while connections hold it, and 10 s after the last pass that saw one.
    assert_eq!(e.template_count(), 1);
    assert_eq!(e.templates(Timestamp(t))[0].connections, 0);
    assert_eq!(open(&e, t + 5_000, CLIENT, 1001, 80), a);
    let end = t + 5_000;
    // Now the second connection idles out, then the template 10 s later.
    let mut t = end;
    while e.template_count() > 0 {
        assert!(t < end + 3_600_000, "the template never expired");
        t += 100;
        e.expire(Timestamp(t));
    }
    assert_eq!(e.stats().connections, 0);
    assert_eq!(persistent_conns(&e), vec![0, 0, 0]);
    // A fresh choice: rr moved on from `a`.
    assert_ne!(open(&e, t + 1, CLIENT, 1002, 80), a);
}

#[test]
fn removed_real_server_invalidates_its_template() {
    let e = persistent(SchedulerKind::Rr, 80, 32, 300);
    assert_eq!(open(&e, 1, CLIENT, 1000, 80), RS1);
    let mut cfg = Config {
        services: vec![service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Rr,
            vec![dest(RS2, 80, 1), dest(RS3, 80, 1)],
        )],
    };
    cfg.services[0].persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: 32,
    });
    e.apply_config(&cfg).unwrap();
    let b = open(&e, 2, CLIENT, 1001, 80);
    assert_ne!(b, RS1);
    assert_eq!(open(&e, 3, CLIENT, 1002, 80), b);
}

#[test]
fn quiescent_server_keeps_its_persistent_clients() {
    let e = persistent(SchedulerKind::Rr, 80, 32, 300);
    assert_eq!(open(&e, 1, CLIENT, 1000, 80), RS1);
    let mut cfg = Config {
        services: vec![service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Rr,
            vec![dest(RS1, 80, 0), dest(RS2, 80, 1), dest(RS3, 80, 1)],
        )],
    };
    cfg.services[0].persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: 32,
    });
    e.apply_config(&cfg).unwrap();
    // expire_quiescent_template off (the kernel's default): the template still applies.
    e.set_conntrack_settings(ConntrackSettings {
        expire_quiescent_template: false,
        ..e.conntrack_settings()
    });
    assert_eq!(open(&e, 2, CLIENT, 1001, 80), RS1);
    // On (ulvs's default): the template is dropped and the client rescheduled.
    e.set_conntrack_settings(ConntrackSettings {
        expire_quiescent_template: true,
        ..e.conntrack_settings()
    });
    let moved = open(&e, 2, CLIENT, 1002, 80);
    assert_ne!(moved, RS1);
    assert_eq!(open(&e, 2, CLIENT, 1003, 80), moved);
    // New clients avoid the quiescent server.
    assert_ne!(open(&e, 2, CLIENT2, 1001, 80), RS1);
}

#[test]
fn one_packet_udp_keeps_no_connection() {
    let mut s = service(
        Protocol::Udp,
        VIP,
        53,
        SchedulerKind::Rr,
        vec![dest(RS1, 53, 1), dest(RS2, 53, 1)],
    );
    s.one_packet = true;
    let e = engine_with(vec![s]);
    let mut to = Vec::new();
    for _ in 0..4 {
        let (v, out) = run(&e, 1, &udp(CLIENT, 5000, VIP, 53, b"q"));
        assert_eq!(v, Verdict::Forward);
        to.push([out[16], out[17], out[18], out[19]]);
    }
    // The same client tuple is scheduled afresh every packet.
    assert_eq!(to, vec![RS1, RS2, RS1, RS2]);
    let st = e.stats();
    assert_eq!(st.connections, 0);
    assert_eq!(st.services[0].counters.conns, 4);
    assert_eq!(st.services[0].counters.in_pkts, 4);
}

#[test]
fn explain_is_pure_and_matches_what_happens() {
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![dest(RS1, 80, 1), dest(RS2, 80, 0), dest(RS3, 80, 1)],
    )]);
    let ask = |now| {
        e.explain(Timestamp(now), Protocol::Tcp, sa(VIP, 80), sa(CLIENT, 1000))
            .unwrap()
    };
    let x = ask(1);
    assert_eq!(x.outcome, ExplainOutcome::Scheduled);
    assert_eq!(x.real_server, Some(sa(RS1, 80)));
    assert!(
        x.reasons.iter().any(|r| r.contains("quiescent")),
        "{:?}",
        x.reasons
    );
    // Asking again gives the same answer: the rr cursor did not move.
    assert_eq!(ask(1), x);
    assert_eq!(e.stats().connections, 0);
    // What explain said is what happens.
    assert_eq!(
        run(&e, 2, &tcp(CLIENT, 1000, VIP, 80, SYN, &[])).1[16..20],
        RS1
    );
    let x = ask(3);
    assert_eq!(x.outcome, ExplainOutcome::ExistingConnection);
    assert_eq!(x.real_server, Some(sa(RS1, 80)));
    // Another client port: the next rr pick.
    let y = e
        .explain(Timestamp(3), Protocol::Tcp, sa(VIP, 80), sa(CLIENT, 1001))
        .unwrap();
    assert_eq!(y.real_server, Some(sa(RS3, 80)));

    assert_eq!(
        e.explain(Timestamp(3), Protocol::Udp, sa(VIP, 80), sa(CLIENT, 1)),
        Err(ExplainError::NoService(ulvs_engine::ServiceKey {
            protocol: Protocol::Udp,
            addr: sa(VIP, 80)
        }))
    );
}

#[test]
fn explain_reports_persistence_and_no_destination() {
    let e = persistent(SchedulerKind::Wlc, 80, 32, 300);
    let x = e
        .explain(Timestamp(1), Protocol::Tcp, sa(VIP, 80), sa(CLIENT, 1))
        .unwrap();
    assert_eq!(x.outcome, ExplainOutcome::Scheduled);
    assert!(x.reasons.iter().any(|r| r.contains("would be created")));
    assert_eq!(e.template_count(), 0);
    let rs = open(&e, 2, CLIENT, 7, 80);
    let x = e
        .explain(Timestamp(3), Protocol::Tcp, sa(VIP, 80), sa(CLIENT, 8))
        .unwrap();
    assert_eq!(x.outcome, ExplainOutcome::Persistence);
    assert_eq!(x.real_server, Some(sa(rs, 80)));

    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Sh,
        vec![dest(RS1, 80, 0)],
    )]);
    let x = e
        .explain(Timestamp(1), Protocol::Tcp, sa(VIP, 80), sa(CLIENT, 1))
        .unwrap();
    assert_eq!(x.outcome, ExplainOutcome::NoDestination);
    assert_eq!(x.real_server, None);
}
