//! Property tests of the schedulers: wrr and Maglev shares follow the weights, Maglev moves few
//! keys when a server goes, sh and dh are stable, the least-cost schedulers pick a minimum.

use proptest::prelude::*;

use super::mh::{Maglev, TABLE_SIZE};
use super::testing::{dests, flow, pick};
use super::{Ctx, Rng, available, build};
use crate::Timestamp;
use crate::config::{SchedFlags, SchedulerKind};
use crate::snapshot::Dest;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A client address from a number.
fn client(i: u32) -> [u8; 4] {
    let b = i.wrapping_mul(2_654_435_761).to_be_bytes();
    [b[0] | 1, b[1], b[2], b[3]]
}

/// Real servers: weight 0..=5, active 0..20, inactive 0..20, overloaded sometimes.
fn loaded_dests() -> impl Strategy<Value = Vec<Dest>> {
    prop::collection::vec(
        (0u32..=5, 0u32..20, 0u32..20, prop::bool::weighted(0.15)),
        1..12,
    )
    .prop_map(|v| {
        let spec: Vec<_> = v.iter().map(|&(w, a, i, _)| (w, a, i)).collect();
        let d = dests(&spec);
        for (x, &(_, _, _, over)) in d.iter().zip(&v) {
            if over {
                x.state.set_thresholds(1, 0);
            }
        }
        d
    })
}

/// Whether `a`'s cost/weight is below `b`'s (cross-multiplied, as the kernel compares).
fn less(ca: u64, wa: u32, cb: u64, wb: u32) -> bool {
    u128::from(ca) * u128::from(wb) < u128::from(cb) * u128::from(wa)
}

fn check_min(d: &[Dest], got: Option<usize>, cost: impl Fn(&Dest) -> u64, weighted: bool) {
    let avail: Vec<usize> = (0..d.len()).filter(|&i| available(&d[i])).collect();
    let Some(g) = got else {
        assert!(avail.is_empty(), "none picked but {avail:?} available");
        return;
    };
    assert!(available(&d[g]), "picked an unavailable server {g}");
    let w = |i: usize| if weighted { d[i].weight } else { 1 };
    for &i in &avail {
        // Nothing is cheaper than the pick, and nothing before it is as cheap.
        assert!(
            !less(cost(&d[i]), w(i), cost(&d[g]), w(g)),
            "{i} beats pick {g}"
        );
        if i < g {
            assert!(
                less(cost(&d[g]), w(g), cost(&d[i]), w(i)),
                "{i} before pick {g} is as cheap (the first of equals must win)"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Over whole cycles, wrr gives every server exactly weight/gcd picks per cycle.
    #[test]
    fn wrr_shares_are_the_weights(weights in prop::collection::vec(0u32..=12, 1..8), cycles in 1u32..4) {
        let spec: Vec<_> = weights.iter().map(|&w| (w, 0, 0)).collect();
        let d = dests(&spec);
        let s = build(SchedulerKind::Wrr, SchedFlags::default(), &d, super::Carry::None);
        let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        let f = flow([1, 2, 3, 4], 5);
        if g == 0 {
            prop_assert_eq!(pick(s.as_ref(), &d, &f), None);
            return Ok(());
        }
        let per_cycle: u32 = weights.iter().map(|w| w / g).sum();
        let mut hits = vec![0u32; d.len()];
        let rng = Rng::new(1);
        for _ in 0..per_cycle * cycles {
            let i = s.schedule(&d, &f, &mut Ctx::live(Timestamp(0), &rng)).unwrap();
            hits[i] += 1;
        }
        let want: Vec<u32> = weights.iter().map(|w| w / g * cycles).collect();
        prop_assert_eq!(hits, want);
    }

    /// Maglev: each server owns its weight's share of the table, to within one round of turns
    /// (the last round is cut off when the table is full); client lookups follow within 3%.
    #[test]
    fn maglev_shares_follow_weights(weights in prop::collection::vec(1u32..=8, 2..10)) {
        let spec: Vec<_> = weights.iter().map(|&w| (w, 0, 0)).collect();
        let d = dests(&spec);
        let m = Maglev::new(&d, SchedFlags::default());
        let g = weights.iter().copied().fold(0, gcd);
        let total: u32 = weights.iter().map(|w| w / g).sum();
        for (i, w) in weights.iter().enumerate() {
            let turns = f64::from(w / g);
            let want = TABLE_SIZE as f64 * turns / f64::from(total);
            let got = m.share(i) as f64;
            prop_assert!((got - want).abs() <= turns, "server {} owns {} positions, want {:.1}", i, got, want);
        }
        let n = 20_000;
        let mut hits = vec![0u32; d.len()];
        for c in 0..n {
            hits[pick(&m, &d, &flow(client(c), 1)).unwrap()] += 1;
        }
        let wsum: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let frac = f64::from(hits[i]) / f64::from(n);
            let want = f64::from(*w) / f64::from(wsum);
            prop_assert!((frac - want).abs() < 0.03, "server {} gets {:.3}, want {:.3}", i, frac, want);
        }
    }

    /// Removing one of N equal servers moves that server's positions and only a few others:
    /// at most 1/N + 6% of all positions change owner (Maglev's disruption is small, not zero).
    #[test]
    fn maglev_removal_moves_about_one_nth(n in 3usize..=24, gone in 0usize..24) {
        let gone = gone % n;
        let spec = vec![(1u32, 0u32, 0u32); n];
        let all = dests(&spec);
        let before = Maglev::new(&all, SchedFlags::default());
        let rest: Vec<Dest> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, d)| Dest {
            addr: d.addr, weight: d.weight, last_weight: d.last_weight, state: d.state.clone(),
            forward: d.forward, pools: Vec::new(),
        }).collect();
        let after = Maglev::new(&rest, SchedFlags::default());
        let mut moved = 0usize;
        let f = |c: u32| flow(client(c), 1);
        let keys = 8_000u32;
        for c in 0..keys {
            let b = all[pick(&before, &all, &f(c)).unwrap()].addr;
            let a = rest[pick(&after, &rest, &f(c)).unwrap()].addr;
            if a != b {
                moved += 1;
                // Keys of surviving servers may move, but never onto... anything but a survivor.
                prop_assert!(a != all[gone].addr);
            }
        }
        let frac = moved as f64 / f64::from(keys);
        let bound = 1.0 / n as f64 + 0.06;
        prop_assert!(frac <= bound, "moved {:.3} of keys, bound {:.3} (n = {})", frac, bound, n);
        prop_assert!(frac >= 0.5 / n as f64, "moved only {:.3}", frac);
    }

    /// sh and dh: the same client gets the same server every time, and a table rebuilt from the
    /// same set gives the same answer.
    #[test]
    fn sh_dh_stable(weights in prop::collection::vec(1u32..=4, 1..10), c in any::<u32>(), port in any::<u16>(), flags in 0u8..4) {
        let spec: Vec<_> = weights.iter().map(|&w| (w, 0, 0)).collect();
        let d = dests(&spec);
        for kind in [SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh] {
            let a = build(kind, SchedFlags(flags), &d, super::Carry::None);
            let b = build(kind, SchedFlags(flags), &d, super::Carry::None);
            let f = flow(client(c), port);
            let first = pick(a.as_ref(), &d, &f);
            prop_assert!(first.is_some());
            for _ in 0..3 {
                prop_assert_eq!(pick(a.as_ref(), &d, &f), first);
            }
            prop_assert_eq!(pick(b.as_ref(), &d, &f), first);
        }
    }

    /// lc, wlc and sed pick an available server of least cost (first of equals); nq picks the
    /// first idle available server if any, else the least sed cost.
    #[test]
    fn least_cost_schedulers_pick_the_minimum(d in loaded_dests()) {
        let f = flow([1, 1, 1, 1], 1);
        let oh = |x: &Dest| x.state.overhead();
        let sed = |x: &Dest| u64::from(x.state.active()) + 1;
        let lc = build(SchedulerKind::Lc, SchedFlags::default(), &d, super::Carry::None);
        check_min(&d, pick(lc.as_ref(), &d, &f), oh, false);
        let wlc = build(SchedulerKind::Wlc, SchedFlags::default(), &d, super::Carry::None);
        check_min(&d, pick(wlc.as_ref(), &d, &f), oh, true);
        let s = build(SchedulerKind::Sed, SchedFlags::default(), &d, super::Carry::None);
        check_min(&d, pick(s.as_ref(), &d, &f), sed, true);
        let nq = build(SchedulerKind::Nq, SchedFlags::default(), &d, super::Carry::None);
        let got = pick(nq.as_ref(), &d, &f);
        match (0..d.len()).find(|&i| available(&d[i]) && d[i].state.active() == 0) {
            Some(idle) => prop_assert_eq!(got, Some(idle)),
            None => check_min(&d, got, sed, true),
        }
    }
}
