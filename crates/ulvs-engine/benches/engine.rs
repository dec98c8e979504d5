//! Micro-benchmarks of the engine's per-packet cost: an established NAT flow (both
//! directions) and a new NAT connection (conntrack insert, scheduling, rewrite).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use ulvs_engine::{
    Config, DestConfig, Engine, EngineOptions, ForwardMethod, PacketBuf, Protocol, SchedulerKind,
    ServiceConfig, ServiceKey, TcpState, Timeouts, Timestamp, Verdict,
};

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 1, 1];
const RS: [[u8; 4]; 3] = [[198, 19, 0, 11], [198, 19, 0, 12], [198, 19, 0, 13]];

fn engine() -> Engine {
    let e = Engine::new(EngineOptions {
        max_connections: 1 << 20,
        shards: 64,
        hash_seed: 1,
    });
    let mut svc = ServiceConfig::new(ServiceKey {
        protocol: Protocol::Tcp,
        addr: (VIP, 80).into(),
    });
    svc.scheduler = SchedulerKind::Wlc;
    svc.dests = RS
        .iter()
        .map(|ip| DestConfig {
            addr: (*ip, 8080).into(),
            forward: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Default::default(),
        })
        .collect();
    e.apply_config(&Config {
        services: vec![svc],
    })
    .expect("config");
    e
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("build");
    out
}

fn process(e: &Engine, now: u64, buf: &mut [u8], input: &[u8]) -> Verdict {
    buf[..input.len()].copy_from_slice(input);
    let mut pkt = PacketBuf::new(buf, 0, input.len());
    e.process(Timestamp(now), &mut pkt)
}

fn established(c: &mut Criterion) {
    let e = engine();
    let mut buf = vec![0u8; 2048];
    let syn = tcp(CLIENT, 40000, VIP, 80, true, &[]);
    assert_eq!(process(&e, 0, &mut buf, &syn), Verdict::Forward);
    let ack = tcp(CLIENT, 40000, VIP, 80, false, &[0x61; 1400]);
    assert_eq!(process(&e, 1, &mut buf, &ack), Verdict::Forward);
    let rs = [buf[16], buf[17], buf[18], buf[19]];
    let reply = tcp(rs, 8080, CLIENT, 40000, false, &[0x62; 1400]);
    c.bench_function("nat_established_in_1400B", |b| {
        b.iter(|| black_box(process(&e, 2, &mut buf, black_box(&ack))))
    });
    c.bench_function("nat_established_out_1400B", |b| {
        b.iter(|| black_box(process(&e, 2, &mut buf, black_box(&reply))))
    });
}

fn new_flow(c: &mut Criterion) {
    // Each SYN reuses the 5-tuple of the one before, which has timed out by then: the cost is
    // one lookup that finds an expired entry, its removal, scheduling, insert and rewrite.
    let e = engine();
    let mut t = Timeouts::default();
    t.set_tcp(TcpState::SynRecv, 1);
    e.set_timeouts(t);
    let mut buf = vec![0u8; 2048];
    let syns: Vec<Vec<u8>> = (0..1024u16)
        .map(|p| tcp(CLIENT, 10000 + p, VIP, 80, true, &[]))
        .collect();
    let mut now = 0u64;
    c.bench_function("nat_new_connection", |b| {
        b.iter(|| {
            now += 2;
            let i = (now / 2) as usize % syns.len();
            if i == 0 {
                // Drain the reap buckets of the replaced entries now and then.
                for _ in 0..e.expire_calls_per_pass() {
                    e.expire(Timestamp(now));
                }
            }
            black_box(process(&e, now, &mut buf, &syns[i]))
        })
    });
}

criterion_group!(benches, established, new_flow);
criterion_main!(benches);
