use std::collections::{BTreeSet, HashMap};

use chrono::Duration;
use triaged::config::Format;
use triaged::event::{Severity, Status};
use triaged::source::decode::decode;

use super::*;

fn medium(seed: u64) -> Scenario {
    Scenario::generate(&ScenarioParams::new(seed, 20, 1_000)).unwrap()
}

fn with(seed: u64, d: Difficulties) -> Scenario {
    Scenario::generate(&ScenarioParams { difficulties: d, ..ScenarioParams::new(seed, 20, 1_000) }).unwrap()
}

fn idx(s: &Scenario, id: &str) -> triaged::topology::CiIdx {
    s.cmdb.by_id(id).unwrap()
}

#[test]
fn a_seed_gives_one_scenario() {
    let (a, b) = (medium(3), medium(3));
    assert_eq!(a.truth, b.truth);
    assert_eq!(a.messages, b.messages);
    let c = medium(4);
    assert_ne!(a.truth, c.truth);
}

#[test]
fn the_faults_wanted_fit_and_never_touch() {
    for seed in 0..5 {
        let s = medium(seed);
        assert_eq!(s.truth.faults.len(), 20, "seed {seed}");
        let alerting: Vec<(usize, &str)> = s.truth.faults.iter().enumerate().flat_map(|(i, f)| f.cis().map(move |c| (i, c))).collect();
        let distinct: BTreeSet<&str> = alerting.iter().map(|(_, c)| *c).collect();
        assert_eq!(distinct.len(), alerting.len(), "seed {seed}: a CI alerts for one fault only");
        for &(i, a) in &alerting {
            for &(j, b) in &alerting {
                if i != j {
                    assert!(
                        s.cmdb.is_upstream_of(idx(&s, a), idx(&s, b), DEPTH).is_none(),
                        "seed {seed}: {a} (fault {i}) is above {b} (fault {j})"
                    );
                }
            }
        }
        for f in &s.truth.faults {
            let root = idx(&s, &f.root);
            for c in f.symptoms.iter().chain(&f.missing) {
                assert!(s.cmdb.is_upstream_of(root, idx(&s, c), 64).is_some(), "seed {seed}: {c} is below {}", f.root);
            }
            assert!(f.symptoms.len() + f.missing.len() <= faults::MAX_SYMPTOMS);
            if !f.redundant {
                assert!(!f.symptoms.is_empty() && f.symptoms.len() + f.missing.len() >= 2, "seed {seed}: a storm, not one alert: {f:?}");
            }
        }
    }
}

#[test]
fn every_message_decodes_to_its_stream_with_its_time() {
    let s = medium(1);
    let labels: HashMap<&str, Label> = s.truth.labels().collect();
    let mut warnings = 0;
    for m in &s.messages {
        let events =
            decode(Format::Auto, &m.payload, m.delivered).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.payload)));
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.status, if m.firing { Status::Firing } else { Status::Resolved });
        assert!(e.time <= m.at, "the payload is timed when the alert began or ended: {e:?}");
        if e.source != "alertmanager" || !m.firing {
            assert_eq!(e.time, m.at, "{e:?}");
        }
        match labels[m.ci.as_str()] {
            Label::Noise(_) if m.firing => {
                warnings += 1;
                assert_eq!(e.severity, Severity::Warning, "{e:?}");
            }
            Label::Fault(_) if m.firing => assert!(e.severity > Severity::Warning, "{e:?}"),
            _ => {}
        }
    }
    assert!(warnings > 0);
    let streams: BTreeSet<&str> = s.messages.iter().map(|m| m.ci.as_str()).collect();
    assert_eq!(streams, labels.keys().copied().collect(), "every stream of the truth alerts");
}

#[test]
fn delivery_is_late_by_two_minutes_at_most_and_keyed_streams_keep_their_order() {
    let s = medium(2);
    let late = |m: &Message| m.delivered - m.at;
    assert!(s.messages.iter().all(|m| late(m) >= Duration::zero() && late(m) <= MAX_DELIVERY_DELAY));
    let by_delivery = s.messages.windows(2).all(|w| w[0].delivered <= w[1].delivered);
    assert!(by_delivery, "messages come in delivery order");
    let out_of_order = s.messages.windows(2).filter(|w| w[1].at < w[0].at).count();
    assert!(out_of_order > s.messages.len() / 10, "{out_of_order} of {}", s.messages.len());
    let spread = |s: &Scenario| {
        let mut parts: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        s.messages.iter().for_each(|m| {
            parts.entry(&m.ci).or_default().insert(m.partition);
        });
        parts.values().filter(|p| p.len() > 1).count()
    };
    assert!(spread(&s) > 0, "unkeyed: one stream on several partitions");
    assert!(s.messages.iter().all(|m| m.partition < s.params.partitions));

    let keyed = with(2, Difficulties { unkeyed_partitions: false, ..Difficulties::default() });
    assert_eq!(spread(&keyed), 0);
    let mut last: HashMap<&str, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for m in &keyed.messages {
        let prev = last.insert(&m.ci, m.at);
        assert!(prev.is_none_or(|p| p <= m.at), "{}: an alert's messages stay in order", m.ci);
    }
    let in_order = with(2, Difficulties { out_of_order: false, ..Difficulties::default() });
    assert!(in_order.messages.iter().all(|m| m.delivered == m.at));
}

#[test]
fn each_difficulty_shows_in_the_truth() {
    let all: Vec<Scenario> = (0..4).map(medium).collect();
    let faults = || all.iter().flat_map(|s| s.truth.faults.iter().map(move |f| (s, f)));
    assert!(faults().any(|(_, f)| !f.missing.is_empty()), "missing symptoms");
    assert!(faults().any(|(_, f)| !f.recovers()) && faults().filter(|(_, f)| f.recovers()).count() > 40, "most recover");
    assert!(faults().any(|(_, f)| !f.slow.is_empty()), "slow symptoms");
    // A late root alerts after its first symptom, within 2 minutes of it.
    let first = |s: &Scenario, ci: &str| s.messages.iter().filter(|m| m.ci == ci).map(|m| m.at).min().unwrap();
    let late: Vec<_> = faults().filter(|(_, f)| f.late_root).collect();
    assert!(!late.is_empty());
    for (s, f) in late {
        let symptom = f.symptoms.iter().map(|c| first(s, c)).min().unwrap();
        let root = first(s, &f.root);
        assert!(root > symptom && root - symptom <= Duration::minutes(2), "{}: {root} vs {symptom}", f.root);
    }
    // Overlapping faults share a site and start within a minute of each other.
    let overlaps: Vec<_> = faults().filter_map(|(s, f)| f.overlaps.map(|k| (f, &s.truth.faults[k]))).collect();
    assert!(!overlaps.is_empty());
    for (f, g) in overlaps {
        assert!(f.site.is_some() && f.site == g.site && f.onset - g.onset <= Duration::minutes(1));
    }
    let redundant: Vec<_> = faults().filter(|(_, f)| f.redundant).collect();
    assert!(!redundant.is_empty());
    for (s, f) in redundant {
        let kind = &s.cmdb.ci(idx(s, &f.root)).kind;
        assert!(f.symptoms.is_empty() && (kind == "database" || f.root.starts_with("sw-core-")), "{f:?}");
    }
    // Warnings: upstream of the fault they are placed at, below none, some never clearing.
    let noise = || all.iter().flat_map(|s| s.truth.noise.iter().map(move |n| (s, n)));
    assert!(noise().any(|(_, n)| n.clears.is_none()) && noise().any(|(_, n)| n.clears.is_some()));
    assert!(noise().any(|(_, n)| n.upstream_of.is_none()));
    let mut above = 0;
    for (s, n) in noise() {
        let ci = idx(s, &n.ci);
        for f in &s.truth.faults {
            for c in f.cis() {
                assert!(s.cmdb.is_upstream_of(idx(s, c), ci, 64).is_none(), "{} is below {c}", n.ci);
            }
        }
        if let Some(k) = n.upstream_of {
            above += 1;
            assert!(s.truth.faults[k].cis().any(|c| s.cmdb.is_upstream_of(ci, idx(s, c), DEPTH).is_some()), "{n:?}");
        }
    }
    assert!(above > 0);
}

#[test]
fn without_difficulties_storms_are_clean() {
    for seed in 0..3 {
        let s = with(seed, Difficulties::none());
        let t = &s.truth;
        assert!(t.noise.is_empty());
        assert!(t.faults.iter().all(|f| f.missing.is_empty() && f.slow.is_empty() && !f.late_root && !f.redundant && f.overlaps.is_none()));
        // Faults at one site never overlap in time (one that never recovers lasts to the end).
        for (i, f) in t.faults.iter().enumerate() {
            for g in &t.faults[i + 1..] {
                if f.site == g.site {
                    let end = |x: &Fault| x.recovery.unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                    assert!(end(f) <= g.onset || end(g) <= f.onset, "{} and {} at {:?}", f.root, g.root, f.site);
                }
            }
        }
        assert!(s.messages.iter().all(|m| m.delivered == m.at));
        assert!(s.messages.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
