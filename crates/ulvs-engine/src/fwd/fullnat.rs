//! FULLNAT: the client's source is replaced by a local address and port of the service's pool,
//! the destination by the real server; replies, addressed to the local address, are rewritten
//! back to VIP -> client.
//!
//! Ports come from a [`PortPool`] per (protocol, local address, real server): a bitmap of the
//! 65536 ports (those below [`FIRST_PORT`] never handed out) with atomic test-and-set, so a port
//! is never given to two live connections. A [`PortLease`] lives inside the connection entry and
//! frees its port when the entry is dropped. When every pool of a service is full, the new
//! connection is a counted drop ([`crate::DropReason::LocalPortExhausted`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::conntrack::{Conn, Tuple};
use crate::path::Ip;
use crate::snapshot::{Dest, Service};
use crate::{PacketBuf, Verdict};

/// The lowest local port handed out (ports below are left to the host's own services).
pub(crate) const FIRST_PORT: u16 = 1024;
const WORDS: usize = 65536 / 64;

/// The ports of one (protocol, local address, real server) triple.
pub(crate) struct PortPool {
    bits: Box<[AtomicU64]>,
    /// Where the next search starts, as an offset from [`FIRST_PORT`].
    cursor: AtomicU32,
}

impl std::fmt::Debug for PortPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortPool")
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl Default for PortPool {
    fn default() -> Self {
        PortPool::new()
    }
}

impl PortPool {
    /// A pool with every port from [`FIRST_PORT`] free.
    pub(crate) fn new() -> Self {
        let bits: Box<[AtomicU64]> = (0..WORDS)
            .map(|w| {
                let first = w * 64;
                let v = if first + 64 <= usize::from(FIRST_PORT) {
                    u64::MAX
                } else if first >= usize::from(FIRST_PORT) {
                    0
                } else {
                    (1u64 << (usize::from(FIRST_PORT) - first)) - 1
                };
                AtomicU64::new(v)
            })
            .collect();
        PortPool {
            bits,
            cursor: AtomicU32::new(0),
        }
    }

    /// A pool whose searches start at a point chosen by `seed` and `key` (the pool's
    /// protocol, local address and real server), so a restarted daemon (another seed) does not
    /// hand out the ports its previous instance did first; seed 0 starts at [`FIRST_PORT`].
    pub(crate) fn starting_at(seed: u64, key: &impl std::hash::Hash) -> Self {
        let pool = PortPool::new();
        if seed != 0 {
            use std::hash::{DefaultHasher, Hasher};
            let mut h = DefaultHasher::new();
            h.write_u64(seed);
            key.hash(&mut h);
            let span = 65536 - u64::from(FIRST_PORT);
            pool.cursor.store((h.finish() % span) as u32, Relaxed);
        }
        pool
    }

    /// Ports handed out and not freed yet.
    pub(crate) fn in_use(&self) -> usize {
        let all: u32 = self.bits.iter().map(|w| w.load(Relaxed).count_ones()).sum();
        all as usize - usize::from(FIRST_PORT)
    }

    /// Takes a free port, searching from a rotating start; `None` when every port is in use.
    pub(crate) fn alloc(self: &Arc<Self>) -> Option<PortLease> {
        let span = 65536 - u32::from(FIRST_PORT);
        let start = u32::from(FIRST_PORT) + self.cursor.fetch_add(1, Relaxed) % span;
        let first_word = (start / 64) as usize;
        // The first word is searched from `start`'s bit, and again whole at the end (wrap).
        for k in 0..=WORDS {
            let w = (first_word + k) % WORDS;
            let skip = if k == 0 { !0u64 << (start % 64) } else { !0u64 };
            let word = &self.bits[w];
            let mut cur = word.load(Relaxed);
            loop {
                let free = !cur & skip;
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                match word.compare_exchange_weak(cur, cur | (1 << bit), Relaxed, Relaxed) {
                    Ok(_) => {
                        return Some(PortLease {
                            pool: Some(Arc::clone(self)),
                            port: (w * 64) as u16 + bit as u16,
                        });
                    }
                    Err(v) => cur = v,
                }
            }
        }
        None
    }

    /// Gives `port` back.
    pub(crate) fn free(&self, port: u16) {
        let (w, b) = (usize::from(port) / 64, u32::from(port) % 64);
        self.bits[w].fetch_and(!(1u64 << b), Relaxed);
    }
}

/// A port taken from a [`PortPool`]; freed on drop.
#[derive(Debug)]
pub(crate) struct PortLease {
    /// `None` once handed over with [`PortLease::into_pool`].
    pool: Option<Arc<PortPool>>,
    port: u16,
}

impl PortLease {
    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Hands the port's ownership to the caller, which must [`PortPool::free`] it (a connection
    /// entry does so when dropped, by its reply tuple's destination port).
    pub(crate) fn into_pool(mut self) -> Option<Arc<PortPool>> {
        self.pool.take()
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.free(self.port);
        }
    }
}

/// Picks a local address (round robin over the service's, skipping full pools) and a free port
/// towards `dest` for a new connection `orig`; returns the reply tuple and the lease, or `None`
/// when every pool is full.
pub(crate) fn new_reply(
    svc: &Service,
    dest: &Dest,
    orig: &Tuple,
    rs_port: u16,
) -> Option<(Tuple, PortLease)> {
    let n = dest.pools.len();
    if n == 0 {
        return None;
    }
    let first = svc.next_local();
    for k in 0..n {
        let i = (first + k) % n;
        let Some(lease) = dest.pools[i].alloc() else {
            continue;
        };
        let laddr: IpAddr = svc.local_addresses[i];
        let reply = Tuple {
            proto: orig.proto,
            src: dest.addr.ip(),
            sport: rs_port,
            dst: laddr,
            dport: lease.port(),
        };
        return Some((reply, lease));
    }
    None
}

/// Client -> real server: source becomes the local address and port, destination the real
/// server.
pub(crate) fn to_dest(conn: &Conn, pkt: &mut PacketBuf<'_>, ip: &Ip) -> Verdict {
    let csum = pkt.offload().csum;
    let r = &conn.reply;
    super::rewrite(
        pkt.data_mut(),
        ip,
        r.proto,
        csum,
        (r.dst, r.dport),
        (r.src, r.sport),
    );
    super::forward(pkt, ip.total)
}

/// Real server -> local address: source becomes the virtual service, destination the client.
pub(crate) fn to_client(conn: &Conn, pkt: &mut PacketBuf<'_>, ip: &Ip) -> Verdict {
    let csum = pkt.offload().csum;
    let o = &conn.orig;
    super::rewrite(
        pkt.data_mut(),
        ip,
        o.proto,
        csum,
        (o.dst, o.dport),
        (o.src, o.sport),
    );
    super::forward(pkt, ip.total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_until_freed_and_exhaustion_is_none() {
        let pool = Arc::new(PortPool::new());
        let mut leases = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(l) = pool.alloc() {
            assert!(l.port() >= FIRST_PORT);
            assert!(seen.insert(l.port()), "port {} handed out twice", l.port());
            leases.push(l);
        }
        assert_eq!(leases.len(), 65536 - usize::from(FIRST_PORT));
        assert_eq!(pool.in_use(), leases.len());
        let freed = leases.swap_remove(1000).port();
        assert_eq!(pool.alloc().map(|l| l.port()), Some(freed));
        drop(leases);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn seeded_pools_start_apart_and_seed_zero_at_the_first_port() {
        let first = |seed: u64, key: &str| Arc::new(PortPool::starting_at(seed, &key)).alloc();
        assert_eq!(first(0, "a").map(|l| l.port()), Some(FIRST_PORT));
        let starts: std::collections::HashSet<u16> = (1..=8u64)
            .map(|seed| first(seed, "a").unwrap().port())
            .collect();
        assert!(starts.len() >= 7, "eight seeds, starts {starts:?}");
        assert!(starts.iter().all(|&p| p >= FIRST_PORT));
        assert_ne!(
            first(5, "a").map(|l| l.port()),
            first(5, "b").map(|l| l.port())
        );
    }

    #[test]
    fn first_ports_are_sequential() {
        let pool = Arc::new(PortPool::new());
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!((a.port(), b.port()), (1024, 1025));
    }
}
