//! Property tests over the every-mode test bed (`ulvs_engine::bench_support::testbed`, the one
//! the `cargo fuzz` targets `engine_l3` and `engine_l2` use): sequences of real and mutated
//! frames, as from the TUN (with and without a `virtio_net_hdr`) and as from the TAP, through
//! one engine with NAT, FULLNAT, DR, IPIP/GUE/GRE tunnels, IPv4 and IPv6 services, persistence
//! and ICMP. The test bed panics unless every frame ends forwarded, answered, passed or dropped
//! with its reason counted, and the counters stay consistent.

mod fuzz_seeds;

use proptest::prelude::*;
use ulvs_engine::bench_support::testbed::{Bed, Source, VNET_HDR_LEN};

/// A record's control byte (see the test bed's input format): mostly the workers' headroom,
/// sometimes a reaper pass, rarely a configuration swap.
fn ctl() -> impl Strategy<Value = u8> {
    (
        0u8..8,
        prop::bool::weighted(0.15),
        any::<bool>(),
        prop_oneof![6 => Just(0u8), 1 => 1u8..4],
        prop::bool::weighted(0.08),
    )
        .prop_map(|(time, expire, vnet, room, swap)| {
            time | u8::from(expire) << 3 | u8::from(vnet) << 4 | room << 5 | u8::from(swap) << 7
        })
}

/// A `virtio_net_hdr` with the flag, GSO type and size values that matter.
fn vnet() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0u8), Just(1), any::<u8>()],
        prop_oneof![
            Just(0u8),
            Just(1),
            Just(3),
            Just(4),
            Just(5),
            Just(0x81),
            any::<u8>()
        ],
        prop_oneof![
            Just(0u16),
            Just(1),
            Just(8),
            Just(536),
            Just(1400),
            any::<u16>()
        ],
        any::<[u8; 6]>(),
    )
        .prop_map(|(flags, ty, size, rest)| {
            let mut h = vec![flags, ty, rest[0], rest[1]];
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&rest[2..]);
            debug_assert_eq!(h.len(), VNET_HDR_LEN);
            h
        })
}

/// A frame: a seed (possibly mutated and cut) or random bytes.
fn frame(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        3 => (
            0..n,
            prop::collection::vec((0usize..160, any::<u8>()), 0..4),
            prop_oneof![3 => Just(0usize), 1 => 0usize..64],
        )
            .prop_map(move |(i, flips, cut)| {
                let mut p = seeds[i].clone();
                for (at, v) in flips {
                    if let Some(b) = p.get_mut(at) {
                        *b = v;
                    }
                }
                p.truncate(p.len().saturating_sub(cut));
                p
            }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn l3_sequences_end_forwarded_answered_or_dropped(
        frames in prop::collection::vec((ctl(), vnet(), frame(fuzz_seeds::l3())), 1..24),
    ) {
        let mut bed = Bed::new();
        for (ctl, hdr, packet) in frames {
            let f = if ctl & 0x10 != 0 { [hdr, packet].concat() } else { packet };
            bed.frame(Source::Tun, ctl, &f);
        }
        let t = bed.tally();
        prop_assert_eq!(t.forwarded + t.answered + t.passed + t.dropped, t.packets);
    }

    #[test]
    fn l2_sequences_end_forwarded_answered_or_dropped(
        frames in prop::collection::vec((ctl(), frame(fuzz_seeds::l2())), 1..24),
    ) {
        let mut bed = Bed::new();
        for (ctl, f) in frames {
            bed.frame(Source::Tap, ctl, &f);
        }
        let t = bed.tally();
        prop_assert_eq!(t.forwarded + t.answered + t.passed + t.dropped, t.packets);
    }
}

/// The unmutated seeds in order reach every kind of outcome.
#[test]
fn seeds_reach_every_outcome() {
    let mut bed = Bed::new();
    for p in fuzz_seeds::l3() {
        bed.frame(Source::Tun, 1, &p);
    }
    let t = bed.tally();
    assert!(
        t.forwarded > 20 && t.answered >= 4 && t.dropped >= 2,
        "{t:?}"
    );
    let mut bed = Bed::new();
    for f in fuzz_seeds::l2() {
        bed.frame(Source::Tap, 1, &f);
    }
    let t = bed.tally();
    assert!(t.forwarded > 20 && t.answered >= 6, "{t:?}");
}
