//! Correlation quality: a replay's incident actions (`replay --output json`,
//! [`triaged::tools::replay_json`]) scored against a scenario's truth
//! ([`crate::scenario`]).
//!
//! A member is known by its CI (a scenario has one stream per CI; a member
//! without a CI, or on a CI the truth does not name, counts as a stream of
//! its own). Over the actions in order:
//! - an incident is **paged** once it has an `open` action;
//! - the incidents a stream was **ever** in: those whose actions listed it;
//! - its **home**: the last incident whose action listed it (an incident
//!   merged into another resolves with no members, so its members' home is
//!   the one they were merged into);
//! - a fault's **incident**: the home of its root's stream, else the home of
//!   most of its streams.
//!
//! Then, per scenario:
//! - **roots right**: faults whose incident names their root as its root
//!   cause in its last action;
//! - **splits**: faults whose streams have more than one home;
//! - **shells**: paged incidents that are home to none of the streams they
//!   ever had, all of one fault, and whose streams all have one other home;
//!   counted apart as **late-root shells** when that fault's root was read
//!   more than [`ROOT_LATE`] after its first symptom (beyond the promise of
//!   one page per fault; the shell is then a child of the root's record);
//! - **warnings joined**: warnings ever in an incident that ever had a
//!   fault's stream;
//! - **held open**: recovered faults one of whose streams' homes is not
//!   resolved at the end;
//! - **precision**: over the pairs of streams with the same home, the share
//!   of the same fault (a pair with a warning or an unknown stream is wrong);
//! - **redundant paged high**: faults on a redundant pair member whose
//!   incident had priority 1 or 2 or named impacted services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use triaged::incident::{ActionKind, IncidentState};
use triaged::tools::replay_json::ActionRecord;

use crate::scenario::{Label, Truth};

/// A root read up to this long after its fault's first symptom must not leave a shell.
pub const ROOT_LATE: chrono::Duration = chrono::Duration::minutes(2);

/// The figures of one scenario (or a sum of several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score {
    pub scenarios: usize,
    pub faults: usize,
    /// Incidents with an `open` action.
    pub incidents: usize,
    pub roots_right: usize,
    pub splits: usize,
    pub shells: usize,
    /// Shells of faults whose root was read more than [`ROOT_LATE`] after their first symptom.
    pub late_root_shells: usize,
    pub warnings: usize,
    pub warnings_joined: usize,
    pub recovered: usize,
    pub held_open: usize,
    /// Pairs of streams with the same home, and how many of them belong to one fault.
    pub pairs: u64,
    pub true_pairs: u64,
    pub redundant: usize,
    pub redundant_high: usize,
    /// Members the truth does not know.
    pub unknown_members: usize,
    /// The lowest precision of the scenarios summed.
    pub worst_precision: Option<Precision>,
}

/// A precision with the seed it was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    pub seed: u64,
    pub pairs: u64,
    pub true_pairs: u64,
}

impl Precision {
    pub fn value(&self) -> f64 {
        if self.pairs == 0 {
            1.0
        } else {
            self.true_pairs as f64 / self.pairs as f64
        }
    }
}

impl Score {
    /// Pairwise grouping precision (1 without pairs).
    pub fn precision(&self) -> f64 {
        Precision { seed: 0, pairs: self.pairs, true_pairs: self.true_pairs }.value()
    }

    /// `self` plus `o`.
    pub fn add(&mut self, o: &Score) {
        self.scenarios += o.scenarios;
        self.faults += o.faults;
        self.incidents += o.incidents;
        self.roots_right += o.roots_right;
        self.splits += o.splits;
        self.shells += o.shells;
        self.late_root_shells += o.late_root_shells;
        self.warnings += o.warnings;
        self.warnings_joined += o.warnings_joined;
        self.recovered += o.recovered;
        self.held_open += o.held_open;
        self.pairs += o.pairs;
        self.true_pairs += o.true_pairs;
        self.redundant += o.redundant;
        self.redundant_high += o.redundant_high;
        self.unknown_members += o.unknown_members;
        self.worst_precision = match (self.worst_precision, o.worst_precision) {
            (Some(a), Some(b)) => Some(if b.value() < a.value() { b } else { a }),
            (a, b) => a.or(b),
        };
    }
}

/// What a stream is: the truth's label, or a stream the truth does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Stream {
    Known(String),
    Unknown(String),
}

/// Scores the actions of one replay of a scenario measured on `seed`.
pub fn score(truth: &Truth, actions: &[ActionRecord], seed: u64) -> Score {
    let labels: HashMap<&str, Label> = truth.labels().collect();
    let stream = |fp: &str, ci: &Option<String>| match ci {
        Some(c) if labels.contains_key(c.as_str()) => Stream::Known(c.clone()),
        _ => Stream::Unknown(fp.to_string()),
    };
    let label = |s: &Stream| match s {
        Stream::Known(c) => labels.get(c.as_str()).copied(),
        Stream::Unknown(_) => None,
    };

    let mut ever: BTreeMap<&str, BTreeSet<Stream>> = BTreeMap::new();
    let mut home: BTreeMap<Stream, &str> = BTreeMap::new();
    let mut last: HashMap<&str, &ActionRecord> = HashMap::new();
    let mut best_priority: HashMap<&str, (u8, bool)> = HashMap::new();
    let mut paged: BTreeSet<&str> = BTreeSet::new();
    for a in actions {
        let key = a.key.as_str();
        if a.kind == ActionKind::Open {
            paged.insert(key);
        }
        last.insert(key, a);
        let p = best_priority.entry(key).or_insert((u8::MAX, false));
        *p = (p.0.min(a.priority), p.1 || !a.impacted_services.is_empty());
        let set = ever.entry(key).or_default();
        for (fp, ci) in a.members.iter().zip(&a.member_cis) {
            let s = stream(fp, ci);
            set.insert(s.clone());
            home.insert(s, key);
        }
    }
    let mut sc = Score {
        scenarios: 1,
        faults: truth.faults.len(),
        incidents: paged.len(),
        warnings: truth.noise.len(),
        unknown_members: home.keys().filter(|s| matches!(s, Stream::Unknown(_))).count(),
        ..Score::default()
    };
    let resolved = |key: &str| last.get(key).is_some_and(|a| a.state == IncidentState::Resolved);

    for f in &truth.faults {
        let homes: Vec<&str> = f.cis().filter_map(|c| home.get(&Stream::Known(c.to_string())).copied()).collect();
        let distinct: BTreeSet<&str> = homes.iter().copied().collect();
        if distinct.len() > 1 {
            sc.splits += 1;
        }
        let by_root = home.get(&Stream::Known(f.root.clone())).copied();
        let incident = by_root.or_else(|| distinct.iter().copied().max_by_key(|k| (homes.iter().filter(|h| *h == k).count(), *k)));
        if let Some(k) = incident {
            if last[k].root.as_deref() == Some(f.root.as_str()) {
                sc.roots_right += 1;
            }
            if f.redundant {
                let (p, impact) = best_priority[k];
                sc.redundant_high += usize::from(p <= 2 || impact);
            }
        }
        sc.redundant += usize::from(f.redundant);
        if f.recovers() {
            sc.recovered += 1;
            if distinct.iter().any(|k| !resolved(k)) {
                sc.held_open += 1;
            }
        }
    }

    for &key in &paged {
        let Some(members) = ever.get(key).filter(|m| !m.is_empty()) else { continue };
        let faults: BTreeSet<Option<Label>> = members.iter().map(&label).collect();
        let one_fault = faults.len() == 1 && matches!(faults.first(), Some(Some(Label::Fault(_))));
        let homes: BTreeSet<&str> = members.iter().filter_map(|s| home.get(s).copied()).collect();
        if one_fault && homes.len() == 1 && !homes.contains(key) {
            let late = match faults.first() {
                Some(Some(Label::Fault(i))) => truth.faults[*i].root_read_lag.is_some_and(|l| l > ROOT_LATE),
                _ => false,
            };
            if late {
                sc.late_root_shells += 1;
            } else {
                sc.shells += 1;
            }
        }
    }

    let with_faults: Vec<&BTreeSet<Stream>> =
        ever.values().filter(|m| m.iter().any(|s| matches!(label(s), Some(Label::Fault(_))))).collect();
    for n in &truth.noise {
        let s = Stream::Known(n.ci.clone());
        if with_faults.iter().any(|m| m.contains(&s)) {
            sc.warnings_joined += 1;
        }
    }

    let mut groups: BTreeMap<&str, Vec<Option<Label>>> = BTreeMap::new();
    for (s, k) in &home {
        groups.entry(k).or_default().push(label(s));
    }
    for g in groups.values() {
        for (x, a) in g.iter().enumerate() {
            for b in &g[x + 1..] {
                sc.pairs += 1;
                if matches!((a, b), (Some(Label::Fault(p)), Some(Label::Fault(q))) if p == q) {
                    sc.true_pairs += 1;
                }
            }
        }
    }
    sc.worst_precision = Some(Precision { seed, pairs: sc.pairs, true_pairs: sc.true_pairs });
    sc
}

/// `part/whole`.
fn of(part: usize, whole: usize) -> String {
    format!("{part}/{whole}")
}

/// A markdown table: one row per `(seed, score)`, then their sum.
pub fn table(title: &str, rows: &[(u64, Score)]) -> String {
    let mut out = format!("### {title}\n\n");
    out.push_str(
        "| seed | faults | incidents opened | roots right | splits | shells | late-root shells | warnings joined | held open | precision | redundant paged high |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut total = Score::default();
    let line = |out: &mut String, name: &str, s: &Score, precision: String| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {precision} | {} |",
            s.faults,
            s.incidents,
            of(s.roots_right, s.faults),
            s.splits,
            s.shells,
            s.late_root_shells,
            of(s.warnings_joined, s.warnings),
            of(s.held_open, s.recovered),
            of(s.redundant_high, s.redundant)
        );
    };
    for (seed, s) in rows {
        line(&mut out, &seed.to_string(), s, format!("{:.3}", s.precision()));
        total.add(s);
    }
    let worst = total.worst_precision.map_or(String::new(), |w| format!(" (lowest {:.3}, seed {})", w.value(), w.seed));
    line(&mut out, "**all**", &total, format!("{:.3}{worst}", total.precision()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Fault, Noise};
    use chrono::{DateTime, Duration, Utc};
    use triaged::event::Severity;

    fn t0() -> DateTime<Utc> {
        "2026-03-02T08:00:00Z".parse().unwrap()
    }

    fn fault(root: &str, symptoms: &[&str], recovers: bool) -> Fault {
        Fault {
            root: root.into(),
            site: Some("par1".into()),
            symptoms: symptoms.iter().map(|s| s.to_string()).collect(),
            missing: Vec::new(),
            onset: t0(),
            recovery: recovers.then(|| t0() + Duration::minutes(10)),
            late_root: false,
            slow: Vec::new(),
            redundant: false,
            overlaps: None,
            root_read_lag: None,
        }
    }

    /// Fault 0: sw-1 and two VMs below it; fault 1: db-1 alone; a warning on rtr-1.
    fn truth() -> Truth {
        Truth {
            faults: vec![fault("sw-1", &["vm-1", "vm-2"], true), fault("db-1", &[], true)],
            noise: vec![Noise { ci: "rtr-1".into(), upstream_of: None, onset: t0(), clears: None }],
        }
    }

    /// An action at minute `min`; members by CI (`?x`: a member without a CI).
    fn act(min: i64, kind: ActionKind, key: &str, root: Option<&str>, members: &[&str]) -> ActionRecord {
        let ci = |m: &str| (!m.starts_with('?')).then(|| m.to_string());
        ActionRecord {
            at: t0() + Duration::minutes(min),
            kind,
            key: key.into(),
            root: root.map(str::to_string),
            priority: 3,
            severity: Severity::Critical,
            scope: format!("topology:{}", root.unwrap_or("-")),
            title: "t".into(),
            state: if kind == ActionKind::Resolve { IncidentState::Resolved } else { IncidentState::Open },
            impacted_services: Vec::new(),
            members: members.iter().map(|m| format!("fp|{m}")).collect(),
            member_cis: members.iter().map(|m| ci(m)).collect(),
            notes: Vec::new(),
        }
    }

    use ActionKind::{Open, Resolve, Update};

    /// What the table shows, without the seed.
    fn figures(s: &Score) -> [u64; 9] {
        [
            s.incidents as u64,
            s.roots_right as u64,
            s.splits as u64,
            s.shells as u64,
            s.warnings_joined as u64,
            s.held_open as u64,
            s.pairs,
            s.true_pairs,
            s.unknown_members as u64,
        ]
    }

    #[test]
    fn one_incident_per_fault_with_its_root_scores_full_marks() {
        let actions = [
            act(1, Open, "k1", Some("sw-1"), &["sw-1", "vm-1", "vm-2"]),
            act(1, Open, "k2", Some("db-1"), &["db-1"]),
            act(2, Open, "k3", Some("rtr-1"), &["rtr-1"]),
            act(12, Resolve, "k1", Some("sw-1"), &["sw-1", "vm-1", "vm-2"]),
            act(12, Resolve, "k2", Some("db-1"), &["db-1"]),
        ];
        let s = score(&truth(), &actions, 7);
        assert_eq!(figures(&s), [3, 2, 0, 0, 0, 0, 3, 3, 0], "{s:?}");
        assert_eq!((s.faults, s.warnings, s.recovered), (2, 1, 2));
        assert_eq!(s.precision(), 1.0);
    }

    #[test]
    fn a_late_root_leaves_a_shell_and_a_warning_takes_a_fault() {
        let actions = [
            // vm-1 pages alone before its root arrives, then is merged away.
            act(1, Open, "k1", Some("vm-1"), &["vm-1"]),
            act(2, Open, "k2", Some("sw-1"), &["sw-1", "vm-2"]),
            act(3, Update, "k2", Some("sw-1"), &["sw-1", "vm-1", "vm-2"]),
            act(3, Resolve, "k1", Some("vm-1"), &[]),
            // The warning upstream of db-1 becomes its root and never clears.
            act(1, Open, "k3", Some("rtr-1"), &["rtr-1", "db-1"]),
            act(12, Resolve, "k2", Some("sw-1"), &["sw-1", "vm-1", "vm-2"]),
        ];
        let s = score(&truth(), &actions, 7);
        assert_eq!(figures(&s), [3, 1, 0, 1, 1, 1, 4, 3, 0], "{s:?}");
        assert_eq!(s.precision(), 0.75);
    }

    /// The same shell counts apart when its fault's root was read more than
    /// `ROOT_LATE` after its first symptom.
    #[test]
    fn a_shell_behind_a_root_read_too_late_is_counted_apart() {
        let actions = [
            act(1, Open, "k1", Some("vm-1"), &["vm-1"]),
            act(2, Open, "k2", Some("sw-1"), &["sw-1", "vm-1", "vm-2"]),
            act(3, Resolve, "k1", Some("vm-1"), &[]),
        ];
        let mut t = truth();
        t.faults[0].root_read_lag = Some(ROOT_LATE);
        assert_eq!((score(&t, &actions, 7).shells, score(&t, &actions, 7).late_root_shells), (1, 0), "within the promise");
        t.faults[0].root_read_lag = Some(ROOT_LATE + Duration::seconds(1));
        let s = score(&t, &actions, 7);
        assert_eq!((s.shells, s.late_root_shells), (0, 1), "{s:?}");
    }

    #[test]
    fn a_fault_over_two_incidents_is_split_and_unknown_members_pair_wrongly() {
        let actions = [
            act(1, Open, "k1", Some("sw-1"), &["sw-1", "vm-1"]),
            act(1, Open, "k2", Some("vm-2"), &["vm-2", "?x"]),
            act(12, Resolve, "k1", Some("sw-1"), &["sw-1", "vm-1"]),
        ];
        let s = score(&truth(), &actions, 7);
        // Fault 1 never paged: no root found for it; k2 is still open.
        assert_eq!(figures(&s), [2, 1, 1, 0, 0, 1, 2, 1, 1], "{s:?}");
        // The same fault paged by two incidents that both keep members is a
        // split, not a shell; a shell is an incident left with none.
        let merged = [
            act(1, Open, "k1", Some("vm-1"), &["vm-1"]),
            act(2, Open, "k2", Some("sw-1"), &["sw-1", "vm-1", "vm-2"]),
            act(3, Resolve, "k1", Some("vm-1"), &[]),
        ];
        let s = score(&truth(), &merged, 7);
        assert_eq!((s.splits, s.shells), (0, 1), "{s:?}");
    }

    #[test]
    fn a_redundant_member_paged_as_an_outage_is_counted() {
        let mut t = truth();
        t.faults[1].redundant = true;
        let mut high = act(1, Open, "k2", Some("db-1"), &["db-1"]);
        high.priority = 1;
        let s = score(&t, &[high.clone()], 7);
        assert_eq!((s.redundant, s.redundant_high), (1, 1));
        high.priority = 4;
        let s = score(&t, &[high.clone()], 7);
        assert_eq!((s.redundant, s.redundant_high), (1, 0));
        high.impacted_services = vec!["bs-payments".into()];
        assert_eq!(score(&t, &[high], 7).redundant_high, 1, "business impact");
    }

    #[test]
    fn the_table_sums_its_rows() {
        let good = score(&truth(), &[act(1, Open, "k1", Some("sw-1"), &["sw-1", "vm-1", "vm-2"])], 1);
        let bad = score(&truth(), &[act(1, Open, "k1", Some("rtr-1"), &["rtr-1", "sw-1", "vm-1", "vm-2"])], 2);
        let t = table("small", &[(1, good), (2, bad)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "### small");
        assert!(lines[2].starts_with(
            "| seed | faults | incidents opened | roots right | splits | shells | late-root shells | warnings joined | held open |"
        ));
        assert_eq!(lines[4], "| 1 | 2 | 1 | 1/2 | 0 | 0 | 0 | 0/1 | 1/2 | 1.000 | 0/0 |", "{t}");
        assert_eq!(lines[5], "| 2 | 2 | 1 | 0/2 | 0 | 0 | 0 | 1/1 | 1/2 | 0.500 | 0/0 |", "{t}");
        assert_eq!(lines[6], "| **all** | 4 | 2 | 1/4 | 0 | 0 | 0 | 1/2 | 2/4 | 0.667 (lowest 0.500, seed 2) | 0/0 |", "{t}");
    }
}
