//! Locality-based least connections with replication (`lblcr`): a destination address keeps a
//! set of real servers, growing it when they are busy and shrinking it when it goes unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dashmap::DashMap;

use super::lblc::{Check, ENTRY_TIMEOUT_MS, EXPIRATION_MS, ExpiryClock, MAX_ENTRIES, is_busy};
use super::wlc::{least_weighted, least_weighted_among};
use super::{Carry, Ctx, Flow, Scheduler, name};
use crate::Timestamp;
use crate::snapshot::Dest;

/// One lblcr entry: the server set of a destination address.
#[derive(Debug, Clone)]
pub(crate) struct SetEntry {
    /// Most recently added first (the kernel adds at the list head).
    set: Vec<SocketAddr>,
    /// When the set last changed.
    last_mod: u64,
    /// When the entry was last used.
    last_use: u64,
}

/// The lblcr table. Shared by the snapshots of one service.
#[derive(Debug, Default)]
pub(crate) struct LocalitySetTable {
    map: DashMap<IpAddr, SetEntry, foldhash::fast::FixedState>,
    clock: ExpiryClock,
}

impl LocalitySetTable {
    fn expire(&self, now: Timestamp) {
        let max_idle = match self.clock.due(now) {
            Check::None => return,
            Check::Full => EXPIRATION_MS,
            Check::Partial if self.map.len() > MAX_ENTRIES => ENTRY_TIMEOUT_MS,
            Check::Partial => return,
        };
        self.map
            .retain(|_, e| now.0 < e.last_use.saturating_add(max_idle));
    }
}

/// lblcr, as `ip_vs_lblcr.c`. With an entry: the least loaded (wlc) available member of the set
/// is the candidate; if the set has more than one member and has not changed for a day, its most
/// loaded member is dropped; a candidate that is missing or busy ([`is_busy`]) is replaced by a
/// wlc pick over all servers, which joins the set. Without an entry, wlc picks and a new entry
/// holds it.
#[derive(Debug)]
pub(crate) struct Lblcr {
    table: Arc<LocalitySetTable>,
}

impl Lblcr {
    pub(crate) fn new(table: Arc<LocalitySetTable>) -> Self {
        Lblcr { table }
    }
}

/// Indices of the set's members that are still real servers, in set order (no allocation).
fn members<'a>(dests: &'a [Dest], set: &'a [SocketAddr]) -> impl Iterator<Item = usize> + 'a {
    set.iter()
        .filter_map(|a| dests.iter().position(|d| d.addr == *a))
}

/// The set's most loaded member with weight > 0 (`moh * dw < doh * mw`), first of equals.
fn most_loaded(dests: &[Dest], among: impl Iterator<Item = usize>) -> Option<usize> {
    let mut most: Option<(usize, u128)> = None;
    for i in among {
        let d = &dests[i];
        if d.weight == 0 {
            continue;
        }
        let doh = u128::from(d.state.overhead());
        match most {
            None => most = Some((i, doh)),
            Some((m, moh)) => {
                if moh * u128::from(d.weight) < doh * u128::from(dests[m].weight) {
                    most = Some((i, doh));
                }
            }
        }
    }
    most.map(|(i, _)| i)
}

impl Scheduler for Lblcr {
    fn schedule(&self, dests: &[Dest], flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let now = ctx.now.0;
        let dry = ctx.dry_run();
        let cached = match self.table.map.get_mut(&flow.dst) {
            Some(mut e) if !dry => {
                e.last_use = now;
                let cand =
                    least_weighted_among(dests, members(dests, &e.set), |d| d.state.overhead());
                if e.set.len() > 1
                    && now > e.last_mod.saturating_add(EXPIRATION_MS)
                    && let Some(m) = most_loaded(dests, members(dests, &e.set))
                {
                    let addr = dests[m].addr;
                    e.set.retain(|a| *a != addr);
                    e.last_mod = now;
                }
                Some(cand)
            }
            Some(e) => {
                ctx.note(|| {
                    let set: Vec<String> = e.set.iter().map(|a| a.to_string()).collect();
                    format!(
                        "lblcr: destination {} has the server set [{}]",
                        flow.dst,
                        set.join(", ")
                    )
                });
                Some(least_weighted_among(dests, members(dests, &e.set), |d| {
                    d.state.overhead()
                }))
            }
            None => None,
        };
        if let Some(cand) = cached {
            if let Some(i) = cand.filter(|&i| !is_busy(&dests[i], dests)) {
                ctx.note(|| {
                    format!(
                        "lblcr: {} is the least loaded member of the set",
                        name(&dests[i])
                    )
                });
                return Some(i);
            }
            ctx.note(|| "lblcr: no member of the set is available and not busy".to_owned());
        }
        let Some(i) = least_weighted(dests, |d| d.state.overhead()) else {
            ctx.note(|| "lblcr: every real server has weight 0 or is overloaded".to_owned());
            return None;
        };
        ctx.note(|| {
            format!(
                "lblcr: wlc picks {}, which joins the server set of {}",
                name(&dests[i]),
                flow.dst
            )
        });
        if !dry {
            let addr = dests[i].addr;
            let mut e = self.table.map.entry(flow.dst).or_insert_with(|| SetEntry {
                set: Vec::new(),
                last_mod: now,
                last_use: now,
            });
            if !e.set.contains(&addr) {
                e.set.insert(0, addr);
                e.last_mod = now;
            }
        }
        Some(i)
    }

    fn carry(&self) -> Carry {
        Carry::Lblcr(Arc::clone(&self.table))
    }

    fn expire(&self, now: Timestamp) {
        self.table.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn set_grows_when_busy_and_shrinks_after_a_day() {
        let table = Arc::new(LocalitySetTable::default());
        let s = Lblcr::new(table.clone());
        let f = flow([1, 1, 1, 1], 1);
        let d = dests(&[(1, 0, 0), (1, 0, 0)]);
        assert_eq!(pick(&s, &d, &f), Some(0));
        // Busy: active 2 > weight 1 while the other has 0 < 1/2: the second joins the set.
        let d = dests(&[(1, 2, 0), (1, 0, 0)]);
        assert_eq!(pick(&s, &d, &f), Some(1));
        let set = table.map.get(&f.dst).unwrap().set.clone();
        assert_eq!(set, vec![d[1].addr, d[0].addr]);
        // Both members available: the least loaded of the set.
        let d = dests(&[(1, 0, 5), (1, 0, 1)]);
        assert_eq!(pick(&s, &d, &f), Some(1));
        // A day later (set unchanged), the most loaded member is dropped.
        let rng = crate::sched::Rng::new(1);
        let later = Timestamp(EXPIRATION_MS + 1);
        s.schedule(&d, &f, &mut Ctx::live(later, &rng));
        assert_eq!(table.map.get(&f.dst).unwrap().set, vec![d[1].addr]);
    }
}
