//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) header view: type, code, checksum, the 4-byte
//! rest-of-header, and the quoted packet of error messages.
//!
//! Both families share the layout of the first 8 bytes; only the checksum differs (ICMPv6 adds
//! the IPv6 pseudo-header).

use super::{Error, be16, put16};
use crate::checksum;

/// ICMPv4 type: echo reply.
pub const ICMPV4_ECHO_REPLY: u8 = 0;
/// ICMPv4 type: destination unreachable.
pub const ICMPV4_DEST_UNREACH: u8 = 3;
/// ICMPv4 destination-unreachable code: fragmentation needed and DF set.
pub const ICMPV4_FRAG_NEEDED: u8 = 4;
/// ICMPv4 type: echo request.
pub const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 type: time exceeded.
pub const ICMPV4_TIME_EXCEEDED: u8 = 11;
/// ICMPv4 type: parameter problem.
pub const ICMPV4_PARAM_PROBLEM: u8 = 12;

/// ICMPv6 type: destination unreachable.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// ICMPv6 type: packet too big.
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 type: time exceeded.
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 type: parameter problem.
pub const ICMPV6_PARAM_PROBLEM: u8 = 4;
/// ICMPv6 type: echo request.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 type: echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const ICMP_HEADER_LEN: usize = 8;

/// Whether an ICMPv4 type is an error that quotes the packet that caused it.
pub fn is_error_v4(ty: u8) -> bool {
    matches!(
        ty,
        ICMPV4_DEST_UNREACH | ICMPV4_TIME_EXCEEDED | ICMPV4_PARAM_PROBLEM
    )
}

/// Whether an ICMPv6 type is an error that quotes the packet that caused it.
pub fn is_error_v6(ty: u8) -> bool {
    matches!(
        ty,
        ICMPV6_DEST_UNREACH | ICMPV6_PACKET_TOO_BIG | ICMPV6_TIME_EXCEEDED | ICMPV6_PARAM_PROBLEM
    )
}

/// An ICMP message in a buffer holding exactly the IP payload.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without checks; accessors may panic if it is too short.
    pub fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < ICMP_HEADER_LEN {
            return Err(Error);
        }
        Ok(p)
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The 4 bytes after the checksum as a number (identifier and sequence for echo, the MTU
    /// for packet-too-big, next-hop MTU in the low 16 bits for ICMPv4 fragmentation needed).
    pub fn rest_of_header(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// What follows the header (the quoted packet of an error, the data of an echo).
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[ICMP_HEADER_LEN..]
    }

    /// Whether the ICMPv4 checksum is right.
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::fold(checksum::sum_words(0, self.buffer.as_ref())) == 0xffff
    }

    /// Whether the ICMPv6 checksum is right for the IPv6 addresses `src` and `dst`.
    pub fn verify_checksum_v6(&self, src: [u8; 16], dst: [u8; 16]) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, super::IPPROTO_ICMPV6, b.len() as u32);
        checksum::fold(checksum::sum_words(acc, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }

    /// Sets the code.
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }

    /// Sets the 4 bytes after the checksum.
    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the type and code and patches the checksum (both families: neither is in the
    /// pseudo-header).
    pub fn set_type_code_with_checksum_update(&mut self, ty: u8, code: u8) {
        let old = be16(self.buffer.as_ref(), 0);
        let new = u16::from_be_bytes([ty, code]);
        put16(self.buffer.as_mut(), 0, new);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// What follows the header, mutable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ICMP_HEADER_LEN..]
    }

    /// Computes the ICMPv4 checksum from scratch.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = checksum::compute(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Computes the ICMPv6 checksum from scratch for the IPv6 addresses `src` and `dst`.
    pub fn fill_checksum_v6(&mut self, src: [u8; 16], dst: [u8; 16]) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, super::IPPROTO_ICMPV6, b.len() as u32);
        let c = !checksum::fold(checksum::sum_words(acc, b));
        self.set_checksum(c);
    }
}
