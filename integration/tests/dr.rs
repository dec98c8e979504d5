//! End-to-end direct routing (needs root): `ulvsd` with a TAP on the LAN bridge, the real
//! servers hold the VIP on `lo` and answer the client directly. Over IPv4 and IPv6, TCP and
//! UDP: every byte comes back, both real servers are used, no reply passed the director (its
//! outbound counters stay at zero), and over IPv6 the director resolved the real servers with
//! NDP (their neighbour tables hold the director's link-local address at its TAP-side MAC).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::{
    DR_VIP, DR_VIP6, DrRig, LAN_CLIENT6, LAN_DIRECTOR, TAP_NAME, dr_vip, dr_vip6, tcp_bulk,
};
use integration::topology::TUN_NAME;
use integration::{Bins, require_root, run_cmd};

fn rig(n: usize) -> Result<DrRig> {
    require_root()?;
    DrRig::new(Bins::from_env()?, n)
}

/// The packets the director saw in the reply direction (every `out_packets` counter).
fn out_pkts(rig: &DrRig) -> Result<u64> {
    integration::out_packets(&rig.ulvsadm(&["-L", "-n", "-o", "json"])?)
}

#[test]
fn tcp_dr_bulk_echo_bypasses_the_director() -> Result<()> {
    let rig = rig(2)?;
    rig.add_dr_service("-t")?;
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(listing.matches("Route").count() == 2, "-L -n:\n{listing}");
    let mut seen = std::collections::BTreeSet::new();
    let mut bytes = 0;
    for i in 0..6 {
        // The first connection may wait for ARP (the SYN is retransmitted after ~1 s).
        let (name, peer, n) = rig
            .client
            .run(|| tcp_bulk(dr_vip(), 20_000 + i * 1000, Duration::from_secs(5)))?
            .with_context(|| format!("transfer {i}\n{}", rig.logs()))?;
        ensure!(peer == dr_vip(), "reply from {peer}");
        seen.insert(name);
        bytes += n;
    }
    ensure!(seen.len() == 2, "rr used only {seen:?}");
    ensure!(bytes == (0..6).map(|i| 20_000 + i * 1000).sum::<usize>());
    let out = out_pkts(&rig)?;
    ensure!(out == 0, "the director saw {out} reply packets");
    Ok(())
}

/// A counter of `dev` in the director namespace (`/sys/class/net/DEV/statistics/NAME`).
fn link_stat(rig: &DrRig, dev: &str, name: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/{name}");
    let v = run_cmd(rig.director.command("cat").arg(&path))?;
    v.trim().parse().with_context(|| format!("{path}: {v:?}"))
}

/// A rig with one real server behind a DR service (`proto` is `-t` or `-u`) whose client
/// reaches the VIP through the director's IP stack (as a routed client would), so its packets
/// come out of the TUN, not off the bridge into the TAP.
fn routed_client_rig(proto: &str) -> Result<DrRig> {
    let rig = rig(1)?;
    rig.add_dr_service(proto)?;
    let via = LAN_DIRECTOR.to_string();
    rig.client
        .ip(&["route", "replace", &format!("{DR_VIP}/32"), "via", &via])?;
    Ok(rig)
}

/// The kernel hands ulvsd the client's TCP bursts as super-packets through the TUN; with the
/// TAP's virtio_net_hdr each goes to the bridge as one frame (not cut into MTU-size frames in
/// userspace), and the bytes arrive intact.
#[test]
fn tcp_super_packets_go_to_the_tap_whole() -> Result<()> {
    let rig = routed_client_rig("-t")?;
    // Resolve the real server's MAC first (the first SYN may wait for ARP).
    rig.client
        .run(|| tcp_bulk(dr_vip(), 1000, Duration::from_secs(5)))?
        .with_context(|| rig.logs())?;
    let stat = |dev: &str, name: &str| link_stat(&rig, dev, name);
    let (tun_pkts0, tun_bytes0) = (stat(TUN_NAME, "tx_packets")?, stat(TUN_NAME, "tx_bytes")?);
    let tap_pkts0 = stat(TAP_NAME, "rx_packets")?;
    // 32 echoes of 64 KiB (the test server's most): 2 MiB toward the real server.
    for i in 0..32 {
        let size = 64 << 10;
        let (_, peer, n) = rig
            .client
            .run(|| tcp_bulk(dr_vip(), size, Duration::from_secs(10)))?
            .with_context(|| format!("transfer {i}\n{}", rig.logs()))?;
        ensure!(
            peer == dr_vip() && n == size,
            "echoed {n} of {size} bytes from {peer}"
        );
    }
    let tun_pkts = stat(TUN_NAME, "tx_packets")? - tun_pkts0;
    let tun_bytes = stat(TUN_NAME, "tx_bytes")? - tun_bytes0;
    let tap_pkts = stat(TAP_NAME, "rx_packets")? - tap_pkts0;
    // Precondition: super-packets came in (an average above the MTU needs them).
    ensure!(
        tun_bytes / tun_pkts.max(1) > 1500,
        "no super-packets came through the TUN: {tun_pkts} packets, {tun_bytes} bytes"
    );
    // One frame per packet read, give or take a few ARP requests; cut up, 2 MiB alone would
    // have made over 1,400 frames.
    ensure!(
        tap_pkts <= tun_pkts + 20,
        "{tun_pkts} packets from the TUN became {tap_pkts} frames on the TAP"
    );
    Ok(())
}

/// A burst of same-size datagrams of one flow from a routed client (through the TUN, where the
/// worker may merge them into one USO frame for the TAP): every one reaches the real server
/// and is answered from the VIP.
#[test]
fn udp_burst_from_a_routed_client_is_answered_in_full() -> Result<()> {
    let rig = routed_client_rig("-u")?;
    // One datagram first, so that the real server's MAC is resolved before the burst.
    rig.client
        .run(|| integration::client::udp_once(dr_vip(), Duration::from_secs(1), 5))??;
    const BURST: usize = 64;
    let answers = rig.client.run(|| -> Result<Vec<String>> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(dr_vip())?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        for i in 0..BURST {
            sock.send(&[i as u8; 32])?;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < BURST {
            let n = sock
                .recv(&mut buf)
                .with_context(|| format!("{} of {BURST} answers", got.len()))?;
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        Ok(got)
    })??;
    ensure!(
        answers.iter().all(|a| a.starts_with("rs1 198.18.1.2:")),
        "{answers:?}"
    );
    ensure!(out_pkts(&rig)? == 0, "replies passed the director");
    Ok(())
}

#[test]
fn udp_dr_answers_come_from_the_vip() -> Result<()> {
    let rig = rig(1)?;
    rig.add_dr_service("-u")?;
    let replies = rig.client.run(|| {
        integration::client::udp_many(
            dr_vip(),
            5,
            Duration::from_secs(20),
            Duration::from_secs(1),
            5,
        )
    })??;
    ensure!(replies.len() == 5);
    for r in &replies {
        ensure!(r.peer == dr_vip() && r.server == "rs1", "{r:?}");
        ensure!(r.seen_client.ip() == std::net::IpAddr::V4(integration::dr::LAN_CLIENT));
    }
    ensure!(out_pkts(&rig)? == 0, "replies passed the director");
    Ok(())
}

/// The IPv6 neighbour table of `ns`'s `dev` for `addr` (or all), as `ip -6 neigh` prints it.
fn neigh6(ns: &integration::Netns, dev: &str, addr: Option<&str>) -> Result<String> {
    let mut args = vec!["-6", "neigh", "show", "dev", dev];
    if let Some(a) = addr {
        args.extend(["to", a]);
    }
    ns.ip(&args)
}

/// Checks that the director resolved with NDP: the client learnt the IPv6 VIP at the
/// director's MAC (an advertisement the engine sent), and every real server holds a neighbour
/// entry for a link-local address at that MAC (learnt from the engine's solicitation).
fn check_ndp(rig: &DrRig) -> Result<()> {
    let mac = rig.station_mac()?;
    let client = neigh6(&rig.client, "eth0", Some(&DR_VIP6.to_string()))?;
    ensure!(
        client.contains(&format!("lladdr {mac}")),
        "the client's entry for {DR_VIP6} is not the director's MAC {mac}: {client:?}"
    );
    for rs in &rig.servers {
        let table = neigh6(&rs.ns, "eth0", None)?;
        let solicited = table
            .lines()
            .any(|l| l.starts_with("fe80:") && l.contains(&format!("lladdr {mac}")));
        ensure!(
            solicited,
            "{} has no link-local neighbour at the director's MAC {mac}:\n{table}",
            rs.name
        );
    }
    Ok(())
}

#[test]
fn tcp6_dr_bulk_echo_bypasses_the_director() -> Result<()> {
    let rig = rig(2)?;
    let vip = dr_vip6().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.addr6.to_string(), "-g"])?;
    }
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(listing.matches("Route").count() == 2, "-L -n:\n{listing}");
    let mut seen = std::collections::BTreeSet::new();
    let mut bytes = 0;
    // 4 x 64 KiB: 256 KiB echoed byte for byte.
    for i in 0..4 {
        let (name, peer, n) = rig
            .client
            .run(|| tcp_bulk(dr_vip6(), 64 * 1024, Duration::from_secs(5)))?
            .with_context(|| format!("transfer {i}\n{}", rig.logs()))?;
        ensure!(peer == dr_vip6(), "reply from {peer}");
        seen.insert(name);
        bytes += n;
    }
    ensure!(seen.len() == 2, "rr used only {seen:?}");
    ensure!(bytes == 256 * 1024, "{bytes} bytes echoed");
    let out = out_pkts(&rig)?;
    ensure!(out == 0, "the director saw {out} reply packets");
    check_ndp(&rig)
}

#[test]
fn udp6_dr_answers_come_from_the_vip() -> Result<()> {
    let rig = rig(2)?;
    let vip = dr_vip6().to_string();
    rig.ulvsadm(&["-A", "-u", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-u", &vip, "-r", &rs.addr6.to_string(), "-g"])?;
    }
    let replies = rig.client.run(|| {
        integration::client::udp_many(
            dr_vip6(),
            6,
            Duration::from_secs(20),
            Duration::from_secs(1),
            5,
        )
    })??;
    ensure!(replies.len() == 6);
    for r in &replies {
        ensure!(r.peer == dr_vip6(), "{r:?}");
        ensure!(
            r.seen_client.ip() == std::net::IpAddr::V6(LAN_CLIENT6),
            "the real server saw {r:?}"
        );
    }
    let per_server = integration::client::split(&replies);
    ensure!(per_server.len() == 2, "rr used only {per_server:?}");
    ensure!(out_pkts(&rig)? == 0, "replies passed the director");
    check_ndp(&rig)
}
