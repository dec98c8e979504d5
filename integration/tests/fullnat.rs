//! End-to-end FULLNAT tests (needs root): real `ulvsd` configured with the real `ulvsadm`
//! (`-P ... -z` local addresses, `--fullnat` real servers); the real servers see a local
//! address as the client, and the client still talks to the VIP only.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::client::{Reply, split};
use integration::topology::{vip_tcp, vip_udp};
use integration::{Bins, NatRig, require_root};

/// The FULLNAT local addresses: on no link; ulvsd routes them into its TUN, and the real
/// servers reach them through their default route (the director).
const LADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 2, 1), Ipv4Addr::new(198, 18, 2, 2)];

fn rig(n_servers: usize) -> Result<NatRig> {
    require_root()?;
    NatRig::with_ulvsd(Bins::from_env()?, n_servers)
}

/// A FULLNAT service `flag vip` (rr) with both local addresses and every real server.
fn configure(rig: &NatRig, flag: &str, vip: &str, udp: bool) -> Result<()> {
    rig.ulvsadm(&["-A", flag, vip, "-s", "rr"])?;
    for l in LADDRS {
        rig.ulvsadm(&["-P", flag, vip, "-z", &l.to_string()])?;
    }
    for rs in &rig.servers {
        let r = if udp { rs.udp() } else { rs.tcp() };
        rig.ulvsadm(&["-a", flag, vip, "-r", &r, "--fullnat", "-w", "1"])?;
    }
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(
        listing.matches("FullNat").count() == rig.servers.len(),
        "-L -n does not show every real server as FullNat:\n{listing}"
    );
    let laddrs = rig.ulvsadm(&["-G", flag, vip])?;
    for l in LADDRS {
        ensure!(
            laddrs.contains(&format!("laddr {l}\n")),
            "-G misses {l}:\n{laddrs}"
        );
    }
    Ok(())
}

/// Every reply came from the VIP, and every real server saw one of the local addresses (never
/// the client) as the source.
fn check_fullnat_replies(replies: &[Reply], vip: SocketAddr) -> Result<BTreeSet<IpAddr>> {
    let mut seen = BTreeSet::new();
    for r in replies {
        ensure!(
            r.peer == vip,
            "reply from {} instead of the VIP {vip}: {r:?}",
            r.peer
        );
        let src = r.seen_client.ip();
        ensure!(
            LADDRS.iter().any(|l| IpAddr::V4(*l) == src),
            "real server {} saw source {} instead of a local address {LADDRS:?}",
            r.server,
            r.seen_client
        );
        seen.insert(src);
    }
    Ok(seen)
}

#[test]
fn tcp_fullnat_real_servers_see_a_local_address() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_tcp().to_string();
    configure(&rig, "-t", &vip, false)?;
    let replies = rig
        .tcp_probes(vip_tcp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    let seen = check_fullnat_replies(&replies, vip_tcp())?;
    ensure!(!seen.is_empty(), "no replies");
    let per_server = split(&replies);
    ensure!(
        per_server.get("rs1") == Some(&10) && per_server.get("rs2") == Some(&10),
        "rr over two FULLNAT real servers: {per_server:?}"
    );
    // The replies to the local addresses reach the TUN through the filters on br0's ingress
    // (one per local address), at least the SYN-ACK, the greeting and the echo of each.
    let (filters, _) = rig.bridge_tc()?;
    for l in LADDRS {
        let key = format!("{:08x}/ffffffff at 16", u32::from(l));
        ensure!(
            filters.matches(&key).count() == 1,
            "no single redirect filter for {l} on br0:\n{filters}"
        );
    }
    let redirected = rig.redirected_packets()?;
    ensure!(
        redirected >= 3 * 20,
        "the filters handed on {redirected} packets for 20 connections:\n{filters}"
    );
    Ok(())
}

/// One connection carries 48 KiB each way through FULLNAT: what the client receives back is
/// exactly what it sent (the test server echoes up to 64 KiB).
#[test]
fn tcp_fullnat_bytes_received_equal_bytes_sent() -> Result<()> {
    let rig = rig(1)?;
    let vip = vip_tcp().to_string();
    configure(&rig, "-t", &vip, false)?;
    let sent: Vec<u8> = (0..48 * 1024u32).map(|i| (i % 251) as u8).collect();
    let target = vip_tcp();
    let echoed = rig
        .client
        .run(|| -> Result<(String, Vec<u8>)> {
            let timeout = Duration::from_secs(10);
            let stream = TcpStream::connect_timeout(&target, timeout)
                .with_context(|| format!("connect to {target}"))?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut greeting = String::new();
            reader.read_line(&mut greeting).context("read greeting")?;
            // Write from another thread so neither side's buffers fill up and stall.
            let mut writer = stream.try_clone()?;
            let to_send = sent.clone();
            let sender = std::thread::spawn(move || writer.write_all(&to_send));
            let mut got = vec![0u8; sent.len()];
            reader.read_exact(&mut got).context("read the echo")?;
            sender
                .join()
                .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
                .context("send")?;
            Ok((greeting, got))
        })?
        .with_context(|| rig.diagnostics())?;
    let (greeting, got) = echoed;
    let source = greeting
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .with_context(|| format!("greeting {greeting:?}"))?;
    ensure!(
        LADDRS.iter().any(|l| IpAddr::V4(*l) == source.ip()),
        "the real server saw {source}, not a local address"
    );
    ensure!(
        got.len() == sent.len(),
        "received {} of {} bytes",
        got.len(),
        sent.len()
    );
    ensure!(got == sent, "the echoed bytes differ from the bytes sent");
    Ok(())
}

#[test]
fn udp_fullnat_real_servers_see_a_local_address() -> Result<()> {
    let rig = rig(2)?;
    let vip = vip_udp().to_string();
    configure(&rig, "-u", &vip, true)?;
    let replies = rig
        .udp_probes(vip_udp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check_fullnat_replies(&replies, vip_udp())?;
    let per_server = split(&replies);
    ensure!(
        per_server.get("rs1") == Some(&10) && per_server.get("rs2") == Some(&10),
        "rr over two FULLNAT real servers: {per_server:?}"
    );
    Ok(())
}
