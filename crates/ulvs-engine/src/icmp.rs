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

use crate::checksum::Delta;
use crate::config::{ForwardMethod, Protocol};
use crate::conntrack::Tuple;
use crate::fwd::{addr_ranges, l4_checksum_offset, put_addr};
use crate::path::{Ip, parse_ip};
use crate::wire::icmp::{
    ICMP_HEADER_LEN, ICMPV4_DEST_UNREACH, ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST,
    ICMPV4_FRAG_NEEDED, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, is_error_v4,
    is_error_v6,
};
use crate::wire::{IPPROTO_ICMP, IPPROTO_ICMPV6, IcmpPacket, Ipv4Packet, Ipv6Packet};
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
    let out = &mut buf[new_start..new_start + hdr + quoted];
    let len = hdr + quoted;
    // The error comes from the packet's destination and goes to its source.
    let (from, to) = (ip.dst, ip.src);
    if let (IpAddr::V6(from), IpAddr::V6(to)) = (from, to) {
        out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, IPPROTO_ICMPV6, HOP_LIMIT]);
        let mut h = Ipv6Packet::new_unchecked(&mut out[..]);
        h.set_payload_len((len - 40) as u16);
        h.set_src_addr(from);
        h.set_dst_addr(to);
        let mut m = IcmpPacket::new_unchecked(&mut out[40..]);
        m.set_msg_type(ICMPV6_PACKET_TOO_BIG);
        m.set_code(0);
        m.set_rest_of_header(mtu);
        m.fill_checksum_v6(from.octets(), to.octets());
    } else if let (IpAddr::V4(from), IpAddr::V4(to)) = (from, to) {
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
        m.set_msg_type(ICMPV4_DEST_UNREACH);
        m.set_code(ICMPV4_FRAG_NEEDED);
        m.set_rest_of_header(mtu.min(0xffff));
        m.fill_checksum_v4();
    }
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
