//! Correlation quality runs: scenarios of three sizes, each replayed in
//! process through rules and correlation timers (`triaged::tools::replay`)
//! over the scenario's own estate, and scored against its truth.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use triaged::config::{CorrelationConfig, Format};
use triaged::rules::RuleSet;
use triaged::tools::replay::replay;
use triaged::tools::replay_json::ActionRecord;

use crate::scenario::{Difficulties, Scenario, ScenarioParams};
use crate::score::{score, Score};

/// How big a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 5 faults over about 300 CIs.
    Small,
    /// 20 faults over about 1,000 CIs.
    Medium,
    /// 60 faults over about 3,000 CIs.
    Large,
}

impl Size {
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    /// `(faults, CIs)`.
    pub fn shape(self) -> (usize, usize) {
        match self {
            Size::Small => (5, 300),
            Size::Medium => (20, 1_000),
            Size::Large => (60, 3_000),
        }
    }

    /// The scenario of this size for `seed`, with difficulties `d`.
    pub fn params(self, seed: u64, d: Difficulties) -> ScenarioParams {
        let (faults, cis) = self.shape();
        ScenarioParams { difficulties: d, ..ScenarioParams::new(seed, faults, cis) }
    }

    /// A title for its table: `small: 5 faults over ~300 CIs, seeds 0..20`.
    pub fn title(self, seeds: &std::ops::Range<u64>) -> String {
        let (faults, cis) = self.shape();
        format!("{}: {faults} faults over ~{cis} CIs, seeds {}..{}", self.name(), seeds.start, seeds.end)
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        Size::ALL.into_iter().find(|z| z.name() == s).ok_or_else(|| format!("unknown size `{s}` (small, medium or large)"))
    }
}

/// One scenario generated, replayed and scored.
pub struct Run {
    pub scenario: Scenario,
    pub actions: Vec<ActionRecord>,
    pub score: Score,
}

/// Generates the scenario of `p`, replays it through `rules` with the timers
/// of `cc` over its estate, and scores the actions.
pub fn run(p: &ScenarioParams, rules: Arc<RuleSet>, cc: &CorrelationConfig) -> Result<Run, String> {
    let scenario = Scenario::generate(p)?;
    let report = replay(&scenario.recorded(), rules, scenario.cmdb.clone(), cc, Format::Auto, false);
    if let Some((origin, e)) = report.undecodable.first() {
        return Err(format!("seed {}: {origin} does not decode: {e}", p.seed));
    }
    let score = score(&scenario.truth, &report.records, p.seed);
    Ok(Run { scenario, actions: report.records, score })
}

/// The scores of `size` with difficulties `d` for every seed of `seeds`, on
/// `threads` threads, in seed order.
pub fn run_size(
    size: Size,
    d: Difficulties,
    seeds: std::ops::Range<u64>,
    rules: &Arc<RuleSet>,
    cc: &CorrelationConfig,
    threads: usize,
) -> Result<Vec<(u64, Score)>, String> {
    let seeds: Vec<u64> = seeds.collect();
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Result<(u64, Score), String>>> = Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, seeds.len().max(1)) {
            s.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = run(&size.params(seed, d), rules.clone(), cc).map(|r| (seed, r.score));
                    out.lock().expect("no scorer panicked").push(r);
                }
            });
        }
    });
    let mut rows = out.into_inner().expect("no scorer panicked").into_iter().collect::<Result<Vec<_>, _>>()?;
    rows.sort_by_key(|(seed, _)| *seed);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipped() -> (Arc<RuleSet>, CorrelationConfig) {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let rules = Arc::new(RuleSet::load_dir(&root.join("rules")).unwrap());
        let cc = triaged::config::Config::load(&root.join("config/triaged.toml")).unwrap().correlation;
        (rules, cc)
    }

    #[test]
    fn every_size_places_the_faults_it_promises() {
        for size in Size::ALL {
            for seed in 0..20 {
                let s = Scenario::generate(&size.params(seed, Difficulties::default())).unwrap();
                assert_eq!(s.truth.faults.len(), size.shape().0, "{} seed {seed}", size.name());
                assert!(s.cmdb.len().abs_diff(size.shape().1) < size.shape().1 / 10, "{} CIs", s.cmdb.len());
            }
        }
    }

    /// Without difficulties every fault is one incident with its root, and
    /// everything resolves: the generator, the replay and the scorer agree.
    #[test]
    fn clean_storms_score_full_marks() {
        let (rules, cc) = shipped();
        for size in [Size::Small, Size::Medium] {
            let rows = run_size(size, Difficulties::none(), 0..3, &rules, &cc, 2).unwrap();
            for (seed, s) in rows {
                let at = format!("{} seed {seed}: {s:?}", size.name());
                assert!(s.faults > 0, "{at}");
                assert_eq!((s.incidents, s.roots_right), (s.faults, s.faults), "{at}");
                assert_eq!((s.splits, s.shells, s.held_open, s.unknown_members), (0, 0, 0, 0), "{at}");
                assert_eq!(s.true_pairs, s.pairs, "{at}");
                assert!(s.pairs > 0, "{at}");
            }
        }
    }

    #[test]
    fn difficulties_cost_something() {
        let (rules, cc) = shipped();
        let mut sum = Score::default();
        for (_, s) in run_size(Size::Small, Difficulties::default(), 0..3, &rules, &cc, 2).unwrap() {
            sum.add(&s);
        }
        assert_eq!(sum.unknown_members, 0, "{sum:?}");
        assert!(sum.warnings > 0 && sum.redundant > 0, "{sum:?}");
        assert!(sum.incidents > sum.faults, "noise and late roots page more than once per fault: {sum:?}");
    }

    #[test]
    fn sizes_by_name() {
        assert_eq!("large".parse::<Size>(), Ok(Size::Large));
        assert!("huge".parse::<Size>().unwrap_err().contains("small, medium or large"));
        assert_eq!(Size::Small.title(&(0..20)), "small: 5 faults over ~300 CIs, seeds 0..20");
    }
}
