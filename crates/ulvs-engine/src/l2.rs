//! Direct routing (ipvsadm `-g`): Ethernet frames from the TAP device, ARP and NDP for the
//! virtual addresses, MAC rewriting, and the requests that resolve real servers.
//!
//! A frame addressed to the TAP's MAC (or broadcast / multicast for ARP and NDP) is handled:
//! - an ARP request for a virtual address is answered in place (a reply from the TAP's MAC);
//! - an NDP neighbour solicitation for a virtual address is answered with a neighbour
//!   advertisement (solicited, override, with the target link-layer address option);
//! - ARP and NDP messages from direct-routing real servers teach the neighbour table;
//! - an IPv4 or IPv6 packet goes through the same classification and connection tracking as
//!   a packet from the TUN (`path::process`); a direct-routing real server gets the frame with
//!   its MAC as destination and the TAP's as source, the IP packet untouched.
//!
//! Anything else is not ours: [`Verdict::Pass`], which from the TAP means "ignore" (writing it
//! back would duplicate it on the bridge).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{DropReason, Engine, PacketBuf, Timestamp, Verdict, checksum, tunnel};

/// Length of an Ethernet header (no VLAN tag).
pub(crate) const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ARP_LEN: usize = 28;
const ICMPV6: u8 = 58;
const NDP_NS: u8 = 135;
const NDP_NA: u8 = 136;
/// Length of a neighbour advertisement frame with a target link-layer address option (or a
/// neighbour solicitation with a source link-layer address option).
const NDP_FRAME_LEN: usize = ETH_HLEN + 40 + 32;

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

fn mac_at(f: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(&f[at..at + 6]);
    m
}

/// Writes an Ethernet header at the front of `f`.
fn put_eth(f: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// The IPv6 link-local address derived from a MAC (modified EUI-64, RFC 4291 appendix A).
pub(crate) fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX).
fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The ICMPv6 checksum of `msg` from `src` to `dst`.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let acc = tunnel::pseudo_header_v6(IpAddr::V6(src), IpAddr::V6(dst), ICMPV6, msg.len() as u32);
    !checksum::fold(checksum::sum_words(acc, msg))
}

pub(crate) fn process_frame(engine: &Engine, now: Timestamp, frame: &mut PacketBuf<'_>) -> Verdict {
    let Some(our) = engine.director.load().mac else {
        return Verdict::Pass;
    };
    let f = frame.data();
    if f.len() < ETH_HLEN {
        return engine.drops.count(DropReason::Malformed);
    }
    let dst = mac_at(f, 0);
    let group = dst[0] & 1 != 0;
    if dst != our && !group {
        return Verdict::Pass;
    }
    match ethertype(f) {
        ETH_P_ARP => arp(engine, now, frame, our),
        ETH_P_IPV6 if is_ndp(&f[ETH_HLEN..]) => ndp(engine, now, frame, our),
        ETH_P_IP | ETH_P_IPV6 if !group => {
            let src_mac = mac_at(f, 6);
            frame.start += ETH_HLEN;
            let v = crate::path::process(engine, now, frame);
            if v == Verdict::Reply {
                // An ICMP error for the sender: back to its MAC.
                let ethertype = if frame.data()[0] >> 4 == 6 {
                    ETH_P_IPV6
                } else {
                    ETH_P_IP
                };
                if frame.start < ETH_HLEN {
                    return engine.drops.count(DropReason::NoHeadroom);
                }
                frame.start -= ETH_HLEN;
                put_eth(frame.data_mut(), src_mac, our, ethertype);
            }
            v
        }
        _ => Verdict::Pass,
    }
}

fn arp(engine: &Engine, now: Timestamp, frame: &mut PacketBuf<'_>, our: [u8; 6]) -> Verdict {
    let f = frame.data();
    if f.len() < ETH_HLEN + ARP_LEN {
        return engine.drops.count(DropReason::Malformed);
    }
    let a = &f[ETH_HLEN..ETH_HLEN + ARP_LEN];
    // Ethernet / IPv4 only.
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return Verdict::Pass;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha = mac_at(a, 8);
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    let snap = engine.config.load();
    if snap.route_dests.contains(&IpAddr::V4(spa)) && sha[0] & 1 == 0 {
        engine.neigh.learn(IpAddr::V4(spa), sha, now);
    }
    if op != 1 || spa == tpa || !snap.is_vip(IpAddr::V4(tpa)) {
        return Verdict::Pass;
    }
    frame.end = frame.start + ETH_HLEN + ARP_LEN;
    let f = frame.data_mut();
    put_eth(f, sha, our, ETH_P_ARP);
    let a = &mut f[ETH_HLEN..];
    a[6..8].copy_from_slice(&2u16.to_be_bytes());
    a[8..14].copy_from_slice(&our);
    a[14..18].copy_from_slice(&tpa.octets());
    a[18..24].copy_from_slice(&sha);
    a[24..28].copy_from_slice(&spa.octets());
    Verdict::Reply
}

/// Whether an IPv6 packet is an NDP solicitation or advertisement (ICMPv6 without extension
/// headers, types 135 and 136).
fn is_ndp(ip: &[u8]) -> bool {
    ip.len() >= 40 + 24 && ip[0] >> 4 == 6 && ip[6] == ICMPV6 && matches!(ip[40], NDP_NS | NDP_NA)
}

/// Finds a link-layer address option of `kind` (1 source, 2 target) among NDP options.
fn lladdr_option(mut opts: &[u8], kind: u8) -> Option<[u8; 6]> {
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == kind && len >= 8 {
            return Some(mac_at(opts, 2));
        }
        opts = &opts[len..];
    }
    None
}

fn ndp(engine: &Engine, now: Timestamp, frame: &mut PacketBuf<'_>, our: [u8; 6]) -> Verdict {
    let f = frame.data();
    let ip = &f[ETH_HLEN..];
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    // RFC 4861: hop limit 255, ICMPv6 code 0, the whole message present.
    if ip[7] != 255 || ip[41] != 0 || plen < 24 || 40 + plen > ip.len() {
        return engine.drops.count(DropReason::Malformed);
    }
    let msg = &ip[40..40 + plen];
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let src = Ipv6Addr::from(src);
    let mut target = [0u8; 16];
    target.copy_from_slice(&msg[8..24]);
    let target = Ipv6Addr::from(target);
    let snap = engine.config.load();
    let opts = &msg[24..];
    match msg[0] {
        NDP_NA => {
            let mac = lladdr_option(opts, 2).unwrap_or_else(|| mac_at(f, 6));
            if snap.route_dests.contains(&IpAddr::V6(target)) && mac[0] & 1 == 0 {
                engine.neigh.learn(IpAddr::V6(target), mac, now);
            }
            Verdict::Pass
        }
        _ => {
            let sll = lladdr_option(opts, 1);
            if let Some(mac) = sll
                && snap.route_dests.contains(&IpAddr::V6(src))
                && mac[0] & 1 == 0
            {
                engine.neigh.learn(IpAddr::V6(src), mac, now);
            }
            if !snap.is_vip(IpAddr::V6(target)) {
                return Verdict::Pass;
            }
            let requester = sll.unwrap_or_else(|| mac_at(f, 6));
            let dad = src.is_unspecified();
            let (dst_ip, dst_mac) = if dad {
                (
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                    [0x33, 0x33, 0, 0, 0, 1],
                )
            } else {
                (src, requester)
            };
            if frame.buf.len() - frame.start < NDP_FRAME_LEN {
                return engine.drops.count(DropReason::NoHeadroom);
            }
            frame.end = frame.start + NDP_FRAME_LEN;
            let f = frame.data_mut();
            write_ndp(f, our, dst_mac, target, dst_ip, NDP_NA, target, !dad);
            Verdict::Reply
        }
    }
}

/// Writes an NDP frame of [`NDP_FRAME_LEN`] bytes: a neighbour advertisement for `target`
/// (with the target link-layer option, override set, solicited as given) or a neighbour
/// solicitation (with the source link-layer option).
#[allow(clippy::too_many_arguments)]
fn write_ndp(
    f: &mut [u8],
    our: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    kind: u8,
    target: Ipv6Addr,
    solicited: bool,
) {
    put_eth(f, dst_mac, our, ETH_P_IPV6);
    let ip = &mut f[ETH_HLEN..];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src_ip.octets());
    ip[24..40].copy_from_slice(&dst_ip.octets());
    let m = &mut ip[40..72];
    m[0] = kind;
    m[1] = 0;
    m[2..4].copy_from_slice(&[0, 0]);
    let flags = if kind == NDP_NA {
        0x20 | if solicited { 0x40 } else { 0 }
    } else {
        0
    };
    m[4..8].copy_from_slice(&[flags, 0, 0, 0]);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = if kind == NDP_NA { 2 } else { 1 };
    m[25] = 1;
    m[26..32].copy_from_slice(&our);
    let c = icmpv6_checksum(src_ip, dst_ip, m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
}

/// Builds an ARP request (IPv4) or neighbour solicitation (IPv6) for `ip` from `our` MAC.
pub(crate) fn request(ip: IpAddr, our: [u8; 6], arp_source: Option<Ipv4Addr>) -> Vec<u8> {
    match ip {
        IpAddr::V4(t) => {
            let mut f = vec![0u8; ETH_HLEN + ARP_LEN];
            put_eth(&mut f, [0xff; 6], our, ETH_P_ARP);
            let a = &mut f[ETH_HLEN..];
            a[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            a[8..14].copy_from_slice(&our);
            a[14..18].copy_from_slice(&arp_source.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
            a[24..28].copy_from_slice(&t.octets());
            f
        }
        IpAddr::V6(t) => {
            let mut f = vec![0u8; NDP_FRAME_LEN];
            let o = t.octets();
            let mcast_mac = [0x33, 0x33, 0xff, o[13], o[14], o[15]];
            write_ndp(
                &mut f,
                our,
                mcast_mac,
                link_local(our),
                solicited_node(t),
                NDP_NS,
                t,
                false,
            );
            f
        }
    }
}

/// Turns the IP packet in `pkt` into an Ethernet frame for the direct-routing real server at
/// `rs` (its MAC as destination, the TAP's as source). A TAP with offload
/// ([`crate::Director::frame_offload`]) takes the packet's offload metadata along (the sender
/// moves it past the Ethernet header); for one without, a partial checksum is finished here
/// (super-packets were split before, see `xmit::needs_split`).
pub(crate) fn to_frame(
    engine: &Engine,
    now: Timestamp,
    pkt: &mut PacketBuf<'_>,
    rs: IpAddr,
) -> Verdict {
    let dir = engine.director.load();
    let Some(our) = dir.mac else {
        return engine.drops.count(DropReason::NoL2Device);
    };
    let Some(mac) = engine.neigh.lookup(rs, now) else {
        return engine.drops.count(DropReason::Unresolved);
    };
    if pkt.start < ETH_HLEN {
        return engine.drops.count(DropReason::NoHeadroom);
    }
    if !dir.frame_offload {
        crate::offload::finish_partial(pkt);
    }
    let ethertype = if pkt.data()[0] >> 4 == 6 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    pkt.start -= ETH_HLEN;
    put_eth(pkt.data_mut(), mac, our, ethertype);
    Verdict::ForwardFrame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_modified_eui64() {
        let ll = link_local([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(ll, "fe80::11:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn solicited_node_takes_the_low_24_bits() {
        let t: Ipv6Addr = "fd00:1b5::1:2:3:abcd".parse().unwrap();
        assert_eq!(
            solicited_node(t),
            "ff02::1:ff03:abcd".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn options_parse_and_reject_zero_length() {
        let opts = [1, 1, 2, 0, 0, 0, 0, 9, 2, 1, 2, 0, 0, 0, 0, 7];
        assert_eq!(lladdr_option(&opts, 2), Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(lladdr_option(&[1, 0, 0, 0, 0, 0, 0, 0], 1), None);
    }
}
