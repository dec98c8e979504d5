//! `cargo xtask integration`: build the binaries, clean up crashed runs, run the namespace tests.
//!
//! Needs root. Builds `ulvsd`, `ulvsadm`, `ulvs-decap` and `ulvs-testserver` (debug profile, shared with
//! `cargo test`), removes leftover rig namespaces whose creator process is gone, then runs
//! `cargo test -p integration` with `ULVS_BIN_DIR` pointing at the binaries.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::ci::{TestCounts, cargo, step, test_step, workspace_root};

/// Builds the binaries the rig runs and returns the directory that holds them.
pub(crate) fn build_bins() -> Result<PathBuf> {
    step(
        "cargo build -p ulvsd -p ulvsadm -p ulvs-decap -p ulvs-agent -p integration --bins",
        cargo().args([
            "build",
            "-p",
            "ulvsd",
            "-p",
            "ulvsadm",
            "-p",
            "ulvs-decap",
            "-p",
            "ulvs-agent",
            "-p",
            "integration",
            "--bins",
        ]),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace_root().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug"))
}

/// Removes leftover namespaces of crashed runs, printing what it removed.
pub(crate) fn remove_leftovers() -> Result<()> {
    let removed =
        ::integration::cleanup::remove_leftovers().context("remove leftover rig namespaces")?;
    for name in &removed {
        println!("removed leftover namespace {name}");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let counts = run_tests()?;
    println!(
        "integration: {} passed, {} failed",
        counts.passed, counts.failed
    );
    Ok(())
}

/// Builds, cleans up, runs the integration tests and returns their counts.
pub(crate) fn run_tests() -> Result<TestCounts> {
    ::integration::require_root().context("cargo xtask integration")?;
    let bin_dir = build_bins()?;
    // Fail here, clearly, rather than in every test.
    ::integration::Bins::from_dir(&bin_dir)?;
    remove_leftovers()?;
    // `--tests`: unit, binary and integration tests; the crate has no doctests.
    test_step(
        &format!(
            "{}={} cargo test -p integration --tests -- --test-threads=1",
            ::integration::BIN_DIR_ENV,
            bin_dir.display()
        ),
        cargo().env(::integration::BIN_DIR_ENV, &bin_dir).args([
            "test",
            "-p",
            "integration",
            "--tests",
            "--",
            "--test-threads=1",
        ]),
    )
}
