//! Tunnel mode (ipvsadm `-i`): encapsulation in place, in the packet buffer's headroom.
//!
//! The outer header formats are the ones the kernel's own tunnel devices and IPVS produce, so a
//! real server may decapsulate with a kernel device or with `ulvs-decap`:
//! - IPIP (RFC 2003 / RFC 2473): an outer IPv4 header (protocol 4 for an IPv4 inner packet, 41
//!   for IPv6) or IPv6 header (next header 4 or 41). TOS / traffic class is the inner one with
//!   ECN CE turned into ECT(0) (RFC 6040 "normal mode", as IPVS's `INET_ECN_encapsulate`);
//!   TTL / hop limit is the inner one; an IPv4 outer header copies DF and the identification
//!   of an IPv4 inner packet.
//! - GUE (draft-ietf-intarea-gue, version 0): outer IP protocol 17, a UDP header to the
//!   configured port from a source port chosen per flow (49152-65535), then the 4-byte GUE
//!   header (version 0, no options, flags 0, protocol 4 or 41). The UDP checksum is 0 with
//!   `--tun-nocsum`, computed with `--tun-csum` and `--tun-remcsum`.
//! - GUE remote checksum offload (`--tun-remcsum`, as the kernel's `fou` module and IPVS send
//!   it): for an inner TCP/UDP packet whose checksum is partial (checksum offload from the
//!   TUN), the GUE header carries the private-flags field (flag P, `0x0001`) with the REMCSUM
//!   private flag (`0x80000000`) and the remote checksum option: 16-bit `start` (where the
//!   inner checksummed bytes begin) and `offset` (where the inner checksum field is), both from
//!   the start of the inner packet; Hlen is 2. The inner checksum field keeps the
//!   pseudo-header sum and the receiver completes it (`ulvs-decap`, or the kernel's
//!   `gue_remcsum`) from the checksum of the bytes after `start`. Packets with a complete inner
//!   checksum get no option, as in IPVS.
//! - GRE (RFC 2784): outer IP protocol 47, a 4-byte header (version 0, protocol type 0x0800 or
//!   0x86dd), 8 bytes with the C bit and a checksum over the GRE header and payload with
//!   `--tun-csum`.
//!
//! The outer source is the director's tunnel address of the real server's family
//! ([`crate::Director`]); the destination is the real server. IPVS allows an IPv4 service with
//! IPv6 real servers and the reverse in tunnel mode only, and so does the engine.

use std::net::IpAddr;

use crate::checksum;
use crate::config::{DestConfig, ForwardMethod, TunnelChecksum, TunnelConfig, TunnelType};
use crate::path::Ip;
use crate::{L4Csum, PacketBuf};

/// IP protocol number of IPv4-in-IP.
pub(crate) const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP.
pub(crate) const IPPROTO_IPV6: u8 = 41;
/// IP protocol number of GRE.
pub(crate) const IPPROTO_GRE: u8 = 47;
/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// A real server's forwarding method with its tunnel settings, as stored (packed into a `u32`)
/// in its shared state so that the packet path reads it with one atomic load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fwd {
    pub(crate) method: ForwardMethod,
    pub(crate) tunnel: TunnelConfig,
}

impl Fwd {
    /// The settings of a configured real server.
    pub(crate) fn of(d: &DestConfig) -> Fwd {
        Fwd {
            method: d.forward,
            tunnel: d.tunnel,
        }
    }

    /// Packs into a `u32`: method in bits 0-1, tunnel type in 2-3, checksum in 4-5, port in
    /// 16-31.
    pub(crate) fn pack(self) -> u32 {
        let m = match self.method {
            ForwardMethod::Masq => 0,
            ForwardMethod::Route => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::FullNat => 3,
        };
        let k = match self.tunnel.kind {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        };
        let c = match self.tunnel.checksum {
            TunnelChecksum::None => 0,
            TunnelChecksum::Csum => 1,
            TunnelChecksum::Remcsum => 2,
        };
        m | (k << 2) | (c << 4) | (u32::from(self.tunnel.port) << 16)
    }

    /// The inverse of [`Fwd::pack`].
    pub(crate) fn unpack(v: u32) -> Fwd {
        let method = match v & 3 {
            0 => ForwardMethod::Masq,
            1 => ForwardMethod::Route,
            2 => ForwardMethod::Tunnel,
            _ => ForwardMethod::FullNat,
        };
        let kind = match (v >> 2) & 3 {
            1 => TunnelType::Gue,
            2 => TunnelType::Gre,
            _ => TunnelType::Ipip,
        };
        let checksum = match (v >> 4) & 3 {
            1 => TunnelChecksum::Csum,
            2 => TunnelChecksum::Remcsum,
            _ => TunnelChecksum::None,
        };
        Fwd {
            method,
            tunnel: TunnelConfig {
                kind,
                port: (v >> 16) as u16,
                checksum,
            },
        }
    }
}

/// Bytes the remote checksum offload adds to a GUE header: the private-flags field and the
/// option's `start` and `offset`.
pub(crate) const REMCSUM_LEN: usize = 8;
/// GUE flag P (private flags field present), as the kernel's `GUE_FLAG_PRIV`.
pub(crate) const GUE_FLAG_PRIV: u16 = 0x0001;
/// GUE private flag REMCSUM, as the kernel's `GUE_PFLAG_REMCSUM`.
pub(crate) const GUE_PFLAG_REMCSUM: u32 = 0x8000_0000;

/// The remote checksum offload option of a GUE header: where the inner packet's checksummed
/// bytes start and where its checksum field is, from the start of the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remcsum {
    pub(crate) start: u16,
    pub(crate) offset: u16,
}

impl Remcsum {
    /// The option for a packet (`pkt`, described by `ip`) to a real server with tunnel
    /// settings `t`: only for GUE with `--tun-remcsum` and an inner TCP/UDP packet (not a
    /// super-packet) whose checksum is partial; `None` otherwise (the caller then finishes the
    /// checksum and sends no option).
    pub(crate) fn of(pkt: &PacketBuf<'_>, ip: &Ip, t: &TunnelConfig) -> Option<Remcsum> {
        let o = pkt.offload();
        if t.kind != TunnelType::Gue
            || t.checksum != TunnelChecksum::Remcsum
            || o.csum != L4Csum::Partial
            || o.is_gso()
        {
            return None;
        }
        let field = match ip.proto {
            6 => 16,
            IPPROTO_UDP => 6,
            _ => return None,
        };
        let offset = ip.l4 + field;
        if offset + 2 > ip.total.min(pkt.len()) {
            return None;
        }
        Some(Remcsum {
            start: u16::try_from(ip.l4).ok()?,
            offset: u16::try_from(offset).ok()?,
        })
    }
}

/// Bytes the encapsulation adds in front of `inner`, outer IP header included: [`overhead`]
/// and the remote checksum offload option if `inner` gets one.
pub(crate) fn overhead_for(t: &TunnelConfig, inner: &Inner, outer_v6: bool) -> usize {
    let opt = if t.kind == TunnelType::Gue && inner.remcsum.is_some() {
        REMCSUM_LEN
    } else {
        0
    };
    overhead(t, outer_v6) + opt
}

/// Bytes the encapsulation adds in front of the inner packet, outer IP header included,
/// without GUE options.
pub(crate) fn overhead(t: &TunnelConfig, outer_v6: bool) -> usize {
    let ip = if outer_v6 { 40 } else { 20 };
    ip + match t.kind {
        TunnelType::Ipip => 0,
        TunnelType::Gue => 8 + 4,
        TunnelType::Gre if t.checksum == TunnelChecksum::Csum => 8,
        TunnelType::Gre => 4,
    }
}

/// Facts of the inner packet the outer header copies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inner {
    /// Whether the inner packet is IPv6.
    pub(crate) v6: bool,
    /// TOS / traffic class.
    pub(crate) dsfield: u8,
    /// TTL / hop limit.
    pub(crate) ttl: u8,
    /// IPv4 DF flag (false for IPv6).
    pub(crate) df: bool,
    /// IPv4 identification (0 for IPv6).
    pub(crate) id: u16,
    /// A per-flow hash for the GUE source port.
    pub(crate) flow_hash: u16,
    /// The GUE remote checksum offload option, if the inner checksum is left to the receiver.
    pub(crate) remcsum: Option<Remcsum>,
}

impl Inner {
    /// Reads the facts from an inner packet that the caller has already validated (an IPv4
    /// header of at least 20 bytes or an IPv6 header of 40).
    pub(crate) fn of(pkt: &[u8], flow_hash: u16) -> Inner {
        if pkt[0] >> 4 == 6 {
            Inner {
                v6: true,
                dsfield: (pkt[0] << 4) | (pkt[1] >> 4),
                ttl: pkt[7],
                df: false,
                id: 0,
                flow_hash,
                remcsum: None,
            }
        } else {
            Inner {
                v6: false,
                dsfield: pkt[1],
                ttl: pkt[8],
                df: pkt[6] & 0x40 != 0,
                id: u16::from_be_bytes([pkt[4], pkt[5]]),
                flow_hash,
                remcsum: None,
            }
        }
    }
}

/// A per-flow hash of a tuple, stable across runs (no random seed: GUE source ports in packet
/// fixtures must not change).
pub(crate) fn flow_hash(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> u16 {
    let mut acc = u64::from(sport) * 31 + u64::from(dport) * 17 + u64::from(proto);
    for ip in [src, dst] {
        acc = match ip {
            IpAddr::V4(a) => checksum::sum_words(acc, &a.octets()),
            IpAddr::V6(a) => checksum::sum_words(acc, &a.octets()),
        };
        acc = acc.wrapping_mul(0x9e37_79b9);
    }
    (acc ^ (acc >> 16) ^ (acc >> 32)) as u16
}

/// ECN-aware copy of the inner DS field (RFC 6040 normal mode: CE becomes ECT(0)).
fn ecn_encapsulate(inner: u8) -> u8 {
    if inner & 3 == 3 {
        (inner & !3) | 2
    } else {
        inner
    }
}

/// Why a packet could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncapError {
    /// The buffer has too little headroom for the outer headers.
    NoHeadroom,
    /// The outer packet would exceed 65535 bytes.
    TooLong,
}

/// Writes the outer headers for `inner` (the packet at `buf[start..start + len]`) in front of
/// it, from `src` to `dst`, and returns the new start. `src` and `dst` are of one family.
pub(crate) fn encapsulate(
    buf: &mut [u8],
    start: usize,
    len: usize,
    inner: Inner,
    t: &TunnelConfig,
    src: IpAddr,
    dst: IpAddr,
) -> Result<usize, EncapError> {
    let outer_v6 = dst.is_ipv6();
    let oh = overhead_for(t, &inner, outer_v6);
    if start < oh {
        return Err(EncapError::NoHeadroom);
    }
    let ip_len = if outer_v6 { 40 } else { 20 };
    let total = len + oh;
    // IPv6 payload length or IPv4 total length must fit 16 bits.
    if total - if outer_v6 { 40 } else { 0 } > usize::from(u16::MAX) {
        return Err(EncapError::TooLong);
    }
    let new_start = start - oh;
    let inner_proto = if inner.v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    let outer_proto = match t.kind {
        TunnelType::Ipip => inner_proto,
        TunnelType::Gue => IPPROTO_UDP,
        TunnelType::Gre => IPPROTO_GRE,
    };
    // The tunnel header, between the outer IP header and the inner packet.
    let th = new_start + ip_len;
    match t.kind {
        TunnelType::Ipip => {}
        TunnelType::Gue => {
            let sport = 0xc000 | (inner.flow_hash & 0x3fff);
            // UDP header and GUE header with its optional fields.
            let udp_len = (oh - ip_len + len) as u16;
            buf[th..th + 2].copy_from_slice(&sport.to_be_bytes());
            buf[th + 2..th + 4].copy_from_slice(&t.port.to_be_bytes());
            buf[th + 4..th + 6].copy_from_slice(&udp_len.to_be_bytes());
            buf[th + 6..th + 8].copy_from_slice(&[0, 0]);
            match inner.remcsum {
                // GUE version 0, C = 0, Hlen = 0; proto/ctype; flags 0.
                None => buf[th + 8..th + 12].copy_from_slice(&[0, inner_proto, 0, 0]),
                // Hlen = 2 (private flags, option); flag P; REMCSUM; start, offset.
                Some(r) => {
                    buf[th + 8..th + 10].copy_from_slice(&[(REMCSUM_LEN / 4) as u8, inner_proto]);
                    buf[th + 10..th + 12].copy_from_slice(&GUE_FLAG_PRIV.to_be_bytes());
                    buf[th + 12..th + 16].copy_from_slice(&GUE_PFLAG_REMCSUM.to_be_bytes());
                    buf[th + 16..th + 18].copy_from_slice(&r.start.to_be_bytes());
                    buf[th + 18..th + 20].copy_from_slice(&r.offset.to_be_bytes());
                }
            }
            if t.checksum != TunnelChecksum::None {
                let pseudo = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(
                        s.octets(),
                        d.octets(),
                        IPPROTO_UDP,
                        u32::from(udp_len),
                    ),
                    (s, d) => pseudo_header_v6(s, d, IPPROTO_UDP, u32::from(udp_len)),
                };
                let c = !checksum::fold(checksum::sum_words(pseudo, &buf[th..start + len]));
                let c = if c == 0 { 0xffff } else { c };
                buf[th + 6..th + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        TunnelType::Gre => {
            let ptype: u16 = if inner.v6 { 0x86dd } else { 0x0800 };
            let csum = t.checksum == TunnelChecksum::Csum;
            let flags: u16 = if csum { 0x8000 } else { 0 };
            buf[th..th + 2].copy_from_slice(&flags.to_be_bytes());
            buf[th + 2..th + 4].copy_from_slice(&ptype.to_be_bytes());
            if csum {
                buf[th + 4..th + 8].copy_from_slice(&[0, 0, 0, 0]);
                let c = checksum::compute(&buf[th..start + len]);
                buf[th + 4..th + 6].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    let o = new_start;
    let tos = ecn_encapsulate(inner.dsfield);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut buf[o..o + 20];
            h[0] = 0x45;
            h[1] = tos;
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            h[4..6].copy_from_slice(&inner.id.to_be_bytes());
            h[6..8].copy_from_slice(&(if inner.df { 0x4000u16 } else { 0 }).to_be_bytes());
            h[8] = inner.ttl;
            h[9] = outer_proto;
            h[10..12].copy_from_slice(&[0, 0]);
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum::compute(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (s, d) => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (to_v6(s), d) else {
                // Callers pass a source of the destination's family.
                return Err(EncapError::NoHeadroom);
            };
            let h = &mut buf[o..o + 40];
            h[0] = 0x60 | (tos >> 4);
            h[1] = tos << 4;
            h[2..4].copy_from_slice(&[0, 0]);
            h[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            h[6] = outer_proto;
            h[7] = inner.ttl;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
    }
    Ok(new_start)
}

fn to_v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v6 => v6,
    }
}

/// The IPv6 pseudo-header sum (RFC 8200 section 8.1), unfolded. IPv4 addresses are taken as
/// their mapped form (callers pass IPv6 addresses).
pub(crate) fn pseudo_header_v6(src: IpAddr, dst: IpAddr, next: u8, len: u32) -> u64 {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (to_v6(src), to_v6(dst)) else {
        return 0;
    };
    let acc = checksum::sum_words(0, &s.octets());
    let acc = checksum::sum_words(acc, &d.octets());
    acc + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fwd_pack_round_trips() {
        for method in [
            ForwardMethod::Masq,
            ForwardMethod::Route,
            ForwardMethod::Tunnel,
            ForwardMethod::FullNat,
        ] {
            for kind in [TunnelType::Ipip, TunnelType::Gue, TunnelType::Gre] {
                for checksum in [
                    TunnelChecksum::None,
                    TunnelChecksum::Csum,
                    TunnelChecksum::Remcsum,
                ] {
                    for port in [0, 1, 6080, 65535] {
                        let f = Fwd {
                            method,
                            tunnel: TunnelConfig {
                                kind,
                                port,
                                checksum,
                            },
                        };
                        assert_eq!(Fwd::unpack(f.pack()), f);
                    }
                }
            }
        }
    }

    #[test]
    fn ecn_ce_becomes_ect0() {
        assert_eq!(ecn_encapsulate(0xb8 | 3), 0xb8 | 2);
        assert_eq!(ecn_encapsulate(0xb8 | 1), 0xb8 | 1);
        assert_eq!(ecn_encapsulate(0), 0);
    }
}
