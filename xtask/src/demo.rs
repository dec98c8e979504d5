//! `cargo xtask demo`: a three-real-server rig with real traffic through `ulvsd` (needs root).
//!
//! Builds the binaries, builds the reference NAT rig (client, director, rs1..rs3) in fresh network
//! namespaces, starts `ulvsd`, configures a `wrr` service with weights 3:2:1 through `ulvsadm`,
//! opens 300 TCP connections from the client to the VIP, prints `ulvsadm -L -n` and the
//! per-server split, and removes everything it created.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use integration::client::split;
use integration::topology::{CLIENT_ADDR, VIP, vip_tcp};
use integration::{Bins, NatRig};

const CONNECTIONS: usize = 300;
const WEIGHTS: [u32; 3] = [3, 2, 1];

pub fn run() -> Result<()> {
    integration::require_root().context("cargo xtask demo")?;
    let bin_dir = crate::integration::build_bins()?;
    let bins = Bins::from_dir(&bin_dir)?;
    crate::integration::remove_leftovers()?;

    println!("==> building the rig: client -- director (ulvsd, TUN ulvs0) -- bridge -- rs1..rs3");
    let rig = NatRig::with_ulvsd(bins, WEIGHTS.len())?;
    println!("    client    {} in {}", CLIENT_ADDR, rig.client.name());
    println!("    director  ulvsd in {}", rig.director.name());
    for rs in &rig.servers {
        println!("    {:<9} {} in {}", rs.name, rs.tcp(), rs.ns.name());
    }

    let vip = vip_tcp().to_string();
    let configure = |args: &[&str]| -> Result<()> {
        println!("    $ ulvsadm {}", args.join(" "));
        rig.ulvsadm(args).map(drop)
    };
    println!("==> configuring the service with ulvsadm");
    configure(&["-A", "-t", &vip, "-s", "wrr"])?;
    for (rs, w) in rig.servers.iter().zip(WEIGHTS) {
        configure(&[
            "-a",
            "-t",
            &vip,
            "-r",
            &rs.tcp(),
            "-m",
            "-w",
            &w.to_string(),
        ])?;
    }

    println!("==> {CONNECTIONS} TCP connections from the client to {VIP}:80");
    let start = Instant::now();
    let replies = rig
        .tcp_probes(vip_tcp(), CONNECTIONS, Duration::from_secs(120))
        .with_context(|| rig.diagnostics())?;
    let took = start.elapsed();
    let from_vip = replies.iter().filter(|r| r.peer == vip_tcp()).count();
    println!(
        "    {} answered in {took:.2?} ({:.0} connections/s), {from_vip} replies from the VIP",
        replies.len(),
        replies.len() as f64 / took.as_secs_f64()
    );

    println!("==> ulvsadm -L -n");
    print!("{}", rig.ulvsadm(&["-L", "-n"])?);

    println!("==> split (weights {WEIGHTS:?})");
    let counts = split(&replies);
    let total_weight: u32 = WEIGHTS.iter().sum();
    for (rs, w) in rig.servers.iter().zip(WEIGHTS) {
        let n = counts.get(&rs.name).copied().unwrap_or(0);
        let expected = CONNECTIONS as f64 * f64::from(w) / f64::from(total_weight);
        println!(
            "    {:<4} weight {w}  {n:>4} connections (expected {expected:.0})  {}",
            rs.name,
            "#".repeat(n / 5)
        );
    }

    println!("==> cleaning up (ulvsd gets SIGTERM, namespaces are deleted)");
    drop(rig);
    println!("==> demo done");
    Ok(())
}
