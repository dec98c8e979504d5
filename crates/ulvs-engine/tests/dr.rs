//! Direct-routing fixtures: Ethernet frames from the TAP in, frames out. ARP and NDP answers
//! for virtual addresses, neighbour learning and requests, MAC rewriting, counted drops while
//! a real server is unresolved.

mod common;

use common::*;
use ulvs_engine::{
    Director, DropReason, Engine, ForwardMethod, L4Csum, Offload, PacketBuf, Protocol,
    SchedulerKind, Timestamp, Verdict,
};

const TAP: [u8; 6] = [0x02, 0x75, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const RS1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const DIRECTOR_IP: [u8; 4] = [198, 19, 0, 1];

fn dr_engine() -> Engine {
    let mut d = dest(RS1, 80, 1);
    d.forward = ForwardMethod::Route;
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![d],
    )]);
    e.set_director(Director {
        mac: Some(TAP),
        arp_source: Some(DIRECTOR_IP.into()),
        ..Director::default()
    });
    e
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    a
}

fn frame_run(e: &Engine, now: u64, input: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 128 + input.len().max(100)];
    buf[128..128 + input.len()].copy_from_slice(input);
    let mut pkt = PacketBuf::new(&mut buf, 128, input.len());
    let v = e.process_frame(Timestamp(now), &mut pkt);
    (v, pkt.data().to_vec())
}

#[test]
fn arp_request_for_the_vip_is_answered_from_the_tap_mac() {
    let e = dr_engine();
    let req = eth(
        [0xff; 6],
        CLIENT_MAC,
        0x0806,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], VIP),
    );
    let (v, out) = frame_run(&e, 1, &req);
    assert_eq!(v, Verdict::Reply);
    let want = eth(
        CLIENT_MAC,
        TAP,
        0x0806,
        &arp(2, TAP, VIP, CLIENT_MAC, CLIENT),
    );
    assert_eq!(out, want, "output:\n{}", hex(&out));
    // Not for a VIP: ignored.
    let other = eth(
        [0xff; 6],
        CLIENT_MAC,
        0x0806,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], OTHER),
    );
    assert_eq!(frame_run(&e, 2, &other).0, Verdict::Pass);
}

#[test]
fn real_server_is_resolved_then_frames_get_its_mac() {
    let e = dr_engine();
    // Nothing known yet: the timer asks for RS1 with an ARP request from the director address.
    let reqs = e.neighbour_requests(Timestamp(0));
    assert_eq!(
        reqs,
        vec![eth(
            [0xff; 6],
            TAP,
            0x0806,
            &arp(1, TAP, DIRECTOR_IP, [0; 6], RS1)
        )]
    );
    assert!(e.neighbour_requests(Timestamp(500)).is_empty(), "paced");
    // A packet now is a counted drop.
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let f = eth(TAP, CLIENT_MAC, 0x0800, &syn);
    let before = e.stats();
    assert_eq!(
        frame_run(&e, 600, &f).0,
        Verdict::Drop(DropReason::Unresolved)
    );
    let after = e.stats();
    let n = |s: &ulvs_engine::StatsSnapshot| {
        s.drops
            .iter()
            .find(|(r, _)| *r == DropReason::Unresolved)
            .unwrap()
            .1
    };
    assert_eq!(n(&after) - n(&before), 1);
    // RS1 answers; the reply teaches the table and is not forwarded anywhere.
    let reply = eth(
        TAP,
        RS1_MAC,
        0x0806,
        &arp(2, RS1_MAC, RS1, TAP, DIRECTOR_IP),
    );
    assert_eq!(frame_run(&e, 700, &reply).0, Verdict::Pass);
    assert_eq!(e.neighbours(Timestamp(700)), vec![(RS1.into(), RS1_MAC)]);
    // The retransmitted SYN goes to RS1's MAC, IP packet untouched.
    let (v, out) = frame_run(&e, 1000, &f);
    assert_eq!(v, Verdict::ForwardFrame);
    assert_eq!(out, eth(RS1_MAC, TAP, 0x0800, &syn));
    let data = tcp(CLIENT, 40000, VIP, 80, ACK, b"payload");
    let (v, out) = frame_run(&e, 1001, &eth(TAP, CLIENT_MAC, 0x0800, &data));
    assert_eq!(v, Verdict::ForwardFrame);
    assert_eq!(out, eth(RS1_MAC, TAP, 0x0800, &data));
    // Frames for other MACs (flooded by the bridge) are not ours.
    let (v, _) = frame_run(&e, 1002, &eth(RS1_MAC, CLIENT_MAC, 0x0800, &data));
    assert_eq!(v, Verdict::Pass);
    // The entry expires without confirmation; refreshes are asked before that.
    assert_eq!(e.neighbour_requests(Timestamp(700 + 15_000)).len(), 1);
    assert!(e.neighbours(Timestamp(700 + 60_000)).is_empty());
}

#[test]
fn packets_from_the_tun_for_a_dr_server_become_frames() {
    let e = resolved_dr_engine(false);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let (v, out) = run(&e, 2, &syn);
    assert_eq!(v, Verdict::ForwardFrame);
    assert_eq!(out, eth(RS1_MAC, TAP, 0x0800, &syn));
    // Without a TAP, direct routing is a counted drop.
    e.set_director(Director::default());
    let syn2 = tcp(CLIENT, 40001, VIP, 80, SYN, &[]);
    assert_eq!(run(&e, 3, &syn2).0, Verdict::Drop(DropReason::NoL2Device));
}

fn ndp_ns(src: [u8; 16], dst: [u8; 16], target: [u8; 16], sll: [u8; 6]) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target);
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&sll);
    icmpv6(src, dst, m)
}

fn icmpv6(src: [u8; 16], dst: [u8; 16], mut m: Vec<u8>) -> Vec<u8> {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(m.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&m);
    let mut s: u32 = 0;
    for c in pseudo.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    m[2..4].copy_from_slice(&(!(s as u16)).to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(m.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 255]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&m);
    ip
}

#[test]
fn neighbour_solicitation_for_an_ipv6_vip_is_advertised() {
    let vip6: std::net::Ipv6Addr = "fd00:1b5:1::1".parse().unwrap();
    let client6: std::net::Ipv6Addr = "fd00:1b5::10".parse().unwrap();
    let e = Engine::new(opts());
    let mut cfg = ulvs_engine::Config::default();
    let mut s = ulvs_engine::ServiceConfig::new(ulvs_engine::ServiceKey {
        protocol: Protocol::Tcp,
        addr: std::net::SocketAddr::new(vip6.into(), 80),
    });
    s.scheduler = SchedulerKind::Rr;
    cfg.services.push(s);
    if e.apply_config(&cfg).is_err() {
        // IPv6 services arrive with the IPv6 packet path; nothing to answer before that.
        return;
    }
    e.set_director(Director {
        mac: Some(TAP),
        ..Director::default()
    });
    let sn: std::net::Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
    let ns = ndp_ns(client6.octets(), sn.octets(), vip6.octets(), CLIENT_MAC);
    let f = eth([0x33, 0x33, 0xff, 0, 0, 1], CLIENT_MAC, 0x86dd, &ns);
    let (v, out) = frame_run(&e, 1, &f);
    assert_eq!(v, Verdict::Reply);
    let mut na = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    na.extend_from_slice(&vip6.octets());
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&TAP);
    let want = eth(
        CLIENT_MAC,
        TAP,
        0x86dd,
        &icmpv6(vip6.octets(), client6.octets(), na),
    );
    assert_eq!(out, want, "output:\n{}expected:\n{}", hex(&out), hex(&want));
}

#[test]
fn arbitrary_frames_never_panic() {
    let e = dr_engine();
    let mut seed: u64 = 7;
    for len in 0..200usize {
        for _ in 0..20 {
            let mut f = Vec::with_capacity(len);
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                f.push((seed >> 56) as u8);
            }
            if len >= 14 && seed & 1 == 0 {
                f[0..6].copy_from_slice(&TAP);
                f[12..14].copy_from_slice(&[0x08, if seed & 2 == 0 { 0x06 } else { 0x00 }]);
            }
            let _ = frame_run(&e, 1, &f);
        }
    }
}

/// Runs a TUN packet with offload metadata; returns the verdict, the output and its metadata.
fn run_offload(e: &Engine, now: u64, input: &[u8], off: Offload) -> (Verdict, Vec<u8>, Offload) {
    let mut buf = vec![0u8; 32 + input.len()];
    buf[32..].copy_from_slice(input);
    let mut pkt = PacketBuf::with_offload(&mut buf, 32, input.len(), off);
    let v = e.process(Timestamp(now), &mut pkt);
    (v, pkt.data().to_vec(), pkt.offload())
}

/// A DR engine whose real server's MAC is known, with or without offload on the TAP.
fn resolved_dr_engine(frame_offload: bool) -> Engine {
    let e = dr_engine();
    e.set_director(Director {
        frame_offload,
        ..e.director()
    });
    let reply = eth(
        TAP,
        RS1_MAC,
        0x0806,
        &arp(2, RS1_MAC, RS1, TAP, DIRECTOR_IP),
    );
    frame_run(&e, 1, &reply);
    e
}

#[test]
fn super_packets_go_whole_to_a_tap_with_offload_and_are_split_for_one_without() {
    let gso = Offload {
        csum: L4Csum::Partial,
        gso_size: 1448,
    };
    let payload: Vec<u8> = (0..1448 * 5).map(|b: usize| (b % 251) as u8).collect();
    // The checksum field holds whatever the sender's partial sum is; DR never touches it.
    let mut sup = tcp(CLIENT, 40000, VIP, 80, ACK, &payload);
    sup[36..38].copy_from_slice(&[0x12, 0x34]);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);

    let e = resolved_dr_engine(true);
    assert_eq!(run(&e, 2, &syn).0, Verdict::ForwardFrame);
    let before = e.stats();
    let (v, out, off) = run_offload(&e, 3, &sup, gso);
    assert_eq!(v, Verdict::ForwardFrame);
    assert_eq!(
        out,
        eth(RS1_MAC, TAP, 0x0800, &sup),
        "one frame, IP packet untouched"
    );
    assert_eq!(off, gso, "the metadata goes with the frame");
    let n = sup.len() as i64;
    assert_establishing_ack(&before, &e.stats(), n);
    // A plain packet with a partial checksum keeps it too (the kernel finishes it).
    let mut ack = tcp(CLIENT, 40000, VIP, 80, ACK, b"x");
    ack[36..38].copy_from_slice(&[0x56, 0x78]);
    let (v, out, off) = run_offload(&e, 4, &ack, Offload::PARTIAL);
    assert_eq!((v, off), (Verdict::ForwardFrame, Offload::PARTIAL));
    assert_eq!(out, eth(RS1_MAC, TAP, 0x0800, &ack));

    // Without offload on the TAP: refused unchanged (the worker splits it), and a partial
    // checksum is finished before the frame leaves.
    let e = resolved_dr_engine(false);
    assert_eq!(run(&e, 2, &syn).0, Verdict::ForwardFrame);
    let before = e.stats();
    let (v, out, _) = run_offload(&e, 3, &sup, gso);
    assert_eq!(v, Verdict::Drop(DropReason::GsoNotSplit));
    assert_eq!(out, sup);
    assert_delta(&before, &e.stats(), &[("drop gso_not_split", 1)]);
    let (v, out, off) = run_offload(&e, 4, &ack, Offload::PARTIAL);
    assert_eq!((v, off.csum), (Verdict::ForwardFrame, L4Csum::Complete));
    assert_ne!(&out[14 + 36..14 + 38], &[0x56, 0x78], "checksum finished");
}
