//! Zero-copy views of IPv4, IPv6, ICMP, TCP and UDP headers over borrowed byte buffers.
//!
//! Each view wraps `T: AsRef<[u8]>`; setters exist only where `T: AsMut<[u8]>`. The contract:
//! `new_unchecked` does no checks and accessors may then panic on a short buffer, so
//! **parsing untrusted input needs `new_checked`**, which validates every length the accessors
//! rely on and returns [`Error`] instead. After `new_checked` succeeds no accessor or setter
//! panics.
//!
//! Setters that change an address or port come in a `_with_checksum_update` form that patches the
//! affected checksums incrementally (RFC 1624) rather than recomputing them.

pub mod icmp;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;

pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::{FragInfo, IPV6_HEADER_LEN, Ipv6Packet, MAX_EXT_HEADERS, UpperLayer};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;

/// A buffer too short for, or inconsistent with, the header it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet")]
pub struct Error;

/// The IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// The IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// The IP protocol number of ICMP (IPv4).
pub const IPPROTO_ICMP: u8 = 1;
/// The next-header number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
