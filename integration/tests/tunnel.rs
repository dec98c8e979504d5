//! End-to-end tunnel mode (needs root): `ulvsd -i` encapsulates in IPIP, GUE and GRE, the real
//! servers decapsulate with `ulvs-decap` and answer the client directly. The real-server LAN
//! has an MTU of 1600, so full-sized client packets (1500) fit every tunnel. For each tunnel type,
//! TCP and UDP: every byte comes back, both real servers are used, no reply passed the
//! director (its outbound counters stay at zero), and the decapsulators delivered packets and
//! dropped none.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::tcp_bulk;
use integration::tunnel::{GUE_PORT, TUN_CLIENT, TunRig, tun_vip};
use integration::{Bins, require_root};

/// The MTU of the director's LAN and the real servers' links: room for a 1500-byte client
/// packet plus the largest overhead (GUE, 32 bytes).
const LAN_MTU: u32 = 1600;

fn rig(n: usize) -> Result<TunRig> {
    require_root()?;
    TunRig::new(Bins::from_env()?, n, LAN_MTU)
}

/// The sum of every `"out_packets"` counter (services and real servers) in
/// `ulvsadm -L -n -o json`.
fn out_pkts(rig: &TunRig) -> Result<u64> {
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

/// ulvsadm's tunnel options for a type.
fn tun_args(kind: &str) -> Vec<String> {
    let mut v = vec!["-i".to_owned(), "--tun-type".to_owned(), kind.to_owned()];
    match kind {
        "gue" => v.extend(["--tun-port".to_owned(), GUE_PORT.to_string()]),
        "gre" => v.push("--tun-csum".to_owned()),
        _ => {}
    }
    v
}

fn add_service(rig: &TunRig, proto_flag: &str, kind: &str) -> Result<()> {
    let vip = tun_vip().to_string();
    rig.ulvsadm(&["-A", proto_flag, &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        let mut args = vec![
            "-a".to_owned(),
            proto_flag.to_owned(),
            vip.clone(),
            "-r".to_owned(),
            rs.addr.to_string(),
        ];
        args.extend(tun_args(kind));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rig.ulvsadm(&args)?;
    }
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(
        listing.matches("Tunnel").count() == rig.servers.len(),
        "-L -n:\n{listing}"
    );
    Ok(())
}

/// Every real server's decapsulator delivered something in total and dropped nothing.
fn check_decaps(rig: &mut TunRig) -> Result<()> {
    let mut delivered = 0;
    for i in 0..rig.servers.len() {
        let c = rig.decap_counters(i)?;
        for (k, v) in &c {
            let bad = k.starts_with("drop_") || k == "truncated" || k == "tun_write_errors";
            ensure!(!bad || *v == 0, "rs{} decap: {c:?}", i + 1);
            if k == "delivered" {
                delivered += v;
            }
        }
    }
    ensure!(delivered > 0, "no packet was decapsulated");
    Ok(())
}

fn tcp_case(kind: &str) -> Result<()> {
    let mut rig = rig(2)?;
    add_service(&rig, "-t", kind)?;
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    let sizes: Vec<usize> = (0..4).map(|i| 20_000 + i * 3_000).collect();
    for (i, &size) in sizes.iter().enumerate() {
        let (name, peer, n) = rig
            .client
            .run(move || tcp_bulk(tun_vip(), size, Duration::from_secs(10)))?
            .with_context(|| format!("{kind} transfer {i}\n{}", rig.logs()))?;
        ensure!(peer == tun_vip(), "reply from {peer}");
        seen.insert(name);
        bytes += n;
    }
    ensure!(seen.len() == 2, "rr used only {seen:?}");
    ensure!(bytes == sizes.iter().sum::<usize>(), "{bytes} bytes echoed");
    let out = out_pkts(&rig)?;
    ensure!(out == 0, "the director saw {out} reply packets");
    check_decaps(&mut rig)
}

fn udp_case(kind: &str) -> Result<()> {
    let mut rig = rig(2)?;
    add_service(&rig, "-u", kind)?;
    let replies = rig.client.run(|| {
        integration::client::many(6, Duration::from_secs(20), || {
            integration::client::udp_once(tun_vip(), Duration::from_secs(1), 5)
        })
    })??;
    ensure!(replies.len() == 6);
    let mut seen = BTreeSet::new();
    for r in &replies {
        ensure!(r.peer == tun_vip(), "{r:?}");
        ensure!(
            r.seen_client.ip() == std::net::IpAddr::V4(TUN_CLIENT),
            "the real server saw {r:?}"
        );
        seen.insert(r.server.clone());
    }
    ensure!(seen.len() == 2, "rr used only {seen:?}");
    ensure!(out_pkts(&rig)? == 0, "replies passed the director");
    check_decaps(&mut rig)
}

#[test]
fn ipip_tcp_bulk_echo() -> Result<()> {
    tcp_case("ipip")
}

#[test]
fn ipip_udp() -> Result<()> {
    udp_case("ipip")
}

#[test]
fn gue_tcp_bulk_echo() -> Result<()> {
    tcp_case("gue")
}

#[test]
fn gue_udp() -> Result<()> {
    udp_case("gue")
}

#[test]
fn gre_tcp_bulk_echo() -> Result<()> {
    tcp_case("gre")
}

#[test]
fn gre_udp() -> Result<()> {
    udp_case("gre")
}
