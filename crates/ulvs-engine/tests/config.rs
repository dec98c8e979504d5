//! Applying configurations: refusals change nothing, surviving services and real servers keep
//! their counters.

mod common;

use common::*;
use ulvs_engine::{
    Config, ConfigError, ForwardMethod, Persistence, Protocol, SchedulerKind, Verdict,
};

fn base() -> Config {
    Config {
        services: vec![
            service(
                Protocol::Tcp,
                VIP,
                80,
                SchedulerKind::Wlc,
                vec![dest(RS1, 80, 1), dest(RS2, 80, 1)],
            ),
            service(
                Protocol::Udp,
                VIP,
                53,
                SchedulerKind::Rr,
                vec![dest(RS3, 53, 1)],
            ),
        ],
    }
}

#[test]
fn refused_configurations_change_nothing() {
    let e = engine_with(base().services);
    run(&e, 1, &tcp(CLIENT, 1000, VIP, 80, SYN, &[]));
    let before = e.stats();

    let mut c = base();
    c.services[1].dests[0].forward = ForwardMethod::FullNat;
    // FULLNAT without local addresses on the service.
    assert!(matches!(
        e.apply_config(&c),
        Err(ConfigError::NoLocalAddress(..))
    ));

    let mut c = base();
    c.services[0].persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: 33,
    });
    assert!(matches!(
        e.apply_config(&c),
        Err(ConfigError::BadPrefix(_, 33))
    ));

    let mut c = base();
    c.services.push(c.services[0].clone());
    assert!(matches!(
        e.apply_config(&c),
        Err(ConfigError::DuplicateService(_))
    ));

    let mut c = base();
    c.services[0].dests[1].upper_threshold = 1;
    c.services[0].dests[1].lower_threshold = 5;
    c.services
        .push(service(Protocol::Tcp, VIP2, 80, SchedulerKind::Mh, vec![]));
    assert!(e.apply_config(&c).is_err());

    assert_eq!(e.stats(), before);
    // The old configuration still forwards.
    assert_eq!(
        run(&e, 2, &udp(CLIENT, 5, VIP, 53, b"q")).0,
        Verdict::Forward
    );
}

#[test]
fn counters_survive_a_change_and_go_with_their_service() {
    let e = engine_with(base().services);
    run(&e, 1, &tcp(CLIENT, 1000, VIP, 80, SYN, &[]));
    run(&e, 1, &udp(CLIENT, 5, VIP, 53, b"q"));
    let before = e.stats();

    // Drop the UDP service, add a real server, change a weight, add a service.
    let mut c = base();
    c.services.remove(1);
    c.services[0].dests[1].weight = 7;
    c.services[0].dests.insert(0, dest(RS3, 80, 1));
    c.services.push(service(
        Protocol::Tcp,
        VIP2,
        443,
        SchedulerKind::Wrr,
        vec![dest(RS1, 443, 1)],
    ));
    e.apply_config(&c).unwrap();

    let after = e.stats();
    assert_eq!(after.services.len(), 2);
    let web0 = &before.services[0];
    let web1 = &after.services[0];
    assert_eq!(web1.counters, web0.counters);
    assert_eq!(web1.dests.len(), 3);
    assert_eq!(
        web1.dests[0].counters,
        Default::default(),
        "new real server starts at zero"
    );
    assert_eq!(web1.dests[1], web0.dests[0]);
    assert_eq!(web1.dests[2], web0.dests[1]);
    assert_eq!(after.services[1].counters, Default::default());
    assert_eq!(
        after.connections, 2,
        "connections of a removed service live on"
    );
    assert_eq!(after.max_connections, opts().max_connections);

    // Re-adding a removed service starts it from zero.
    e.apply_config(&base()).unwrap();
    assert_eq!(e.stats().services[1].counters, Default::default());
}

#[test]
fn empty_configuration_passes_everything() {
    let e = engine_with(base().services);
    e.apply_config(&Config::default()).unwrap();
    let p = tcp(CLIENT, 1000, VIP, 80, SYN, &[]);
    assert_eq!(run(&e, 1, &p), (Verdict::Pass, p.clone()));
    assert!(e.stats().services.is_empty());
}
