//! Network-namespace rigs and end-to-end tests for ulvs (needs root).
//!
//! Everything here builds throwaway hosts out of network namespaces and never touches the root
//! namespace's addresses, routes or sysctls. The pieces:
//!
//! - [`netns`]: [`Netns`], a namespace named `ulvs-<creator pid>-<n>-<role>` that is removed on
//!   drop (also while a failing test unwinds), veth pairs between namespaces, bridges inside one,
//!   and [`Netns::run`] to run a closure on a thread that has entered the namespace.
//! - [`process`]: [`Spawned`], a child process (usually started with `ip netns exec`) tracked by
//!   PID, its output captured to files, terminated and reaped on drop.
//! - [`cleanup`]: removes leftovers of crashed runs: only `ulvs-*` namespaces whose creator PID
//!   is gone.
//! - [`client`]: bounded TCP/UDP probes that report which real server answered and from which
//!   address the reply came.
//! - [`topology`]: [`NatRig`], the reference topology of the kernel's IPVS selftest (client,
//!   director running the real `ulvsd`, real servers behind a bridge), driven by the real
//!   `ulvsadm`.
//! - [`mod@bench`]: the side-by-side benchmark rig and workloads behind `cargo xtask bench` (kernel
//!   forwarding, ulvs NAT and HAProxy through the same namespaces; run by the `ulvs-bench` bin,
//!   never by CI).
//!
//! # Safety rules
//!
//! - Addresses come from 198.18.0.0/15 only; [`Netns::add_addr`] refuses anything else.
//! - Every traffic loop is bounded in count and in time.
//! - Processes are killed by the PID we started, never by name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod bench;
pub mod cleanup;
pub mod client;
pub mod dr;
pub mod netns;
pub mod process;
pub mod topology;
pub mod tunnel;

pub use netns::Netns;
pub use process::Spawned;
pub use topology::{NatRig, RealServer};

/// Environment variable naming the directory that holds the built `ulvsd`, `ulvsadm` and
/// `ulvs-testserver` binaries. `cargo xtask integration` sets it.
pub const BIN_DIR_ENV: &str = "ULVS_BIN_DIR";

/// Fails with a clear message unless the process runs as root (namespaces, TUN and veth need it).
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "the ulvs integration rig needs root (network namespaces, veth, TUN); running as uid {euid}"
        );
    }
    Ok(())
}

/// The binaries a rig runs, all of them real builds from this workspace.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The daemon.
    pub ulvsd: PathBuf,
    /// The ipvsadm-compatible CLI.
    pub ulvsadm: PathBuf,
    /// The test server run inside each real-server namespace.
    pub testserver: PathBuf,
    /// The userspace tunnel endpoint run on tunnel-mode real servers.
    pub decap: PathBuf,
}

impl Bins {
    /// Runs the real `ulvsadm` against the daemon listening on `socket` (passed in
    /// `ULVS_SOCKET`) and returns its stdout; a non-zero exit is an error with its output.
    pub fn ulvsadm_at(&self, socket: &Path, args: &[&str]) -> Result<String> {
        let mut cmd = std::process::Command::new(&self.ulvsadm);
        cmd.env("ULVS_SOCKET", socket).args(args);
        run_cmd(&mut cmd)
    }

    /// Finds the binaries in the directory named by [`BIN_DIR_ENV`].
    pub fn from_env() -> Result<Self> {
        let dir = std::env::var_os(BIN_DIR_ENV)
            .filter(|d| !d.is_empty())
            .with_context(|| {
            format!(
                "{BIN_DIR_ENV} is not set: run the integration tests with `cargo xtask integration`, \
                 which builds ulvsd, ulvsadm, ulvs-decap and ulvs-testserver and points {BIN_DIR_ENV} at them"
            )
        })?;
        Self::from_dir(Path::new(&dir))
    }

    /// Finds the binaries in `dir`, failing clearly when one is missing.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).with_context(|| {
                format!(
                    "{name} not found at {} (build it with `cargo build -p ulvsd -p ulvsadm -p ulvs-decap -p integration --bins`)",
                    path.display()
                )
            })?;
            if !meta.is_file() {
                bail!("{} is not a file", path.display());
            }
            Ok(path)
        };
        Ok(Self {
            ulvsd: find("ulvsd")?,
            ulvsadm: find("ulvsadm")?,
            testserver: find("ulvs-testserver")?,
            decap: find("ulvs-decap")?,
        })
    }
}

/// Polls `cond` until it returns `Ok(true)`, failing after `timeout` with a message naming `what`.
///
/// An `Err` from `cond` ends the wait at once (the condition can never become true, for example
/// because the process being waited on exited).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond().with_context(|| format!("while waiting for {what}"))? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Longest time [`run_cmd`] lets a command run before killing it.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a command to completion (at most [`CMD_TIMEOUT`], then it is killed) and returns its
/// stdout; a non-zero exit becomes an error that carries the command line and its stderr.
pub fn run_cmd(cmd: &mut std::process::Command) -> Result<String> {
    use std::io::Read;
    use std::process::Stdio;

    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {shown}"))?;
    // Drain both pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut status = None;
    let waited = wait_until(&format!("{shown} to finish"), CMD_TIMEOUT, || {
        status = child.try_wait()?;
        Ok(status.is_some())
    });
    if let Err(e) = waited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let status = status.context("command finished without a status")?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{shown} failed ({status}): {}{}",
            String::from_utf8_lossy(&stderr).trim(),
            String::from_utf8_lossy(&stdout).trim()
        );
    }
    String::from_utf8(stdout).with_context(|| format!("{shown} printed non-UTF-8"))
}

/// Starts `cmd` (an `ulvsd` command line for the director's namespace, including `--socket
/// sock`) and waits until its control socket accepts; on failure the error carries ulvsd's logs.
pub fn spawn_ulvsd(cmd: std::process::Command, sock: &Path, log_dir: &Path) -> Result<Spawned> {
    let mut proc = Spawned::start("ulvsd", cmd, log_dir)?;
    let accepted = wait_until("ulvsd's control socket to accept", ULVSD_READY, || {
        proc.check_running()?;
        Ok(std::os::unix::net::UnixStream::connect(sock).is_ok())
    });
    match accepted {
        Ok(()) => Ok(proc),
        Err(e) => Err(e.context(proc.logs())),
    }
}

/// How long [`spawn_ulvsd`] waits for the control socket.
const ULVSD_READY: Duration = Duration::from_secs(30);

/// How long [`start_testserver`] waits for a test server to listen.
const TESTSERVER_READY: Duration = Duration::from_secs(30);

/// Starts `ulvs-testserver --name NAME [--tcp TCP] [--udp UDP]` in `ns` (logs in `log_dir`,
/// labelled `label`) and waits until it prints `ready`, i.e. every socket is bound.
pub fn start_testserver(
    bins: &Bins,
    ns: &Netns,
    name: &str,
    label: &str,
    tcp: Option<std::net::SocketAddr>,
    udp: Option<std::net::SocketAddr>,
    log_dir: &Path,
) -> Result<Spawned> {
    let mut cmd = ns.command(&bins.testserver);
    cmd.args(["--name", name]);
    if let Some(a) = tcp {
        cmd.arg("--tcp").arg(a.to_string());
    }
    if let Some(a) = udp {
        cmd.arg("--udp").arg(a.to_string());
    }
    let mut proc = Spawned::start(label, cmd, log_dir)?;
    proc.wait_for_output("ready", TESTSERVER_READY)?;
    Ok(proc)
}

/// The sum of every `"out_packets"` counter (services and real servers) in the output of
/// `ulvsadm -L -n -o json`: the packets the director saw in the reply direction. Fails when
/// the listing has no such counter at all.
pub fn out_packets(json: &str) -> Result<u64> {
    let mut total = 0u64;
    let mut found = 0;
    for part in json.split("\"out_packets\":").skip(1) {
        let digits: String = part
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        total += digits.parse::<u64>().context("out_packets value")?;
        found += 1;
    }
    if found == 0 {
        bail!("no out_packets in -o json:\n{json}");
    }
    Ok(total)
}
