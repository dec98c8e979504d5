//! The packet path: parse an IPv4 or IPv6 packet, find or create its connection, and hand it to
//! its forwarding method (`fwd`) or to the ICMP handling (`icmp`).
//!
//! Fragments: a non-first fragment (IPv4 offset != 0, or an IPv6 fragment header with offset !=
//! 0) carries no ports, so it cannot be matched to a connection; ulvs does not reassemble and
//! does not cache first-fragment decisions. Such fragments addressed to a virtual or local
//! address are a counted drop ([`DropReason::Fragment`]); others pass unchanged. A first
//! fragment is handled like a whole packet (its L4 checksum, which covers the whole datagram,
//! is patched incrementally).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{ForwardMethod, Protocol};
use crate::conntrack::{Conn, InsertError, Tuple};
use crate::fwd;
use crate::persist;
use crate::sched::{Ctx, Flow};
use crate::wire::{
    FragInfo, IPPROTO_ICMP, IPPROTO_ICMPV6, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket, UdpPacket,
};
use crate::{DropReason, Engine, PacketBuf, Timestamp, Verdict};

/// The IP-layer facts of a packet, as [`parse_ip`] found them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip {
    /// IPv6 (else IPv4).
    pub(crate) v6: bool,
    /// Source address.
    pub(crate) src: IpAddr,
    /// Destination address.
    pub(crate) dst: IpAddr,
    /// Upper-layer protocol number.
    pub(crate) proto: u8,
    /// Offset of the upper-layer header.
    pub(crate) l4: usize,
    /// Total length of the packet (bytes past it in the buffer are not part of it).
    pub(crate) total: usize,
    /// Fragment facts (offset 0 and no M flag for a whole packet).
    pub(crate) frag: FragInfo,
}

/// Parses the IP header (and IPv6 extension headers); `None` if malformed.
pub(crate) fn parse_ip(data: &[u8]) -> Option<Ip> {
    match data.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(data).ok()?;
            Some(Ip {
                v6: false,
                src: IpAddr::V4(ip.src_addr()),
                dst: IpAddr::V4(ip.dst_addr()),
                proto: ip.protocol(),
                l4: ip.header_len(),
                total: usize::from(ip.total_len()),
                frag: FragInfo {
                    offset: ip.frag_offset(),
                    more: ip.more_frags(),
                    id: u32::from(u16::from_be_bytes([data[4], data[5]])),
                },
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(data).ok()?;
            let total = ip.total_len();
            let up = ip.upper_layer(total).ok()?;
            let frag = up.frag.unwrap_or_default();
            if frag.offset == 0 && up.offset > total {
                return None;
            }
            Some(Ip {
                v6: true,
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
                proto: up.protocol,
                l4: up.offset.min(total),
                total,
                frag,
            })
        }
        _ => None,
    }
}

/// The L4 facts of a packet the decision needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L4 {
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    /// TCP flags (empty for UDP).
    pub(crate) flags: TcpFlags,
}

/// What the lookup decided, taken out of the shard guard's scope when the packet needs more.
enum Found {
    /// Rewritten and counted.
    Done(Verdict),
    /// A client SYN on a closing connection: the old entry must go and the SYN be scheduled.
    Reuse(Arc<Conn>),
}

pub(crate) fn process(engine: &Engine, now: Timestamp, pkt: &mut PacketBuf<'_>) -> Verdict {
    let Some(ip) = parse_ip(pkt.data()) else {
        return engine.drops.count(DropReason::Malformed);
    };
    if ip.frag.offset != 0 {
        return engine.not_ours(ip.dst, DropReason::Fragment);
    }
    let proto = match (ip.proto, ip.v6) {
        (IPPROTO_ICMP, false) | (IPPROTO_ICMPV6, true) => {
            return crate::icmp::process(engine, now, pkt, &ip);
        }
        (p, _) => match Protocol::from_number(p) {
            Some(p) => p,
            None => return engine.not_ours(ip.dst, DropReason::UnsupportedProtocol),
        },
    };
    let l4 = match parse_l4(proto, &pkt.data()[ip.l4..ip.total], ip.frag.more) {
        Some(l4) => l4,
        None => return engine.drops.count(DropReason::Malformed),
    };
    let tuple = Tuple {
        proto,
        src: ip.src,
        sport: l4.sport,
        dst: ip.dst,
        dport: l4.dport,
    };
    let total = ip.total;

    let gso = pkt.offload().is_gso();
    let found = engine.conns.with(&tuple, now, |c, from_client| {
        if from_client && engine.conns.reschedules(c, l4.flags) {
            return Found::Reuse(Arc::clone(c));
        }
        // Left unchanged and uncounted: the caller splits it and submits the segments.
        if from_client && gso && crate::xmit::needs_split(engine, c) {
            return Found::Done(engine.drops.count(DropReason::GsoNotSplit));
        }
        c.on_packet(now, from_client, l4.flags);
        if from_client {
            c.service.inbound(total);
            c.dest.traffic.inbound(total);
            Found::Done(crate::xmit::inbound(engine, now, pkt, c, &ip))
        } else {
            c.service.outbound(total);
            c.dest.traffic.outbound(total);
            Found::Done(fwd::to_client(c, pkt, &ip))
        }
    });
    match found {
        Some(Found::Done(v)) => return v,
        Some(Found::Reuse(old)) => {
            engine.conns.remove(&old);
        }
        None => {}
    }
    new_connection(engine, now, pkt, &ip, tuple, l4)
}

/// Reads ports (and TCP flags) from the IP payload; `None` if the L4 header is malformed.
pub(crate) fn parse_l4(proto: Protocol, payload: &[u8], more_frags: bool) -> Option<L4> {
    match proto {
        Protocol::Tcp => {
            let t = TcpPacket::new_checked(payload).ok()?;
            Some(L4 {
                sport: t.src_port(),
                dport: t.dst_port(),
                flags: t.flags(),
            })
        }
        Protocol::Udp => {
            // A first fragment's UDP length covers bytes in later fragments.
            let u = if more_frags {
                UdpPacket::new_checked_header(payload).ok()?
            } else {
                UdpPacket::new_checked(payload).ok()?
            };
            Some(L4 {
                sport: u.src_port(),
                dport: u.dst_port(),
                flags: TcpFlags::default(),
            })
        }
    }
}

impl Engine {
    /// A packet that matched no connection and cannot be handled: dropped with `reason` if it
    /// is addressed to a virtual or FULLNAT local address (passing it would loop it back into
    /// the TUN), passed unchanged otherwise.
    pub(crate) fn not_ours(&self, dst: IpAddr, reason: DropReason) -> Verdict {
        if self.config.load().is_ours(dst) {
            self.drops.count(reason)
        } else {
            Verdict::Pass
        }
    }
}

/// How many times a FULLNAT connection retries with another local port when the reply tuple
/// is taken (only possible when a pool was replaced by a configuration change).
const FULLNAT_RETRIES: usize = 4;

/// The slow path: a packet matching no connection.
fn new_connection(
    engine: &Engine,
    now: Timestamp,
    pkt: &mut PacketBuf<'_>,
    ip: &Ip,
    tuple: Tuple,
    l4: L4,
) -> Verdict {
    let snap = engine.config.load();
    if !snap.is_vip(tuple.dst) {
        return engine.not_ours(tuple.dst, DropReason::NoConnection);
    }
    let vaddr = std::net::SocketAddr::new(tuple.dst, tuple.dport);
    let Some(svc) = snap.get(tuple.proto, vaddr) else {
        return engine.drops.count(DropReason::NoService);
    };
    if tuple.proto == Protocol::Tcp && !l4.flags.is_connection_start() {
        return engine.drops.count(DropReason::NoConnection);
    }
    // A super-packet (UDP segmentation offload) does not start a connection: split first,
    // since the real server's method may not carry it.
    if pkt.offload().is_gso() {
        return engine.drops.count(DropReason::GsoNotSplit);
    }
    if !engine.conns.make_room(now) {
        return engine.drops.count(DropReason::TableFull);
    }
    if !svc.traffic.admit(now) {
        return engine.drops.count(DropReason::RateLimited);
    }
    let flow = Flow {
        src: tuple.src,
        src_port: tuple.sport,
        dst: tuple.dst,
    };
    let mut ctx = Ctx::live(now, &engine.rng);
    let Some(choice) = persist::choose(
        &engine.templates,
        engine.conns.settings().expire_quiescent_template,
        svc,
        &flow,
        &mut ctx,
    ) else {
        return engine.drops.count(DropReason::NoDestination);
    };
    let dest = &svc.dests[choice.index()];
    let mut template = choice.into_template();
    // A real server on port 0 (port-0 services) keeps the client's destination port.
    let rs_port = match dest.addr.port() {
        0 => tuple.dport,
        p => p,
    };
    let mut attempts = 0;
    let conn = loop {
        let (reply, lease) = match dest.forward {
            ForwardMethod::FullNat => match fwd::fullnat::new_reply(svc, dest, &tuple, rs_port) {
                Some((reply, lease)) => (reply, Some(lease)),
                None => {
                    if let Some(t) = template {
                        t.release();
                    }
                    return engine.drops.count(DropReason::LocalPortExhausted);
                }
            },
            _ => (
                Tuple {
                    proto: tuple.proto,
                    src: dest.addr.ip(),
                    sport: rs_port,
                    dst: tuple.src,
                    dport: tuple.sport,
                },
                None,
            ),
        };
        let mut conn = Conn::new(
            tuple,
            reply,
            now,
            Arc::clone(&dest.state),
            Arc::clone(&svc.traffic),
        )
        .with_forward(dest.forward, lease);
        if svc.one_packet && tuple.proto == Protocol::Udp {
            // One-packet scheduling: a connection of one packet, sent and never entered in the
            // table (nor counted on the real server), as IPVS's IP_VS_CONN_F_ONE_PACKET.
            if let Some(t) = template {
                t.release();
            }
            svc.traffic.conn();
            dest.state.traffic.conn();
            svc.traffic.inbound(ip.total);
            dest.state.traffic.inbound(ip.total);
            return crate::xmit::inbound(engine, now, pkt, &conn, ip);
        }
        conn.template = template.take();
        match engine.conns.insert(conn, now) {
            Ok((c, fresh)) => {
                if fresh {
                    svc.traffic.conn();
                    dest.state.traffic.conn();
                }
                break c;
            }
            Err(InsertError::Full) => return engine.drops.count(DropReason::TableFull),
            // A FULLNAT port whose reply tuple is still taken (its pool was replaced by a
            // configuration change): try another. The template went with the refused entry.
            Err(InsertError::Conflict)
                if dest.forward == ForwardMethod::FullNat && attempts < FULLNAT_RETRIES =>
            {
                attempts += 1;
            }
            Err(InsertError::Conflict) => return engine.drops.count(DropReason::TupleConflict),
        }
    };
    // `conn` may be another thread's entry for the same tuple: rewrite by it.
    conn.on_packet(now, true, l4.flags);
    conn.service.inbound(ip.total);
    conn.dest.traffic.inbound(ip.total);
    crate::xmit::inbound(engine, now, pkt, &conn, ip)
}
