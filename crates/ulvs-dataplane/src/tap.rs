//! The TAP device of direct routing: created with raw ioctls like the TUN (`IFF_TAP |
//! IFF_NO_PI`, one queue), given the MTU, attached to the bridge that holds the real-server LAN
//! (`SIOCBRADDIF`) and brought up. The engine answers ARP/NDP and rewrites MACs; the TAP's own
//! MAC is what it answers with.
//!
//! With offload (the default) the TAP is created with `IFF_VNET_HDR`: every frame read or
//! written carries a `virtio_net_hdr` in front, so a TCP super-packet for a direct-routing real
//! server goes to the bridge as one frame with its GSO metadata and partial checksum, and the
//! kernel segments it where the path needs it (a veth hands it to the real server whole). No
//! `TUNSETOFFLOAD`: frames the bridge sends to the TAP arrive segmented and checksummed.
//!
//! The device is not persistent: closing the last descriptor removes it (and its bridge port).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::tun::{IfReq, TUN_PATH, TunError, control_socket, ifreq_ioctl, validate_name};
use crate::vnet::{VNET_HDR_LEN, VnetHdr};

/// `SIOCBRADDIF` from `<linux/sockios.h>`: add an interface to a bridge.
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// An open TAP device attached to a bridge.
#[derive(Debug)]
pub struct TapDevice {
    name: String,
    index: u32,
    mac: [u8; 6],
    fd: OwnedFd,
    vnet_hdr: bool,
}

/// A descriptor of the TAP that reads and writes whole Ethernet frames (non-blocking).
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
    vnet_hdr: bool,
}

impl TapQueue {
    /// Whether frames may carry offload metadata ([`TapQueue::send_offload`]).
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Reads one frame into `buf` (without the `virtio_net_hdr` when the TAP has one).
    /// `Err(WouldBlock)` when there is none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let hdr_len = if self.vnet_hdr { VNET_HDR_LEN } else { 0 };
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr_len,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs describe live, writable buffers of the given lengths.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        (n as usize).checked_sub(hdr_len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "frame shorter than its virtio_net_hdr",
            )
        })
    }

    /// Writes one frame with complete checksums; the bridge receives it from the TAP port.
    /// Returns the frame bytes written.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.send_offload(VnetHdr::default(), frame)
    }

    /// Writes one frame with offload metadata `hdr` (offsets counted from the frame's start),
    /// which a TAP without a `virtio_net_hdr` cannot carry: there only a plain `hdr` goes.
    /// Returns the frame bytes written.
    pub fn send_offload(&self, hdr: VnetHdr, frame: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            if hdr.is_gso() || hdr.needs_csum() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "offload metadata on a TAP without virtio_net_hdr",
                ));
            }
            return self.write(frame);
        }
        let hdr = hdr.to_bytes();
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs describe live buffers the kernel only reads.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).saturating_sub(VNET_HDR_LEN))
    }

    /// Writes `bytes`, a `virtio_net_hdr` followed by its frame, as they are (what
    /// [`crate::vnet::UdpCoalescer::flush`] hands over). Returns the bytes written, header
    /// included; refused on a TAP without a `virtio_net_hdr`.
    pub fn send_prefixed(&self, bytes: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "virtio_net_hdr on a TAP without one",
            ));
        }
        self.write(bytes)
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `bytes`, which is valid for reads.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
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
    /// it to `bridge` and brings it up; with `offload`, frames carry a `virtio_net_hdr`.
    pub fn open(name: &str, bridge: &str, mtu: u32, offload: bool) -> Result<TapDevice, TunError> {
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
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if offload {
            flags |= libc::IFF_VNET_HDR;
        }
        req.data.flags = flags as libc::c_short;
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
            vnet_hdr: offload,
        })
    }

    /// Whether frames carry a `virtio_net_hdr` (the engine's
    /// [`ulvs_engine::Director::frame_offload`]).
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
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
            .map(|fd| TapQueue {
                fd,
                vnet_hdr: self.vnet_hdr,
            })
            .map_err(|source| TunError::Io {
                operation: "duplicate TAP descriptor",
                name: self.name.clone(),
                source,
            })
    }
}
