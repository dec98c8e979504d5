//! Prerequisite checks of the host (forwarding on, `rp_filter` off on the TUN, CAP_NET_ADMIN,
//! `/dev/net/tun`) and the optional fix-up of the sysctls (`--configure-sysctls`).
//!
//! Parsing of `/proc`-style text is pure and unit-tested; the functions that read and write
//! `/proc` take a root directory so they can be pointed elsewhere.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Bit of CAP_NET_ADMIN in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// One failed prerequisite, with the fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum PrereqError {
    /// The process lacks CAP_NET_ADMIN.
    #[error("missing capability CAP_NET_ADMIN (run as root or grant cap_net_admin)")]
    NoNetAdmin,
    /// `/dev/net/tun` is missing.
    #[error("{0} does not exist (load the tun module or pass the device into the container)")]
    NoTunDevice(PathBuf),
    /// IPv4 forwarding is off.
    #[error(
        "net.ipv4.ip_forward is 0; set it to 1 (sysctl -w net.ipv4.ip_forward=1) or run with --configure-sysctls"
    )]
    ForwardingOff,
    /// Reverse-path filtering would drop the packets ulvsd writes back.
    #[error(
        "rp_filter on {dev} is effectively {effective} (max of all={all}, {dev}={dev_value}); set net.ipv4.conf.all.rp_filter=0 and net.ipv4.conf.{dev}.rp_filter=0, or run with --configure-sysctls"
    )]
    RpFilterOn {
        /// The TUN device.
        dev: String,
        /// `conf.all.rp_filter`.
        all: u32,
        /// `conf.<dev>.rp_filter`.
        dev_value: u32,
        /// The value in force (the maximum of the two).
        effective: u32,
    },
    /// A file could not be read or written, or held unexpected text.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Whether the `CapEff:` line of a `/proc/<pid>/status` text has CAP_NET_ADMIN.
/// `None` when there is no parseable `CapEff:` line.
pub fn cap_eff_has_net_admin(status: &str) -> Option<bool> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let bits = u64::from_str_radix(line.trim(), 16).ok()?;
    Some(bits & (1 << CAP_NET_ADMIN) != 0)
}

/// Parses a sysctl file's content (a decimal integer and a newline).
pub fn parse_sysctl_u32(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// The `rp_filter` value in force for a device: the kernel uses the maximum of `all` and the
/// device's own value.
pub fn effective_rp_filter(all: u32, dev: u32) -> u32 {
    all.max(dev)
}

/// Where the checks read and write (normally `/`).
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            root: PathBuf::from("/"),
        }
    }
}

impl Host {
    /// A host whose `/proc` and `/dev` live under `root` (for tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Host { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Result<String, PrereqError> {
        let path = self.path(rel);
        fs::read_to_string(&path).map_err(|e| PrereqError::File {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    fn read_u32(&self, rel: &str) -> Result<u32, PrereqError> {
        let text = self.read(rel)?;
        parse_sysctl_u32(&text).ok_or_else(|| PrereqError::File {
            path: self.path(rel),
            message: format!("expected an integer, found {:?}", text.trim()),
        })
    }

    fn write(&self, rel: &str, value: &str) -> Result<(), PrereqError> {
        let path = self.path(rel);
        fs::write(&path, value).map_err(|e: io::Error| PrereqError::File {
            path,
            message: format!("write {value}: {e}"),
        })
    }

    /// CAP_NET_ADMIN in the effective set of this process.
    pub fn check_net_admin(&self) -> Result<(), PrereqError> {
        let status = self.read("proc/self/status")?;
        match cap_eff_has_net_admin(&status) {
            Some(true) => Ok(()),
            Some(false) => Err(PrereqError::NoNetAdmin),
            None => Err(PrereqError::File {
                path: self.path("proc/self/status"),
                message: "no parseable CapEff line".to_owned(),
            }),
        }
    }

    /// `/dev/net/tun` exists.
    pub fn check_tun_device(&self) -> Result<(), PrereqError> {
        let path = self.path("dev/net/tun");
        if Path::new(&path).exists() {
            Ok(())
        } else {
            Err(PrereqError::NoTunDevice(path))
        }
    }

    /// `net.ipv4.ip_forward` is 1.
    pub fn check_forwarding(&self) -> Result<(), PrereqError> {
        match self.read_u32("proc/sys/net/ipv4/ip_forward")? {
            0 => Err(PrereqError::ForwardingOff),
            _ => Ok(()),
        }
    }

    /// Whether `net.ipv6.conf.all.forwarding` is on (`None` when IPv6 is not available).
    pub fn ipv6_forwarding(&self) -> Option<bool> {
        self.read_u32("proc/sys/net/ipv6/conf/all/forwarding")
            .ok()
            .map(|v| v != 0)
    }

    /// The effective `rp_filter` of `dev` is 0.
    pub fn check_rp_filter(&self, dev: &str) -> Result<(), PrereqError> {
        let all = self.read_u32("proc/sys/net/ipv4/conf/all/rp_filter")?;
        let dev_value = self.read_u32(&format!("proc/sys/net/ipv4/conf/{dev}/rp_filter"))?;
        match effective_rp_filter(all, dev_value) {
            0 => Ok(()),
            effective => Err(PrereqError::RpFilterOn {
                dev: dev.to_owned(),
                all,
                dev_value,
                effective,
            }),
        }
    }

    /// Turns forwarding on (IPv4, and IPv6 where present).
    pub fn configure_forwarding(&self) -> Result<(), PrereqError> {
        self.write("proc/sys/net/ipv4/ip_forward", "1")?;
        if self.ipv6_forwarding().is_some() {
            self.write("proc/sys/net/ipv6/conf/all/forwarding", "1")?;
        }
        Ok(())
    }

    /// Sets `accept_local` to 1 on `dev` (ulvsd's own TUN). Packets that come out of the TUN are
    /// the ones ulvsd wrote: tunnel packets carry the director's own address as source, which
    /// the kernel drops as martians otherwise, and with it on the kernel skips the reverse-path
    /// route lookup that policy rules (the router's) otherwise force on every packet.
    pub fn set_accept_local(&self, dev: &str) -> Result<(), PrereqError> {
        self.write(&format!("proc/sys/net/ipv4/conf/{dev}/accept_local"), "1")
    }

    /// Sets `rp_filter` to 0 on `all` and on `dev`.
    pub fn configure_rp_filter(&self, dev: &str) -> Result<(), PrereqError> {
        self.write("proc/sys/net/ipv4/conf/all/rp_filter", "0")?;
        self.write(&format!("proc/sys/net/ipv4/conf/{dev}/rp_filter"), "0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tulvsd\nUmask:\t0022\nCapInh:\t0000000000000000\n\
CapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn cap_eff_is_read_from_status() {
        assert_eq!(cap_eff_has_net_admin(STATUS), Some(true));
        let no_admin = STATUS.replace("CapEff:\t000001ffffffffff", "CapEff:\t0000000000000400");
        assert_eq!(cap_eff_has_net_admin(&no_admin), Some(false));
        let only_admin = STATUS.replace("CapEff:\t000001ffffffffff", "CapEff:\t0000000000001000");
        assert_eq!(cap_eff_has_net_admin(&only_admin), Some(true));
        assert_eq!(cap_eff_has_net_admin("Name: x\n"), None);
        assert_eq!(cap_eff_has_net_admin("CapEff:\tzz\n"), None);
    }

    #[test]
    fn sysctl_values_parse() {
        assert_eq!(parse_sysctl_u32("1\n"), Some(1));
        assert_eq!(parse_sysctl_u32(" 2 "), Some(2));
        assert_eq!(parse_sysctl_u32("on\n"), None);
        assert_eq!(parse_sysctl_u32(""), None);
    }

    #[test]
    fn rp_filter_is_the_max_of_all_and_dev() {
        assert_eq!(effective_rp_filter(0, 0), 0);
        assert_eq!(effective_rp_filter(1, 0), 1);
        assert_eq!(effective_rp_filter(0, 2), 2);
        assert_eq!(effective_rp_filter(2, 1), 2);
    }

    fn fake_host(ip_forward: &str, all_rp: &str, dev_rp: &str) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("proc/sys/net/ipv4/conf/all")).unwrap();
        fs::create_dir_all(r.join("proc/sys/net/ipv4/conf/ulvs0")).unwrap();
        fs::create_dir_all(r.join("proc/self")).unwrap();
        fs::write(r.join("proc/sys/net/ipv4/ip_forward"), ip_forward).unwrap();
        fs::write(r.join("proc/sys/net/ipv4/conf/all/rp_filter"), all_rp).unwrap();
        fs::write(r.join("proc/sys/net/ipv4/conf/ulvs0/rp_filter"), dev_rp).unwrap();
        fs::write(r.join("proc/self/status"), STATUS).unwrap();
        let host = Host::with_root(r);
        (dir, host)
    }

    #[test]
    fn checks_fail_then_pass_after_configure() {
        let (_dir, host) = fake_host("0\n", "1\n", "2\n");
        assert!(matches!(
            host.check_forwarding(),
            Err(PrereqError::ForwardingOff)
        ));
        match host.check_rp_filter("ulvs0") {
            Err(e @ PrereqError::RpFilterOn { effective: 2, .. }) => {
                let line = e.to_string();
                assert!(!line.contains('\n'));
                assert!(line.contains("ulvs0"), "{line}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            host.check_tun_device(),
            Err(PrereqError::NoTunDevice(_))
        ));
        host.check_net_admin().unwrap();
        host.configure_forwarding().unwrap();
        host.configure_rp_filter("ulvs0").unwrap();
        host.check_forwarding().unwrap();
        host.check_rp_filter("ulvs0").unwrap();
        assert_eq!(host.ipv6_forwarding(), None);
        host.set_accept_local("ulvs0").unwrap();
        assert_eq!(
            host.read_u32("proc/sys/net/ipv4/conf/ulvs0/accept_local")
                .unwrap(),
            1
        );
        assert!(host.set_accept_local("nosuchdev").is_err());
    }

    #[test]
    fn garbage_in_a_sysctl_is_a_clear_error() {
        let (_dir, host) = fake_host("yes\n", "0\n", "0\n");
        let e = host.check_forwarding().unwrap_err();
        assert!(e.to_string().contains("expected an integer"), "{e}");
    }
}
