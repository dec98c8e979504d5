//! Sending a client's packet on to its real server by the real server's forwarding method:
//! NAT rewrite, tunnel encapsulation or a direct-routing frame.
//!
//! Called by the packet path once the connection is known and counted; the method and tunnel
//! settings come from the real server's shared state (one atomic load).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use crate::config::ForwardMethod;
use crate::conntrack::Conn;
use crate::fwd;
use crate::path::Ip;
use crate::tunnel::{self, EncapError, Fwd, Inner};
use crate::{DropReason, Engine, PacketBuf, Timestamp, Verdict};

/// Default MTU of the path to tunnel-mode real servers when neither the real server nor the
/// director settings give one.
pub const DEFAULT_PATH_MTU: u32 = 1500;

/// Sends the client's packet (`pkt`, described by `ip`) of connection `conn` on.
///
/// A FULLNAT connection stays FULLNAT (its reply tuple holds the local address and port); the
/// others follow their real server's current method.
pub(crate) fn inbound(
    engine: &Engine,
    now: Timestamp,
    pkt: &mut PacketBuf<'_>,
    conn: &Conn,
    ip: &Ip,
) -> Verdict {
    pkt.set_len(ip.total);
    if conn.forward == ForwardMethod::FullNat {
        return fwd::fullnat::to_dest(conn, pkt, ip);
    }
    let f = Fwd::unpack(conn.dest.fwd.load(Relaxed));
    match f.method {
        // A real server edited to FULLNAT keeps its NAT connections as they are.
        ForwardMethod::Masq | ForwardMethod::FullNat => fwd::masq::to_dest(conn, pkt, ip),
        // The frame keeps or loses the offload metadata by the TAP's kind (see `to_frame`).
        ForwardMethod::Route => crate::l2::to_frame(engine, now, pkt, conn.reply.src),
        // GUE remote checksum offload leaves a partial inner checksum to the receiver.
        ForwardMethod::Tunnel => {
            let remcsum = tunnel::Remcsum::of(pkt, ip, &f.tunnel);
            if remcsum.is_none() {
                crate::offload::finish_partial(pkt);
            }
            let v = encap(engine, pkt, conn, &f, remcsum);
            if remcsum.is_some() {
                // Nothing left for the sender to finish.
                pkt.offload.csum = crate::L4Csum::Complete;
            }
            v
        }
    }
}

/// Sends an ICMP error about connection `conn` (from the client side) to a direct-routing or
/// tunnel real server unchanged: a frame to its MAC or encapsulated, by its current method.
/// `None` if that method is NAT or FULLNAT (the caller then leaves the error alone).
pub(crate) fn relay(
    engine: &Engine,
    now: Timestamp,
    pkt: &mut PacketBuf<'_>,
    conn: &Conn,
    ip: &Ip,
) -> Option<Verdict> {
    pkt.set_len(ip.total);
    let f = Fwd::unpack(conn.dest.fwd.load(Relaxed));
    match f.method {
        ForwardMethod::Route => Some(crate::l2::to_frame(engine, now, pkt, conn.reply.src)),
        ForwardMethod::Tunnel => Some(encap(engine, pkt, conn, &f, None)),
        ForwardMethod::Masq | ForwardMethod::FullNat => None,
    }
}

/// Whether a GSO super-packet of `conn` must be split before it can be sent: the output of
/// tunnels (no GSO type for an encapsulated packet) and of direct routing on a TAP without
/// offload ([`crate::Director::frame_offload`]) cannot carry it.
pub(crate) fn needs_split(engine: &Engine, conn: &Conn) -> bool {
    if conn.forward == ForwardMethod::FullNat {
        return false;
    }
    match Fwd::unpack(conn.dest.fwd.load(Relaxed)).method {
        ForwardMethod::Masq | ForwardMethod::FullNat => false,
        ForwardMethod::Route => !engine.director.load().frame_offload,
        ForwardMethod::Tunnel => true,
    }
}

fn encap(
    engine: &Engine,
    pkt: &mut PacketBuf<'_>,
    conn: &Conn,
    fwd: &Fwd,
    remcsum: Option<tunnel::Remcsum>,
) -> Verdict {
    let rs = conn.reply.src;
    let dir = engine.director.load();
    let src = match rs {
        IpAddr::V4(_) => dir.tunnel_source_v4.map(IpAddr::V4),
        IpAddr::V6(_) => dir.tunnel_source_v6.map(IpAddr::V6),
    };
    let Some(src) = src else {
        return engine.drops.count(DropReason::NoTunnelSource);
    };
    let o = &conn.orig;
    let hash = tunnel::flow_hash(o.src, o.sport, o.dst, o.dport, o.proto.number());
    let inner = Inner {
        remcsum,
        ..Inner::of(pkt.data(), hash)
    };
    let overhead = tunnel::overhead_for(&fwd.tunnel, &inner, rs.is_ipv6());
    let mtu = match conn.dest.path_mtu.load(Relaxed) {
        0 => dir.path_mtu,
        m => m,
    } as usize;
    let len = pkt.len();
    // As IPVS: IPv4 without DF goes on (the outer header copies the clear DF, so the kernel
    // fragments the outer packet); IPv6 and IPv4 with DF are answered. An IPv6 packet of at
    // most 1280 bytes, which no Packet Too Big can shrink, goes on in an outer IPv4 header
    // without DF for the kernel to fragment (RFC 4213 3.2); over IPv6 it stays a counted drop.
    let v6_in_v4_min = inner.v6 && rs.is_ipv4() && len <= MIN_MTU_V6;
    if len + overhead > mtu && (inner.v6 || inner.df) && !v6_in_v4_min {
        return too_big(engine, pkt, len, mtu.saturating_sub(overhead), inner.v6);
    }
    match tunnel::encapsulate(pkt.buf, pkt.start, len, inner, &fwd.tunnel, src, rs) {
        Ok(start) => {
            pkt.start = start;
            Verdict::Forward
        }
        Err(EncapError::NoHeadroom) => engine.drops.count(DropReason::NoHeadroom),
        Err(EncapError::TooLong) => engine.drops.count(DropReason::Malformed),
    }
}

/// Smallest MTU an IPv4 link must carry (RFC 791).
const MIN_MTU_V4: usize = 68;
/// Smallest MTU an IPv6 link must carry (RFC 8200).
const MIN_MTU_V6: usize = 1280;

/// Answers a packet of `len` bytes that does not fit the `room` left inside the tunnel with
/// FRAG_NEEDED / Packet Too Big to its sender, announcing `room` (for IPv6 at least 1280, the
/// smallest MTU a sender may be told). Where no error can help (the packet already fits the
/// announced MTU, or an IPv4 path leaves less than 68 bytes) or none may be sent (the packet is
/// an ICMP error or a later fragment, see [`crate::icmp::packet_too_big`]), it is a counted
/// [`DropReason::TooBig`].
fn too_big(engine: &Engine, pkt: &mut PacketBuf<'_>, len: usize, room: usize, v6: bool) -> Verdict {
    let announce = if v6 { room.max(MIN_MTU_V6) } else { room };
    if len <= announce || (!v6 && room < MIN_MTU_V4) {
        return engine.drops.count(DropReason::TooBig);
    }
    match crate::icmp::packet_too_big(pkt, announce as u32) {
        Ok(()) => Verdict::Reply,
        Err(_) => engine.drops.count(DropReason::TooBig),
    }
}
