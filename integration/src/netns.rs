//! Network namespaces as RAII guards, plus veth pairs, bridges, addresses and routes inside them.
//!
//! A [`Netns`] is named `ulvs-<creator pid>-<n>-<role>`: the PID lets [`crate::cleanup`] tell a
//! crashed run's leftovers from a live run's namespaces, and the counter keeps tests in one process
//! apart. Devices are always created inside a namespace (`ip -n NS link add ... peer ... netns
//! OTHER`), so nothing ever appears in the root namespace, and they vanish with the namespace.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::run_cmd;

/// Prefix of every namespace the rig creates.
pub const NAME_PREFIX: &str = "ulvs-";

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace created by this process, deleted on drop.
///
/// Drop the processes running inside it first (see [`crate::Spawned`]); a namespace that still has
/// processes outlives its name.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ulvs-<pid>-<n>-<role>` with its loopback up. `role` is lowercase ASCII letters and
    /// digits, at most 16 of them.
    pub fn new(role: &str) -> Result<Self> {
        if role.is_empty()
            || role.len() > 16
            || !role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("namespace role {role:?} must be 1-16 lowercase letters or digits");
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{n}-{role}", std::process::id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("create network namespace {name}"))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `ip -n <ns> <args>` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside this namespace (through `ip netns exec`, which execs
    /// the program, so the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result. Sockets
    /// made by `f` live in the namespace. A panic in `f` is passed on.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file =
            File::open(self.path()).with_context(|| format!("open {}", self.path().display()))?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<R> {
                // SAFETY: `file` is an open namespace file for the whole call; setns only changes
                // the calling thread's network namespace, and this thread ends after `f`.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .context("setns into the network namespace");
                }
                drop(file);
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r.with_context(|| format!("run in namespace {}", self.name)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Writes a sysctl under `/proc/sys/` of this namespace, for example
    /// `("net/ipv4/conf/all/rp_filter", "0")`. Only `net/` keys are per-namespace, so only they
    /// are accepted.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        if !key.starts_with("net/") || key.contains("..") {
            bail!("refusing sysctl {key:?}: only net/ keys are per network namespace");
        }
        let path = format!("/proc/sys/{key}");
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("write {value} to {path} in {}", self.name))
    }

    /// Reads a sysctl under `/proc/sys/` of this namespace.
    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{key}");
        let v = self
            .run(|| std::fs::read_to_string(&path))?
            .with_context(|| format!("read {path} in {}", self.name))?;
        Ok(v.trim().to_owned())
    }

    /// Sets a device up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "up"]).map(drop)
    }

    /// Adds an IPv4 address `addr/prefix` to `dev`. Refuses anything outside 198.18.0.0/15.
    pub fn add_addr(&self, dev: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        check_test_addr(addr)?;
        if prefix > 32 {
            bail!("prefix length {prefix} is larger than 32");
        }
        self.ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", dev])
            .map(drop)
    }

    /// Adds an IPv6 address `addr/prefix` to `dev` without duplicate address detection (usable
    /// at once). Refuses anything outside fd00:1b5::/48.
    pub fn add_addr6(&self, dev: &str, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        check_test_addr6(addr)?;
        if prefix > 128 {
            bail!("prefix length {prefix} is larger than 128");
        }
        self.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            dev,
            "nodad",
        ])
        .map(drop)
    }

    /// Makes `via` the default IPv6 gateway of this namespace.
    pub fn default_route6(&self, via: Ipv6Addr) -> Result<()> {
        check_test_addr6(via)?;
        self.ip(&["-6", "route", "add", "default", "via", &via.to_string()])
            .map(drop)
    }

    /// Makes `via` the default IPv4 gateway of this namespace.
    pub fn default_route(&self, via: Ipv4Addr) -> Result<()> {
        check_test_addr(via)?;
        self.ip(&["route", "add", "default", "via", &via.to_string()])
            .map(drop)
    }

    /// Creates a bridge `name` inside this namespace and sets it up.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.ip(&["link", "add", name, "type", "bridge"])?;
        self.link_up(name)
    }

    /// Attaches `dev` to `bridge` (both in this namespace).
    pub fn enslave(&self, dev: &str, bridge: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "master", bridge]).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!(
                "warning: could not delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// Creates a veth pair with end `a_dev` in `a` and end `b_dev` in `b`, both set up. The pair is
/// made inside `a`, so it never exists in the root namespace.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    check_ifname(a_dev)?;
    check_ifname(b_dev)?;
    a.ip(&[
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ])
    .with_context(|| format!("veth {}:{a_dev} <-> {}:{b_dev}", a.name(), b.name()))?;
    a.link_up(a_dev)?;
    b.link_up(b_dev)
}

/// Fails unless `addr` is in fd00:1b5::/48, the IPv6 range rigs use.
pub fn check_test_addr6(addr: Ipv6Addr) -> Result<()> {
    let s = addr.segments();
    if s[0] == 0xfd00 && s[1] == 0x01b5 && s[2] == 0 {
        Ok(())
    } else {
        bail!("refusing to use {addr}: rigs only use fd00:1b5::/48")
    }
}

/// Fails unless `addr` is in 198.18.0.0/15, the range reserved for benchmarking that rigs use.
pub fn check_test_addr(addr: Ipv4Addr) -> Result<()> {
    let [a, b, ..] = addr.octets();
    if a == 198 && (b == 18 || b == 19) {
        Ok(())
    } else {
        bail!("{addr} is outside 198.18.0.0/15, the only range test rigs may use")
    }
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("interface name {name:?} must be 1-15 characters of [A-Za-z0-9_-]");
    }
    Ok(())
}

/// Creates a namespace whose interfaces skip duplicate address detection, link-local
/// addresses included (the rigs' global addresses are added with `nodad` already). A host's
/// link-local address stays tentative for a second or two after its link comes up, and Linux
/// sends no neighbour solicitation for an off-interface source (a VIP on `lo`, a FULLNAT local
/// address routed into the TUN) until it has a usable link-local one: the first packet to or
/// from a real server would wait for it, and the client would resend.
pub(crate) fn lan_host(role: &str) -> Result<Netns> {
    let ns = Netns::new(role)?;
    for k in [
        "net/ipv6/conf/all/accept_dad",
        "net/ipv6/conf/default/accept_dad",
    ] {
        ns.sysctl(k, "0")?;
    }
    Ok(ns)
}
