//! `ulvs-bench`: the side-by-side benchmark behind `cargo xtask bench` (needs root), and the
//! idle-connection server and client it runs inside the rig's namespaces.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use integration::bench::{self, BenchOptions, BenchRig, Target, Workload};

fn parse_workload(s: &str) -> Result<Workload, String> {
    Workload::from_key(s)
        .ok_or_else(|| format!("unknown workload {s:?} (tcp1, tcp4, short, udp64, idle)"))
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::from_key(s)
        .ok_or_else(|| format!("unknown target {s:?} (kernel, nat, fullnat, dr, haproxy)"))
}

#[derive(Debug, Parser)]
#[command(name = "ulvs-bench", about = "ulvs side-by-side benchmark (root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the rig, run every workload through every target, print the table.
    Run {
        /// Directory with release builds of ulvsd and ulvsadm.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Runs per workload and target (interleaved).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds per timed workload.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Idle connections to hold.
        #[arg(long, default_value_t = 10_000)]
        idle_conns: usize,
        /// Offered rate of the 64-byte UDP workload, packets per second.
        #[arg(long, default_value_t = 200_000)]
        udp_pps: u64,
        /// Extra ulvsd argument (repeat for more), e.g. --ulvsd-arg=--queues=2.
        #[arg(long = "ulvsd-arg", allow_hyphen_values = true)]
        ulvsd_args: Vec<String>,
        /// Run only this workload (repeat for more): tcp1, tcp4, short, udp64, idle.
        #[arg(long = "workload", value_parser = parse_workload)]
        workloads: Vec<Workload>,
        /// Measure only this target (repeat for more): kernel, nat, fullnat, dr, haproxy.
        #[arg(long = "target", value_parser = parse_target)]
        targets: Vec<Target>,
    },
    /// Accept connections, echo one byte on each, hold them (runs inside a server namespace).
    IdleServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Open and hold connections until stdin closes (runs inside the client namespace).
    IdleClient {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        count: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            bin_dir,
            runs,
            seconds,
            idle_conns,
            udp_pps,
            ulvsd_args,
            workloads,
            targets,
        } => {
            integration::require_root()?;
            bench::ensure_tools()?;
            // HAProxy wants two descriptors per connection; the idle client one each.
            let nofile = bench::raise_nofile();
            anyhow::ensure!(
                nofile > idle_conns as u64 + 100,
                "open-file limit {nofile} is too low for {idle_conns} idle connections"
            );
            let removed = integration::cleanup::remove_leftovers()?;
            if !removed.is_empty() {
                eprintln!("removed leftovers of crashed runs: {removed:?}");
            }
            let opts = BenchOptions {
                bin_dir,
                self_exe: std::env::current_exe().context("find own executable")?,
                runs: runs.max(1),
                seconds: seconds.clamp(1, 60),
                idle_conns,
                udp_pps,
                ulvsd_args,
                workloads,
                targets,
            };
            let mut rig = BenchRig::new(opts)?;
            let report = rig.run_all()?;
            drop(rig);
            println!("\nMachine: {}\n", bench::machine());
            println!("{}", report.markdown());
            Ok(())
        }
        Cmd::IdleServer { listen } => {
            bench::raise_nofile();
            bench::idle_server(listen)
        }
        Cmd::IdleClient { target, count } => {
            bench::raise_nofile();
            bench::idle_client(target, count)
        }
    }
}
