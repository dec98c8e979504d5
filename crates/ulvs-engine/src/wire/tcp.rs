//! TCP header view (RFC 9293).

use super::{Error, be16, put16};
use crate::checksum;

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const OFF_FLAGS: usize = 12;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const MIN_HEADER: usize = 20;
}

/// The TCP flags the engine looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;

    /// FIN is set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// SYN is set.
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// RST is set.
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// ACK is set.
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    /// SYN without ACK: a client opening a connection.
    pub fn is_connection_start(self) -> bool {
        self.syn() && !self.ack()
    }
}

/// A TCP segment (header and data) in a buffer holding exactly the IP payload.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checks; accessors may panic if it is too short.
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after checking 20 <= data offset * 4 <= buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < field::MIN_HEADER {
            return Err(Error);
        }
        let hl = p.header_len();
        if hl < field::MIN_HEADER || hl > len {
            return Err(Error);
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }

    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::OFF_FLAGS + 1])
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the checksum is right for the IPv4 addresses `src` and `dst`.
    pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v4(src, dst, super::IPPROTO_TCP, b.len() as u32);
        checksum::fold(checksum::sum_words(acc, b)) == 0xffff
    }

    /// Whether the checksum is right for the IPv6 addresses `src` and `dst`.
    pub fn verify_checksum_v6(&self, src: [u8; 16], dst: [u8; 16]) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, super::IPPROTO_TCP, b.len() as u32);
        checksum::fold(checksum::sum_words(acc, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the checksum from scratch for the IPv4 addresses `src` and `dst`.
    pub fn fill_checksum_v4(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v4(src, dst, super::IPPROTO_TCP, b.len() as u32);
        let c = !checksum::fold(checksum::sum_words(acc, b));
        self.set_checksum(c);
    }

    /// Sets the source port and leaves the checksum field alone (for a partial checksum,
    /// which the ports are summed into only when it is finished).
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port and leaves the checksum field alone (see
    /// [`Self::set_src_port`]).
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Patches a partial checksum field (offload: pseudo-header sum only) for a pseudo-header
    /// address changing from `old` to `new` (4 or 16 bytes).
    pub fn update_partial_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let c = checksum::update_partial(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Sets the source port and patches the checksum.
    pub fn set_src_port_with_checksum_update(&mut self, port: u16) {
        let old = self.src_port();
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
        let c = checksum::update_u16(self.checksum(), old, port);
        self.set_checksum(c);
    }

    /// Sets the destination port and patches the checksum.
    pub fn set_dst_port_with_checksum_update(&mut self, port: u16) {
        let old = self.dst_port();
        put16(self.buffer.as_mut(), field::DST_PORT, port);
        let c = checksum::update_u16(self.checksum(), old, port);
        self.set_checksum(c);
    }

    /// Patches the checksum for an IPv4 address of the pseudo-header changing from `old` to
    /// `new` (call it alongside the IP header's address setter).
    pub fn update_checksum_for_addr_v4(&mut self, old: [u8; 4], new: [u8; 4]) {
        let c = checksum::update_addr4(self.checksum(), old, new);
        self.set_checksum(c);
    }
}
