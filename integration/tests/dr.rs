//! End-to-end direct routing (needs root): `ulvsd` with a TAP on the LAN bridge, the real
//! servers hold the VIP on `lo` and answer the client directly. Checks that every byte comes
//! back, that both real servers are used, and that no reply passed the director (its outbound
//! counters stay at zero).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::{DrRig, dr_vip, tcp_bulk};
use integration::{Bins, require_root};

fn rig(n: usize) -> Result<DrRig> {
    require_root()?;
    DrRig::new(Bins::from_env()?, n)
}

/// The sum of every `"out_packets"` counter (services and real servers) in
/// `ulvsadm -L -n -o json`, and how many such counters there were.
fn out_pkts(rig: &DrRig) -> Result<u64> {
    let json = rig.ulvsadm(&["-L", "-n", "-o", "json"])?;
    let mut total = 0;
    let mut found = 0;
    for part in json.split("\"out_packets\":").skip(1) {
        let digits: String = part
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        total += digits.parse::<u64>().context("out_packets value")?;
        found += 1;
    }
    ensure!(found > 0, "no out_packets in -o json:\n{json}");
    Ok(total)
}

#[test]
fn tcp_dr_bulk_echo_bypasses_the_director() -> Result<()> {
    let rig = rig(2)?;
    let vip = dr_vip().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.addr.to_string(), "-g"])?;
    }
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

#[test]
fn udp_dr_answers_come_from_the_vip() -> Result<()> {
    let rig = rig(1)?;
    let vip = dr_vip().to_string();
    rig.ulvsadm(&["-A", "-u", &vip, "-s", "rr"])?;
    rig.ulvsadm(&[
        "-a",
        "-u",
        &vip,
        "-r",
        &rig.servers[0].addr.to_string(),
        "-g",
    ])?;
    let replies = rig.client.run(|| {
        integration::client::many(5, Duration::from_secs(20), || {
            integration::client::udp_once(dr_vip(), Duration::from_secs(1), 5)
        })
    })??;
    ensure!(replies.len() == 5);
    for r in &replies {
        ensure!(r.peer == dr_vip() && r.server == "rs1", "{r:?}");
        ensure!(r.seen_client.ip() == std::net::IpAddr::V4(integration::dr::LAN_CLIENT));
    }
    ensure!(out_pkts(&rig)? == 0, "replies passed the director");
    Ok(())
}
