//! The correlation core alone, single thread, from memory: decode + dedup +
//! correlate a generated storm (`triaged_testkit::storm`), fresh core state per
//! pass. `cargo bench --bench core`; the whole-system comparison is
//! `scripts/bench`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use triaged_bench::pipeline::core_pass;
use triaged_testkit::storm::{Storm, StormParams};

fn core(c: &mut Criterion) {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let rules = Arc::new(triaged::rules::RuleSet::load_dir(&root.join("rules")).expect("the shipped rules load"));
    let mut g = c.benchmark_group("core");
    for (events, cis) in [(100_000, 10_000), (100_000, 100_000)] {
        let p = StormParams { events, cis, ..StormParams::default() };
        let storm = Storm::generate(&p, chrono::Utc::now()).expect("storm");
        let cmdb = Arc::new(storm.cmdb.clone());
        let messages = storm.kafka_messages();
        g.throughput(Throughput::Elements(messages.len() as u64));
        g.bench_function(format!("decode+dedup+correlate/{events}-events/{cis}-cis"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| core_pass(&rules, &cmdb, &messages).1).sum::<Duration>())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    targets = core
}
criterion_main!(benches);
