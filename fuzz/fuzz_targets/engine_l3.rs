//! Fuzz target: a sequence of IP packets as read from the TUN (each optionally behind a
//! `virtio_net_hdr`, see the input format in `ulvs_engine::bench_support::testbed`) through one
//! engine with every forwarding method, family, persistence and ICMP. The test bed panics
//! unless every packet ends forwarded, answered, passed or dropped with its reason counted,
//! and the counters stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs_engine::bench_support::testbed;

fuzz_target!(|data: &[u8]| {
    testbed::run_l3(data);
});
