//! `cargo xtask`: the project's automation, one module per subcommand.
//!
//! `cargo xtask ci` runs exactly what CI runs.

use anyhow::Result;
use clap::{Parser, Subcommand};

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
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Ci => ci::run(),
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Demo => demo::run(),
        Cmd::Integration => integration::run(),
    }
}
