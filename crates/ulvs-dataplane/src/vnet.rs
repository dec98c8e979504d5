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

/// Most datagrams merged into one USO super-packet (the kernel refuses more than 128).
pub const MAX_USO_SEGMENTS: usize = 64;
/// Largest super-packet (the IPv4 total length field).
const MAX_SUPER: usize = 65_535;
/// IPv4 header without options plus the UDP header.
const V4_UDP_HDRS: usize = 28;

/// What [`UdpCoalescer::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Appended to the pending super-packet (or started one).
    Taken,
    /// It could be merged, but not with the pending packets: flush, then offer it again.
    FlushFirst,
    /// Not a datagram that can be merged: flush, then write it on its own.
    Refused,
}

/// Merges consecutive UDP datagrams of one flow into one USO super-packet
/// (`VIRTIO_NET_HDR_GSO_UDP_L4`), so a worker writes a burst of small datagrams to the TUN with
/// one `write` and the kernel forwards one packet instead of each (it segments it again where
/// the output needs it, at the latest in the receiving socket). This is what wireguard-go and
/// tailscale do for their TUN writes.
///
/// Only IPv4 datagrams without options or fragmentation, with a `virtio_net_hdr` that is not
/// GSO and whose checksum is partial (`NEEDS_CSUM`) or already verified (`DATA_VALID`), are
/// merged: the super-packet's checksum becomes partial, so a datagram with a checksum nobody
/// verified must not be folded in. Datagrams merge when their IP and UDP headers agree (addresses,
/// ports, TOS, TTL, DF) and their payload is as long as the first one's; a shorter one ends the
/// super-packet (it becomes the last segment). The segments of a super-packet get the first
/// datagram's IP id plus their index, as the kernel's own segmentation does.
///
/// [`UdpCoalescer::for_frames`] merges Ethernet frames the same way (for the TAP of direct
/// routing): the frames' Ethernet headers must be equal, and the offsets in the super-frame's
/// header count from the frame's start.
///
/// The buffer is allocated once; [`UdpCoalescer::offer`] and [`UdpCoalescer::flush`] only copy
/// bytes.
#[derive(Debug)]
pub struct UdpCoalescer {
    /// [`VNET_HDR_LEN`] bytes of header space, then the super-packet.
    buf: Box<[u8]>,
    /// Bytes in front of the IP header of every packet (0, or an Ethernet header's 14).
    l2: usize,
    /// Bytes of packet in `buf` after the header space (0: nothing pending).
    len: usize,
    segs: usize,
    seg_payload: usize,
    /// The last segment was shorter than `seg_payload`: nothing more can follow.
    closed: bool,
    /// The header of the first datagram (written unchanged when it stays alone).
    first: VnetHdr,
}

impl Default for UdpCoalescer {
    fn default() -> Self {
        UdpCoalescer {
            buf: vec![0u8; VNET_HDR_LEN + ETH_HLEN + MAX_SUPER].into_boxed_slice(),
            l2: 0,
            len: 0,
            segs: 0,
            seg_payload: 0,
            closed: false,
            first: VnetHdr::default(),
        }
    }
}

/// Length of an Ethernet header (the L2 header of [`UdpCoalescer::for_frames`]).
const ETH_HLEN: usize = 14;

/// The UDP payload length of `pkt` (an IP packet behind `l2` bytes of link header) if it is a
/// datagram [`UdpCoalescer`] may merge.
fn mergeable_payload(pkt: &[u8], hdr: &VnetHdr, l2: usize) -> Option<usize> {
    if hdr.gso_type != GSO_NONE || hdr.flags & (F_NEEDS_CSUM | F_DATA_VALID) == 0 {
        return None;
    }
    if hdr.needs_csum() && (usize::from(hdr.csum_start) != l2 + 20 || hdr.csum_offset != 6) {
        return None;
    }
    if l2 > 0 && pkt.get(l2 - 2..l2) != Some(&[0x08, 0x00]) {
        return None;
    }
    let pkt = pkt.get(l2..)?;
    if pkt.len() <= V4_UDP_HDRS || pkt[0] != 0x45 || pkt[9] != 17 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff; // MF and offset
    let udp_len = usize::from(u16::from_be_bytes([pkt[24], pkt[25]]));
    (total == pkt.len() && frag == 0 && udp_len == total - 20).then_some(total - V4_UDP_HDRS)
}

impl UdpCoalescer {
    /// A coalescer for Ethernet frames carrying IPv4 (a TAP with a `virtio_net_hdr`).
    pub fn for_frames() -> Self {
        UdpCoalescer {
            l2: ETH_HLEN,
            ..UdpCoalescer::default()
        }
    }

    /// Whether a super-packet is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagrams in the pending super-packet.
    pub fn segments(&self) -> usize {
        self.segs
    }

    /// Offers one packet (without its `virtio_net_hdr`, which is `hdr`) for merging.
    pub fn offer(&mut self, pkt: &[u8], hdr: VnetHdr) -> Offer {
        let l2 = self.l2;
        let Some(payload) = mergeable_payload(pkt, &hdr, l2) else {
            return Offer::Refused;
        };
        let at = VNET_HDR_LEN;
        if self.len == 0 {
            self.buf[at..at + pkt.len()].copy_from_slice(pkt);
            self.len = pkt.len();
            self.segs = 1;
            self.seg_payload = payload;
            self.closed = false;
            self.first = hdr;
            return Offer::Taken;
        }
        let link_same = self.buf[at..at + l2] == pkt[..l2];
        let (cur, pkt) = (&self.buf[at + l2..at + l2 + V4_UDP_HDRS], &pkt[l2..]);
        let same_flow = link_same
            && cur[1] == pkt[1]
            && cur[6] & 0x40 == pkt[6] & 0x40
            && cur[8] == pkt[8]
            && cur[12..24] == pkt[12..24];
        if !same_flow
            || self.closed
            || payload > self.seg_payload
            || self.segs >= MAX_USO_SEGMENTS
            || self.len - self.l2 + payload > MAX_SUPER
        {
            return Offer::FlushFirst;
        }
        self.buf[at + self.len..at + self.len + payload].copy_from_slice(&pkt[V4_UDP_HDRS..]);
        self.len += payload;
        self.segs += 1;
        self.closed = payload < self.seg_payload;
        Offer::Taken
    }

    /// Hands the pending packet, `virtio_net_hdr` in front, to `write` (a lone datagram as it
    /// came, several as one USO super-packet with fixed-up IP and UDP headers) and empties the
    /// coalescer. Returns the number of datagrams and what `write` returned, or `None` when
    /// nothing was pending.
    pub fn flush<R>(&mut self, write: impl FnOnce(&[u8]) -> R) -> Option<(usize, R)> {
        if self.len == 0 {
            return None;
        }
        let (len, segs) = (self.len, self.segs);
        self.len = 0;
        self.segs = 0;
        let l2 = self.l2;
        let hdr = if segs == 1 {
            self.first
        } else {
            let p = &mut self.buf[VNET_HDR_LEN + l2..VNET_HDR_LEN + len];
            let len = len - l2;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[10..12].copy_from_slice(&[0, 0]);
            let ip_csum = ulvs_engine::checksum::compute(&p[..20]);
            p[10..12].copy_from_slice(&ip_csum.to_be_bytes());
            let udp_len = len - 20;
            p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
            let src: [u8; 4] = [p[12], p[13], p[14], p[15]];
            let dst: [u8; 4] = [p[16], p[17], p[18], p[19]];
            let pseudo = ulvs_engine::checksum::pseudo_header_v4(src, dst, 17, udp_len as u32);
            p[26..28].copy_from_slice(&ulvs_engine::checksum::fold(pseudo).to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: (l2 + V4_UDP_HDRS) as u16,
                gso_size: self.seg_payload as u16,
                csum_start: (l2 + 20) as u16,
                csum_offset: 6,
            }
        };
        self.buf[..VNET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        Some((segs, write(&self.buf[..VNET_HDR_LEN + len])))
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

    /// A UDP/IPv4 datagram 198.18.0.2:sport -> 198.18.1.11:5201 with `payload` bytes of `fill`,
    /// IP id `id`, and a complete checksum.
    fn datagram(sport: u16, id: u16, payload: usize, fill: u8) -> Vec<u8> {
        let total = 28 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 1, 11]);
        let c = ulvs_engine::checksum::compute(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = fill.wrapping_add(i as u8);
        }
        let pseudo = ulvs_engine::checksum::pseudo_header_v4(
            [198, 18, 0, 2],
            [198, 18, 1, 11],
            17,
            (total - 20) as u32,
        );
        let c = !ulvs_engine::checksum::fold(ulvs_engine::checksum::sum_words(pseudo, &p[20..]));
        p[26..28].copy_from_slice(&if c == 0 { 0xffff } else { c }.to_be_bytes());
        p
    }

    const VALID: VnetHdr = VnetHdr {
        flags: F_DATA_VALID,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Segmenting `sup` by `gso` (as the kernel will) gives back exactly the datagrams `sent`,
    /// and nothing more.
    fn segments_back(sup: &[u8], gso: usize, sent: &[Vec<u8>]) {
        let mut seg = vec![0u8; 2048];
        for (i, want) in sent.iter().enumerate() {
            let n = ulvs_engine::offload::segment(sup, gso, i, &mut seg)
                .unwrap()
                .unwrap();
            assert_eq!(&seg[..n], &want[..], "segment {i}");
        }
        assert_eq!(
            ulvs_engine::offload::segment(sup, gso, sent.len(), &mut seg),
            Ok(None)
        );
    }

    #[test]
    fn a_burst_of_one_flow_becomes_one_uso_packet_that_segments_back() {
        let mut c = UdpCoalescer::default();
        let sent: Vec<Vec<u8>> = (0..5)
            .map(|i| datagram(40000, 100 + i, if i == 4 { 20 } else { 36 }, i as u8 * 7))
            .collect();
        for p in &sent {
            assert_eq!(c.offer(p, VALID), Offer::Taken);
        }
        assert_eq!(c.segments(), 5);
        // After the short last datagram nothing more joins.
        assert_eq!(c.offer(&sent[0], VALID), Offer::FlushFirst);
        let mut out = Vec::new();
        let (n, ()) = c.flush(|b| out.extend_from_slice(b)).unwrap();
        assert_eq!(n, 5);
        assert!(c.is_empty() && c.flush(|_| ()).is_none());
        let h = VnetHdr::parse(&out).unwrap();
        assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (GSO_UDP_L4, 36, 28));
        assert!(h.needs_csum() && h.csum_start == 20 && h.csum_offset == 6);
        let sup = &out[VNET_HDR_LEN..];
        assert_eq!(sup.len(), 28 + 4 * 36 + 20);
        assert_eq!(
            ulvs_engine::checksum::compute(&sup[..20]),
            0,
            "IP header checksum"
        );
        segments_back(sup, 36, &sent);
    }

    /// `ip` behind an Ethernet header to `dst` (IPv4 ethertype unless `ethertype` says other).
    fn frame(dst: u8, ethertype: [u8; 2], ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0x75, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn frames_of_one_flow_to_one_mac_become_one_uso_frame_that_segments_back() {
        let mut c = UdpCoalescer::for_frames();
        let partial = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let sent: Vec<Vec<u8>> = (0..4)
            .map(|i| datagram(40000, 7 + i, 36, i as u8))
            .collect();
        for p in &sent {
            assert_eq!(c.offer(&frame(0x11, [8, 0], p), partial), Offer::Taken);
        }
        // Another real server's MAC, another ethertype, an offset that is not UDP's: no.
        let next = datagram(40000, 11, 36, 9);
        assert_eq!(
            c.offer(&frame(0x12, [8, 0], &next), partial),
            Offer::FlushFirst
        );
        assert_eq!(
            c.offer(&frame(0x11, [0x86, 0xdd], &next), partial),
            Offer::Refused
        );
        let at_ip = VnetHdr {
            csum_start: 20,
            ..partial
        };
        assert_eq!(c.offer(&frame(0x11, [8, 0], &next), at_ip), Offer::Refused);
        let mut out = Vec::new();
        assert_eq!(
            c.flush(|b| out.extend_from_slice(b)).map(|(n, ())| n),
            Some(4)
        );
        let h = VnetHdr::parse(&out).unwrap();
        assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (GSO_UDP_L4, 36, 42));
        assert!(h.needs_csum() && h.csum_start == 34 && h.csum_offset == 6);
        let f = &out[VNET_HDR_LEN..];
        assert_eq!(
            &f[..14],
            &frame(0x11, [8, 0], &[])[..],
            "Ethernet header kept"
        );
        let sup = &f[14..];
        assert_eq!(sup.len(), 28 + 4 * 36);
        segments_back(sup, 36, &sent);
    }

    #[test]
    fn a_lone_datagram_goes_out_as_it_came() {
        let mut c = UdpCoalescer::default();
        let p = datagram(40000, 1, 36, 0);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert_eq!(c.offer(&p, hdr), Offer::Taken);
        let mut out = Vec::new();
        c.flush(|b| out.extend_from_slice(b));
        assert_eq!(VnetHdr::parse(&out), Some(hdr));
        assert_eq!(&out[VNET_HDR_LEN..], &p[..]);
    }

    #[test]
    fn other_flows_sizes_and_unverified_checksums_do_not_merge() {
        let mut c = UdpCoalescer::default();
        assert_eq!(c.offer(&datagram(40000, 1, 36, 0), VALID), Offer::Taken);
        assert_eq!(
            c.offer(&datagram(40001, 2, 36, 0), VALID),
            Offer::FlushFirst
        );
        assert_eq!(
            c.offer(&datagram(40000, 2, 37, 0), VALID),
            Offer::FlushFirst
        );
        let unverified = VnetHdr::default();
        assert_eq!(
            c.offer(&datagram(40000, 2, 36, 0), unverified),
            Offer::Refused
        );
        let gso = VnetHdr {
            gso_type: GSO_UDP_L4,
            ..VALID
        };
        assert_eq!(c.offer(&datagram(40000, 2, 36, 0), gso), Offer::Refused);
        let mut frag = datagram(40000, 2, 36, 0);
        frag[6] |= 0x20; // MF
        assert_eq!(c.offer(&frag, VALID), Offer::Refused);
        let mut tcp = datagram(40000, 2, 36, 0);
        tcp[9] = 6;
        assert_eq!(c.offer(&tcp, VALID), Offer::Refused);
        assert_eq!(
            c.offer(&datagram(40000, 2, 36, 0)[..30], VALID),
            Offer::Refused
        );
        assert_eq!(c.segments(), 1);
    }

    #[test]
    fn merging_stops_at_the_segment_limit() {
        let mut c = UdpCoalescer::default();
        for i in 0..MAX_USO_SEGMENTS {
            assert_eq!(
                c.offer(&datagram(40000, i as u16, 16, 0), VALID),
                Offer::Taken
            );
        }
        assert_eq!(
            c.offer(&datagram(40000, 0, 16, 0), VALID),
            Offer::FlushFirst
        );
    }
}
