//! The immutable configuration snapshot the packet path reads, and how a [`Config`] becomes one.
//!
//! A snapshot is built off the packet path by [`Snapshot::build`] and swapped in whole. Counter
//! blocks are carried over from the previous snapshot for every service (same key) and real
//! server (same address within the same service) that survives the change.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::config::{
    Config, ConfigError, ForwardMethod, Persistence, Protocol, SchedulerKind, ServiceKey,
};
use crate::fwd::fullnat::PortPool;
use crate::sched::{self, Carry, Scheduler};
use crate::stats::{DestState, Traffic};
use crate::tunnel::Fwd;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
type FastSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// A real server as the packet path sees it.
#[derive(Debug)]
pub(crate) struct Dest {
    /// Address and port.
    pub(crate) addr: SocketAddr,
    /// Weight (0 = quiescent).
    pub(crate) weight: u32,
    /// The last non-zero weight (IPVS `last_weight`): a quiescent real server keeps its Maglev
    /// positions. 0 for a server that never had a weight.
    pub(crate) last_weight: u32,
    /// Counters and connection counts, shared with connection entries and later snapshots.
    pub(crate) state: Arc<DestState>,
    /// Forwarding method.
    pub(crate) forward: ForwardMethod,
    /// FULLNAT: one port pool per local address of the service (same order); empty otherwise.
    pub(crate) pools: Vec<Arc<PortPool>>,
}

/// A virtual service as the packet path sees it.
pub(crate) struct Service {
    /// Protocol and virtual address.
    pub(crate) key: ServiceKey,
    /// Service counters, shared with connection entries and later snapshots.
    pub(crate) traffic: Arc<Traffic>,
    /// Real servers in configuration order.
    pub(crate) dests: Vec<Dest>,
    /// Which scheduler `scheduler` is.
    pub(crate) kind: SchedulerKind,
    /// This snapshot's scheduler instance.
    pub(crate) scheduler: Box<dyn Scheduler>,
    /// Persistence (`-p`, `-M`), if the service is persistent.
    pub(crate) persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`, UDP): every packet is scheduled on its own.
    pub(crate) one_packet: bool,
    /// FULLNAT local addresses.
    pub(crate) local_addresses: Vec<IpAddr>,
    /// Round-robin position over `local_addresses`.
    local_next: AtomicUsize,
}

impl Service {
    /// The index of the local address a new FULLNAT connection tries first.
    pub(crate) fn next_local(&self) -> usize {
        self.local_next.fetch_add(1, Relaxed)
    }

    /// The index of the real server at `addr`.
    pub(crate) fn dest_index(&self, addr: SocketAddr) -> Option<usize> {
        self.dests.iter().position(|d| d.addr == addr)
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("key", &self.key)
            .field("dests", &self.dests)
            .field("scheduler", &self.scheduler)
            .field("persistence", &self.persistence)
            .field("one_packet", &self.one_packet)
            .finish_non_exhaustive()
    }
}

/// The whole configuration, ready for lock-free lookups.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Services in configuration order.
    pub(crate) services: Vec<Service>,
    /// (protocol, virtual address) -> index into `services`.
    index: FastMap<(Protocol, SocketAddr), usize>,
    /// Every virtual IP address.
    vips: FastSet<IpAddr>,
    /// Addresses of direct-routing real servers (whose link-layer addresses the engine
    /// resolves).
    pub(crate) route_dests: FastSet<IpAddr>,
    /// Every FULLNAT local address.
    locals: FastSet<IpAddr>,
    /// FULLNAT port pools by (protocol, local address, real server), carried over to later
    /// snapshots so live connections' ports stay taken.
    pools: FastMap<(Protocol, IpAddr, SocketAddr), Arc<PortPool>>,
}

impl Snapshot {
    /// Validates `cfg` and builds a snapshot, carrying counters over from `old`.
    pub(crate) fn build(
        cfg: &Config,
        old: &Snapshot,
        port_seed: u64,
    ) -> Result<Snapshot, ConfigError> {
        cfg.validate()?;
        let mut snap = Snapshot::default();
        let old_pools = &old.pools;
        for svc in &cfg.services {
            let prev = old
                .index
                .get(&(svc.key.protocol, svc.key.addr))
                .and_then(|&i| old.services.get(i));
            let dests: Vec<Dest> = svc
                .dests
                .iter()
                .map(|d| {
                    let old = prev.and_then(|p| p.dests.iter().find(|o| o.addr == d.addr));
                    let state = old
                        .map(|o| Arc::clone(&o.state))
                        .unwrap_or_else(|| Arc::new(DestState::new()));
                    if prev.is_none_or(|p| p.dests.iter().all(|o| o.addr != d.addr)) {
                        // A new real server: packets may reach it before apply_dest_settings.
                        state.fwd.store(Fwd::of(d).pack(), Relaxed);
                    }
                    if d.forward == ForwardMethod::Route {
                        snap.route_dests.insert(d.addr.ip());
                    }
                    let last_weight = match d.weight {
                        0 => old.map_or(0, |o| o.last_weight),
                        w => w,
                    };
                    let pools = if d.forward == ForwardMethod::FullNat {
                        svc.local_addresses
                            .iter()
                            .map(|&l| {
                                let k = (svc.key.protocol, l, d.addr);
                                let pool = snap.pools.get(&k).or_else(|| old_pools.get(&k));
                                let pool = pool.map(Arc::clone).unwrap_or_else(|| {
                                    Arc::new(PortPool::starting_at(port_seed, &k))
                                });
                                snap.pools.insert(k, Arc::clone(&pool));
                                pool
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    Dest {
                        addr: d.addr,
                        weight: d.weight,
                        last_weight,
                        state,
                        forward: d.forward,
                        pools,
                    }
                })
                .collect();
            let carry = prev
                .filter(|p| p.kind == svc.scheduler)
                .map_or(Carry::None, |p| p.scheduler.carry());
            let scheduler = sched::build(svc.scheduler, svc.flags, &dests, carry);
            let traffic = prev.map(|p| Arc::clone(&p.traffic)).unwrap_or_default();
            snap.index
                .insert((svc.key.protocol, svc.key.addr), snap.services.len());
            snap.vips.insert(svc.key.addr.ip());
            snap.locals.extend(svc.local_addresses.iter().copied());
            snap.services.push(Service {
                key: svc.key,
                traffic,
                dests,
                kind: svc.scheduler,
                scheduler,
                persistence: svc.persistence,
                one_packet: svc.one_packet,
                local_addresses: svc.local_addresses.clone(),
                local_next: AtomicUsize::new(0),
            });
        }
        Ok(snap)
    }

    /// Applies the thresholds and forwarding settings of `cfg` to the real servers' shared state. Called only after the
    /// snapshot was swapped in, so a refused configuration changes nothing.
    pub(crate) fn apply_thresholds(&self, cfg: &Config) {
        for (svc, c) in self.services.iter().zip(&cfg.services) {
            for (d, dc) in svc.dests.iter().zip(&c.dests) {
                d.state
                    .set_thresholds(dc.upper_threshold, dc.lower_threshold);
                d.state.fwd.store(Fwd::of(dc).pack(), Relaxed);
            }
        }
    }

    /// Whether `ip` is a virtual address of some service.
    pub(crate) fn is_vip(&self, ip: IpAddr) -> bool {
        !self.vips.is_empty() && self.vips.contains(&ip)
    }

    /// Whether `ip` is a virtual address or a FULLNAT local address: a packet to it that the
    /// engine cannot handle must be dropped, not passed back to the kernel (which would route it
    /// into the TUN again).
    pub(crate) fn is_ours(&self, ip: IpAddr) -> bool {
        self.is_vip(ip) || (!self.locals.is_empty() && self.locals.contains(&ip))
    }

    /// The service for a packet to `addr` over `protocol`: an exact match, else a port-0
    /// service on that address.
    pub(crate) fn get(&self, protocol: Protocol, addr: SocketAddr) -> Option<&Service> {
        let i = self
            .index
            .get(&(protocol, addr))
            .or_else(|| self.index.get(&(protocol, SocketAddr::new(addr.ip(), 0))))?;
        self.services.get(*i)
    }
}
