//! Decapsulation parsing: from what a raw or UDP socket hands us to the inner IP packet.
//!
//! Pure functions over borrowed bytes; every malformed input is an [`DecapError`] naming why,
//! never a panic. The formats are the ones the ulvs engine (and the kernel's tunnel devices)
//! produce:
//! - IPIP / IPv6-in-IP (RFC 2003, RFC 2473): the outer payload is the inner packet; protocol 4
//!   carries IPv4, 41 IPv6.
//! - GRE (RFC 2784, with RFC 2890 key and sequence number accepted and skipped): version 0, no
//!   routing; a present checksum (C bit) must verify over the GRE header and payload; protocol
//!   type 0x0800 or 0x86dd.
//! - GUE (draft-ietf-intarea-gue): version 0 data messages without optional fields (control
//!   messages and options are refused, counted), and version 1 (the inner IP header directly).
//!   The UDP checksum is checked by the kernel before the UDP socket sees the payload.
//!   [`decap_gue_mut`] also takes the one option the engine and the kernel's `fou` send: remote
//!   checksum offload (flag P, private flag REMCSUM, `start` and `offset`), completing the
//!   inner checksum in place.
//!
//! The inner packet is checked as the kernel would on receipt (version, header length, total
//! length within the bytes received, IPv4 header checksum) and trimmed to its own length.

/// IP protocol number of IPv4-in-IP.
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP.
pub const IPPROTO_IPV6: u8 = 41;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;

const GRE_C: u16 = 0x8000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;
/// Routing present, strict source route, recursion control, reserved flags, version.
const GRE_REFUSED: u16 = 0x4000 | 0x0800 | 0x0700 | 0x00f8;
const GRE_VERSION: u16 = 0x0007;

/// Why a received packet was not decapsulated. Each has a counter in [`crate::Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecapError {
    /// The outer IPv4 header (from a raw IPv4 socket) is short or inconsistent.
    #[error("bad outer IPv4 header")]
    BadOuter,
    /// The outer protocol is not 4, 41 or 47.
    #[error("outer protocol is not IPIP, IPv6-in-IP or GRE")]
    OuterProtocol,
    /// The tunnel header is cut short.
    #[error("truncated tunnel header")]
    TruncatedHeader,
    /// GRE with a version other than 0 (for example PPTP's enhanced GRE).
    #[error("GRE version is not 0")]
    GreVersion,
    /// GRE with routing, strict source route, recursion or reserved flags set.
    #[error("GRE flags not supported (routing, strict route, recursion or reserved bits)")]
    GreFlags,
    /// GRE checksum present and wrong.
    #[error("GRE checksum mismatch")]
    GreChecksum,
    /// GRE without a checksum while one is required (`--require-gre-csum`).
    #[error("GRE checksum missing but required")]
    GreChecksumMissing,
    /// GRE protocol type other than IPv4 or IPv6.
    #[error("GRE protocol type is not IPv4 or IPv6")]
    GreProtocol,
    /// GUE version 2 or 3.
    #[error("GUE version not supported")]
    GueVersion,
    /// A GUE control message (C bit).
    #[error("GUE control message")]
    GueControl,
    /// GUE optional fields (flags or header length) other than remote checksum offload, or a
    /// remote checksum offload option whose `start` and `offset` do not fit the inner packet.
    #[error("GUE optional fields not supported")]
    GueOptions,
    /// GUE inner protocol other than 4 or 41.
    #[error("GUE protocol is not IPv4 or IPv6")]
    GueProtocol,
    /// The inner packet's IP version does not match the tunnel's protocol.
    #[error("inner IP version does not match the tunnel protocol")]
    InnerVersion,
    /// The inner header or its length fields are inconsistent with the bytes received.
    #[error("inner packet length inconsistent")]
    InnerLength,
    /// The inner IPv4 header checksum is wrong.
    #[error("inner IPv4 header checksum mismatch")]
    InnerChecksum,
}

impl DecapError {
    /// Every reason, in counter order.
    pub const ALL: [DecapError; 15] = [
        DecapError::BadOuter,
        DecapError::OuterProtocol,
        DecapError::TruncatedHeader,
        DecapError::GreVersion,
        DecapError::GreFlags,
        DecapError::GreChecksum,
        DecapError::GreChecksumMissing,
        DecapError::GreProtocol,
        DecapError::GueVersion,
        DecapError::GueControl,
        DecapError::GueOptions,
        DecapError::GueProtocol,
        DecapError::InnerVersion,
        DecapError::InnerLength,
        DecapError::InnerChecksum,
    ];

    /// A short stable name, used in the counter summary.
    pub fn name(self) -> &'static str {
        match self {
            DecapError::BadOuter => "bad_outer",
            DecapError::OuterProtocol => "outer_protocol",
            DecapError::TruncatedHeader => "truncated_header",
            DecapError::GreVersion => "gre_version",
            DecapError::GreFlags => "gre_flags",
            DecapError::GreChecksum => "gre_checksum",
            DecapError::GreChecksumMissing => "gre_checksum_missing",
            DecapError::GreProtocol => "gre_protocol",
            DecapError::GueVersion => "gue_version",
            DecapError::GueControl => "gue_control",
            DecapError::GueOptions => "gue_options",
            DecapError::GueProtocol => "gue_protocol",
            DecapError::InnerVersion => "inner_version",
            DecapError::InnerLength => "inner_length",
            DecapError::InnerChecksum => "inner_checksum",
        }
    }

    /// Index into the counter array.
    pub fn index(self) -> usize {
        DecapError::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Receive-side options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapOptions {
    /// Drop GRE packets that carry no checksum.
    pub require_gre_csum: bool,
}

/// The Internet checksum (RFC 1071) of `data`, folded and complemented: 0 when `data` already
/// holds a correct checksum field.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Splits what a raw IPv4 socket returns (outer header included) into the outer protocol and
/// the outer payload. The kernel has already checked the header checksum and reassembled
/// fragments; this checks the lengths so that the payload is exactly the datagram's.
pub fn strip_outer_ipv4(pkt: &[u8]) -> Result<(u8, &[u8]), DecapError> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return Err(DecapError::BadOuter);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(be16(pkt, 2).ok_or(DecapError::BadOuter)?);
    if ihl < 20 || total < ihl || total > pkt.len() {
        return Err(DecapError::BadOuter);
    }
    Ok((pkt[9], &pkt[ihl..total]))
}

/// Decapsulates the payload of an outer IP packet of protocol `proto` (4, 41 or 47) and
/// returns the inner packet.
pub fn decap_ip(proto: u8, payload: &[u8], opts: DecapOptions) -> Result<&[u8], DecapError> {
    match proto {
        IPPROTO_IPIP => inner(false, payload),
        IPPROTO_IPV6 => inner(true, payload),
        IPPROTO_GRE => decap_gre(payload, opts),
        _ => Err(DecapError::OuterProtocol),
    }
}

/// Decapsulates a GRE packet (the outer IP payload).
pub fn decap_gre(gre: &[u8], opts: DecapOptions) -> Result<&[u8], DecapError> {
    let flags = be16(gre, 0).ok_or(DecapError::TruncatedHeader)?;
    let ptype = be16(gre, 2).ok_or(DecapError::TruncatedHeader)?;
    if flags & GRE_VERSION != 0 {
        return Err(DecapError::GreVersion);
    }
    if flags & GRE_REFUSED != 0 {
        return Err(DecapError::GreFlags);
    }
    let mut hlen = 4;
    for bit in [GRE_C, GRE_K, GRE_S] {
        if flags & bit != 0 {
            hlen += 4;
        }
    }
    if gre.len() < hlen {
        return Err(DecapError::TruncatedHeader);
    }
    if flags & GRE_C != 0 {
        if internet_checksum(gre) != 0 {
            return Err(DecapError::GreChecksum);
        }
    } else if opts.require_gre_csum {
        return Err(DecapError::GreChecksumMissing);
    }
    let v6 = match ptype {
        0x0800 => false,
        0x86dd => true,
        _ => return Err(DecapError::GreProtocol),
    };
    inner(v6, &gre[hlen..])
}

/// Decapsulates a GUE packet (the UDP payload, as a UDP socket returns it).
pub fn decap_gue(gue: &[u8]) -> Result<&[u8], DecapError> {
    let first = *gue.first().ok_or(DecapError::TruncatedHeader)?;
    match first >> 6 {
        0 => {}
        // Version 1: the first bits of an IP header, no GUE header.
        1 => {
            return match first >> 4 {
                4 => inner(false, gue),
                6 => inner(true, gue),
                _ => Err(DecapError::GueProtocol),
            };
        }
        _ => return Err(DecapError::GueVersion),
    }
    if gue.len() < 4 {
        return Err(DecapError::TruncatedHeader);
    }
    if first & 0x20 != 0 {
        return Err(DecapError::GueControl);
    }
    let hlen = first & 0x1f;
    let flags = u16::from_be_bytes([gue[2], gue[3]]);
    if hlen != 0 || flags != 0 {
        return Err(DecapError::GueOptions);
    }
    match gue[1] {
        IPPROTO_IPIP => inner(false, &gue[4..]),
        IPPROTO_IPV6 => inner(true, &gue[4..]),
        _ => Err(DecapError::GueProtocol),
    }
}

/// GUE flag P: a private-flags field follows the header (the kernel's `GUE_FLAG_PRIV`).
const GUE_FLAG_PRIV: u16 = 0x0001;
/// Private flag REMCSUM: the remote checksum offload option follows (`GUE_PFLAG_REMCSUM`).
const GUE_PFLAG_REMCSUM: u32 = 0x8000_0000;

/// The remote checksum offload option (`start`, `offset`) of a version-0 GUE data message, if
/// its header carries exactly that (Hlen 2, flag P, private flag REMCSUM); `None` for any other
/// header, which [`decap_gue`] judges.
fn gue_remcsum(gue: &[u8]) -> Result<Option<(usize, usize)>, DecapError> {
    let (Some(&first), Some(flags)) = (gue.first(), be16(gue, 2)) else {
        return Ok(None);
    };
    if first >> 5 != 0 || first & 0x1f != 2 || flags != GUE_FLAG_PRIV {
        return Ok(None);
    }
    let (Some(p0), Some(p1), Some(start), Some(offset)) =
        (be16(gue, 4), be16(gue, 6), be16(gue, 8), be16(gue, 10))
    else {
        return Err(DecapError::TruncatedHeader);
    };
    if (u32::from(p0) << 16 | u32::from(p1)) != GUE_PFLAG_REMCSUM {
        return Err(DecapError::GueOptions);
    }
    Ok(Some((usize::from(start), usize::from(offset))))
}

/// Decapsulates a GUE packet as [`decap_gue`] does, and also accepts remote checksum offload
/// (Hlen 2, flag P, private flag REMCSUM, then 16-bit `start` and `offset` from the start of
/// the inner packet, as the ulvs engine with `--tun-remcsum` and the kernel's `fou` send it):
/// the inner checksum field at `offset` holds the pseudo-header sum, and is completed in place
/// with the checksum of the inner bytes from `start` to the end of the inner packet. `start`
/// must be even and the field must lie within those bytes, else [`DecapError::GueOptions`].
pub fn decap_gue_mut(gue: &mut [u8]) -> Result<&[u8], DecapError> {
    decap_gue_completing(gue).map(|(inner, _)| inner)
}

/// [`decap_gue_mut`], also saying whether a remote checksum was completed.
pub fn decap_gue_completing(gue: &mut [u8]) -> Result<(&[u8], bool), DecapError> {
    let Some((start, offset)) = gue_remcsum(gue)? else {
        return decap_gue(gue).map(|inner| (inner, false));
    };
    let v6 = match gue[1] {
        IPPROTO_IPIP => false,
        IPPROTO_IPV6 => true,
        _ => return Err(DecapError::GueProtocol),
    };
    let body = &mut gue[12..];
    let len = inner(v6, body)?.len();
    if start % 2 != 0 || start > offset || offset + 2 > len {
        return Err(DecapError::GueOptions);
    }
    // The field's pseudo-header sum plus the bytes from `start`, folded and complemented. A
    // result of 0 is sent as 0xffff (the same in one's complement; 0 means "none" in UDP).
    let c = match internet_checksum(&body[start..len]) {
        0 => 0xffff,
        c => c,
    };
    body[offset..offset + 2].copy_from_slice(&c.to_be_bytes());
    Ok((&body[..len], true))
}

/// Checks the inner packet as the kernel will and trims it to its own length.
fn inner(v6: bool, pkt: &[u8]) -> Result<&[u8], DecapError> {
    let version = pkt.first().ok_or(DecapError::InnerLength)? >> 4;
    if version != if v6 { 6 } else { 4 } {
        return Err(DecapError::InnerVersion);
    }
    if v6 {
        let payload = usize::from(be16(pkt, 4).ok_or(DecapError::InnerLength)?);
        // Payload length 0 would be a jumbogram; tunnels never carry one.
        if pkt.len() < 40 || payload == 0 || 40 + payload > pkt.len() {
            return Err(DecapError::InnerLength);
        }
        Ok(&pkt[..40 + payload])
    } else {
        if pkt.len() < 20 {
            return Err(DecapError::InnerLength);
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        if ihl < 20 || total < ihl || total > pkt.len() {
            return Err(DecapError::InnerLength);
        }
        if internet_checksum(&pkt[..ihl]) != 0 {
            return Err(DecapError::InnerChecksum);
        }
        Ok(&pkt[..total])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid IPv4 packet (UDP, 4 payload bytes), with its header checksum.
    fn v4_packet() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 100, 1,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 12, 0, 0, 1, 2, 3, 4]);
        let c = internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn v6_packet() -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
        p.extend_from_slice(&[0xfd, 0, 0x01, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[0xfd, 0, 0x01, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 12, 0, 0, 1, 2, 3, 4]);
        p
    }

    fn outer_v4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 198, 19, 0, 1];
        h.extend_from_slice(&[198, 18, 1, 11]);
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let c = internet_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    const OPTS: DecapOptions = DecapOptions {
        require_gre_csum: false,
    };

    #[test]
    fn ipip_and_ip6_in_ip() {
        let inner4 = v4_packet();
        let outer = outer_v4(IPPROTO_IPIP, &inner4);
        let (proto, payload) = strip_outer_ipv4(&outer).unwrap();
        assert_eq!(decap_ip(proto, payload, OPTS).unwrap(), &inner4[..]);
        let inner6 = v6_packet();
        assert_eq!(decap_ip(IPPROTO_IPV6, &inner6, OPTS).unwrap(), &inner6[..]);
        // The protocol says IPv6, the packet is IPv4.
        assert_eq!(
            decap_ip(IPPROTO_IPV6, &inner4, OPTS),
            Err(DecapError::InnerVersion)
        );
        assert_eq!(decap_ip(17, &inner4, OPTS), Err(DecapError::OuterProtocol));
    }

    #[test]
    fn inner_is_trimmed_to_its_length_and_checked() {
        let mut p = v4_packet();
        p.extend_from_slice(&[0xee; 6]); // link padding
        assert_eq!(decap_ip(IPPROTO_IPIP, &p, OPTS).unwrap().len(), 32);
        let short = &p[..31];
        assert_eq!(
            decap_ip(IPPROTO_IPIP, short, OPTS),
            Err(DecapError::InnerLength)
        );
        let mut bad = v4_packet();
        bad[8] = 1; // TTL changed, checksum not
        assert_eq!(
            decap_ip(IPPROTO_IPIP, &bad, OPTS),
            Err(DecapError::InnerChecksum)
        );
        let mut v6 = v6_packet();
        v6[5] = 13;
        assert_eq!(
            decap_ip(IPPROTO_IPV6, &v6, OPTS),
            Err(DecapError::InnerLength)
        );
        assert_eq!(
            decap_ip(IPPROTO_IPIP, &[], OPTS),
            Err(DecapError::InnerLength)
        );
    }

    #[test]
    fn outer_ipv4_lengths_are_checked() {
        let outer = outer_v4(IPPROTO_IPIP, &v4_packet());
        assert_eq!(strip_outer_ipv4(&outer[..19]), Err(DecapError::BadOuter));
        assert_eq!(
            strip_outer_ipv4(&outer[..outer.len() - 1]),
            Err(DecapError::BadOuter)
        );
        let mut bad_ihl = outer.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(strip_outer_ipv4(&bad_ihl), Err(DecapError::BadOuter));
    }

    fn gre(flags: u16, ptype: u16, extra: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut g = flags.to_be_bytes().to_vec();
        g.extend_from_slice(&ptype.to_be_bytes());
        g.extend_from_slice(extra);
        g.extend_from_slice(inner);
        g
    }

    #[test]
    fn gre_plain_keyed_sequenced_and_checksummed() {
        let inner4 = v4_packet();
        let g = gre(0, 0x0800, &[], &inner4);
        assert_eq!(decap_gre(&g, OPTS).unwrap(), &inner4[..]);
        let g = gre(GRE_K | GRE_S, 0x0800, &[0, 0, 0, 7, 0, 0, 0, 1], &inner4);
        assert_eq!(decap_gre(&g, OPTS).unwrap(), &inner4[..]);
        let inner6 = v6_packet();
        let mut g = gre(GRE_C, 0x86dd, &[0, 0, 0, 0], &inner6);
        let c = internet_checksum(&g);
        g[4..6].copy_from_slice(&c.to_be_bytes());
        assert_eq!(decap_gre(&g, OPTS).unwrap(), &inner6[..]);
        let mut corrupt = g.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert_eq!(decap_gre(&corrupt, OPTS), Err(DecapError::GreChecksum));
        let strict = DecapOptions {
            require_gre_csum: true,
        };
        assert_eq!(decap_gre(&g, strict).unwrap(), &inner6[..]);
        assert_eq!(
            decap_gre(&gre(0, 0x0800, &[], &inner4), strict),
            Err(DecapError::GreChecksumMissing)
        );
    }

    #[test]
    fn gre_refusals() {
        let inner4 = v4_packet();
        assert_eq!(
            decap_gre(&gre(1, 0x0800, &[], &inner4), OPTS),
            Err(DecapError::GreVersion)
        );
        assert_eq!(
            decap_gre(&gre(0x4000, 0x0800, &[], &inner4), OPTS),
            Err(DecapError::GreFlags)
        );
        assert_eq!(
            decap_gre(&gre(0, 0x6558, &[], &inner4), OPTS),
            Err(DecapError::GreProtocol)
        );
        assert_eq!(
            decap_gre(&[0, 0, 8], OPTS),
            Err(DecapError::TruncatedHeader)
        );
        // C, K and S announced, 12 bytes missing.
        assert_eq!(
            decap_gre(&gre(GRE_C | GRE_K | GRE_S, 0x0800, &[], &[]), OPTS),
            Err(DecapError::TruncatedHeader)
        );
        assert_eq!(
            decap_gre(&gre(0, 0x86dd, &[], &inner4), OPTS),
            Err(DecapError::InnerVersion)
        );
    }

    #[test]
    fn gue_versions_and_refusals() {
        let inner4 = v4_packet();
        let inner6 = v6_packet();
        let mut g = vec![0, IPPROTO_IPIP, 0, 0];
        g.extend_from_slice(&inner4);
        assert_eq!(decap_gue(&g).unwrap(), &inner4[..]);
        let mut g6 = vec![0, IPPROTO_IPV6, 0, 0];
        g6.extend_from_slice(&inner6);
        assert_eq!(decap_gue(&g6).unwrap(), &inner6[..]);
        // Version 1: direct IP.
        assert_eq!(decap_gue(&inner4).unwrap(), &inner4[..]);
        assert_eq!(decap_gue(&inner6).unwrap(), &inner6[..]);
        let mut ctl = g.clone();
        ctl[0] = 0x20;
        assert_eq!(decap_gue(&ctl), Err(DecapError::GueControl));
        let mut opt = g.clone();
        opt[0] = 1;
        assert_eq!(decap_gue(&opt), Err(DecapError::GueOptions));
        let mut flags = g.clone();
        flags[3] = 1;
        assert_eq!(decap_gue(&flags), Err(DecapError::GueOptions));
        let mut proto = g.clone();
        proto[1] = 17;
        assert_eq!(decap_gue(&proto), Err(DecapError::GueProtocol));
        assert_eq!(decap_gue(&[0x80, 4, 0, 0]), Err(DecapError::GueVersion));
        assert_eq!(decap_gue(&[0x50]), Err(DecapError::GueProtocol));
        assert_eq!(decap_gue(&[0, 4]), Err(DecapError::TruncatedHeader));
        assert_eq!(decap_gue(&[]), Err(DecapError::TruncatedHeader));
        // Without the option, the in-place variant agrees.
        for p in [&g, &g6, &inner4, &ctl, &opt, &flags, &proto] {
            let mut m = p.clone();
            assert_eq!(decap_gue_mut(&mut m), decap_gue(p));
        }
    }

    /// A GUE header with the remote checksum offload option in front of `inner`.
    fn gue_remcsum_packet(proto: u8, start: u16, offset: u16, inner: &[u8]) -> Vec<u8> {
        let mut g = vec![2, proto, 0, 1, 0x80, 0, 0, 0];
        g.extend_from_slice(&start.to_be_bytes());
        g.extend_from_slice(&offset.to_be_bytes());
        g.extend_from_slice(inner);
        g
    }

    #[test]
    fn gue_remcsum_completes_the_inner_checksum() {
        // The v4 test packet's UDP checksum field with the pseudo-header sum only, as a
        // sender with checksum offload leaves it.
        let mut inner4 = v4_packet();
        let mut pseudo: u64 = 17 + 12;
        for c in inner4[12..20].chunks(2) {
            pseudo += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while pseudo > 0xffff {
            pseudo = (pseudo & 0xffff) + (pseudo >> 16);
        }
        inner4[26..28].copy_from_slice(&(pseudo as u16).to_be_bytes());
        let mut g = gue_remcsum_packet(IPPROTO_IPIP, 20, 26, &inner4);
        let out = decap_gue_mut(&mut g).unwrap().to_vec();
        // The completed checksum verifies over pseudo-header and datagram.
        let mut check = inner4[12..20].to_vec();
        check.extend_from_slice(&[0, 17, 0, 12]);
        check.extend_from_slice(&out[20..]);
        assert_eq!(internet_checksum(&check), 0, "{out:02x?}");
        assert_eq!(out[..26], inner4[..26]);
        // The plain parser refuses the option.
        let g = gue_remcsum_packet(IPPROTO_IPIP, 20, 26, &inner4);
        assert_eq!(decap_gue(&g), Err(DecapError::GueOptions));
    }

    #[test]
    fn gue_remcsum_refusals() {
        let inner4 = v4_packet();
        for (start, offset) in [(21, 26), (28, 26), (20, 31), (20, 60), (u16::MAX, u16::MAX)] {
            let mut g = gue_remcsum_packet(IPPROTO_IPIP, start, offset, &inner4);
            assert_eq!(decap_gue_mut(&mut g), Err(DecapError::GueOptions));
        }
        let mut g = gue_remcsum_packet(IPPROTO_IPIP, 20, 26, &inner4);
        g[4] = 0x40;
        assert_eq!(decap_gue_mut(&mut g), Err(DecapError::GueOptions));
        let mut g = gue_remcsum_packet(17, 20, 26, &inner4);
        assert_eq!(decap_gue_mut(&mut g), Err(DecapError::GueProtocol));
        let mut g = gue_remcsum_packet(IPPROTO_IPV6, 20, 26, &inner4);
        assert_eq!(decap_gue_mut(&mut g), Err(DecapError::InnerVersion));
        for cut in 0..12 {
            let mut g = gue_remcsum_packet(IPPROTO_IPIP, 20, 26, &inner4);
            g.truncate(cut);
            assert!(decap_gue_mut(&mut g).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn reason_names_and_indices_are_distinct() {
        let mut names: Vec<_> = DecapError::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DecapError::ALL.len());
        for (i, r) in DecapError::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn truncations_of_every_valid_packet_never_panic() {
        let inner4 = v4_packet();
        let mut g = vec![0, IPPROTO_IPIP, 0, 0];
        g.extend_from_slice(&inner4);
        let mut gr = gre(GRE_C | GRE_K, 0x0800, &[0; 8], &inner4);
        let c = internet_checksum(&gr);
        gr[4..6].copy_from_slice(&c.to_be_bytes());
        let outer = outer_v4(IPPROTO_GRE, &gr);
        for n in 0..outer.len() {
            let _ = strip_outer_ipv4(&outer[..n]);
            let _ = decap_gre(&gr[..n.min(gr.len())], OPTS);
            let _ = decap_gue(&g[..n.min(g.len())]);
            for proto in [IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE] {
                let _ = decap_ip(proto, &outer[..n], OPTS);
            }
        }
    }
}
