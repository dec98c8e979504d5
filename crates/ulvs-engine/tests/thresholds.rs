//! Property test through real packets: under every scheduler, no real server ever holds more
//! connections than its upper threshold, whatever the order of opens and closes.

mod common;

use common::*;
use proptest::prelude::*;
use ulvs_engine::{Protocol, SchedulerKind, Timestamp, Verdict};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn upper_threshold_is_never_exceeded(
        kind in prop::sample::select(SchedulerKind::ALL.to_vec()),
        uppers in prop::collection::vec(1u32..5, 3),
        ops in prop::collection::vec((any::<bool>(), 0u16..40), 1..120),
    ) {
        let dests: Vec<_> = [RS1, RS2, RS3]
            .iter()
            .zip(&uppers)
            .map(|(ip, &u)| {
                let mut d = dest(*ip, 80, 2);
                d.upper_threshold = u;
                d
            })
            .collect();
        let e = engine_with(vec![service(Protocol::Tcp, VIP, 80, kind, dests)]);
        let mut now = 1;
        for (open, port) in ops {
            now += 1;
            let flags = if open { SYN } else { RST };
            let v = run(&e, now, &tcp(CLIENT, 10_000 + port, VIP, 80, flags, &[])).0;
            if open {
                prop_assert!(matches!(v, Verdict::Forward | Verdict::Drop(_)));
            } else {
                // A RST ends the connection at once in this model: reap it.
                for _ in 0..e.expire_calls_per_pass() {
                    e.expire(Timestamp(now + 1_000_000));
                }
            }
            for (d, u) in e.stats().services[0].dests.iter().zip(&uppers) {
                let total = d.active_conns + d.inactive_conns;
                prop_assert!(total <= *u, "{} holds {} > upper {} under {}", d.addr, total, u, kind);
            }
        }
    }
}
