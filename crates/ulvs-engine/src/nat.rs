//! The packet path: classify an IP packet, find or create its connection, and rewrite it for
//! NAT (masquerading) in place.
//!
//! Client -> VIP:vport packets get the real server as destination; real server -> client
//! replies get the VIP:vport as source. Both patch the IP header checksum and the TCP/UDP
//! checksum (pseudo-header and port) incrementally; a partial checksum (offload, see
//! [`crate::L4Csum`]) gets only the pseudo-header change. A GSO super-packet is rewritten once,
//! like any packet: the kernel cuts it up after us with the rewritten headers.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::Protocol;
use crate::conntrack::{Conn, InsertError, Tuple};
use crate::persist;
use crate::sched::{Ctx, Flow};
use crate::wire::{Ipv4Packet, TcpFlags, TcpPacket, UdpPacket};
use crate::{DropReason, Engine, L4Csum, Offload, PacketBuf, Timestamp, Verdict};

/// The L4 facts of a packet the decision needs.
#[derive(Debug, Clone, Copy)]
struct L4 {
    sport: u16,
    dport: u16,
    /// TCP flags (empty for UDP).
    flags: TcpFlags,
}

/// What the lookup decided, taken out of the shard guard's scope when the packet needs more.
enum Found {
    /// Rewritten and counted.
    Done(Verdict),
    /// A client SYN on a closing connection: the old entry must go and the SYN be scheduled.
    Reuse(std::sync::Arc<Conn>),
}

pub(crate) fn process(engine: &Engine, now: Timestamp, pkt: &mut PacketBuf<'_>) -> Verdict {
    let Some(&first) = pkt.data().first() else {
        return engine.drops.count(DropReason::Malformed);
    };
    match first >> 4 {
        4 => {}
        // IPv6 is not balanced yet (apply_config refuses IPv6 services): nothing is ours.
        6 if pkt.len() >= 40 => return Verdict::Pass,
        _ => return engine.drops.count(DropReason::Malformed),
    }
    let Ok(ip) = Ipv4Packet::new_checked(pkt.data()) else {
        return engine.drops.count(DropReason::Malformed);
    };
    let total = usize::from(ip.total_len());
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if ip.frag_offset() != 0 {
        return engine.not_ours(dst, DropReason::Fragment);
    }
    let Some(proto) = Protocol::from_number(ip.protocol()) else {
        return engine.not_ours(dst, DropReason::UnsupportedProtocol);
    };
    let l4 = match parse_l4(proto, ip.payload(), ip.more_frags()) {
        Some(l4) => l4,
        None => return engine.drops.count(DropReason::Malformed),
    };
    let tuple = Tuple {
        proto,
        src: IpAddr::V4(src),
        sport: l4.sport,
        dst: IpAddr::V4(dst),
        dport: l4.dport,
    };

    let Offload { csum, gso_size } = pkt.offload();
    let found = engine.conns.with(&tuple, now, |c, from_client| {
        if from_client && engine.conns.reschedules(c, l4.flags) {
            return Found::Reuse(std::sync::Arc::clone(c));
        }
        // Left unchanged and uncounted: the caller splits it and submits the segments.
        if from_client && gso_size != 0 && crate::xmit::needs_split(c) {
            return Found::Done(engine.drops.count(DropReason::GsoNotSplit));
        }
        c.on_packet(now, from_client, l4.flags);
        if from_client {
            c.service.inbound(total);
            c.dest.traffic.inbound(total);
            Found::Done(crate::xmit::inbound(engine, now, pkt, c, total))
        } else {
            c.service.outbound(total);
            c.dest.traffic.outbound(total);
            rewrite_src(pkt.data_mut(), proto, csum, c.orig.dst, c.orig.dport);
            Found::Done(forward(pkt, total))
        }
    });
    match found {
        Some(Found::Done(v)) => return v,
        Some(Found::Reuse(old)) => {
            engine.conns.remove(&old);
        }
        None => {}
    }
    new_connection(engine, now, pkt, tuple, l4, total)
}

/// Reads ports (and TCP flags) from the IP payload; `None` if the L4 header is malformed.
fn parse_l4(proto: Protocol, payload: &[u8], more_frags: bool) -> Option<L4> {
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
    /// is addressed to a virtual address (passing it would loop it back into the TUN), passed
    /// unchanged otherwise.
    fn not_ours(&self, dst: Ipv4Addr, reason: DropReason) -> Verdict {
        if self.config.load().is_vip(IpAddr::V4(dst)) {
            self.drops.count(reason)
        } else {
            Verdict::Pass
        }
    }
}

/// The slow path: a packet matching no connection.
fn new_connection(
    engine: &Engine,
    now: Timestamp,
    pkt: &mut PacketBuf<'_>,
    tuple: Tuple,
    l4: L4,
    total: usize,
) -> Verdict {
    let snap = engine.config.load();
    if !snap.is_vip(tuple.dst) {
        return Verdict::Pass;
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
    let template = choice.into_template();
    // A real server on port 0 (port-0 services) keeps the client's destination port.
    let rs_port = match dest.addr.port() {
        0 => tuple.dport,
        p => p,
    };
    let reply = Tuple {
        proto: tuple.proto,
        src: dest.addr.ip(),
        sport: rs_port,
        dst: tuple.src,
        dport: tuple.sport,
    };
    let mut conn = Conn::new(
        tuple,
        reply,
        now,
        std::sync::Arc::clone(&dest.state),
        std::sync::Arc::clone(&svc.traffic),
    );
    if svc.one_packet && tuple.proto == Protocol::Udp {
        // One-packet scheduling: a connection of one packet, sent and never entered in the
        // table (nor counted on the real server), as IPVS's IP_VS_CONN_F_ONE_PACKET.
        if let Some(t) = template {
            t.release();
        }
        svc.traffic.conn();
        dest.state.traffic.conn();
        svc.traffic.inbound(total);
        dest.state.traffic.inbound(total);
        return crate::xmit::inbound(engine, now, pkt, &conn, total);
    }
    conn.template = template;
    let conn = match engine.conns.insert(conn, now) {
        Ok((c, fresh)) => {
            if fresh {
                svc.traffic.conn();
                dest.state.traffic.conn();
            }
            c
        }
        Err(InsertError::Full) => return engine.drops.count(DropReason::TableFull),
        Err(InsertError::Conflict) => return engine.drops.count(DropReason::TupleConflict),
    };
    // `conn` may be another thread's entry for the same tuple: rewrite by it.
    conn.on_packet(now, true, l4.flags);
    conn.service.inbound(total);
    conn.dest.traffic.inbound(total);
    crate::xmit::inbound(engine, now, pkt, &conn, total)
}

/// Trims bytes past the IP total length (not part of the packet) and says "forward".
fn forward(pkt: &mut PacketBuf<'_>, total: usize) -> Verdict {
    pkt.end = pkt.start + total;
    Verdict::Forward
}

/// Rewrites the destination address and port (client -> real server), patching checksums.
pub(crate) fn rewrite_dst(data: &mut [u8], proto: Protocol, csum: L4Csum, addr: IpAddr, port: u16) {
    let IpAddr::V4(addr) = addr else { return };
    let mut ip = Ipv4Packet::new_unchecked(data);
    let old = ip.dst_bytes();
    ip.set_dst_addr_with_checksum_update(addr);
    let new = addr.octets();
    let payload = ip.payload_mut();
    match (proto, csum) {
        (Protocol::Tcp, L4Csum::Complete) => {
            let mut t = TcpPacket::new_unchecked(payload);
            t.update_checksum_for_addr_v4(old, new);
            t.set_dst_port_with_checksum_update(port);
        }
        (Protocol::Udp, L4Csum::Complete) => {
            let mut u = UdpPacket::new_unchecked(payload);
            u.update_checksum_for_addr_v4(old, new);
            u.set_dst_port_with_checksum_update(port);
        }
        // Offload: only the pseudo-header part is in the field; ports are summed on transmit.
        (Protocol::Tcp, L4Csum::Partial) => {
            let mut t = TcpPacket::new_unchecked(payload);
            t.update_partial_checksum_for_addr(&old, &new);
            t.set_dst_port(port);
        }
        (Protocol::Udp, L4Csum::Partial) => {
            let mut u = UdpPacket::new_unchecked(payload);
            u.update_partial_checksum_for_addr(&old, &new);
            u.set_dst_port(port);
        }
    }
}

/// Rewrites the source address and port (real server -> client), patching checksums.
fn rewrite_src(data: &mut [u8], proto: Protocol, csum: L4Csum, addr: IpAddr, port: u16) {
    let IpAddr::V4(addr) = addr else { return };
    let mut ip = Ipv4Packet::new_unchecked(data);
    let old = ip.src_bytes();
    ip.set_src_addr_with_checksum_update(addr);
    let new = addr.octets();
    let payload = ip.payload_mut();
    match (proto, csum) {
        (Protocol::Tcp, L4Csum::Complete) => {
            let mut t = TcpPacket::new_unchecked(payload);
            t.update_checksum_for_addr_v4(old, new);
            t.set_src_port_with_checksum_update(port);
        }
        (Protocol::Udp, L4Csum::Complete) => {
            let mut u = UdpPacket::new_unchecked(payload);
            u.update_checksum_for_addr_v4(old, new);
            u.set_src_port_with_checksum_update(port);
        }
        // Offload: only the pseudo-header part is in the field; ports are summed on transmit.
        (Protocol::Tcp, L4Csum::Partial) => {
            let mut t = TcpPacket::new_unchecked(payload);
            t.update_partial_checksum_for_addr(&old, &new);
            t.set_src_port(port);
        }
        (Protocol::Udp, L4Csum::Partial) => {
            let mut u = UdpPacket::new_unchecked(payload);
            u.update_partial_checksum_for_addr(&old, &new);
            u.set_src_port(port);
        }
    }
}
