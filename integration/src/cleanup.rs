//! Removes leftovers of crashed rig runs: `ulvs-<pid>-<n>-<role>` namespaces whose creator is gone.
//!
//! The rig's temporary directories (`<tmp>/ulvs-rig-<pid>-*`, logs and control sockets) of dead
//! creators are removed too.
//!
//! A namespace is touched only if its name has exactly that shape and no process with the embedded
//! PID exists. Processes still running inside such a namespace are killed by the PIDs `ip netns
//! pids` reports for it (never by name), then the namespace is deleted. The root namespace has no
//! name under `/var/run/netns`, so it can never be selected.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::{NAME_PREFIX, NETNS_RUN_DIR};
use crate::run_cmd;

/// Prefix of a rig's temporary directory, followed by the creator PID and a dash.
pub const TEMP_DIR_PREFIX: &str = "ulvs-rig-";

/// A new rig temporary directory (logs, control sockets), `<tmp>/ulvs-rig-<our PID>-XXXXXX`:
/// removed on drop, or by the clean-up of a later run if this process dies first.
pub fn rig_temp_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .context("create rig temp dir")
}

/// Parses the creator PID out of a rig namespace name, or `None` if the name is not ours.
pub fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let _n: u32 = parts.next()?.parse().ok()?;
    let role = parts.next()?;
    let role_ok = !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (role_ok && pid > 0).then_some(pid)
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Deletes every leftover rig namespace (see the module doc) and returns the names removed.
pub fn remove_leftovers() -> Result<Vec<String>> {
    let dir = Path::new(NETNS_RUN_DIR);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("list {NETNS_RUN_DIR}")),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("list {NETNS_RUN_DIR}"))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        kill_processes_in(&name)?;
        run_cmd(Command::new("ip").args(["netns", "del", &name]))
            .with_context(|| format!("delete leftover namespace {name}"))?;
        removed.push(name);
    }
    removed.extend(remove_leftover_dirs()?);
    Ok(removed)
}

fn remove_leftover_dirs() -> Result<Vec<String>> {
    let tmp = std::env::temp_dir();
    let entries = match std::fs::read_dir(&tmp) {
        Ok(e) => e,
        Err(_) => return Ok(Vec::new()),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(TEMP_DIR_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Only real directories, never a symlink planted in /tmp.
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if pid == 0 || !is_dir || pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("remove leftover rig directory {}", path.display()))?;
        removed.push(path.display().to_string());
    }
    Ok(removed)
}

fn kill_processes_in(name: &str) -> Result<()> {
    let pids = run_cmd(Command::new("ip").args(["netns", "pids", name]))
        .with_context(|| format!("list processes in leftover namespace {name}"))?;
    let pids: Vec<libc::pid_t> = pids
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p > 1)
        .collect();
    for &pid in &pids {
        // SAFETY: kill has no memory-safety preconditions. The PID was just reported as a member
        // of the leftover namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let what = format!("processes {pids:?} in {name} to exit");
    crate::wait_until(&what, Duration::from_secs(5), || {
        Ok(pids.iter().all(|p| {
            // A zombie has already left its namespaces; only a live task counts.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|t| t.trim_start().starts_with('Z'))
                })
                .unwrap_or(true)
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::creator_pid;

    #[test]
    fn parses_only_rig_names() {
        assert_eq!(creator_pid("ulvs-1234-0-client"), Some(1234));
        assert_eq!(creator_pid("ulvs-1234-17-rs2"), Some(1234));
        assert_eq!(creator_pid("ulvs-1234-client"), None);
        assert_eq!(creator_pid("ulvs-0-1-client"), None);
        assert_eq!(creator_pid("ulvs-x-1-client"), None);
        assert_eq!(creator_pid("ulvs-12-1-"), None);
        assert_eq!(creator_pid("ulvs-12-1-Client"), None);
        assert_eq!(creator_pid("other-12-1-client"), None);
        assert_eq!(creator_pid("ulvs0"), None);
    }
}
