//! The `ulvs-decap` binary: command line, signals, startup line and the counter summary.

use anyhow::{Context, Result};
use clap::Parser;
use ulvs_decap::{Config, DecapOptions, Decapsulator};

/// Userspace tunnel decapsulator for ulvs real servers (IPIP, IPv6-in-IP, GRE, GUE).
///
/// Receives tunnelled packets sent to this host by a ulvs director in tunnel mode (`-i`) and
/// hands the inner packets to the local stack through a TUN device. Put the VIP on `lo`; the
/// TUN's rp_filter is set to 0. Needs root (raw sockets, TUN). SIGUSR1 prints the counters,
/// SIGTERM/SIGINT stop (printing them).
#[derive(Debug, Parser)]
#[command(name = "ulvs-decap", version)]
struct Args {
    /// TUN device to create.
    #[arg(long, default_value = ulvs_decap::DEFAULT_TUN_NAME)]
    tun: String,
    /// MTU of the TUN device.
    #[arg(long, default_value_t = 65000)]
    tun_mtu: u32,
    /// Do not receive IPIP / IPv6-in-IP (protocols 4 and 41).
    #[arg(long)]
    no_ipip: bool,
    /// Do not receive GRE (protocol 47).
    #[arg(long)]
    no_gre: bool,
    /// Receive GUE on this UDP port (repeatable; ipvsadm's --tun-port).
    #[arg(long = "gue-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    gue_ports: Vec<u16>,
    /// Outer IPv4 only.
    #[arg(long, conflicts_with = "ipv6_only")]
    ipv4_only: bool,
    /// Outer IPv6 only.
    #[arg(long)]
    ipv6_only: bool,
    /// Drop GRE packets without a checksum.
    #[arg(long)]
    require_gre_csum: bool,
    /// Leave the TUN's rp_filter as it is.
    #[arg(long)]
    keep_rp_filter: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ulvs-decap: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    // Before anything else, so no thread inherits an unblocked mask.
    let stop = ulvs_decap::signal_fd()?;
    let cfg = Config {
        tun_name: args.tun,
        tun_mtu: args.tun_mtu,
        ipip: !args.no_ipip,
        gre: !args.no_gre,
        gue_ports: args.gue_ports,
        ipv4: !args.ipv6_only,
        ipv6: !args.ipv4_only,
        opts: DecapOptions {
            require_gre_csum: args.require_gre_csum,
        },
        set_rp_filter: !args.keep_rp_filter,
    };
    let (mut d, warnings) = Decapsulator::open(&cfg)?;
    for w in warnings {
        eprintln!("ulvs-decap: warning: {w}");
    }
    eprintln!("ulvs-decap: ready: {}", d.description());
    d.run(&stop, |c| eprintln!("ulvs-decap: counters: {c}"))
        .context("receive loop")?;
    eprintln!("ulvs-decap: stopping: counters: {}", d.counters());
    Ok(())
}
