//! Checksum and segmentation offload helpers: finishing a partial L4 checksum, and cutting a GSO
//! super-packet into the packets it stands for.
//!
//! With offload on, the TUN hands over TCP (and UDP) super-packets of up to 64 KiB with a partial
//! checksum (see [`crate::L4Csum`]). NAT rewrites them once and the kernel segments them after
//! us. Outputs that cannot carry the offload metadata (a frame on a TAP, an encapsulated packet)
//! need the checksum finished (`finish_partial`, done by the engine) and super-packets split
//! first: the engine refuses those with [`crate::DropReason::GsoNotSplit`] *before* counting or
//! changing them, and the caller submits each [`segment`] instead.
//!
//! Everything here works on borrowed buffers and never allocates or panics.

use crate::checksum::{fold, sum_words};
use crate::{L4Csum, PacketBuf};

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Why a super-packet could not be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Not an IPv4/IPv6 TCP or UDP packet with consistent headers (IPv6 extension headers are
    /// not supported), or a segment size of 0.
    #[error("not a segmentable TCP or UDP packet")]
    Malformed,
    /// The output buffer is smaller than one segment.
    #[error("output buffer too small for a segment")]
    NoRoom,
}

/// Where the IP and L4 headers are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    /// IP header length (and L4 offset).
    l3: usize,
    proto: u8,
    /// End of the packet (IP total length).
    total: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn layout(b: &[u8]) -> Option<Layout> {
    match b.first()? >> 4 {
        4 => {
            let l3 = usize::from(b[0] & 0x0f) * 4;
            let total = usize::from(be16(b, 2)?);
            if l3 < 20 || total < l3 || total > b.len() {
                return None;
            }
            Some(Layout {
                v6: false,
                l3,
                proto: *b.get(9)?,
                total,
            })
        }
        6 => {
            let total = 40 + usize::from(be16(b, 4)?);
            if b.len() < 40 || total > b.len() {
                return None;
            }
            Some(Layout {
                v6: true,
                l3: 40,
                proto: b[6],
                total,
            })
        }
        _ => None,
    }
}

/// The pseudo-header sum of packet `b` for an L4 length of `l4_len`, unfolded.
fn pseudo(b: &[u8], lay: &Layout, l4_len: usize) -> u64 {
    let addrs = if lay.v6 { &b[8..40] } else { &b[12..20] };
    let len = l4_len as u64;
    sum_words(0, addrs) + u64::from(lay.proto) + (len >> 16) + (len & 0xffff)
}

fn checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        TCP => Some(16),
        UDP => Some(6),
        _ => None,
    }
}

/// Finishes a partial TCP/UDP checksum in place, as the kernel would on transmit, and marks the
/// packet's checksum complete. Does nothing for a packet whose checksum is already complete or
/// that is not TCP/UDP over IPv4 or IPv6 without extension headers.
pub(crate) fn finish_partial(pkt: &mut PacketBuf<'_>) {
    if pkt.offload.csum != L4Csum::Partial {
        return;
    }
    let data = pkt.data_mut();
    let Some(lay) = layout(data) else { return };
    let Some(off) = checksum_offset(lay.proto) else {
        return;
    };
    let l4 = &mut data[lay.l3..lay.total];
    if l4.len() < off + 2 {
        return;
    }
    let c = !fold(sum_words(0, l4));
    let c = if lay.proto == UDP && c == 0 {
        0xffff
    } else {
        c
    };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    pkt.offload.csum = L4Csum::Complete;
}

/// Number of segments super-packet `pkt` stands for with `gso_size` payload bytes each.
pub fn segment_count(pkt: &[u8], gso_size: usize) -> Result<usize, SegmentError> {
    let (_, hdrs, payload) = split_point(pkt, gso_size)?;
    Ok(payload.saturating_sub(hdrs).div_ceil(gso_size).max(1))
}

/// Layout, header length, end of payload.
fn split_point(pkt: &[u8], gso_size: usize) -> Result<(Layout, usize, usize), SegmentError> {
    let lay = layout(pkt).ok_or(SegmentError::Malformed)?;
    if gso_size == 0 {
        return Err(SegmentError::Malformed);
    }
    let l4_hdr = match lay.proto {
        TCP => {
            let off = *pkt.get(lay.l3 + 12).ok_or(SegmentError::Malformed)?;
            usize::from(off >> 4) * 4
        }
        UDP => 8,
        _ => return Err(SegmentError::Malformed),
    };
    let hdrs = lay.l3 + l4_hdr;
    if l4_hdr < 8 || hdrs > lay.total {
        return Err(SegmentError::Malformed);
    }
    Ok((lay, hdrs, lay.total))
}

/// Writes segment `index` of the super-packet `pkt` (TCP or UDP over IPv4 or IPv6, as TSO/USO
/// hand it over, with a partial or complete L4 checksum) into `out`, with complete checksums:
/// the headers copied, the IP length (and IPv4 id and header checksum), TCP sequence number and
/// flags (FIN and PSH only on the last segment, CWR only on the first) or UDP length fixed up.
/// Returns the segment's length, or `None` past the last segment.
pub fn segment(
    pkt: &[u8],
    gso_size: usize,
    index: usize,
    out: &mut [u8],
) -> Result<Option<usize>, SegmentError> {
    let (lay, hdrs, end) = split_point(pkt, gso_size)?;
    let payload = end - hdrs;
    let count = payload.div_ceil(gso_size).max(1);
    if index >= count {
        return Ok(None);
    }
    let from = hdrs + index * gso_size;
    let len = gso_size.min(end - from);
    let seg_len = hdrs + len;
    let out = out.get_mut(..seg_len).ok_or(SegmentError::NoRoom)?;
    out[..hdrs].copy_from_slice(&pkt[..hdrs]);
    out[hdrs..].copy_from_slice(&pkt[from..from + len]);
    let l4_len = seg_len - lay.l3;
    if lay.v6 {
        out[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        out[2..4].copy_from_slice(&(seg_len as u16).to_be_bytes());
        let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(index as u16);
        out[4..6].copy_from_slice(&id.to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum_words(0, &out[..lay.l3]));
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let l4 = lay.l3;
    let at = match lay.proto {
        TCP => {
            let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
                .wrapping_add((index * gso_size) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = out[l4 + 13];
            if index + 1 != count {
                flags &= !(0x01 | 0x08); // FIN, PSH
            }
            if index != 0 {
                flags &= !0x80; // CWR
            }
            out[l4 + 13] = flags;
            l4 + 16
        }
        _ => {
            out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4 + 6
        }
    };
    out[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = sum_words(pseudo(out, &lay, l4_len), &out[l4..]);
    let c = !fold(sum);
    let c = if lay.proto == UDP && c == 0 {
        0xffff
    } else {
        c
    };
    out[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(Some(seg_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Offload;

    /// An IPv4 TCP packet with `payload`, checksums complete.
    fn tcp4(payload: &[u8], flags: u8) -> Vec<u8> {
        let total = 40 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 1, 11]);
        let c = !fold(sum_words(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[40..].copy_from_slice(payload);
        let lay = layout(&p).unwrap();
        let c = !fold(sum_words(pseudo(&p, &lay, total - 20), &p[20..]));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn l4_ok(p: &[u8]) -> bool {
        let lay = layout(p).unwrap();
        fold(sum_words(
            pseudo(p, &lay, lay.total - lay.l3),
            &p[lay.l3..lay.total],
        )) == 0xffff
    }

    #[test]
    fn tcp_segments_reassemble_to_the_payload_with_valid_checksums() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
        let sup = tcp4(&payload, 0x18 | 0x01 | 0x80); // ACK PSH FIN CWR
        assert_eq!(segment_count(&sup, 1448), Ok(3));
        let mut out = [0u8; 1600];
        let mut joined = Vec::new();
        for i in 0..3 {
            let n = segment(&sup, 1448, i, &mut out).unwrap().unwrap();
            let s = &out[..n];
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), n);
            assert_eq!(fold(sum_words(0, &s[..20])), 0xffff, "IP checksum {i}");
            assert!(l4_ok(s), "TCP checksum {i}");
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(1448 * i as u32));
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
            let last = i == 2;
            assert_eq!(s[33] & 0x09 != 0, last, "FIN/PSH only last");
            assert_eq!(s[33] & 0x80 != 0, i == 0, "CWR only first");
            joined.extend_from_slice(&s[40..]);
        }
        assert_eq!(joined, payload);
        assert_eq!(segment(&sup, 1448, 3, &mut out), Ok(None));
        assert_eq!(
            segment(&sup, 1448, 0, &mut [0u8; 100]),
            Err(SegmentError::NoRoom)
        );
        assert_eq!(segment(&sup, 0, 0, &mut out), Err(SegmentError::Malformed));
        assert_eq!(
            segment(&sup[..30], 1448, 0, &mut out),
            Err(SegmentError::Malformed)
        );
    }

    #[test]
    fn finishing_a_partial_checksum_gives_the_full_one() {
        let full = tcp4(b"hello, odd", 0x18);
        let mut partial = full.clone();
        let lay = layout(&partial).unwrap();
        let ps = fold(pseudo(&partial, &lay, lay.total - 20));
        partial[36..38].copy_from_slice(&ps.to_be_bytes());
        let mut buf = partial.clone();
        let n = buf.len();
        let mut pkt = PacketBuf::with_offload(&mut buf, 0, n, Offload::PARTIAL);
        finish_partial(&mut pkt);
        assert_eq!(pkt.offload().csum, L4Csum::Complete);
        assert_eq!(pkt.data(), &full[..]);
        // Complete packets are left alone.
        let mut buf2 = full.clone();
        let mut pkt = PacketBuf::new(&mut buf2, 0, n);
        finish_partial(&mut pkt);
        assert_eq!(pkt.data(), &full[..]);
    }
}
