//! End-to-end NAT tests (needs root): real `ulvsd` in a director namespace, configured with the
//! real `ulvsadm`, real TCP/UDP traffic from a client namespace to test servers.
//!
//! Each test builds its own rig (own namespaces, TUN, control socket), so they may run in parallel.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::client::{Reply, split};
use integration::topology::{
    CLIENT_ADDR, DIRECTOR_RS_ADDR, RS_TCP_PORT, TUN_NAME, VIP, vip_tcp, vip_udp,
};
use integration::{Bins, NatRig, require_root, run_cmd};

fn rig(n_servers: usize) -> Result<NatRig> {
    require_root()?;
    NatRig::with_ulvsd(Bins::from_env()?, n_servers)
}

/// Every reply came from `vip` and the real server saw the client's own address and port (NAT
/// rewrites only the destination on the way in and only the source on the way out).
fn check_nat_replies(replies: &[Reply], vip: SocketAddr) -> Result<()> {
    for r in replies {
        ensure!(
            r.peer == vip,
            "reply from {} instead of the VIP {vip}: {r:?}",
            r.peer
        );
        ensure!(
            r.seen_client == SocketAddr::new(CLIENT_ADDR.into(), r.local.port()),
            "real server {} saw client {} instead of {}:{}",
            r.server,
            r.seen_client,
            CLIENT_ADDR,
            r.local.port()
        );
    }
    Ok(())
}

/// The TCP VIP service (rr) with the first real server behind it, masqueraded.
fn nat_service_on_first_server(rig: &NatRig) -> Result<()> {
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    rig.ulvsadm(&["-a", "-t", &vip, "-r", &rig.servers[0].tcp(), "-m"])?;
    Ok(())
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn tcp_rr_spreads_connections_over_both_real_servers() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.tcp(), "-m", "-w", "1"])?;
    }
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    for rs in &rig.servers {
        ensure!(
            listing.contains(&rs.tcp()) && listing.contains("Masq"),
            "-L -n does not list {} as Masq:\n{listing}",
            rs.tcp()
        );
    }

    let replies = rig
        .tcp_probes(vip_tcp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check_nat_replies(&replies, vip_tcp())?;
    assert_eq!(split(&replies), counts(&[("rs1", 10), ("rs2", 10)]));
    Ok(())
}

#[test]
fn udp_rr_spreads_datagrams_over_both_real_servers() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_udp().to_string();
    rig.ulvsadm(&["-A", "-u", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-u", &vip, "-r", &rs.udp(), "-m", "-w", "1"])?;
    }
    let replies = rig
        .udp_probes(vip_udp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check_nat_replies(&replies, vip_udp())?;
    assert_eq!(split(&replies), counts(&[("rs1", 10), ("rs2", 10)]));
    Ok(())
}

#[test]
fn deleted_real_server_gets_no_new_connections() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.tcp(), "-m"])?;
    }
    let before = rig
        .tcp_probes(vip_tcp(), 4, Duration::from_secs(30))
        .with_context(|| rig.diagnostics())?;
    assert_eq!(split(&before), counts(&[("rs1", 2), ("rs2", 2)]));

    let gone = &rig.servers[1];
    rig.ulvsadm(&["-d", "-t", &vip, "-r", &gone.tcp()])?;
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(
        !listing.contains(&gone.tcp()),
        "{} still listed after -d:\n{listing}",
        gone.tcp()
    );

    let after = rig
        .tcp_probes(vip_tcp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check_nat_replies(&after, vip_tcp())?;
    assert_eq!(split(&after), counts(&[("rs1", 20)]));
    Ok(())
}

#[test]
fn wrr_weights_3_to_1_split_400_connections_3_to_1() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "wrr"])?;
    let (heavy, light) = (&rig.servers[0], &rig.servers[1]);
    rig.ulvsadm(&["-a", "-t", &vip, "-r", &heavy.tcp(), "-m", "-w", "3"])?;
    rig.ulvsadm(&["-a", "-t", &vip, "-r", &light.tcp(), "-m", "-w", "1"])?;

    let replies = rig
        .tcp_probes(vip_tcp(), 400, Duration::from_secs(180))
        .with_context(|| rig.diagnostics())?;
    check_nat_replies(&replies, vip_tcp())?;
    let got = split(&replies);
    let h = got.get(&heavy.name).copied().unwrap_or(0);
    let l = got.get(&light.name).copied().unwrap_or(0);
    assert_eq!(h + l, 400, "unexpected servers in {got:?}");
    // 3:1 of 400 is 300:100; allow 10%.
    assert!(h.abs_diff(300) <= 30, "wrr 3:1 gave {got:?}");
    assert!(l.abs_diff(100) <= 10, "wrr 3:1 gave {got:?}");
    Ok(())
}

#[test]
fn edited_weight_changes_the_split_of_new_connections() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "wrr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.tcp(), "-m", "-w", "1"])?;
    }
    let even = rig
        .tcp_probes(vip_tcp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    assert_eq!(split(&even), counts(&[("rs1", 10), ("rs2", 10)]));

    rig.ulvsadm(&[
        "-e",
        "-t",
        &vip,
        "-r",
        &rig.servers[1].tcp(),
        "-m",
        "-w",
        "3",
    ])?;
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(
        listing
            .lines()
            .any(|l| l.contains(&rig.servers[1].tcp()) && l.split_whitespace().nth(3) == Some("3")),
        "weight 3 not listed for {}:\n{listing}",
        rig.servers[1].tcp()
    );
    let skewed = rig
        .tcp_probes(vip_tcp(), 40, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check_nat_replies(&skewed, vip_tcp())?;
    assert_eq!(split(&skewed), counts(&[("rs1", 10), ("rs2", 30)]));
    Ok(())
}

/// The TUN ulvsd makes by default: three queues per CPU the process may use (at most 64), no
/// qdisc in front of it, `accept_local` on; traffic still flows.
#[test]
fn default_tun_has_three_queues_per_cpu_and_no_qdisc() -> Result<()> {
    let rig = rig(1)?;
    let queues = run_cmd(
        rig.director
            .command("ls")
            .arg(format!("/sys/class/net/{TUN_NAME}/queues")),
    )?;
    let tx = queues.lines().filter(|l| l.starts_with("tx-")).count();
    let rx = queues.lines().filter(|l| l.starts_with("rx-")).count();
    let want = (3 * std::thread::available_parallelism()?.get()).min(64);
    assert_eq!((tx, rx), (want, want), "queues: {queues}");
    let qdisc = run_cmd(
        rig.director
            .command("tc")
            .args(["qdisc", "show", "dev", TUN_NAME]),
    )?;
    ensure!(
        qdisc.starts_with("qdisc noqueue ") && qdisc.lines().count() == 1,
        "{TUN_NAME} has a qdisc: {qdisc}"
    );
    assert_eq!(
        rig.director
            .read_sysctl(&format!("net/ipv4/conf/{TUN_NAME}/accept_local"))?,
        "1"
    );
    nat_service_on_first_server(&rig)?;
    let replies = rig.tcp_probes(vip_tcp(), 20, Duration::from_secs(30))?;
    check_nat_replies(&replies, vip_tcp())
}

#[test]
fn nat_replies_reach_the_tun_through_tc_filters_and_the_directors_own_go_to_its_stack() -> Result<()>
{
    let rig = rig(1)?;
    let (filters, qdiscs) = rig.bridge_tc()?;
    ensure!(
        filters.trim().is_empty() && !qdiscs.contains("clsact"),
        "tc on br0 before any service: {filters}{qdiscs}"
    );
    let vip = vip_tcp().to_string();
    nat_service_on_first_server(&rig)?;
    let (filters, qdiscs) = rig.bridge_tc()?;
    let rs_hex = format!("{:08x}/ffffffff at 12", u32::from(rig.servers[0].addr));
    let port_hex = format!("{RS_TCP_PORT:04x}0000/ffff0000 at 20");
    ensure!(
        qdiscs.contains("qdisc clsact")
            && filters.contains(&rs_hex)
            && filters.contains(&port_hex)
            && filters.contains(&format!("Egress Redirect to device {TUN_NAME}")),
        "no redirect filter for the real server on br0:\n{filters}{qdiscs}"
    );

    // The director's own connection to the real server's service port, before any client
    // traffic: its replies meet a pass filter for the director's address ahead of the
    // redirect and go straight to the director's socket, as the `local` table took them
    // before any policy rule.
    let rs = SocketAddr::new(rig.servers[0].addr.into(), RS_TCP_PORT);
    let own = rig
        .director
        .run(|| integration::client::tcp_once(rs, Duration::from_secs(5)))??;
    ensure!(
        own.peer == rs && own.seen_client.ip() == std::net::IpAddr::from(DIRECTOR_RS_ADDR),
        "director's own connection: {own:?}"
    );
    let redirected = rig.redirected_packets()?;
    ensure!(
        redirected == 0,
        "{redirected} packets of the director's own connection went to the TUN:\n{}",
        rig.bridge_tc()?.0
    );

    let replies = rig.tcp_probes(vip_tcp(), 20, Duration::from_secs(30))?;
    check_nat_replies(&replies, vip_tcp())?;
    // A connection's replies are at least the SYN-ACK, the greeting and the echo.
    let redirected = rig.redirected_packets()?;
    ensure!(
        redirected >= 3 * 20,
        "the filters handed on {redirected} packets for 20 connections\n{}",
        rig.bridge_tc()?.0
    );

    // Without a NAT real server the filters and our clsact qdisc go.
    rig.ulvsadm(&["-d", "-t", &vip, "-r", &rig.servers[0].tcp()])?;
    let (filters, qdiscs) = rig.bridge_tc()?;
    ensure!(
        filters.trim().is_empty() && !qdiscs.contains("clsact"),
        "tc on br0 after the real server was removed: {filters}{qdiscs}"
    );
    Ok(())
}

#[test]
fn without_reply_redirects_the_policy_rules_alone_steer_replies() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 1)?;
    rig.start_ulvsd_with(&["--no-reply-redirect"])?;
    nat_service_on_first_server(&rig)?;
    let (filters, qdiscs) = rig.bridge_tc()?;
    ensure!(
        filters.trim().is_empty() && !qdiscs.contains("clsact"),
        "tc on br0 with --no-reply-redirect: {filters}{qdiscs}"
    );
    let replies = rig.tcp_probes(vip_tcp(), 10, Duration::from_secs(30))?;
    check_nat_replies(&replies, vip_tcp())
}

#[test]
fn a_killed_daemons_redirect_filters_are_removed_by_the_next_start() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 1)?;
    rig.start_ulvsd()?;
    nat_service_on_first_server(&rig)?;
    let proc = rig.ulvsd().context("ulvsd is running")?;
    proc.signal(libc::SIGKILL)?;
    integration::wait_until("ulvsd to die", Duration::from_secs(10), || {
        Ok(proc.try_wait()?.is_some())
    })?;
    let (left, _) = rig.bridge_tc()?;
    ensure!(
        left.contains("u32"),
        "a killed ulvsd left no filter to clean up: {left}"
    );
    rig.stop_ulvsd(Duration::from_secs(1))?;

    rig.start_ulvsd()?;
    let (filters, _) = rig.bridge_tc()?;
    ensure!(
        filters.trim().is_empty(),
        "the filters of the killed run are still there: {filters}"
    );
    nat_service_on_first_server(&rig)?;
    let replies = rig.tcp_probes(vip_tcp(), 5, Duration::from_secs(30))?;
    check_nat_replies(&replies, vip_tcp())?;
    ensure!(rig.redirected_packets()? >= 15);
    Ok(())
}

#[test]
fn sigterm_exits_cleanly_and_removes_routes_and_rules() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 1)?;
    // IPv6 forwarding (which --configure-sysctls turns on and leaves on, as a sysctl file would)
    // makes the kernel add a subnet-router anycast route per interface: on before the snapshot,
    // so that only what ulvsd itself adds and removes can differ.
    rig.director.sysctl("net/ipv6/conf/all/forwarding", "1")?;
    let rules_before = rig.director.ip(&["rule", "show"])?;
    let routes_before = rig.director.ip(&["route", "show", "table", "all"])?;
    let tc_before = rig.bridge_tc()?;
    rig.start_ulvsd()?;
    // --configure-sysctls turned forwarding on and reverse-path filtering off.
    assert_eq!(rig.director.read_sysctl("net/ipv4/ip_forward")?, "1");

    nat_service_on_first_server(&rig)?;
    let route = rig.director.ip(&["route", "get", &VIP.to_string()])?;
    ensure!(
        route.contains(&format!("dev {TUN_NAME}")),
        "VIP not routed into {TUN_NAME}: {route}"
    );
    let replies = rig.tcp_probes(vip_tcp(), 2, Duration::from_secs(30))?;
    check_nat_replies(&replies, vip_tcp())?;

    let status = rig.stop_ulvsd(Duration::from_secs(10))?;
    ensure!(status.success(), "ulvsd exited with {status} after SIGTERM");
    let rules_after = rig.director.ip(&["rule", "show"])?;
    let routes_after = rig.director.ip(&["route", "show", "table", "all"])?;
    assert_eq!(rules_after, rules_before, "policy rules left behind");
    assert_eq!(routes_after, routes_before, "routes left behind");
    assert_eq!(
        rig.bridge_tc()?,
        tc_before,
        "tc filters or qdisc left behind"
    );
    ensure!(
        rig.director.ip(&["link", "show", TUN_NAME]).is_err(),
        "{TUN_NAME} still exists after ulvsd exited"
    );
    Ok(())
}
