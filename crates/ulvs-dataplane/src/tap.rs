//! The TAP device of direct routing: created with raw ioctls like the TUN (`IFF_TAP |
//! IFF_NO_PI`, one queue), given the MTU, attached to the bridge that holds the real-server LAN
//! (`SIOCBRADDIF`) and brought up. The engine answers ARP/NDP and rewrites MACs; the TAP's own
//! MAC is what it answers with.
//!
//! The device is not persistent: closing the last descriptor removes it (and its bridge port).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::tun::{IfReq, TUN_PATH, TunError, control_socket, ifreq_ioctl, validate_name};

/// `SIOCBRADDIF` from `<linux/sockios.h>`: add an interface to a bridge.
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// An open TAP device attached to a bridge.
#[derive(Debug)]
pub struct TapDevice {
    name: String,
    index: u32,
    mac: [u8; 6],
    fd: OwnedFd,
}

/// A descriptor of the TAP that reads and writes whole Ethernet frames (non-blocking).
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

impl TapQueue {
    /// Reads one frame into `buf`. `Err(WouldBlock)` when there is none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `buf`, which is valid for writes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame; the bridge receives it from the TAP port.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `frame`, which is valid for reads.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl TapDevice {
    /// Creates the TAP `name` (in the calling thread's network namespace) with `mtu`, attaches
    /// it to `bridge` and brings it up.
    pub fn open(name: &str, bridge: &str, mtu: u32) -> Result<TapDevice, TunError> {
        validate_name(name)?;
        validate_name(bridge)?;
        let io_err = |operation: &'static str| {
            let name = name.to_owned();
            move |source: io::Error| TunError::Io {
                operation,
                name,
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(io_err("open /dev/net/tun"))?;
        let fd = OwnedFd::from(file);
        let mut req = IfReq::new(name);
        req.data.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io_err("TUNSETIFF")(io::Error::last_os_error()));
        }
        let sock = control_socket().map_err(io_err("socket(AF_INET)"))?;
        let mut req = IfReq::new(name);
        req.data.value = mtu as libc::c_int;
        ifreq_ioctl(&sock, libc::SIOCSIFMTU, &mut req).map_err(io_err("set MTU"))?;
        let mut req = IfReq::new(name);
        ifreq_ioctl(&sock, libc::SIOCGIFINDEX, &mut req).map_err(io_err("get ifindex"))?;
        // SAFETY: SIOCGIFINDEX filled the int member.
        let index = unsafe { req.data.value } as u32;
        let mut req = IfReq::new(name);
        ifreq_ioctl(&sock, libc::SIOCGIFHWADDR, &mut req).map_err(io_err("get MAC address"))?;
        // SAFETY: SIOCGIFHWADDR filled a `struct sockaddr`: family (2 bytes), then the MAC.
        let raw = unsafe { req.data._size };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&raw[2..8]);
        let mut req = IfReq::new(bridge);
        req.data.value = index as libc::c_int;
        ifreq_ioctl(&sock, SIOCBRADDIF, &mut req).map_err(|source| TunError::Io {
            operation: "attach to bridge (SIOCBRADDIF; does the bridge exist?)",
            name: format!("{name} -> {bridge}"),
            source,
        })?;
        let mut req = IfReq::new(name);
        ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(io_err("get flags"))?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        req.data.flags = unsafe { req.data.flags } | libc::IFF_UP as libc::c_short;
        ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut req).map_err(io_err("bring up"))?;
        Ok(TapDevice {
            name: name.to_owned(),
            index,
            mac,
            fd,
        })
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The TAP's MAC address (the engine's [`ulvs_engine::Director::mac`]).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// A descriptor for a worker, duplicated from the device's own (the device stays until
    /// this value is dropped).
    pub fn clone_queue(&self) -> Result<TapQueue, TunError> {
        self.fd
            .try_clone()
            .map(|fd| TapQueue { fd })
            .map_err(|source| TunError::Io {
                operation: "duplicate TAP descriptor",
                name: self.name.clone(),
                source,
            })
    }
}
