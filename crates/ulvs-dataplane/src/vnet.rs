//! The `virtio_net_hdr` that a TUN device with `IFF_VNET_HDR` puts in front of every packet it
//! hands over, and expects in front of every packet written to it.
//!
//! The header is 10 bytes (`struct virtio_net_hdr`; the 12-byte variant with `num_buffers` is
//! only used when `TUNSETVNETHDRSZ` asks for it, which we do not), in the host's byte order
//! (little-endian on every host we build for, which is what a TUN uses unless told otherwise
//! with `TUNSETVNETBE`):
//!
//! | offset | field         | meaning                                                      |
//! |--------|---------------|--------------------------------------------------------------|
//! | 0      | `flags`       | `NEEDS_CSUM` (L4 checksum is partial), `DATA_VALID`          |
//! | 1      | `gso_type`    | `NONE`, `TCPV4`, `UDP` (UFO), `TCPV6`, `UDP_L4` (USO), `ECN` |
//! | 2      | `hdr_len`     | length of the headers in front of the GSO payload            |
//! | 4      | `gso_size`    | payload bytes per segment                                    |
//! | 6      | `csum_start`  | where the checksummed L4 bytes start, from the packet start  |
//! | 8      | `csum_offset` | where the checksum field is, from `csum_start`               |
//!
//! The workers read it, tell the engine what it means ([`VnetHdr::offload`]) and write it back
//! with the packet. NAT and FULLNAT keep the header layout, so the header goes back unchanged;
//! if the engine moved the packet start (encapsulation), `csum_start` moves with it
//! ([`VnetHdr::moved`]).

use ulvs_engine::{L4Csum, Offload};

/// Length of the header in front of every packet.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum field holds the pseudo-header sum only.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO, IP fragmentation of a big datagram).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO, one datagram per segment).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit of `gso_type`.
pub const GSO_ECN: u8 = 0x80;

/// A parsed `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// One of the `GSO_*` values, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Header bytes in front of the GSO payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Start of the checksummed bytes, from the packet start.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first [`VNET_HDR_LEN`] bytes; `None` if there are fewer.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether the L4 checksum is partial.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// Whether the packet is a GSO super-packet.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// What the header means for the engine.
    pub fn offload(&self) -> Offload {
        Offload {
            csum: if self.needs_csum() {
                L4Csum::Partial
            } else {
                L4Csum::Complete
            },
            gso_size: if self.is_gso() {
                self.gso_size.max(1)
            } else {
                0
            },
        }
    }

    /// The header for the packet after the engine moved its start by `delta` bytes (negative:
    /// outer headers were added in front; positive: headers were removed): checksum and GSO
    /// header offsets, counted from the packet start, move the other way. `None` if they would
    /// leave 16 bits.
    pub fn moved(self, delta: isize) -> Option<VnetHdr> {
        if delta == 0 {
            return Some(self);
        }
        let shift = |v: u16| -> Option<u16> {
            u16::try_from(isize::try_from(v).ok()?.checked_sub(delta)?).ok()
        };
        let mut h = self;
        if h.needs_csum() {
            h.csum_start = shift(h.csum_start)?;
        }
        if h.is_gso() {
            h.hdr_len = shift(h.hdr_len)?;
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_little_endian() {
        let raw = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let h = VnetHdr::parse(&raw).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!(h.to_bytes(), raw);
        assert_eq!(
            h.offload(),
            Offload {
                csum: L4Csum::Partial,
                gso_size: 1448
            }
        );
    }

    #[test]
    fn plain_header_is_a_plain_packet() {
        let h = VnetHdr::parse(&[0; 10]).unwrap();
        assert!(!h.needs_csum() && !h.is_gso());
        assert_eq!(h.offload(), Offload::default());
        let ecn_only = VnetHdr {
            gso_type: GSO_ECN,
            ..h
        };
        assert!(!ecn_only.is_gso());
        let valid = VnetHdr {
            flags: F_DATA_VALID,
            ..h
        };
        assert_eq!(valid.offload(), Offload::default());
    }

    #[test]
    fn short_input_is_refused() {
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }

    #[test]
    fn moving_the_start_moves_offsets_that_are_in_use() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 6,
        };
        let s = h.moved(-20).unwrap();
        assert_eq!((s.csum_start, s.hdr_len, s.csum_offset), (40, 48, 6));
        assert_eq!(s.moved(20), Some(h));
        assert_eq!(VnetHdr::default().moved(-20), Some(VnetHdr::default()));
        assert_eq!(h.moved(-70_000), None);
        assert_eq!(h.moved(21), None);
        let big = VnetHdr {
            csum_start: u16::MAX,
            ..h
        };
        assert_eq!(big.moved(-1), None);
    }
}
