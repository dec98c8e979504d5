//! Criterion benchmarks of the engine's per-packet cost for every forwarding mode (NAT, FULLNAT,
//! direct routing, IPIP / GUE / GRE tunnels), IPv4 and IPv6, for a new flow (lookup of an
//! expired entry, scheduling, insert, rewrite) and an established one (lookup, rewrite). Packets
//! come from the engine tests' builders (`tests/common`); every verdict is checked, and before
//! each established-flow benchmark 1000 packets of it are checked to allocate nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use etherparse::{Icmpv6Type, PacketBuilder};
use ulvs_engine::{
    Config, DestConfig, Director, Engine, EngineOptions, ForwardMethod, PacketBuf, Protocol,
    ServiceConfig, TcpState, Timeouts, Timestamp, TunnelChecksum, TunnelConfig, TunnelType,
    Verdict,
};

/// Counts the allocations of the current thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` 1000 times and panics if that allocated.
fn assert_no_alloc(what: &str, mut f: impl FnMut()) {
    let before = ALLOCS.with(Cell::get);
    for _ in 0..1000 {
        f();
    }
    let n = ALLOCS.with(Cell::get) - before;
    assert_eq!(n, 0, "{what}: {n} allocations in 1000 established packets");
}

/// Payload of the benchmarked segments: a small packet, so the cost is per packet, not per byte.
const PAYLOAD: [u8; 64] = [0x61; 64];
/// Headroom in front of the packet (tunnels prepend up to 48 bytes, DR an Ethernet header).
const HEADROOM: usize = 128;
const TAP: [u8; 6] = [0x02, 0x75, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const DIRECTOR4: [u8; 4] = [198, 19, 0, 1];
const DIRECTOR6: &str = "fd00:1b5:2::1";

#[derive(Clone, Copy, Debug)]
enum Mode {
    Nat,
    FullNat,
    Dr,
    Tunnel(TunnelType),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::FullNat => "fullnat",
            Mode::Dr => "dr",
            Mode::Tunnel(TunnelType::Ipip) => "ipip",
            Mode::Tunnel(TunnelType::Gue) => "gue",
            Mode::Tunnel(TunnelType::Gre) => "gre",
        }
    }
}

/// Addresses of one address family.
struct Family {
    v6: bool,
}

impl Family {
    fn client(&self) -> IpAddr {
        if self.v6 {
            IpAddr::from(v6(CLIENT6))
        } else {
            IpAddr::from(CLIENT)
        }
    }
    fn vip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::from(v6(VIP6))
        } else {
            IpAddr::from(VIP)
        }
    }
    fn rs(&self) -> IpAddr {
        if self.v6 {
            IpAddr::from(v6(RS6_1))
        } else {
            IpAddr::from(RS1)
        }
    }
    fn laddr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::from(v6(LADDR6_1))
        } else {
            IpAddr::from(LADDR1)
        }
    }
    fn label(&self) -> &'static str {
        if self.v6 { "v6" } else { "v4" }
    }

    /// A TCP segment with checksums from scratch.
    fn tcp(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Vec<u8> {
        let payload: &[u8] = if flags & SYN != 0 { &[] } else { &PAYLOAD };
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                tcp(s.octets(), sport, d.octets(), dport, flags, payload)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                tcp6(&s.to_string(), sport, &d.to_string(), dport, flags, payload)
            }
            _ => unreachable!("one family"),
        }
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The frame by which the real server tells the engine its MAC: an ARP reply (IPv4) or a
/// neighbour advertisement with the target link-layer option (IPv6).
fn neighbour_answer(fam: &Family) -> Vec<u8> {
    if fam.v6 {
        let mut body = v6(RS6_1).to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&RS_MAC);
        let b = PacketBuilder::ipv6(v6(RS6_1), v6(DIRECTOR6), 255).icmpv6(Icmpv6Type::Unknown {
            type_u8: 136,
            code_u8: 0,
            bytes5to8: [0x60, 0, 0, 0],
        });
        let mut ip = Vec::new();
        b.write(&mut ip, &body).expect("build na");
        eth(TAP, RS_MAC, 0x86dd, &ip)
    } else {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
        a.extend_from_slice(&RS_MAC);
        a.extend_from_slice(&RS1);
        a.extend_from_slice(&TAP);
        a.extend_from_slice(&DIRECTOR4);
        eth(TAP, RS_MAC, 0x0806, &a)
    }
}

/// One TCP service on port 80 of the family's VIP with one real server in `mode`, and the
/// director settings the mode needs.
fn engine(mode: Mode, fam: &Family) -> Engine {
    let e = Engine::new(EngineOptions {
        max_connections: 1 << 20,
        shards: 64,
        hash_seed: 1,
    });
    let forward = match mode {
        Mode::Nat => ForwardMethod::Masq,
        Mode::FullNat => ForwardMethod::FullNat,
        Mode::Dr => ForwardMethod::Route,
        Mode::Tunnel(_) => ForwardMethod::Tunnel,
    };
    let port = if matches!(mode, Mode::Nat | Mode::FullNat) {
        8080
    } else {
        80
    };
    let mut d: DestConfig = dest_at(SocketAddr::new(fam.rs(), port), forward, 1);
    if let Mode::Tunnel(kind) = mode {
        d.tunnel = TunnelConfig {
            kind,
            port: if kind == TunnelType::Gue { 6080 } else { 0 },
            checksum: TunnelChecksum::None,
        };
    }
    let laddrs = if matches!(mode, Mode::FullNat) {
        vec![fam.laddr()]
    } else {
        vec![]
    };
    let svc: ServiceConfig = service_at(
        Protocol::Tcp,
        SocketAddr::new(fam.vip(), 80),
        vec![d],
        laddrs,
    );
    e.apply_config(&Config {
        services: vec![svc],
    })
    .expect("config");
    e.set_director(Director {
        tunnel_source_v4: Some(DIRECTOR4.into()),
        tunnel_source_v6: Some(v6(DIRECTOR6).into()),
        mac: matches!(mode, Mode::Dr).then_some(TAP),
        arp_source: Some(DIRECTOR4.into()),
        ..Director::default()
    });
    e
}

/// Copies `input` behind the headroom of `buf` and runs it through the engine: as a frame from
/// the TAP for direct routing, as an IP packet from the TUN otherwise.
fn process(e: &Engine, frame: bool, now: u64, buf: &mut [u8], input: &[u8]) -> Verdict {
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut pkt = PacketBuf::new(buf, HEADROOM, input.len());
    if frame {
        e.process_frame(Timestamp(now), &mut pkt)
    } else {
        e.process(Timestamp(now), &mut pkt)
    }
}

/// The packet the director receives from the client for `mode` (a frame for DR).
fn from_client(mode: Mode, fam: &Family, sport: u16, flags: u8) -> Vec<u8> {
    let p = fam.tcp(fam.client(), sport, fam.vip(), 80, flags);
    if matches!(mode, Mode::Dr) {
        eth(TAP, CLIENT_MAC, if fam.v6 { 0x86dd } else { 0x0800 }, &p)
    } else {
        p
    }
}

fn expected(mode: Mode) -> Verdict {
    if matches!(mode, Mode::Dr) {
        Verdict::ForwardFrame
    } else {
        Verdict::Forward
    }
}

const MODES: [Mode; 6] = [
    Mode::Nat,
    Mode::FullNat,
    Mode::Dr,
    Mode::Tunnel(TunnelType::Ipip),
    Mode::Tunnel(TunnelType::Gue),
    Mode::Tunnel(TunnelType::Gre),
];

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for mode in MODES {
        for fam in [Family { v6: false }, Family { v6: true }] {
            let e = engine(mode, &fam);
            let dr = matches!(mode, Mode::Dr);
            let want = expected(mode);
            let mut buf = vec![0u8; 2048];
            if dr {
                assert_eq!(
                    process(&e, true, 0, &mut buf, &neighbour_answer(&fam)),
                    Verdict::Pass
                );
            }
            let syn = from_client(mode, &fam, 40000, SYN);
            assert_eq!(process(&e, dr, 1, &mut buf, &syn), want, "{mode:?} syn");
            let data = from_client(mode, &fam, 40000, ACK | PSH);
            assert_eq!(process(&e, dr, 2, &mut buf, &data), want, "{mode:?} data");
            let id = format!("{}_{}", mode.name(), fam.label());
            assert_no_alloc(&id, || {
                assert!(process(&e, dr, 3, &mut buf, &data) == want);
            });
            g.bench_function(BenchmarkId::new("in", &id), |b| {
                b.iter(|| {
                    let v = process(&e, dr, 3, &mut buf, black_box(&data));
                    assert!(v == want);
                    black_box(v)
                })
            });
            // Replies pass the director only in the NAT modes.
            let reply = match mode {
                Mode::Nat => fam.tcp(fam.rs(), 8080, fam.client(), 40000, ACK | PSH),
                Mode::FullNat => fam.tcp(fam.rs(), 8080, fam.laddr(), 1024, ACK | PSH),
                _ => continue,
            };
            assert_eq!(
                process(&e, false, 3, &mut buf, &reply),
                want,
                "{mode:?} reply"
            );
            g.bench_function(BenchmarkId::new("out", &id), |b| {
                b.iter(|| {
                    let v = process(&e, false, 3, &mut buf, black_box(&reply));
                    assert!(v == want);
                    black_box(v)
                })
            });
        }
    }
    g.finish();
}

fn new_flow(c: &mut Criterion) {
    // Each SYN reuses the 5-tuple of the one 1024 before, which has timed out by then: the cost
    // is one lookup that finds an expired entry, its removal (and the FULLNAT port's release),
    // scheduling, insert and rewrite.
    let mut g = c.benchmark_group("new");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for mode in MODES {
        for fam in [Family { v6: false }, Family { v6: true }] {
            let e = engine(mode, &fam);
            let mut t = Timeouts::default();
            t.set_tcp(TcpState::SynRecv, 1);
            e.set_timeouts(t);
            let dr = matches!(mode, Mode::Dr);
            let want = expected(mode);
            let answer = neighbour_answer(&fam);
            let mut buf = vec![0u8; 2048];
            let syns: Vec<Vec<u8>> = (0..1024u16)
                .map(|p| from_client(mode, &fam, 10000 + p, SYN))
                .collect();
            if dr {
                assert_eq!(process(&e, true, 0, &mut buf, &answer), Verdict::Pass);
            }
            let mut now = 0u64;
            let id = format!("{}_{}", mode.name(), fam.label());
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| {
                    now += 2;
                    let i = (now / 2) as usize % syns.len();
                    if i == 0 {
                        // Drain the reap buckets of the replaced entries now and then, and keep
                        // the real server's MAC fresh for direct routing.
                        for _ in 0..e.expire_calls_per_pass() {
                            e.expire(Timestamp(now));
                        }
                        if dr {
                            process(&e, true, now, &mut buf, &answer);
                        }
                    }
                    let v = process(&e, dr, now, &mut buf, &syns[i]);
                    assert!(v == want, "{mode:?}: {v:?}");
                    black_box(v)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, established, new_flow);
criterion_main!(benches);
