//! IPv4 header view (RFC 791).

use std::net::Ipv4Addr;

use super::{Error, be16, put16};
use crate::checksum;

mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const LENGTH: usize = 2;
    pub(super) const FLG_OFF: usize = 6;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: std::ops::Range<usize> = 12..16;
    pub(super) const DST: std::ops::Range<usize> = 16..20;
    pub(super) const MIN_HEADER: usize = 20;
}

/// An IPv4 packet in a buffer. The buffer may extend past the packet's total length (trailing
/// bytes are ignored by [`Ipv4Packet::payload`]).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checks; accessors may panic if it is too short.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after checking version 4, IHL >= 5, header length <= total length <=
    /// buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The checks of [`Ipv4Packet::new_checked`].
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < field::MIN_HEADER || self.version() != 4 {
            return Err(Error);
        }
        let hl = self.header_len();
        let tl = usize::from(self.total_len());
        if hl < field::MIN_HEADER || tl < hl || tl > b.len() {
            return Err(Error);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length of the packet (header and payload).
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The "more fragments" flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }

    /// The "don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The payload's IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address bytes.
    pub fn src_bytes(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// Destination address bytes.
    pub fn dst_bytes(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum_words(
            0,
            &self.buffer.as_ref()[..self.header_len()],
        )) == 0xffff
    }

    /// The payload: from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &self.buffer.as_ref()[hl..tl]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the header checksum from scratch and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::compute(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Sets the source address and patches the header checksum. The caller patches the L4
    /// checksum (its pseudo-header covers the address too).
    pub fn set_src_addr_with_checksum_update(&mut self, addr: Ipv4Addr) {
        let old = self.src_bytes();
        let new = addr.octets();
        self.buffer.as_mut()[field::SRC].copy_from_slice(&new);
        let c = checksum::update_addr4(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Sets the destination address and patches the header checksum. The caller patches the L4
    /// checksum (its pseudo-header covers the address too).
    pub fn set_dst_addr_with_checksum_update(&mut self, addr: Ipv4Addr) {
        let old = self.dst_bytes();
        let new = addr.octets();
        self.buffer.as_mut()[field::DST].copy_from_slice(&new);
        let c = checksum::update_addr4(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}
