//! Persistence templates (ipvsadm `-p` / `-M`) and the choice of a real server for a new
//! connection: template hit, or scheduler pick (creating a template on persistent services).
//!
//! As in IPVS (`ip_vs_sched_persist`), a template is keyed by protocol, the client address
//! masked to the service's prefix, and the virtual address and port (port 0 for a port-0
//! service, so every port of the VIP shares one choice). It names a real server and lives in a
//! sharded map next to the connection table. While connections it chose are alive (they hold a
//! reference, counted in the template) it does not expire; once the last one is gone, it expires
//! after the service's persistence timeout from its last use. The reaper re-arms templates that
//! still have connections, as the kernel's template timer does.
//!
//! A template whose real server left the service is invalid: the next connection is scheduled
//! afresh and replaces it. So is one pointing at a quiescent (weight 0) server when the
//! `expire_quiescent_template` setting is on ([`crate::ConntrackSettings`]); with it off, such a
//! template keeps sending its clients there, as does one pointing at an overloaded server (as in
//! the kernel).
//!
//! Templates count on their real server as `persistent_conns`; they do not count against the
//! connection-table limit.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::Timestamp;
use crate::config::Protocol;
use crate::sched::{self, Ctx, Flow};
use crate::snapshot::Service;
use crate::stats::DestState;

/// Identifies a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TemplateKey {
    /// The service's protocol.
    pub(crate) proto: Protocol,
    /// The client address masked to the persistence prefix.
    pub(crate) client: IpAddr,
    /// The service's virtual address and port (port 0 for a port-0 service).
    pub(crate) vaddr: SocketAddr,
}

/// The bit of [`Template::refs`] that marks a removed template.
const DEAD: u64 = 1 << 63;

/// A persistence template.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) key: TemplateKey,
    /// The real server it names.
    pub(crate) dest_addr: SocketAddr,
    /// That real server's counters (`persistent` counts templates).
    dest: Arc<DestState>,
    /// The service's persistence timeout.
    timeout_ms: u64,
    last_used: AtomicU64,
    /// Connections holding the template (low bits), and [`DEAD`].
    refs: AtomicU64,
}

impl Template {
    /// Takes a reference for a new connection; `false` if the template was removed meanwhile.
    fn attach(&self, now: Timestamp) -> bool {
        let ok = self
            .refs
            .fetch_update(Relaxed, Relaxed, |r| (r & DEAD == 0).then_some(r + 1))
            .is_ok();
        if ok {
            self.touch(now);
        }
        ok
    }

    fn touch(&self, now: Timestamp) {
        self.last_used.fetch_max(now.0, Relaxed);
    }

    /// Drops a connection's reference (the connection went away).
    pub(crate) fn release(&self) {
        let _ = self
            .refs
            .fetch_update(Relaxed, Relaxed, |r| (r & !DEAD > 0).then_some(r - 1));
    }

    /// Connections holding the template.
    pub(crate) fn connections(&self) -> u32 {
        (self.refs.load(Relaxed) & !DEAD) as u32
    }

    fn is_dead(&self) -> bool {
        self.refs.load(Relaxed) & DEAD != 0
    }

    /// When the template expires if nothing uses it (it does not while connections hold it).
    fn expires_at(&self) -> u64 {
        self.last_used.load(Relaxed).saturating_add(self.timeout_ms)
    }

    /// Whether a lookup at `now` must treat the template as gone.
    fn expired(&self, now: Timestamp) -> bool {
        let r = self.refs.load(Relaxed);
        r & DEAD != 0 || (r == 0 && now.0 >= self.expires_at())
    }

    /// Marks the template dead if no connection holds it; exactly one caller succeeds.
    fn kill(&self) -> bool {
        self.refs
            .compare_exchange(0, DEAD, Relaxed, Relaxed)
            .is_ok()
    }
}

/// A template as listed (connection listing with `template: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateEntry {
    /// The service's protocol.
    pub protocol: Protocol,
    /// The client address masked to the persistence prefix (what the template matches).
    pub client: IpAddr,
    /// The service's virtual address and port (port 0 for a port-0 service).
    pub virtual_addr: SocketAddr,
    /// The real server every connection of this client goes to.
    pub real_server: SocketAddr,
    /// Milliseconds until it expires if unused (the timeout, while connections hold it).
    pub expires_in_ms: u64,
    /// Live connections it chose.
    pub connections: u32,
}

/// The template table.
#[derive(Debug)]
pub(crate) struct Templates {
    map: DashMap<TemplateKey, Arc<Template>, foldhash::fast::FixedState>,
    hasher: foldhash::fast::FixedState,
    buckets: Box<[Mutex<Vec<Arc<Template>>>]>,
    cursor: AtomicUsize,
    count: AtomicUsize,
}

/// Each [`Templates::expire`] call scans this fraction (1/N) of the reap buckets.
const REAP_FRACTION: usize = 16;

impl Templates {
    /// An empty table with `shards` shards (a power of two, at least 2) hashing with `seed`.
    pub(crate) fn new(shards: usize, seed: u64) -> Self {
        let shards = shards.max(2).next_power_of_two();
        let hasher = foldhash::fast::FixedState::with_seed(seed ^ 0x7e3a_91c5_5d2b_0f41);
        Templates {
            map: DashMap::with_hasher_and_shard_amount(hasher.clone(), shards),
            hasher,
            buckets: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            cursor: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
        }
    }

    /// Live templates.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// The live template for `key` at `now`, without touching it.
    fn get(&self, key: &TemplateKey, now: Timestamp) -> Option<Arc<Template>> {
        let t = Arc::clone(self.map.get(key)?.value());
        (!t.expired(now)).then_some(t)
    }

    /// Removes `t` (if no connection holds it): out of the map, uncounted on its real server.
    fn remove(&self, t: &Arc<Template>) -> bool {
        if !t.kill() {
            return false;
        }
        self.map.remove_if(&t.key, |_, v| Arc::ptr_eq(v, t));
        sched_dec(&t.dest.persistent);
        self.count.fetch_sub(1, Relaxed);
        true
    }

    /// Enters a new template naming `dest` (with one reference taken) unless a live one exists
    /// for the key; returns the template in use.
    fn insert(
        &self,
        key: TemplateKey,
        dest_addr: SocketAddr,
        dest: &Arc<DestState>,
        timeout_ms: u64,
        now: Timestamp,
    ) -> Arc<Template> {
        let fresh = Arc::new(Template {
            key,
            dest_addr,
            dest: Arc::clone(dest),
            timeout_ms,
            last_used: AtomicU64::new(now.0),
            refs: AtomicU64::new(1),
        });
        match self.map.entry(key) {
            dashmap::Entry::Occupied(mut o) => {
                let cur = o.get();
                if !cur.expired(now) && cur.attach(now) {
                    // Another thread entered this client first: share its choice.
                    return Arc::clone(cur);
                }
                // The old one (invalid or expired) leaves the map; the reaper uncounts it
                // once no connection holds it.
                o.insert(Arc::clone(&fresh));
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Arc::clone(&fresh));
            }
        }
        dest.persistent.fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        let b = self.hasher.hash_one(key) as usize & (self.buckets.len() - 1);
        sched::lock(&self.buckets[b]).push(Arc::clone(&fresh));
        fresh
    }

    /// Scans the next 1/16 of the reap buckets: removes templates that expired at `now`,
    /// re-arms those that connections still hold. Returns how many were removed.
    pub(crate) fn expire(&self, now: Timestamp) -> usize {
        let n = self.buckets.len();
        let slice = (n / REAP_FRACTION).max(1);
        let start = self.cursor.fetch_add(slice, Relaxed);
        let mut removed = 0;
        for k in 0..slice {
            let mut bucket = sched::lock(&self.buckets[(start + k) % n]);
            bucket.retain(|t| {
                if t.is_dead() {
                    return false;
                }
                let replaced = self
                    .map
                    .get(&t.key)
                    .is_none_or(|cur| !Arc::ptr_eq(cur.value(), t));
                if t.connections() > 0 {
                    t.touch(now);
                    return true;
                }
                if (replaced || now.0 >= t.expires_at()) && self.remove(t) {
                    removed += 1;
                    return false;
                }
                true
            });
        }
        removed
    }

    /// Every live template at `now`.
    pub(crate) fn list(&self, now: Timestamp) -> Vec<TemplateEntry> {
        self.map
            .iter()
            .filter(|e| !e.value().expired(now))
            .map(|e| {
                let t = e.value();
                TemplateEntry {
                    protocol: t.key.proto,
                    client: t.key.client,
                    virtual_addr: t.key.vaddr,
                    real_server: t.dest_addr,
                    expires_in_ms: if t.connections() > 0 {
                        t.timeout_ms
                    } else {
                        t.expires_at().saturating_sub(now.0)
                    },
                    connections: t.connections(),
                }
            })
            .collect()
    }
}

fn sched_dec(a: &std::sync::atomic::AtomicU32) {
    let _ = a.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
}

/// `ip` with only its first `prefix_len` bits kept.
pub(crate) fn mask(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(prefix_len.min(32));
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let bits = u32::from(prefix_len.min(128));
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// How the real server of a new connection was chosen.
#[derive(Debug)]
pub(crate) enum Choice {
    /// A live persistence template named it.
    Template(usize, Arc<Template>),
    /// The scheduler picked it (with the new template, on a persistent service).
    Scheduled(usize, Option<Arc<Template>>),
}

impl Choice {
    /// The index of the chosen real server.
    pub(crate) fn index(&self) -> usize {
        match self {
            Choice::Template(i, _) | Choice::Scheduled(i, _) => *i,
        }
    }

    /// The template the connection holds a reference on, if any.
    pub(crate) fn into_template(self) -> Option<Arc<Template>> {
        match self {
            Choice::Template(_, t) => Some(t),
            Choice::Scheduled(_, t) => t,
        }
    }
}

/// Chooses the real server of a new connection of `flow` to `svc`: a persistence template hit,
/// else the scheduler. A live pick takes a reference on the template (the caller hands it to
/// the connection, or releases it); a dry run (`ctx` from [`Ctx::explain`]) changes nothing and
/// records its reasons. `None`: no real server is available.
pub(crate) fn choose(
    templates: &Templates,
    expire_quiescent: bool,
    svc: &Service,
    flow: &Flow,
    ctx: &mut Ctx<'_>,
) -> Option<Choice> {
    let now = ctx.now;
    let Some(p) = svc.persistence else {
        return svc
            .scheduler
            .schedule(&svc.dests, flow, ctx)
            .map(|i| Choice::Scheduled(i, None));
    };
    let key = TemplateKey {
        proto: svc.key.protocol,
        client: mask(flow.src, p.prefix_len),
        vaddr: svc.key.addr,
    };
    if let Some(t) = templates.get(&key, now) {
        let valid = svc
            .dest_index(t.dest_addr)
            .filter(|&i| !(expire_quiescent && svc.dests[i].weight == 0));
        match valid {
            Some(i) if ctx.dry_run() => {
                ctx.note(|| {
                    format!(
                        "persistence: template {}/{} -> {} ({} connections, expires in {} s if unused)",
                        key.client,
                        p.prefix_len,
                        t.dest_addr,
                        t.connections(),
                        t.expires_at().saturating_sub(now.0) / 1000
                    )
                });
                let d = &svc.dests[i];
                if d.weight == 0 || d.state.is_overloaded() {
                    ctx.note(|| {
                        format!(
                            "persistence: {} is {}, but a template keeps sending its clients there",
                            t.dest_addr,
                            sched::unavailable_reason(d)
                        )
                    });
                }
                return Some(Choice::Template(i, t));
            }
            Some(i) => {
                if t.attach(now) {
                    return Some(Choice::Template(i, t));
                }
            }
            None => {
                ctx.note(|| {
                    format!(
                        "persistence: template {}/{} names {}, no longer a real server or quiescent (expire_quiescent_template): rescheduling",
                        key.client, p.prefix_len, t.dest_addr
                    )
                });
                if !ctx.dry_run() {
                    // Invalid: out of the map, so the new choice replaces it.
                    templates.map.remove_if(&key, |_, v| Arc::ptr_eq(v, &t));
                }
            }
        }
    } else {
        ctx.note(|| {
            format!(
                "persistence: no template for {}/{} on {}: scheduling",
                key.client, p.prefix_len, svc.key
            )
        });
    }
    let i = svc.scheduler.schedule(&svc.dests, flow, ctx)?;
    if ctx.dry_run() {
        ctx.note(|| {
            format!(
                "persistence: a template {}/{} -> {} would be created (timeout {} s)",
                key.client, p.prefix_len, svc.dests[i].addr, p.timeout_secs
            )
        });
        return Some(Choice::Scheduled(i, None));
    }
    let d = &svc.dests[i];
    let t = templates.insert(key, d.addr, &d.state, u64::from(p.timeout_secs) * 1000, now);
    // Another thread may have entered the same client first with another choice it shares.
    let i = svc.dest_index(t.dest_addr).unwrap_or(i);
    Some(Choice::Scheduled(i, Some(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let a: IpAddr = "198.18.7.9".parse().unwrap();
        assert_eq!(mask(a, 24), "198.18.7.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask(a, 32), a);
        assert_eq!(mask(a, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        let b: IpAddr = "fd00:1b5::1:2".parse().unwrap();
        assert_eq!(mask(b, 64), "fd00:1b5::".parse::<IpAddr>().unwrap());
    }
}
