//! `cargo xtask`: the project's automation, one module per subcommand.
//!
//! `cargo xtask ci` runs exactly what CI runs.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod ci;
mod codegen;
mod demo;
mod integration;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "ulvs project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run everything CI runs: fmt check, clippy, docs, unit tests, integration tests.
    Ci,
    /// Regenerate crates/ulvs-proto/src/gen from proto/ (or check it with --check).
    Codegen {
        /// Fail if the checked-in code differs from what proto/ generates.
        #[arg(long)]
        check: bool,
    },
    /// Build a demo rig, send real traffic through ulvsd, print the split, clean up (root).
    Demo,
    /// Run the network-namespace integration tests (root).
    Integration,
    /// Run the side-by-side benchmark: kernel forwarding, ulvs NAT, HAProxy (root; not in CI).
    Bench {
        /// Arguments for `ulvs-bench run` (e.g. `--runs 1 --seconds 3`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Ci => ci::run(),
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Demo => demo::run(),
        Cmd::Integration => integration::run(),
        Cmd::Bench { args } => bench::run(&args),
    }
}
