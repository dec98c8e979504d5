//! Shared by ulvsadm's end-to-end tests: runs the built `ulvsadm` binary against a control
//! socket (the daemon itself is `ulvs_testkit::Daemon`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};

/// Runs `ulvsadm --socket SOCKET ARGS...` (args split on white space) with `stdin` as input.
pub fn ulvsadm(socket: &Path, args: &str, stdin: &str) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ulvsadm"))
        .arg("--socket")
        .arg(socket)
        .args(args.split_whitespace())
        .env_remove("ULVS_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run ulvsadm {args}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())
        .context("write stdin")?;
    child.wait_with_output().context("wait for ulvsadm")
}

/// Runs ulvsadm and requires success; returns stdout.
pub fn ok(socket: &Path, args: &str, stdin: &str) -> Result<String> {
    let out = ulvsadm(socket, args, stdin)?;
    ensure!(
        out.status.success(),
        "ulvsadm {args} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs ulvsadm and requires failure with exit status `code`; returns stderr.
pub fn fails(socket: &Path, args: &str, stdin: &str, code: i32) -> Result<String> {
    let out = ulvsadm(socket, args, stdin)?;
    ensure!(
        out.status.code() == Some(code),
        "ulvsadm {args}: expected exit {code}, got {} (stdout {:?}, stderr {:?})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stderr)?)
}
