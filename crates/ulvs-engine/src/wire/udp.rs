//! UDP header view (RFC 768). A zero checksum means "none" over IPv4 and stays zero.

use super::{Error, be16, put16};
use crate::checksum;

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LENGTH: usize = 4;
    pub(super) const CHECKSUM: usize = 6;
    pub(super) const HEADER: usize = 8;
}

/// A UDP datagram in a buffer holding exactly the IP payload (or, for a first fragment, the
/// part of it that this fragment carries).
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checks; accessors may panic if it is too short.
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header and 8 <= length field <= buffer
    /// length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_checked_header(buffer)?;
        let len = usize::from(p.len());
        if len < field::HEADER || len > p.buffer.as_ref().len() {
            return Err(Error);
        }
        Ok(p)
    }

    /// Wraps `buffer` after checking only that it holds the 8-byte header (for the first
    /// fragment of a datagram, whose length field covers fragments not in this buffer).
    pub fn new_checked_header(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < field::HEADER {
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

    /// Length field (header and data).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no data.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= field::HEADER
    }

    /// Checksum field (0 = none).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the checksum is absent (0) or right for the IPv4 addresses `src` and `dst`.
    pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let b = &self.buffer.as_ref()[..usize::from(self.len()).min(self.buffer.as_ref().len())];
        let acc = checksum::pseudo_header_v4(src, dst, super::IPPROTO_UDP, b.len() as u32);
        checksum::fold(checksum::sum_words(acc, b)) == 0xffff
    }

    /// Whether the checksum is right for the IPv6 addresses `src` and `dst` (over IPv6 a UDP
    /// checksum is mandatory, so 0 is wrong).
    pub fn verify_checksum_v6(&self, src: [u8; 16], dst: [u8; 16]) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let b = &self.buffer.as_ref()[..usize::from(self.len()).min(self.buffer.as_ref().len())];
        let acc = checksum::pseudo_header_v6(src, dst, super::IPPROTO_UDP, b.len() as u32);
        checksum::fold(checksum::sum_words(acc, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Stores a patched checksum unless the datagram has none; a result of 0 is written as
    /// 0xffff, since 0 means "no checksum".
    fn patch_checksum(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c == 0 {
            return;
        }
        let n = f(c);
        self.set_checksum(if n == 0 { 0xffff } else { n });
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

    /// Sets the source port and patches the checksum (if any).
    pub fn set_src_port_with_checksum_update(&mut self, port: u16) {
        let old = self.src_port();
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
        self.patch_checksum(|c| checksum::update_u16(c, old, port));
    }

    /// Sets the destination port and patches the checksum (if any).
    pub fn set_dst_port_with_checksum_update(&mut self, port: u16) {
        let old = self.dst_port();
        put16(self.buffer.as_mut(), field::DST_PORT, port);
        self.patch_checksum(|c| checksum::update_u16(c, old, port));
    }

    /// Patches the checksum (if any) for an IPv4 pseudo-header address changing from `old` to
    /// `new`.
    pub fn update_checksum_for_addr_v4(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.patch_checksum(|c| checksum::update_addr4(c, old, new));
    }
}
