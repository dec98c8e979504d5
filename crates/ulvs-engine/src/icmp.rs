//! ICMP and ICMPv6 on the packet path, and the builder of "packet too big" errors.
//!
//! - **Echo requests** to a virtual address or a FULLNAT local address are answered in place
//!   ([`crate::Verdict::Reply`]): addresses swapped, TTL / hop limit 64, type changed with an
//!   incremental checksum update.
//! - **Errors** (destination unreachable, packet too big, time exceeded, parameter problem)
//!   that quote a packet of a tracked connection are translated as IPVS does: the quoted
//!   packet is rewritten to what the other side sent or expects (addresses, ports, the quoted
//!   IPv4 header checksum and the quoted TCP/UDP checksum when the quote holds it), the outer
//!   addresses are redirected to the other side, and the ICMP checksum is recomputed. An error
//!   from the client side goes to the real server (from the local address under FULLNAT); an
//!   error from the real-server side goes to the client, from the virtual address. Errors are
//!   rare, so the ICMP checksum is computed whole rather than patched. They are not counted in
//!   the connection's traffic counters.
//! - **Who sent an error does not matter**, only what it quotes: an error from a router between
//!   the director and a NAT or FULLNAT real server (FRAG_NEEDED / Packet Too Big because a link
//!   on the way is smaller, time exceeded, host unreachable) has the router's source address
//!   and quotes the packet the director sent to the real server (client or local address to
//!   the real server), exactly as the real server's own errors do; it is translated the same
//!   way and reaches the client from the virtual address, since IPVS's `ip_vs_out_icmp`
//!   (through `ip_vs_nat_icmp`) also replaces the outer source of errors going out to the
//!   client with the virtual address. The client then sees an error about its own packet from
//!   the address it sent it to, and a FRAG_NEEDED's MTU stays as reported (NAT and FULLNAT
//!   change no packet's size). In the other direction the outer source stays the router's
//!   under NAT (as IPVS's `ip_vs_in_icmp` leaves it) and becomes the local address under
//!   FULLNAT, so the real server can answer it.
//! - **Errors for direct-routing and tunnel connections** that arrive at the virtual address
//!   (a router on the real server's direct path to the client answers a reply the real server
//!   sent from the VIP: FRAG_NEEDED, Packet Too Big, time exceeded) quote a packet from the VIP
//!   to the client. The real server owns the VIP, so the error goes to it unchanged, by the
//!   connection's method: a frame to its MAC (direct routing) or encapsulated (tunnel), as
//!   IPVS's `ip_vs_in_icmp` hands such errors to the connection's transmitter.
//! - Anything else addressed to a virtual or local address is a counted drop; ICMP for other
//!   addresses passes unchanged.
//!
//! [`packet_too_big`] turns a packet into an ICMPv4 "fragmentation needed" or ICMPv6 "packet
//! too big" error to its sender, for forwarding methods that would exceed the path MTU.

use std::net::IpAddr;

use std::sync::atomic::Ordering::Relaxed;

use crate::checksum::Delta;
use crate::config::{ForwardMethod, Protocol};
use crate::conntrack::Tuple;
use crate::fwd::{addr_ranges, l4_checksum_offset, put_addr};
use crate::path::{Ip, parse_ip};
use crate::tunnel::{Fwd, IPPROTO_GRE, IPPROTO_IPIP, IPPROTO_IPV6};
use crate::wire::icmp::{
    ICMP_HEADER_LEN, ICMPV4_DEST_UNREACH, ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST,
    ICMPV4_FRAG_NEEDED, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, is_error_v4,
    is_error_v6,
};
use crate::wire::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP, IcmpPacket, Ipv4Packet, Ipv6Packet};
use crate::{DropReason, Engine, PacketBuf, Timestamp, Verdict};

/// Hop limit / TTL of packets the engine originates.
const HOP_LIMIT: u8 = 64;

/// Handles an ICMP (IPv4) or ICMPv6 (IPv6) packet.
pub(crate) fn process(
    engine: &Engine,
    now: Timestamp,
    pkt: &mut PacketBuf<'_>,
    ip: &Ip,
) -> Verdict {
    if ip.frag.more {
        return engine.not_ours(ip.dst, DropReason::Fragment);
    }
    let Ok(msg) = IcmpPacket::new_checked(&pkt.data()[ip.l4..ip.total]) else {
        return engine.not_ours(ip.dst, DropReason::Malformed);
    };
    let ty = msg.msg_type();
    let (echo, error) = if ip.v6 {
        (ty == ICMPV6_ECHO_REQUEST, is_error_v6(ty))
    } else {
        (ty == ICMPV4_ECHO_REQUEST, is_error_v4(ty))
    };
    if echo && engine.config.load().is_ours(ip.dst) {
        echo_reply(pkt, ip);
        return Verdict::Reply;
    }
    if error {
        return translate_error(engine, now, pkt, ip);
    }
    engine.not_ours(ip.dst, DropReason::UnsupportedProtocol)
}

/// Turns an echo request into its reply in place.
fn echo_reply(pkt: &mut PacketBuf<'_>, ip: &Ip) {
    let data = pkt.data_mut();
    let (sr, dr) = addr_ranges(ip.v6);
    let mut tmp = [0u8; 16];
    let n = sr.len();
    tmp[..n].copy_from_slice(&data[sr.clone()]);
    data.copy_within(dr.clone(), sr.start);
    data[dr].copy_from_slice(&tmp[..n]);
    let reply = if ip.v6 {
        data[7] = HOP_LIMIT;
        ICMPV6_ECHO_REPLY
    } else {
        data[8] = HOP_LIMIT;
        Ipv4Packet::new_unchecked(&mut data[..ip.total]).fill_checksum();
        ICMPV4_ECHO_REPLY
    };
    // Swapping the addresses leaves the ICMPv6 pseudo-header sum as it was.
    let mut msg = IcmpPacket::new_unchecked(&mut data[ip.l4..ip.total]);
    let code = msg.code();
    msg.set_type_code_with_checksum_update(reply, code);
    pkt.set_len(ip.total);
}

/// The quoted packet of an ICMP error, as far as the translation needs it.
#[derive(Debug, Clone, Copy)]
struct Quoted {
    /// Offset of the quoted IP header in the packet.
    at: usize,
    /// Offset of the quoted TCP/UDP header in the packet.
    l4: usize,
    /// End of the quote (the outer packet's end).
    end: usize,
    proto: Protocol,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
}

/// Parses the packet quoted by an ICMP error (same family as the outer packet; may be
/// truncated, but must hold the IP header and the first 8 bytes of TCP/UDP).
fn quoted(data: &[u8], ip: &Ip) -> Result<Quoted, DropReason> {
    let at = ip.l4 + ICMP_HEADER_LEN;
    let body = data.get(at..ip.total).ok_or(DropReason::Malformed)?;
    let (src, dst, proto, hl) = if ip.v6 {
        let q = Ipv6Packet::new_checked_header(body).map_err(|_| DropReason::Malformed)?;
        let up = q
            .upper_layer(body.len())
            .map_err(|_| DropReason::Malformed)?;
        if up.frag.is_some_and(|f| f.offset != 0) {
            return Err(DropReason::Fragment);
        }
        (
            IpAddr::V6(q.src_addr()),
            IpAddr::V6(q.dst_addr()),
            up.protocol,
            up.offset,
        )
    } else {
        if body.len() < 20 || body[0] >> 4 != 4 {
            return Err(DropReason::Malformed);
        }
        let q = Ipv4Packet::new_unchecked(body);
        let hl = q.header_len();
        if hl < 20 || hl > body.len() {
            return Err(DropReason::Malformed);
        }
        if q.frag_offset() != 0 {
            return Err(DropReason::Fragment);
        }
        (
            IpAddr::V4(q.src_addr()),
            IpAddr::V4(q.dst_addr()),
            q.protocol(),
            hl,
        )
    };
    let proto = Protocol::from_number(proto).ok_or(DropReason::UnsupportedProtocol)?;
    let l4 = at + hl;
    if l4 + 8 > ip.total {
        return Err(DropReason::Malformed);
    }
    let port = |o: usize| u16::from_be_bytes([data[l4 + o], data[l4 + o + 1]]);
    Ok(Quoted {
        at,
        l4,
        end: ip.total,
        proto,
        src,
        sport: port(0),
        dst,
        dport: port(2),
    })
}

/// What the conntrack lookup of an error decided.
enum Found {
    /// A NAT or FULLNAT connection: translate with its tuples.
    Translate(Tuple, Tuple, ForwardMethod),
    /// Relayed to a direct-routing or tunnel real server (`None`: its method changed to one
    /// that cannot relay).
    Relayed(Option<Verdict>),
    /// A direct-routing or tunnel connection, from the real server's side.
    NotOurs,
}

/// Translates an ICMP error that quotes a packet of a tracked connection.
fn translate_error(engine: &Engine, now: Timestamp, pkt: &mut PacketBuf<'_>, ip: &Ip) -> Verdict {
    let q = match quoted(pkt.data(), ip) {
        Ok(q) => q,
        Err(reason) => return engine.not_ours(ip.dst, reason),
    };
    // The quoted packet went the other way: its reverse is the direction this error travels.
    let key = Tuple {
        proto: q.proto,
        src: q.dst,
        sport: q.dport,
        dst: q.src,
        dport: q.sport,
    };
    let found = engine.conns.with(&key, now, |c, from_client| {
        match c.forward {
            ForwardMethod::Masq | ForwardMethod::FullNat => {
                Found::Translate(c.orig, c.reply, c.forward)
            }
            // Direct routing and tunnels: the real server owns the virtual address, so an error
            // from the client side (a router on the real server's direct path to the client
            // answering a reply from the VIP) goes to it unchanged, by the connection's own
            // method, as IPVS does. Errors from the real server's side never pass the director
            // on the way to the client; one that does is not ours to change.
            ForwardMethod::Route | ForwardMethod::Tunnel if from_client => {
                Found::Relayed(crate::xmit::relay(engine, now, pkt, c, ip))
            }
            ForwardMethod::Route | ForwardMethod::Tunnel => Found::NotOurs,
        }
    });
    let (orig, reply, forward) = match found {
        Some(Found::Translate(o, r, f)) => (o, r, f),
        Some(Found::Relayed(Some(v))) => return v,
        Some(Found::Relayed(None) | Found::NotOurs) => {
            return engine.not_ours(ip.dst, DropReason::UnsupportedProtocol);
        }
        None => return engine.not_ours(ip.dst, DropReason::NoConnection),
    };
    let (outer_src, outer_dst, inner_src, inner_dst) = if key == orig {
        // From the client side, about a packet we sent to the client: to the real server.
        let src = if forward == ForwardMethod::FullNat {
            reply.dst
        } else {
            ip.src
        };
        (
            src,
            reply.src,
            (reply.src, reply.sport),
            (reply.dst, reply.dport),
        )
    } else {
        // From the real-server side, about a packet we sent to it: to the client.
        (
            orig.dst,
            orig.src,
            (orig.src, orig.sport),
            (orig.dst, orig.dport),
        )
    };
    let data = pkt.data_mut();
    rewrite_quoted(data, ip.v6, &q, inner_src, inner_dst);
    let (sr, dr) = addr_ranges(ip.v6);
    let mut outer = Delta::default();
    put_addr(data, sr, outer_src, &mut outer);
    put_addr(data, dr, outer_dst, &mut outer);
    let icmp = &mut data[ip.l4..ip.total];
    if ip.v6 {
        let (s, d) = (v6_bytes(outer_src), v6_bytes(outer_dst));
        IcmpPacket::new_unchecked(icmp).fill_checksum_v6(s, d);
    } else {
        IcmpPacket::new_unchecked(icmp).fill_checksum_v4();
        if !outer.is_empty() {
            let c = u16::from_be_bytes([data[10], data[11]]);
            data[10..12].copy_from_slice(&outer.apply(c).to_be_bytes());
        }
    }
    crate::fwd::forward(pkt, ip.total)
}

fn v6_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// Rewrites the quoted packet's addresses and ports, patching its IPv4 header checksum and,
/// when the quote holds it, its TCP/UDP checksum.
fn rewrite_quoted(data: &mut [u8], v6: bool, q: &Quoted, src: (IpAddr, u16), dst: (IpAddr, u16)) {
    let (sr, dr) = addr_ranges(v6);
    let mut pseudo = Delta::default();
    put_addr(data, q.at + sr.start..q.at + sr.end, src.0, &mut pseudo);
    put_addr(data, q.at + dr.start..q.at + dr.end, dst.0, &mut pseudo);
    if !v6 && !pseudo.is_empty() {
        let at = q.at + 10;
        let c = u16::from_be_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&pseudo.apply(c).to_be_bytes());
    }
    let mut delta = pseudo;
    for (off, port) in [(q.l4, src.1), (q.l4 + 2, dst.1)] {
        let old = u16::from_be_bytes([data[off], data[off + 1]]);
        delta.change_u16(old, port);
        data[off..off + 2].copy_from_slice(&port.to_be_bytes());
    }
    let at = q.l4 + l4_checksum_offset(q.proto);
    if at + 2 > q.end {
        return;
    }
    let c = u16::from_be_bytes([data[at], data[at + 1]]);
    let n = match q.proto {
        Protocol::Udp if c == 0 => return,
        Protocol::Udp => match delta.apply(c) {
            0 => 0xffff,
            n => n,
        },
        Protocol::Tcp => delta.apply(c),
    };
    data[at..at + 2].copy_from_slice(&n.to_be_bytes());
}

/// Why [`packet_too_big`] built nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The packet is not a well-formed IPv4 or IPv6 packet.
    #[error("malformed packet")]
    Malformed,
    /// RFC 1122 / RFC 4443 forbid an error for this packet (an ICMP error, a non-first
    /// fragment, a packet from an unspecified, multicast or broadcast source).
    #[error("no ICMP error may be sent for this packet")]
    NotAllowed,
    /// The buffer cannot hold the error.
    #[error("buffer too small for the ICMP error")]
    NoRoom,
}

/// Largest ICMPv4 error (RFC 1812: at most 576 bytes).
const V4_ERROR_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443: at most the minimum MTU, 1280 bytes).
const V6_ERROR_MAX: usize = 1280;

/// Turns the packet in `pkt` into an ICMPv4 "fragmentation needed" (type 3 code 4, next-hop
/// MTU `mtu`) or ICMPv6 "packet too big" (type 2, MTU `mtu`) error addressed to its source,
/// from its destination, quoting as much of it as the error may carry. The error is placed in
/// the headroom where there is room (else the quote is moved within the buffer). On success
/// the caller sends the packet back as a [`Verdict::Reply`]; on error `pkt` is unchanged.
pub fn packet_too_big(pkt: &mut PacketBuf<'_>, mtu: u32) -> Result<(), BuildError> {
    let ip = parse_ip(pkt.data()).ok_or(BuildError::Malformed)?;
    if ip.frag.offset != 0 || !source_may_get_errors(ip.src) {
        return Err(BuildError::NotAllowed);
    }
    let is_icmp = (ip.v6 && ip.proto == IPPROTO_ICMPV6) || (!ip.v6 && ip.proto == IPPROTO_ICMP);
    if is_icmp {
        let ty = pkt.data().get(ip.l4).copied();
        let err = match ty {
            Some(t) if ip.v6 => is_error_v6(t) || t < 128,
            Some(t) => is_error_v4(t),
            None => true,
        };
        if err {
            return Err(BuildError::NotAllowed);
        }
    }
    let (hdr, max) = if ip.v6 {
        (40 + ICMP_HEADER_LEN, V6_ERROR_MAX)
    } else {
        (20 + ICMP_HEADER_LEN, V4_ERROR_MAX)
    };
    let quoted = ip.total.min(max - hdr);
    let (buf, start, _) = pkt.raw();
    let new_start = start.saturating_sub(hdr);
    if new_start + hdr + quoted > buf.len() {
        return Err(BuildError::NoRoom);
    }
    buf.copy_within(start..start + quoted, new_start + hdr);
    // The error comes from the packet's destination and goes to its source.
    let msg = if ip.v6 {
        (ICMPV6_PACKET_TOO_BIG, 0, mtu)
    } else {
        (ICMPV4_DEST_UNREACH, ICMPV4_FRAG_NEEDED, mtu.min(0xffff))
    };
    let len = write_error(buf, new_start, quoted, (ip.dst, ip.src), msg);
    pkt.set_bounds(new_start, new_start + len);
    Ok(())
}

/// Whether an ICMP error may be sent to `src` (not unspecified, multicast, broadcast or
/// loopback).
fn source_may_get_errors(src: IpAddr) -> bool {
    match src {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// The IP-layer facts of a (possibly truncated) quoted packet.
#[derive(Debug, Clone, Copy)]
struct QuotedIp {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    /// Upper-layer protocol.
    proto: u8,
    /// Length of the IP header (IPv6: with extension headers).
    hl: usize,
    /// IPv4 DF (always set for IPv6, which routers never fragment).
    df: bool,
}

/// Parses the IP header at the start of a quote; `None` if it is malformed or a non-first
/// fragment (which carries no upper-layer header).
fn quoted_ip(body: &[u8]) -> Option<QuotedIp> {
    match body.first()? >> 4 {
        4 => {
            if body.len() < 20 {
                return None;
            }
            let q = Ipv4Packet::new_unchecked(body);
            let hl = q.header_len();
            if hl < 20 || hl > body.len() || q.frag_offset() != 0 {
                return None;
            }
            Some(QuotedIp {
                v6: false,
                src: IpAddr::V4(q.src_addr()),
                dst: IpAddr::V4(q.dst_addr()),
                proto: q.protocol(),
                hl,
                df: body[6] & 0x40 != 0,
            })
        }
        6 => {
            let q = Ipv6Packet::new_checked_header(body).ok()?;
            let up = q.upper_layer(body.len()).ok()?;
            if up.frag.is_some_and(|f| f.offset != 0) || up.offset > body.len() {
                return None;
            }
            Some(QuotedIp {
                v6: true,
                src: IpAddr::V6(q.src_addr()),
                dst: IpAddr::V6(q.dst_addr()),
                proto: up.protocol,
                hl: up.offset,
                df: true,
            })
        }
        _ => None,
    }
}

/// Length of the tunnel header (GRE, UDP + GUE) behind a quoted outer header of protocol
/// `proto` at `data[at..]`, if it is one the engine sends and carries an IP packet.
fn tunnel_header_len(data: &[u8], at: usize, proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_IPIP | IPPROTO_IPV6 => Some(0),
        IPPROTO_GRE => {
            let h = data.get(at..at + 4)?;
            // Version 0; C, K and S add a word each.
            if h[1] & 0x07 != 0 || !matches!(u16::from_be_bytes([h[2], h[3]]), 0x0800 | 0x86dd) {
                return None;
            }
            Some(
                4 + 4 * usize::from(
                    (h[0] & 0x80 != 0) as u8 + (h[0] & 0x20 != 0) as u8 + (h[0] & 0x10 != 0) as u8,
                ),
            )
        }
        IPPROTO_UDP => {
            // UDP, then GUE version 0 (not a control message) carrying IPv4 or IPv6.
            let g = data.get(at + 8..at + 12)?;
            if g[0] >> 6 != 0 || g[0] & 0x20 != 0 || !matches!(g[1], IPPROTO_IPIP | IPPROTO_IPV6) {
                return None;
            }
            Some(8 + 4 + 4 * usize::from(g[0] & 0x1f))
        }
        _ => None,
    }
}

impl Engine {
    /// Handles an ICMP (`v6` false) or ICMPv6 message addressed to the director itself, as a
    /// raw socket hands it over: `pkt` holds the message from its ICMP header on, without the
    /// IP header in front (the dataplane's ICMP watcher reads copies of the errors the kernel
    /// receives).
    ///
    /// An error about one of the engine's own tunnel packets (its quote is an outer header
    /// from the director's tunnel source to a tunnel-mode real server, the tunnel header, and
    /// the client's packet of a tracked connection) is relayed to the client, as IPVS's
    /// `ip_vs_in_icmp` does: `pkt` becomes an ICMP error from the virtual address to the
    /// client quoting the client's packet ([`Verdict::Reply`]: write it to the TUN). For
    /// FRAG_NEEDED / Packet Too Big the MTU announced is the reported one minus the tunnel
    /// overhead (for an IPv6 client at least 1280), and the reported MTU becomes the real
    /// server's path MTU when it is smaller (as [`Engine::set_path_mtu`]), so later packets
    /// are answered at once; an IPv4 client packet without DF only teaches the path MTU (the
    /// kernel fragments such packets once encapsulated). Other errors are relayed with their
    /// type, code and data when the tunnel and the client use the same family.
    ///
    /// Anything else (another error, an error about another packet of this host, an unknown
    /// connection) is [`Verdict::Pass`]: not the engine's, nothing to send; a relay that
    /// cannot help (an IPv4 path too small to announce) is a counted [`DropReason::TooBig`].
    /// Never panics, whatever the bytes.
    pub fn process_local_icmp(&self, now: Timestamp, pkt: &mut PacketBuf<'_>, v6: bool) -> Verdict {
        tunnel_error(self, now, pkt, v6)
    }
}

fn tunnel_error(engine: &Engine, now: Timestamp, pkt: &mut PacketBuf<'_>, v6: bool) -> Verdict {
    let data = pkt.data();
    if data.len() < ICMP_HEADER_LEN + 20 {
        return Verdict::Pass;
    }
    let (ty, code) = (data[0], data[1]);
    let info = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let (error, pmtu) = if v6 {
        (is_error_v6(ty), ty == ICMPV6_PACKET_TOO_BIG)
    } else {
        (
            is_error_v4(ty),
            ty == ICMPV4_DEST_UNREACH && code == ICMPV4_FRAG_NEEDED,
        )
    };
    if !error {
        return Verdict::Pass;
    }
    let at = ICMP_HEADER_LEN;
    let Some(outer) = quoted_ip(&data[at..]) else {
        return Verdict::Pass;
    };
    let dir = engine.director.load();
    let ours = match outer.src {
        IpAddr::V4(a) => !v6 && dir.tunnel_source_v4 == Some(a),
        IpAddr::V6(a) => v6 && dir.tunnel_source_v6 == Some(a),
    };
    if !ours {
        return Verdict::Pass;
    }
    let Some(tun_len) = tunnel_header_len(data, at + outer.hl, outer.proto) else {
        return Verdict::Pass;
    };
    let inner_at = at + outer.hl + tun_len;
    let Some(inner) = data.get(inner_at..).and_then(quoted_ip) else {
        return Verdict::Pass;
    };
    let l4 = inner_at + inner.hl;
    let (Some(proto), Some(ports)) = (Protocol::from_number(inner.proto), data.get(l4..l4 + 4))
    else {
        return Verdict::Pass;
    };
    // The quoted client packet went the way the connection was opened.
    let key = Tuple {
        proto,
        src: inner.src,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dst: inner.dst,
        dport: u16::from_be_bytes([ports[2], ports[3]]),
    };
    let found = engine.conns.with(&key, now, |c, from_client| {
        let f = Fwd::unpack(c.dest.fwd.load(Relaxed));
        let path = match c.dest.path_mtu.load(Relaxed) {
            0 => dir.path_mtu,
            m => m,
        };
        (from_client
            && c.forward == ForwardMethod::Tunnel
            && f.method == ForwardMethod::Tunnel
            && c.reply.src == outer.dst)
            .then_some(path)
    });
    let Some(Some(path)) = found else {
        return Verdict::Pass;
    };
    // What the encapsulation added to this very packet (GUE options included).
    let overhead = outer.hl + tun_len;
    let (out_ty, out_code, out_info) = if pmtu {
        let reported = if v6 { info } else { info & 0xffff };
        let floor = if outer.v6 { 1280 } else { 68 };
        let mtu = if reported >= floor && reported < path {
            engine.set_path_mtu(outer.dst, reported);
            reported
        } else {
            path
        };
        if !inner.df {
            return Verdict::Pass;
        }
        let room = (mtu as usize).saturating_sub(overhead);
        let announce = if inner.v6 {
            room.max(MIN_MTU_V6)
        } else if room < MIN_MTU_V4 {
            return engine.drops.count(DropReason::TooBig);
        } else {
            room
        };
        if inner.v6 {
            (ICMPV6_PACKET_TOO_BIG, 0, announce as u32)
        } else {
            (ICMPV4_DEST_UNREACH, ICMPV4_FRAG_NEEDED, announce as u32)
        }
    } else if inner.v6 == v6 {
        (ty, code, info)
    } else {
        return Verdict::Pass;
    };
    if !source_may_get_errors(inner.src) {
        return Verdict::Pass;
    }
    let (buf, start, end) = pkt.raw();
    let hdr = if inner.v6 { 40 } else { 20 } + ICMP_HEADER_LEN;
    let max = if inner.v6 { V6_ERROR_MAX } else { V4_ERROR_MAX };
    let quote_start = start + inner_at;
    let quote_len = (end - quote_start).min(max - hdr);
    let Some(new_start) = quote_start.checked_sub(hdr) else {
        return engine.drops.count(DropReason::NoHeadroom);
    };
    let len = write_error(
        buf,
        new_start,
        quote_len,
        (inner.dst, inner.src),
        (out_ty, out_code, out_info),
    );
    pkt.set_bounds(new_start, new_start + len);
    Verdict::Reply
}

/// Smallest MTU an IPv4 link must carry (RFC 791).
const MIN_MTU_V4: usize = 68;
/// Smallest MTU an IPv6 link must carry (RFC 8200).
const MIN_MTU_V6: usize = 1280;

/// Writes an ICMP (`from`/`to` IPv4) or ICMPv6 error header in front of a quote of
/// `quote_len` bytes that already sits at `buf[start + hdr..]` (`hdr` = IP header + 8), with
/// type, code and the 32-bit rest of header of `msg`, both checksums filled. Returns the
/// error's length.
fn write_error(
    buf: &mut [u8],
    start: usize,
    quote_len: usize,
    (from, to): (IpAddr, IpAddr),
    (ty, code, rest): (u8, u8, u32),
) -> usize {
    match (from, to) {
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let len = 40 + ICMP_HEADER_LEN + quote_len;
            let out = &mut buf[start..start + len];
            out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, IPPROTO_ICMPV6, HOP_LIMIT]);
            let mut h = Ipv6Packet::new_unchecked(&mut out[..]);
            h.set_payload_len((len - 40) as u16);
            h.set_src_addr(from);
            h.set_dst_addr(to);
            let mut m = IcmpPacket::new_unchecked(&mut out[40..]);
            m.set_msg_type(ty);
            m.set_code(code);
            m.set_rest_of_header(rest);
            m.fill_checksum_v6(from.octets(), to.octets());
            len
        }
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let len = 20 + ICMP_HEADER_LEN + quote_len;
            let out = &mut buf[start..start + len];
            let l = (len as u16).to_be_bytes();
            out[..12].copy_from_slice(&[
                0x45,
                0,
                l[0],
                l[1],
                0,
                0,
                0,
                0,
                HOP_LIMIT,
                IPPROTO_ICMP,
                0,
                0,
            ]);
            out[12..16].copy_from_slice(&from.octets());
            out[16..20].copy_from_slice(&to.octets());
            Ipv4Packet::new_unchecked(&mut out[..]).fill_checksum();
            let mut m = IcmpPacket::new_unchecked(&mut out[20..]);
            m.set_msg_type(ty);
            m.set_code(code);
            m.set_rest_of_header(rest);
            m.fill_checksum_v4();
            len
        }
        // Callers pass addresses of one family.
        _ => 0,
    }
}
