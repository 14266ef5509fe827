//! Correlation quality targets on generated storms (`triaged_testkit::scenario`,
//! every difficulty on): 20 seeds of each of three sizes, replayed through the
//! shipped rules and timers and scored against their truth. The figures per
//! size come from `cargo run -p triaged-bench --release --bin score`.

use std::sync::Arc;

use triaged::rules::RuleSet;
use triaged_testkit::quality::{run_size, Size};
use triaged_testkit::scenario::Difficulties;
use triaged_testkit::score::Score;

const SEEDS: std::ops::Range<u64> = 0..20;

fn shipped() -> (Arc<RuleSet>, triaged::config::CorrelationConfig) {
    let root = crate::repo();
    let rules = Arc::new(RuleSet::load_dir(&root.join("rules")).unwrap());
    let cc = triaged::config::Config::load(&root.join("config/triaged.toml")).unwrap().correlation;
    (rules, cc)
}

fn scores(size: Size) -> Vec<(u64, Score)> {
    let (rules, cc) = shipped();
    run_size(size, Difficulties::default(), SEEDS, &rules, &cc, 2).unwrap()
}

/// Every target of the issue, per seed so that a failure names its seed.
fn meets_the_targets(size: Size) {
    let rows = scores(size);
    assert_eq!(rows.len(), SEEDS.count());
    let mut sum = Score::default();
    for (seed, s) in &rows {
        let at = format!("{} seed {seed}: {s:?}", size.name());
        assert_eq!(s.roots_right, s.faults, "every root found: {at}");
        assert_eq!(s.splits, 0, "no fault split: {at}");
        assert_eq!(s.shells, 0, "no shell incident: {at}");
        assert_eq!(s.warnings_joined, 0, "no warning inside a fault's incident: {at}");
        assert_eq!(s.held_open, 0, "every recovered fault resolved: {at}");
        assert_eq!(s.redundant_high, 0, "no redundant member paged as an outage: {at}");
        assert_eq!(s.unknown_members, 0, "{at}");
        sum.add(s);
    }
    assert!(sum.pairs > 0 && sum.true_pairs * 100 >= sum.pairs * 99, "pairwise precision {}/{}", sum.true_pairs, sum.pairs);
    assert!(sum.redundant > 0 && sum.warnings > 0 && sum.recovered > 0, "the difficulties were there: {sum:?}");
}

#[test]
fn small_storms_meet_the_quality_targets() {
    meets_the_targets(Size::Small);
}

#[test]
fn medium_storms_meet_the_quality_targets() {
    meets_the_targets(Size::Medium);
}

#[test]
fn large_storms_meet_the_quality_targets() {
    meets_the_targets(Size::Large);
}
