//! Memory per connection: a counting global allocator measures the net heap growth of an
//! engine while one million connections are entered through the packet path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use etherparse::PacketBuilder;
use ulvs_engine::{
    Config, DestConfig, Engine, EngineOptions, ForwardMethod, PacketBuf, Protocol, SchedulerKind,
    ServiceConfig, ServiceKey, Timestamp, Verdict,
};

/// Net bytes allocated (allocations minus frees), all threads.
static NET: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        NET.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NET.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        NET.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 1_000_000;

#[test]
fn one_million_connections_fit_in_200_bytes_each() {
    let e = Engine::new(EngineOptions {
        max_connections: N,
        shards: 256,
        hash_seed: 9,
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
    let mut template = Vec::new();
    PacketBuilder::ipv4([198, 18, 0, 0], [198, 18, 1, 1], 64)
        .udp(1024, 53)
        .write(&mut template, b"q")
        .unwrap();
    let mut buf = vec![0u8; 64];
    let before = NET.load(Relaxed);
    for i in 0..N {
        buf[..template.len()].copy_from_slice(&template);
        // Client 198.18.<i / 60000>.x : port, distinct per i (checksums are not verified).
        let (host, port) = (i / 60_000, 1024 + (i % 60_000) as u16);
        buf[14] = (host >> 8) as u8;
        buf[15] = host as u8;
        buf[20..22].copy_from_slice(&port.to_be_bytes());
        let mut pkt = PacketBuf::new(&mut buf, 0, template.len());
        assert_eq!(e.process(Timestamp(0), &mut pkt), Verdict::Forward);
    }
    let grown = NET.load(Relaxed) - before;
    assert_eq!(e.stats().connections, N);
    let per_conn = grown as f64 / N as f64;
    println!("memory per connection at {N} entries: {per_conn:.1} bytes ({grown} bytes)");
    assert!(per_conn <= 200.0, "{per_conn:.1} bytes per connection");
}
