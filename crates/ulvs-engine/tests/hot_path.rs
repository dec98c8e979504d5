//! Invariants of the packet path: an established flow's packets allocate nothing, and
//! concurrent processing and reaping keep the connection counts consistent.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use common::*;
use ulvs_engine::{L4Csum, Offload, PacketBuf, Protocol, SchedulerKind, Timestamp, Verdict};

/// Counts allocations made by the current thread.
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

#[test]
fn established_flow_does_not_allocate() {
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Wlc,
        vec![dest(RS1, 8080, 1)],
    )]);
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let ack = tcp(CLIENT, 40000, VIP, 80, ACK, b"data");
    let reply = tcp(RS1, 8080, CLIENT, 40000, ACK, b"back");
    let mut buf = vec![0u8; 256];
    let mut go = |now: u64, p: &[u8]| {
        buf[..p.len()].copy_from_slice(p);
        let mut pkt = PacketBuf::new(&mut buf, 0, p.len());
        e.process(Timestamp(now), &mut pkt)
    };
    assert_eq!(go(0, &syn), Verdict::Forward);
    assert_eq!(go(1, &ack), Verdict::Forward);
    let before = ALLOCS.with(Cell::get);
    for i in 0..1000 {
        assert_eq!(go(2 + i, &ack), Verdict::Forward);
        assert_eq!(go(2 + i, &reply), Verdict::Forward);
    }
    assert_eq!(
        ALLOCS.with(Cell::get) - before,
        0,
        "allocations on the established path"
    );
}

#[test]
fn established_gso_super_packets_do_not_allocate() {
    let e = engine_with(vec![service(
        Protocol::Tcp,
        VIP,
        80,
        SchedulerKind::Rr,
        vec![dest(RS1, 8080, 1)],
    )]);
    let gso = Offload {
        csum: L4Csum::Partial,
        gso_size: 1448,
    };
    let syn = tcp(CLIENT, 40000, VIP, 80, SYN, &[]);
    let data = tcp(CLIENT, 40000, VIP, 80, ACK, &[7u8; 1448 * 40]);
    let reply = tcp(RS1, 8080, CLIENT, 40000, ACK, &[9u8; 1448 * 40]);
    let mut buf = vec![0u8; 128 + 65535];
    let mut go = |now: u64, p: &[u8], off: Offload| {
        buf[128..128 + p.len()].copy_from_slice(p);
        let mut pkt = PacketBuf::with_offload(&mut buf, 128, p.len(), off);
        e.process(Timestamp(now), &mut pkt)
    };
    assert_eq!(go(0, &syn, Offload::PARTIAL), Verdict::Forward);
    assert_eq!(go(1, &data, gso), Verdict::Forward);
    let before = ALLOCS.with(Cell::get);
    for i in 0..500 {
        assert_eq!(go(2 + i, &data, gso), Verdict::Forward);
        assert_eq!(go(2 + i, &reply, gso), Verdict::Forward);
    }
    assert_eq!(
        ALLOCS.with(Cell::get) - before,
        0,
        "allocations on the established offload path"
    );
}

#[test]
fn concurrent_processing_and_reaping_keep_counts_consistent() {
    let e = Arc::new(ulvs_engine::Engine::new(ulvs_engine::EngineOptions {
        max_connections: 100_000,
        ..opts()
    }));
    e.apply_config(&ulvs_engine::Config {
        services: vec![service(
            Protocol::Tcp,
            VIP,
            80,
            SchedulerKind::Wlc,
            vec![dest(RS1, 8080, 1), dest(RS2, 8080, 2)],
        )],
    })
    .expect("config");
    let workers: Vec<_> = (0..4u16)
        .map(|w| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                for i in 0..500u16 {
                    let port = 10_000 + w * 1000 + i;
                    let now = u64::from(i) * 100;
                    run(&e, now, &tcp(CLIENT, port, VIP, 80, SYN, &[]));
                    if i % 2 == 0 {
                        run(&e, now, &tcp(CLIENT, port, VIP, 80, ACK, &[]));
                    }
                    if i % 3 == 0 {
                        run(&e, now, &tcp(CLIENT, port, VIP, 80, RST, &[]));
                    }
                    e.expire(Timestamp(now));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let s = e.stats();
    let counted: u64 = s.services[0]
        .dests
        .iter()
        .map(|d| u64::from(d.active_conns + d.inactive_conns))
        .sum();
    assert_eq!(counted, s.connections as u64);
    assert_eq!(s.services[0].counters.conns, 2000);
    // Everything times out eventually.
    let end = 10_000_000;
    for _ in 0..e.expire_calls_per_pass() {
        e.expire(Timestamp(end));
    }
    let s = e.stats();
    assert_eq!(s.connections, 0);
    for d in &s.services[0].dests {
        assert_eq!((d.active_conns, d.inactive_conns), (0, 0), "{}", d.addr);
    }
}
