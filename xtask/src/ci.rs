//! `cargo xtask ci`: the exact sequence CI runs (`.ci/run` calls this and nothing else).
//!
//! 1. `cargo fmt --all --check`
//! 2. `cargo clippy --workspace --all-targets -- -D warnings`
//! 3. `RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps`
//! 4. `cargo test` (the default members; needs no root)
//! 5. `cargo xtask codegen --check`
//! 6. `cargo xtask integration` (network namespaces; needs root and fails clearly without it)

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

/// Tests counted from the `test result:` lines of `cargo test` runs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TestCounts {
    pub passed: u64,
    pub failed: u64,
}

impl TestCounts {
    fn add_line(&mut self, line: &str) {
        // "test result: ok. 5 passed; 0 failed; 0 ignored; ..."
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }

    pub(crate) fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Like [`step`] for a `cargo test` command: passes its output through and counts the tests.
pub(crate) fn test_step(title: &str, cmd: &mut Command) -> Result<TestCounts> {
    println!("==> {title}");
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{title}`"))?;
    let mut counts = TestCounts::default();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let line = line.with_context(|| format!("read output of `{title}`"))?;
            counts.add_line(&line);
            writeln!(stdout, "{line}")?;
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("wait for `{title}`"))?;
    if !status.success() {
        bail!(
            "step `{title}` failed ({status}): {} passed, {} failed",
            counts.passed,
            counts.failed
        );
    }
    println!(
        "==> {title}: ok ({:.1?}, {} tests passed)",
        start.elapsed(),
        counts.passed
    );
    Ok(counts)
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
    let mut counts = test_step("cargo test", cargo().arg("test"))?;
    inline_step("cargo xtask codegen --check", || crate::codegen::run(true))?;
    inline_step("cargo xtask integration", || {
        counts.add(crate::integration::run_tests()?);
        Ok(())
    })?;
    println!("==> ci: all steps passed in {:.1?}", start.elapsed());
    // The plain closing line: every test of `cargo test` and of the integration suite.
    println!("ci: {} passed, {} failed", counts.passed, counts.failed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_test_result_lines_only() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("test foo ... ok");
        c.add_line("running 7 tests");
        assert_eq!((c.passed, c.failed), (7, 3));
    }
}
