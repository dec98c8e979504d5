//! `cargo xtask ci`: the exact sequence CI runs (`.ci/run` calls this and nothing else).
//!
//! 1. `cargo fmt --all --check`
//! 2. `cargo clippy --workspace --all-targets -- -D warnings`
//! 3. `RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps`
//! 4. `cargo test` (the default members; needs no root)
//! 5. `cargo xtask codegen --check`
//! 6. `cargo xtask integration` (network namespaces; needs root and fails clearly without it)

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of `xtask/`).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A `cargo` command (the same cargo that runs xtask) started in the workspace root.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// Prints `==> title`, runs `cmd`, and fails naming the step if it fails.
pub(crate) fn step(title: &str, cmd: &mut Command) -> Result<()> {
    println!("==> {title}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{title}`"))?;
    if !status.success() {
        bail!("step `{title}` failed ({status})");
    }
    println!("==> {title}: ok ({:.1?})", start.elapsed());
    Ok(())
}

/// Prints `==> title` and runs an in-process step.
pub(crate) fn inline_step(title: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {title}");
    let start = Instant::now();
    f().with_context(|| format!("step `{title}` failed"))?;
    println!("==> {title}: ok ({:.1?})", start.elapsed());
    Ok(())
}

pub fn run() -> Result<()> {
    let start = Instant::now();
    if ::integration::require_root().is_err() {
        println!(
            "note: not running as root; every step but the last will run, and \
             `cargo xtask integration` will then fail (it needs network namespaces)"
        );
    }
    step(
        "cargo fmt --all --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    step(
        "cargo clippy --workspace --all-targets -- -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps",
        cargo()
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--workspace", "--no-deps"]),
    )?;
    step("cargo test", cargo().arg("test"))?;
    inline_step("cargo xtask codegen --check", || crate::codegen::run(true))?;
    inline_step("cargo xtask integration", crate::integration::run)?;
    println!("==> ci: all steps passed in {:.1?}", start.elapsed());
    Ok(())
}
