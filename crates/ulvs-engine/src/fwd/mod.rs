//! The L3 rewriting forwarding methods: how a packet of a tracked connection is rewritten on its
//! way to the real server (`masq::to_dest`, `fullnat::to_dest`, called from `xmit`, which also
//! dispatches direct routing and tunnels) and on its way back to the client ([`to_client`]).
//!
//! - `masq`: NAT (ipvsadm `-m`), IPv4 and IPv6.
//! - `fullnat`: FULLNAT (DPVS), source and destination rewritten, local-port pools.
//!
//! [`rewrite`] is the shared in-place L3/L4 rewrite with incremental checksum updates.

pub(crate) mod fullnat;
pub(crate) mod masq;

use std::net::IpAddr;

use crate::checksum::Delta;
use crate::config::{ForwardMethod, Protocol};
use crate::conntrack::Conn;
use crate::path::Ip;
use crate::{L4Csum, PacketBuf, Verdict};

/// Rewrites a real server's packet of `conn` for the client. (The way to the real server is
/// chosen in `xmit`, which also knows direct routing and tunnels.) Replies of direct-routing and
/// tunnel connections normally bypass the director; one that does not is rewritten as NAT.
pub(crate) fn to_client(conn: &Conn, pkt: &mut PacketBuf<'_>, ip: &Ip) -> Verdict {
    match conn.forward {
        ForwardMethod::FullNat => fullnat::to_client(conn, pkt, ip),
        ForwardMethod::Masq | ForwardMethod::Route | ForwardMethod::Tunnel => {
            masq::to_client(conn, pkt, ip)
        }
    }
}

/// Trims bytes past the IP total length (not part of the packet) and says "forward".
pub(crate) fn forward(pkt: &mut PacketBuf<'_>, total: usize) -> Verdict {
    pkt.set_len(total);
    Verdict::Forward
}

/// Byte ranges of the source and destination addresses in an IP header.
pub(crate) fn addr_ranges(v6: bool) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if v6 {
        (8..24, 24..40)
    } else {
        (12..16, 16..20)
    }
}

/// Writes `addr` at `range` (if its family fits) and notes the change in `delta`.
pub(crate) fn put_addr(
    data: &mut [u8],
    range: std::ops::Range<usize>,
    addr: IpAddr,
    delta: &mut Delta,
) {
    let new: &[u8] = match addr {
        IpAddr::V4(ref a) if range.len() == 4 => &a.octets(),
        IpAddr::V6(ref a) if range.len() == 16 => &a.octets(),
        _ => return,
    };
    let mut old = [0u8; 16];
    let n = range.len();
    old[..n].copy_from_slice(&data[range.clone()]);
    delta.change(&old[..n], new);
    data[range].copy_from_slice(new);
}

/// Offset of the checksum field within a TCP or UDP header.
pub(crate) fn l4_checksum_offset(proto: Protocol) -> usize {
    match proto {
        Protocol::Tcp => 16,
        Protocol::Udp => 6,
    }
}

/// Rewrites source and destination address and port of a TCP or UDP packet in place, patching
/// the IPv4 header checksum and the L4 checksum (pseudo-header and ports) incrementally. A UDP
/// checksum of 0 (none) stays 0; a patched one that comes out 0 is written as 0xffff. A partial
/// checksum (offload, [`L4Csum::Partial`]) gets only the pseudo-header (address) change: the
/// ports are summed when it is finished.
///
/// `ip` must describe `data` (as [`crate::path::parse_ip`] made it, with the L4 header
/// checked); addresses of the other family are left alone.
pub(crate) fn rewrite(
    data: &mut [u8],
    ip: &Ip,
    proto: Protocol,
    csum: L4Csum,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
) {
    let (sr, dr) = addr_ranges(ip.v6);
    let mut pseudo = Delta::default();
    put_addr(data, sr, src.0, &mut pseudo);
    put_addr(data, dr, dst.0, &mut pseudo);
    if !ip.v6 && !pseudo.is_empty() {
        let c = u16::from_be_bytes([data[10], data[11]]);
        data[10..12].copy_from_slice(&pseudo.apply(c).to_be_bytes());
    }
    let l4 = ip.l4;
    let mut delta = pseudo;
    for (off, port) in [(l4, src.1), (l4 + 2, dst.1)] {
        let old = u16::from_be_bytes([data[off], data[off + 1]]);
        delta.change_u16(old, port);
        data[off..off + 2].copy_from_slice(&port.to_be_bytes());
    }
    let at = l4 + l4_checksum_offset(proto);
    let c = u16::from_be_bytes([data[at], data[at + 1]]);
    let n = match (proto, csum) {
        (_, L4Csum::Partial) => pseudo.apply_partial(c),
        (Protocol::Udp, L4Csum::Complete) if c == 0 => return,
        (Protocol::Udp, L4Csum::Complete) => match delta.apply(c) {
            0 => 0xffff,
            n => n,
        },
        (Protocol::Tcp, L4Csum::Complete) => delta.apply(c),
    };
    data[at..at + 2].copy_from_slice(&n.to_be_bytes());
}
