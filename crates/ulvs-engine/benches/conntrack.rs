//! Connection-table benchmarks: established-flow lookup (one packet through the engine: lookup,
//! state, counters, rewrite) and new-connection insert with 1 and 2 threads at 10k and 1M
//! entries, and the reaper's cost per tick (one `expire` call) on a 1M-entry table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use ulvs_engine::{
    Config, DestConfig, Engine, EngineOptions, ForwardMethod, PacketBuf, Protocol, SchedulerKind,
    ServiceConfig, ServiceKey, Timestamp, Verdict,
};

/// Prefilled entries are stamped far in the future so that a reap at `REAP_AT` removes only
/// what the insert benchmark added (stamped 0).
const PREFILL_AT: u64 = 1 << 40;
const REAP_AT: u64 = 400_000;

fn engine(n: usize) -> Engine {
    let e = Engine::new(EngineOptions {
        max_connections: 4 << 20,
        shards: 256,
        hash_seed: 5,
    });
    let mut svc = ServiceConfig::new(ServiceKey {
        protocol: Protocol::Udp,
        addr: ([198, 18, 1, 1], 53).into(),
    });
    svc.scheduler = SchedulerKind::Rr;
    svc.dests = vec![DestConfig {
        addr: ([198, 19, 0, 11], 53).into(),
        forward: ForwardMethod::Masq,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: Default::default(),
    }];
    e.apply_config(&Config {
        services: vec![svc],
    })
    .unwrap();
    let t = template();
    let mut buf = [0u8; 64];
    for i in 0..n {
        assert_eq!(
            send(&e, PREFILL_AT, &t, &mut buf, i as u64),
            Verdict::Forward
        );
    }
    e
}

fn template() -> Vec<u8> {
    let mut t = Vec::new();
    PacketBuilder::ipv4([198, 18, 0, 0], [198, 18, 1, 1], 64)
        .udp(1024, 53)
        .write(&mut t, b"q")
        .unwrap();
    t
}

/// Sends the datagram of flow `i` (client 198.<18 + i / 2^24>.x.y:port; checksums are not
/// verified by the engine).
fn send(e: &Engine, now: u64, t: &[u8], buf: &mut [u8; 64], i: u64) -> Verdict {
    buf[..t.len()].copy_from_slice(t);
    let host = (i / 60_000) as u32;
    let port = 1024 + (i % 60_000) as u16;
    buf[12] = 198;
    buf[13] = 18 + (host >> 16) as u8;
    buf[14] = (host >> 8) as u8;
    buf[15] = host as u8;
    buf[20..22].copy_from_slice(&port.to_be_bytes());
    let mut pkt = PacketBuf::new(&mut buf[..], 0, t.len());
    e.process(Timestamp(now), &mut pkt)
}

/// Operations per measured batch at least, so thread start-up is amortised.
const MIN_BATCH: u64 = 20_000;

/// Runs `n` operations split over `threads` threads (the caller's own thread when one); returns
/// the wall time.
fn parallel(threads: u64, n: u64, op: impl Fn(u64, u64) + Sync) -> Duration {
    let start = Instant::now();
    if threads == 1 {
        op(0, n);
    } else {
        std::thread::scope(|s| {
            for t in 0..threads {
                let op = &op;
                s.spawn(move || op(t, n / threads));
            }
        });
    }
    start.elapsed()
}

/// The time `iters` operations take, measured over a batch of at least [`MIN_BATCH`].
fn scaled(iters: u64, measure: impl FnOnce(u64) -> Duration) -> Duration {
    let n = iters.max(MIN_BATCH);
    measure(n).mul_f64(iters as f64 / n as f64)
}

fn lookup_and_insert(c: &mut Criterion) {
    let t = template();
    let mut g = c.benchmark_group("conntrack");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    for n in [10_000usize, 1_000_000] {
        let e = engine(n);
        for threads in [1u64, 2] {
            g.bench_with_input(
                BenchmarkId::new(format!("lookup_{threads}t"), n),
                &n,
                |b, &n| {
                    b.iter_custom(|iters| {
                        scaled(iters, |total| {
                            parallel(threads, total, |t0, k| {
                                let mut buf = [0u8; 64];
                                // Spread over the table, each thread its own sequence.
                                let mut i = t0 * 7919;
                                for _ in 0..k {
                                    i = (i + 104_729) % n as u64;
                                    black_box(send(&e, PREFILL_AT, &t, &mut buf, i));
                                }
                            })
                        })
                    })
                },
            );
            let mut next = n as u64;
            g.bench_with_input(
                BenchmarkId::new(format!("insert_{threads}t"), n),
                &n,
                |b, _| {
                    b.iter_custom(|iters| {
                        let d = scaled(iters, |total| {
                            let base = next;
                            next += total;
                            parallel(threads, total, |t0, k| {
                                let mut buf = [0u8; 64];
                                for j in 0..k {
                                    let i = base + t0 * k + j;
                                    black_box(send(&e, 0, &t, &mut buf, i));
                                }
                            })
                        });
                        // Take the new entries out again (off the clock), so the table stays
                        // at its size.
                        for _ in 0..e.expire_calls_per_pass() {
                            e.expire(Timestamp(REAP_AT));
                        }
                        d
                    })
                },
            );
        }
    }
    g.finish();
}

fn reap_tick(c: &mut Criterion) {
    let e = engine(1_000_000);
    let mut g = c.benchmark_group("conntrack");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    // Nothing is due: the steady-state cost of one tick (a scan of 1/16 of the table).
    g.bench_function("reap_tick_1M", |b| {
        b.iter(|| black_box(e.expire(Timestamp(REAP_AT))))
    });
    g.finish();
}

criterion_group!(benches, lookup_and_insert, reap_tick);
criterion_main!(benches);
