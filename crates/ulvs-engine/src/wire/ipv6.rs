//! IPv6 header view (RFC 8200) and a bounded walk over extension headers to the upper layer.
//!
//! The walk skips hop-by-hop, routing, destination-options and AH headers, and recognises the
//! fragment header (RFC 8200 section 4.5), reporting its offset, M flag and identification. It
//! never reads past the packet and gives up after [`MAX_EXT_HEADERS`] headers.

use std::net::Ipv6Addr;

use super::{Error, be16, put16};

mod field {
    pub(super) const PAYLOAD_LEN: usize = 4;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: std::ops::Range<usize> = 8..24;
    pub(super) const DST: std::ops::Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// How many extension headers the walk follows before calling the packet malformed.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header numbers of the extension headers the walk knows.
mod nh {
    pub(super) const HOP_BY_HOP: u8 = 0;
    pub(super) const ROUTING: u8 = 43;
    pub(super) const FRAGMENT: u8 = 44;
    pub(super) const AH: u8 = 51;
    pub(super) const DEST_OPTS: u8 = 60;
}

/// Fragment facts of an IP packet (IPv4 header fields or an IPv6 fragment header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragInfo {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
}

impl FragInfo {
    /// Whether the packet is a fragment at all (not a whole datagram).
    pub fn is_fragment(&self) -> bool {
        self.offset != 0 || self.more
    }
}

/// Where the upper-layer header of an IPv6 packet starts, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (TCP 6, UDP 17, ICMPv6 58, ...).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header's facts, if the packet has one.
    pub frag: Option<FragInfo>,
}

/// An IPv6 packet in a buffer. The buffer may extend past the packet (trailing bytes are
/// ignored by [`Ipv6Packet::payload`]).
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checks; accessors may panic if it is too short.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after checking version 6 and 40 + payload length <= buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < IPV6_HEADER_LEN || b[0] >> 4 != 6 {
            return Err(Error);
        }
        if p.total_len() > b.len() {
            return Err(Error);
        }
        Ok(p)
    }

    /// Wraps a possibly truncated packet (one quoted inside an ICMPv6 error): checks version 6
    /// and that the fixed header is present, not the payload length.
    pub fn new_checked_header(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < IPV6_HEADER_LEN || b[0] >> 4 != 6 {
            return Err(Error);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Payload length field (extension headers and upper layer).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        IPV6_HEADER_LEN + usize::from(self.payload_len())
    }

    /// The first next-header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address bytes.
    pub fn src_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// Destination address bytes.
    pub fn dst_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    /// The payload (extension headers and upper layer), up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV6_HEADER_LEN..self.total_len()]
    }

    /// Walks the extension headers to the upper layer, within the first `limit` bytes of the
    /// buffer (the packet's total length, or what a truncated quote holds). ESP and "no next
    /// header" end the walk as an upper layer the caller does not know.
    pub fn upper_layer(&self, limit: usize) -> Result<UpperLayer, Error> {
        let b = self.buffer.as_ref();
        let limit = limit.min(b.len());
        let mut next = self.next_header();
        let mut off = IPV6_HEADER_LEN;
        let mut frag = None;
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS => {
                    if off + 8 > limit {
                        return Err(Error);
                    }
                    let len = (usize::from(b[off + 1]) + 1) * 8;
                    next = b[off];
                    off += len;
                }
                nh::AH => {
                    if off + 8 > limit {
                        return Err(Error);
                    }
                    let len = (usize::from(b[off + 1]) + 2) * 4;
                    next = b[off];
                    off += len;
                }
                nh::FRAGMENT => {
                    if off + 8 > limit || frag.is_some() {
                        return Err(Error);
                    }
                    let fo = be16(b, off + 2);
                    frag = Some(FragInfo {
                        offset: fo & 0xfff8,
                        more: fo & 1 != 0,
                        id: u32::from_be_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]),
                    });
                    next = b[off];
                    off += 8;
                    if fo & 0xfff8 != 0 {
                        // A later fragment: what follows is not a header.
                        break;
                    }
                }
                _ => break,
            }
            if off > limit {
                return Err(Error);
            }
        }
        if matches!(next, nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS | nh::AH)
            && frag.is_none_or(|f| f.offset == 0)
        {
            // Too many extension headers.
            return Err(Error);
        }
        Ok(UpperLayer {
            protocol: next,
            offset: off,
            frag,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the source address. IPv6 has no header checksum; the caller patches the upper
    /// layer's checksum (its pseudo-header covers the address).
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (see [`Ipv6Packet::set_src_addr`]).
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        let len = (ext.len() + upper.len()) as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0xfd; 16]);
        p.extend_from_slice(&[0xfe; 16]);
        p.extend_from_slice(ext);
        p.extend_from_slice(upper);
        p
    }

    #[test]
    fn walks_hop_by_hop_and_fragment_headers() {
        // hop-by-hop (8 bytes) -> fragment (offset 0, M) -> UDP
        let mut ext = vec![44, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0x12, 0x34]);
        let p = packet(0, &ext, &[0; 8]);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        let up = ip.upper_layer(ip.total_len()).unwrap();
        assert_eq!(up.protocol, 17);
        assert_eq!(up.offset, 56);
        assert_eq!(
            up.frag,
            Some(FragInfo {
                offset: 0,
                more: true,
                id: 0x1234
            })
        );
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let ext = [6, 0, 0x05, 0x00, 0, 0, 0, 9];
        let p = packet(44, &ext, &[1, 2, 3]);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        let up = ip.upper_layer(ip.total_len()).unwrap();
        assert_eq!(up.frag.unwrap().offset, 0x500);
        assert_eq!(up.protocol, 6);
    }

    #[test]
    fn truncated_or_endless_headers_are_errors() {
        let p = packet(0, &[60, 5, 0, 0], &[]);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert!(ip.upper_layer(ip.total_len()).is_err());
        let mut ext = Vec::new();
        for _ in 0..(MAX_EXT_HEADERS + 1) {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = packet(60, &ext, &[0; 8]);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert!(ip.upper_layer(ip.total_len()).is_err());
        let mut short = packet(6, &[], &[0; 20]);
        short.truncate(50);
        assert!(Ipv6Packet::new_checked(&short[..]).is_err());
    }
}
