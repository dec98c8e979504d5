//! Child processes tracked by PID, with output captured to files, terminated and reaped on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long [`Spawned`]'s drop waits after SIGTERM before it sends SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// A running child process. On drop it gets SIGTERM, then SIGKILL after [`TERM_GRACE`], and is
/// reaped, so no test leaves a process behind, even when it panics.
#[derive(Debug)]
pub struct Spawned {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Spawned {
    /// Starts `cmd` with stdin closed and stdout/stderr written to `<log_dir>/<label>.out|.err`.
    pub fn start(label: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let stdout = log_dir.join(format!("{label}.out"));
        let stderr = log_dir.join(format!("{label}.err"));
        let out = File::create(&stdout).with_context(|| format!("create {}", stdout.display()))?;
        let err = File::create(&stderr).with_context(|| format!("create {}", stderr.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label given at start.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What the process has written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs, labelled, for error messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} (pid {}) stdout ---\n{}--- {} stderr ---\n{}",
            self.label,
            self.pid(),
            self.stdout(),
            self.label,
            self.stderr()
        )
    }

    /// Fails (with the process's output) if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!("{} exited early with {status}\n{}", self.label, self.logs());
        }
        Ok(())
    }

    /// The exit status if the process has exited (and reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("wait for {}", self.label))?;
        }
        Ok(self.status)
    }

    /// Waits until `stdout` or `stderr` contains `needle`, failing if the process exits first or
    /// `timeout` passes.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let what = format!("{} to print {needle:?}", self.label);
        let res = crate::wait_until(&what, timeout, || {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(true);
            }
            self.check_running()?;
            Ok(false)
        });
        res.with_context(|| self.logs())
    }

    /// Sends `signal` to the process (by its PID) unless it has already been reaped.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own unreaped child, so the
        // PID cannot have been reused by another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signal {signal} to {} ({pid})", self.label));
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit status.
    /// Fails (and leaves the SIGKILL to drop) if it does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let label = self.label.clone();
        crate::wait_until(&format!("{label} to exit after SIGTERM"), timeout, || {
            Ok(self.try_wait()?.is_some())
        })
        .with_context(|| self.logs())?;
        self.try_wait()?
            .context("process reaped but no exit status recorded")
    }

    fn kill_and_reap(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        let deadline = Instant::now() + TERM_GRACE;
        if self.signal(libc::SIGTERM).is_ok() {
            while Instant::now() < deadline {
                if matches!(self.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        eprintln!(
            "warning: {} (pid {}) ignored SIGTERM for {TERM_GRACE:?}; killing it",
            self.label,
            self.pid()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}
