//! `cargo xtask bench`: builds ulvsd, ulvsadm and the `ulvs-bench` rig in release mode and runs
//! the side-by-side benchmark (root; installs iperf3, nginx, wrk and HAProxy with apt-get if they
//! are missing). Not part of CI: it takes minutes and its numbers depend on the machine.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::ci::{cargo, step, workspace_root};

/// Runs the bench; `args` are passed to `ulvs-bench run` (for example `--runs 1`).
pub fn run(args: &[OsString]) -> Result<()> {
    // `--bin` filters every selected package, so each binary is named.
    step(
        "cargo build --release --bin ulvsd --bin ulvsadm --bin ulvs-bench",
        cargo().args([
            "build",
            "--release",
            "-p",
            "ulvsd",
            "-p",
            "ulvsadm",
            "-p",
            "integration",
            "--bin",
            "ulvsd",
            "--bin",
            "ulvsadm",
            "--bin",
            "ulvs-bench",
        ]),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin_dir = target.join("release");
    let status = Command::new(bin_dir.join("ulvs-bench"))
        .arg("run")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(args)
        .status()
        .context("start ulvs-bench")?;
    if !status.success() {
        bail!("ulvs-bench failed ({status})");
    }
    Ok(())
}
