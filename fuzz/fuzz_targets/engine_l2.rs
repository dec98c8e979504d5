//! Fuzz target: a sequence of Ethernet frames as read from the TAP (see the input format in
//! `ulvs_engine::bench_support::testbed`) through `Engine::process_frame` of one engine with
//! every forwarding method, family, persistence and ICMP. The test bed panics unless every
//! frame ends forwarded, answered, passed or dropped with its reason counted, and the counters
//! stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs_engine::bench_support::testbed;

fuzz_target!(|data: &[u8]| {
    testbed::run_l2(data);
});
