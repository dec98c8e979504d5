//! End-to-end persistence (needs root): a persistent service (`-p`) keeps every connection of a
//! client on one real server while several clients (several addresses in the client namespace)
//! spread over the real servers; `ulvsadm -L -n` shows the service flags and `ulvsadm --explain`
//! names the same real server the traffic went to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use integration::client::split;
use integration::topology::{CLIENT_ADDR, RS_TCP_PORT, vip_tcp, vip_udp};
use integration::{Bins, NatRig, require_root};

/// Extra client addresses, added to the client namespace's eth0 (same /24 as CLIENT_ADDR).
fn extra_clients() -> Vec<Ipv4Addr> {
    (3..=10).map(|h| Ipv4Addr::new(198, 18, 0, h)).collect()
}

/// Sends one datagram from `from` (a fresh port) to `target` and returns the real server's name
/// from its answer; each wait is bounded by 1 s, up to 3 tries.
fn udp_from(from: Ipv4Addr, target: SocketAddr) -> Result<String> {
    let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(from), 0))
        .with_context(|| format!("bind UDP socket to {from}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        sock.send_to(b"hello", target)?;
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            ensure!(peer == target, "reply from {peer}, not the VIP {target}");
            let text = std::str::from_utf8(&buf[..n])?;
            let name = text.split_whitespace().next().unwrap_or_default();
            return Ok(name.to_owned());
        }
    }
    bail!("no UDP reply from {target} to {from}")
}

#[test]
fn persistent_service_pins_each_client_while_clients_spread() -> Result<()> {
    require_root()?;
    let rig = NatRig::with_ulvsd(Bins::from_env()?, 3)?;
    for a in extra_clients() {
        rig.client.add_addr("eth0", a, 24)?;
    }

    // TCP: one client, 50 connections, all to one real server.
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr", "-p", "300"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.tcp(), "-m", "-w", "1"])?;
    }
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(
        listing.contains(&format!("TCP  {vip} rr persistent 300")),
        "-L -n does not show the persistent flags:\n{listing}"
    );
    // Before any traffic, explain says which server the client will get.
    let client = format!("{CLIENT_ADDR}:40000");
    let before = rig.ulvsadm(&["--explain", "-t", &vip, "--client", &client])?;
    let replies = rig
        .tcp_probes(vip_tcp(), 50, Duration::from_secs(120))
        .with_context(|| rig.diagnostics())?;
    let by_server = split(&replies);
    ensure!(
        by_server.len() == 1,
        "50 connections of one persistent client went to {by_server:?}"
    );
    let (name, n) = by_server.iter().next().context("no replies")?;
    ensure!(*n == 50, "{by_server:?}");
    let rs = rig
        .servers
        .iter()
        .find(|s| &s.name == name)
        .context("unknown server")?;
    let expected = format!("{}:{RS_TCP_PORT}", rs.addr);
    ensure!(
        before.contains(&expected),
        "explain before the traffic did not name {expected}:\n{before}"
    );
    // Now a template exists: explain says so, and names the same server.
    let after = rig.ulvsadm(&["--explain", "-t", &vip, "--client", &client])?;
    ensure!(
        after.contains("persistence") && after.contains(&expected),
        "explain after the traffic:\n{after}"
    );

    // UDP: nine client addresses, five datagrams (five fresh ports) each: each client sticks to
    // one real server, and rr spreads the clients over all three.
    let uvip = vip_udp().to_string();
    rig.ulvsadm(&["-A", "-u", &uvip, "-s", "rr", "-p"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-u", &uvip, "-r", &rs.udp(), "-m", "-w", "1"])?;
    }
    let mut clients = vec![CLIENT_ADDR];
    clients.extend(extra_clients());
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen: BTreeMap<Ipv4Addr, BTreeSet<String>> = rig.client.run(|| -> Result<_> {
        let mut seen: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
        for &c in &clients {
            for _ in 0..5 {
                ensure!(Instant::now() < deadline, "UDP probes took over 120 s");
                seen.entry(c).or_default().insert(udp_from(c, vip_udp())?);
            }
        }
        Ok(seen)
    })??;
    for (c, servers) in &seen {
        ensure!(
            servers.len() == 1,
            "client {c} was spread over {servers:?}:\n{}",
            rig.diagnostics()
        );
    }
    let used: BTreeSet<&String> = seen.values().flatten().collect();
    ensure!(
        used.len() == rig.servers.len(),
        "nine clients used only {used:?}"
    );
    Ok(())
}
