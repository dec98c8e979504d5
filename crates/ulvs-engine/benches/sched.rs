//! Criterion benchmarks: one scheduler pick, for every scheduler, over 10 and 1000 real servers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ulvs_engine::SchedulerKind;
use ulvs_engine::bench_support::SchedulerBench;

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    for kind in SchedulerKind::ALL {
        for n in [10usize, 1000] {
            let b = SchedulerBench::new(kind, n);
            let mut client = 0u32;
            g.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |bench, _| {
                bench.iter(|| {
                    client = client.wrapping_add(1);
                    black_box(b.pick(black_box(client)))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
