//! The TUN device layer: opens `/dev/net/tun` with raw ioctls, one file descriptor per queue.
//!
//! # Why raw ioctls and not `tun-rs`
//! Creating a TUN device is four ioctls (`TUNSETIFF` per queue, then `SIOCSIFMTU`,
//! `SIOCSIFTXQLEN` and `SIOCSIFFLAGS` on a socket), about sixty lines with `libc`. Doing it
//! ourselves keeps every flag under our control (`IFF_MULTI_QUEUE`, `IFF_VNET_HDR`,
//! `TUNSETOFFLOAD`), lets workers `poll()` the raw descriptor together with a
//! stop `eventfd`, and avoids a fast-moving dependency that, even without default features,
//! pulls in address management helpers we must not use (addresses and routes go through
//! netlink in [`crate::router`]).
//!
//! # Offloads
//! With [`TunConfig::offload`] (the default) the device is created with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD` enables checksum offload and TCP (and, where the kernel knows them, UDP)
//! segmentation offload. The kernel then hands over TCP bursts as super-packets of up to 64 KiB
//! with a partial checksum, behind a 10-byte [`crate::vnet::VnetHdr`], instead of segmenting
//! them to the MTU first: one read and one write per 64 KiB instead of per 1500 bytes, which is
//! the biggest single factor in TCP throughput through a TUN. Every read and write then carries
//! that header ([`TunQueue::has_vnet_hdr`]).
//!
//! # Namespaces
//! A TUN device is created in the network namespace of the thread that opens it, and every
//! queue is opened here, in the same call, so all queues attach to the same device.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Default device name.
pub const DEFAULT_TUN_NAME: &str = "ulvs0";
/// Default MTU.
pub const DEFAULT_MTU: u32 = 1500;
/// Default transmit queue length (the kernel's default of 500 drops under bursts).
pub const DEFAULT_TXQUEUELEN: u32 = 4096;

pub(crate) const TUN_PATH: &str = "/dev/net/tun";

/// How to create the TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// MTU of the device.
    pub mtu: u32,
    /// Transmit queue length.
    pub txqueuelen: u32,
    /// Number of queues; more than one creates a multi-queue device (`IFF_MULTI_QUEUE`) with
    /// one descriptor per queue.
    pub queues: usize,
    /// Create the device with `IFF_VNET_HDR` and enable checksum and segmentation offload
    /// (`TUNSETOFFLOAD`).
    pub offload: bool,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: DEFAULT_TUN_NAME.to_owned(),
            mtu: DEFAULT_MTU,
            txqueuelen: DEFAULT_TXQUEUELEN,
            queues: 1,
            offload: true,
        }
    }
}

/// Why the TUN device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name is empty, too long or contains a NUL or a `/`.
    #[error("invalid TUN device name {0:?} (1 to 15 bytes, no '/', no NUL)")]
    InvalidName(String),
    /// The queue count is zero or unreasonably high.
    #[error("invalid TUN queue count {0} (1 to 256)")]
    InvalidQueues(usize),
    /// A system call failed.
    #[error("{operation} on TUN device {name}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The device.
        name: String,
        /// The OS error.
        source: io::Error,
    },
}

/// An open TUN device: its name, index and one non-blocking descriptor per queue.
///
/// The device is not persistent: it disappears (with every route through it) when the last
/// descriptor is closed, that is when this value and every [`TunQueue`] cloned from it are
/// dropped.
#[derive(Debug)]
pub struct TunDevice {
    name: String,
    index: u32,
    mtu: u32,
    queues: Vec<TunQueue>,
    offloads: Offloads,
}

/// The offloads the kernel accepted for a device (`TUN_F_*` flags of `TUNSETOFFLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Packets carry a `virtio_net_hdr` (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// The `TUN_F_*` bits the kernel accepted (0 without offload).
    pub flags: u32,
}

impl Offloads {
    /// Names of the accepted offloads, for logs ("csum tso4 tso6 tso_ecn uso4 uso6").
    pub fn names(&self) -> String {
        let all = [
            (libc::TUN_F_CSUM, "csum"),
            (libc::TUN_F_TSO4, "tso4"),
            (libc::TUN_F_TSO6, "tso6"),
            (libc::TUN_F_TSO_ECN, "tso_ecn"),
            (libc::TUN_F_USO4, "uso4"),
            (libc::TUN_F_USO6, "uso6"),
        ];
        let v: Vec<&str> = all
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(" ")
        }
    }
}

/// One queue of a TUN device: a non-blocking descriptor that reads and writes whole IP packets.
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
    vnet_hdr: bool,
    uso: bool,
}

impl TunQueue {
    /// Whether every packet read or written carries a [`crate::vnet::VnetHdr`] in front.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Whether USO super-packets (`VIRTIO_NET_HDR_GSO_UDP_L4`) may be written to this queue:
    /// the kernel accepted `TUN_F_USO4` (6.2 and later), so it knows the GSO type.
    pub fn can_write_uso(&self) -> bool {
        self.vnet_hdr && self.uso
    }

    /// Reads one packet into `buf`. `Err(WouldBlock)` when the queue is empty.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `buf`, which is valid for writes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet; the kernel receives it as if it arrived on the device.
    pub fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `pkt`, which is valid for reads.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `struct ifreq`: a name and a 24-byte union, of which we use the short flags and int values.
#[repr(C)]
pub(crate) struct IfReq {
    pub(crate) name: [libc::c_char; libc::IFNAMSIZ],
    pub(crate) data: IfReqData,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union IfReqData {
    pub(crate) flags: libc::c_short,
    pub(crate) value: libc::c_int,
    pub(crate) _size: [u8; 24],
}

impl IfReq {
    pub(crate) fn new(name: &str) -> Self {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: IfReqData { _size: [0; 24] },
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), TunError> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(TunError::InvalidName(name.to_owned()));
    }
    Ok(())
}

impl TunDevice {
    /// Creates the device (in the calling thread's network namespace), opens every queue, sets
    /// MTU and transmit queue length and brings it up.
    pub fn open(cfg: &TunConfig) -> Result<TunDevice, TunError> {
        validate_name(&cfg.name)?;
        if cfg.queues == 0 || cfg.queues > 256 {
            return Err(TunError::InvalidQueues(cfg.queues));
        }
        let io_err = |operation: &'static str| {
            let name = cfg.name.clone();
            move |source: io::Error| TunError::Io {
                operation,
                name,
                source,
            }
        };
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if cfg.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        if cfg.offload {
            flags |= libc::IFF_VNET_HDR;
        }
        let mut queues = Vec::with_capacity(cfg.queues);
        for _ in 0..cfg.queues {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(TUN_PATH)
                .map_err(io_err("open /dev/net/tun"))?;
            let fd = OwnedFd::from(file);
            let mut req = IfReq::new(&cfg.name);
            req.data.flags = flags as libc::c_short;
            // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
            if rc < 0 {
                return Err(io_err("TUNSETIFF")(io::Error::last_os_error()));
            }
            if cfg.offload {
                let size = crate::vnet::VNET_HDR_LEN as libc::c_int;
                // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
                let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
                if rc < 0 {
                    return Err(io_err("TUNSETVNETHDRSZ")(io::Error::last_os_error()));
                }
            }
            queues.push(TunQueue {
                fd,
                vnet_hdr: cfg.offload,
                uso: false,
            });
        }
        let offloads = if cfg.offload {
            Offloads {
                vnet_hdr: true,
                flags: set_offload(&queues[0]).map_err(io_err("TUNSETOFFLOAD"))?,
            }
        } else {
            Offloads::default()
        };
        let uso = offloads.flags & libc::TUN_F_USO4 != 0;
        for q in &mut queues {
            q.uso = uso;
        }
        let sock = control_socket().map_err(io_err("socket(AF_INET)"))?;
        let mut req = IfReq::new(&cfg.name);
        req.data.value = cfg.mtu as libc::c_int;
        ifreq_ioctl(&sock, libc::SIOCSIFMTU, &mut req).map_err(io_err("set MTU"))?;
        let mut req = IfReq::new(&cfg.name);
        req.data.value = cfg.txqueuelen as libc::c_int;
        ifreq_ioctl(&sock, libc::SIOCSIFTXQLEN, &mut req).map_err(io_err("set txqueuelen"))?;
        let mut req = IfReq::new(&cfg.name);
        ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(io_err("get flags"))?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let up = unsafe { req.data.flags } | libc::IFF_UP as libc::c_short;
        req.data.flags = up;
        ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut req).map_err(io_err("bring up"))?;
        let mut req = IfReq::new(&cfg.name);
        ifreq_ioctl(&sock, libc::SIOCGIFINDEX, &mut req).map_err(io_err("get ifindex"))?;
        // SAFETY: SIOCGIFINDEX filled the int member.
        let index = unsafe { req.data.value } as u32;
        Ok(TunDevice {
            name: cfg.name.clone(),
            index,
            mtu: cfg.mtu,
            queues,
            offloads,
        })
    }

    /// Has the kernel pick each packet's queue with the program of `steering` instead of its
    /// own flow table (nothing to do for [`crate::steer::Steering::Kernel`]). Only useful with
    /// more than one queue.
    pub fn steer(&self, steering: crate::steer::Steering) -> io::Result<()> {
        match steering.program() {
            Some(program) => crate::steer::attach(self.queues[0].as_raw_fd(), program),
            None => Ok(()),
        }
    }

    /// The offloads in effect.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// MTU the device was set to.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Descriptors for the workers, one per queue, duplicated from the device's own: the device
    /// (and every route through it) stays alive until this value is dropped, whatever happens
    /// to the workers.
    pub fn clone_queues(&self) -> Result<Vec<TunQueue>, TunError> {
        self.queues
            .iter()
            .map(|q| {
                q.fd.try_clone()
                    .map(|fd| TunQueue {
                        fd,
                        vnet_hdr: q.vnet_hdr,
                        uso: q.uso,
                    })
                    .map_err(|source| TunError::Io {
                        operation: "duplicate queue descriptor",
                        name: self.name.clone(),
                        source,
                    })
            })
            .collect()
    }
}

/// Enables checksum offload, TSO (v4, v6, ECN) and, where the kernel knows them (6.2 and
/// later), USO (v4, v6). Returns the accepted `TUN_F_*` flags.
fn set_offload(queue: &TunQueue) -> io::Result<u32> {
    let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    let mut last = None;
    for flags in [base | libc::TUN_F_USO4 | libc::TUN_F_USO6, base] {
        // SAFETY: TUNSETOFFLOAD takes the flags as the ioctl argument itself.
        let rc = unsafe {
            libc::ioctl(
                queue.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc == 0 {
            return Ok(flags);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
        last = Some(err);
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn ifreq_ioctl(sock: &OwnedFd, request: libc::Ioctl, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: every request used here takes a `struct ifreq`, which `req` is laid out as.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut IfReq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn name_of(req: &IfReq) -> String {
        // SAFETY: `req.name` is NUL-terminated (IfReq::new leaves the last byte 0).
        unsafe { CStr::from_ptr(req.name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("ulvs0").is_ok());
        assert!(validate_name("fifteen-bytes-x").is_ok());
        for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "a\0b"] {
            assert!(
                matches!(validate_name(bad), Err(TunError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ifreq_copies_the_name() {
        let req = IfReq::new("ulvs0");
        assert_eq!(name_of(&req), "ulvs0");
    }

    #[test]
    fn zero_queues_is_refused_before_any_syscall() {
        let cfg = TunConfig {
            queues: 0,
            ..TunConfig::default()
        };
        assert!(matches!(
            TunDevice::open(&cfg),
            Err(TunError::InvalidQueues(0))
        ));
    }
}
