//! Tests of the rig itself (needs root): namespace guards, cleanup, the test server and probes.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use integration::topology::{CLIENT_ADDR, RS_TCP_PORT, RS_UDP_PORT};
use integration::{Bins, NatRig, Netns, cleanup, require_root};

fn exists(name: &str) -> bool {
    Path::new(integration::netns::NETNS_RUN_DIR)
        .join(name)
        .exists()
}

#[test]
fn namespace_is_removed_on_drop_and_on_panic() -> Result<()> {
    require_root()?;
    let ns = Netns::new("guard")?;
    let name = ns.name().to_owned();
    assert!(name.starts_with(&format!("ulvs-{}-", std::process::id())));
    assert!(exists(&name));
    drop(ns);
    assert!(!exists(&name), "{name} survived its guard");

    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let ns = Netns::new("panic").expect("create namespace");
        tx.send(ns.name().to_owned()).expect("send name");
        panic!("test panic while {} is alive", ns.name());
    });
    assert!(result.is_err());
    let name = rx.recv()?;
    assert!(!exists(&name), "{name} survived a panic");
    Ok(())
}

#[test]
fn addresses_outside_the_test_range_are_refused() -> Result<()> {
    require_root()?;
    let ns = Netns::new("addr")?;
    assert!(ns.add_addr("lo", "10.0.0.1".parse()?, 32).is_err());
    assert!(ns.add_addr("lo", "198.20.0.1".parse()?, 32).is_err());
    ns.add_addr("lo", "198.19.255.1".parse()?, 32)?;
    assert!(ns.sysctl("kernel/hostname", "x").is_err());
    Ok(())
}

#[test]
fn cleanup_removes_only_leftovers_of_dead_creators() -> Result<()> {
    require_root()?;
    // A PID that is certainly dead: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn()?;
    let dead = child.id();
    child.wait()?;
    let leftover = format!("ulvs-{dead}-0-leftover");
    integration::run_cmd(std::process::Command::new("ip").args(["netns", "add", &leftover]))?;
    let live = Netns::new("live")?;
    let leftover_dir =
        std::env::temp_dir().join(format!("{}{dead}-test", cleanup::TEMP_DIR_PREFIX));
    std::fs::create_dir_all(leftover_dir.join("sub"))?;

    let removed = cleanup::remove_leftovers()?;
    assert!(
        !leftover_dir.exists(),
        "leftover {} not removed",
        leftover_dir.display()
    );
    let still_there = exists(&leftover);
    if still_there {
        // Do not leak it if the assertion below fails.
        let _ = integration::run_cmd(
            std::process::Command::new("ip").args(["netns", "del", &leftover]),
        );
    }
    assert!(!still_there, "leftover {leftover} not removed");
    assert!(removed.contains(&leftover), "removed: {removed:?}");
    assert!(
        exists(live.name()),
        "cleanup removed a live run's namespace"
    );
    Ok(())
}

#[test]
fn test_servers_answer_through_plain_kernel_forwarding() -> Result<()> {
    require_root()?;
    let rig = NatRig::new(Bins::from_env()?, 2)?;
    // No ulvsd here: plain routing through the director proves the rig and the test server.
    rig.director.sysctl("net/ipv4/ip_forward", "1")?;
    assert_eq!(rig.director.read_sysctl("net/ipv4/ip_forward")?, "1");
    for rs in &rig.servers {
        let tcp = SocketAddr::V4(SocketAddrV4::new(rs.addr, RS_TCP_PORT));
        let replies = rig.tcp_probes(tcp, 3, Duration::from_secs(20))?;
        for r in &replies {
            assert_eq!(r.server, rs.name);
            assert_eq!(r.peer, tcp);
            assert_eq!(
                r.seen_client,
                SocketAddr::new(CLIENT_ADDR.into(), r.local.port())
            );
        }
        let udp = SocketAddr::V4(SocketAddrV4::new(rs.addr, RS_UDP_PORT));
        let replies = rig.udp_probes(udp, 3, Duration::from_secs(20))?;
        for r in &replies {
            assert_eq!(r.server, rs.name);
            assert_eq!(r.peer, udp);
            assert_eq!(r.seen_client, r.local);
        }
    }
    Ok(())
}
