//! Problem candidates (ITIL problem management): the same configuration item
//! keeps failing. When `threshold` incidents are opened or reopened with the
//! same root cause (or, without topology, the same CI) within `period`, a
//! problem candidate is raised once per period: a log line, a metric and an
//! entry on `/problems`, with the incidents that make it.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::keys::fnv1a;
use crate::incident::{Action, ActionKind};

/// A CI that keeps causing incidents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProblemCandidate {
    /// Deterministic id: `prb-` + FNV-1a of the CI id and the first incident's key.
    pub id: String,
    pub ci: String,
    /// Incident keys, oldest first, one per opening or reopening within the
    /// period (a key recurs when the same incident reopened).
    pub incidents: Vec<String>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub raised_at: DateTime<Utc>,
    pub reason: String,
}

/// Counts incident openings per CI over a sliding period.
pub struct ProblemTracker {
    threshold: usize,
    period: chrono::Duration,
    /// Per CI: (time, incident key) of each opening within the period.
    openings: HashMap<String, VecDeque<(DateTime<Utc>, String)>>,
    /// Raised candidates, by CI; one per period.
    raised: HashMap<String, ProblemCandidate>,
}

impl ProblemTracker {
    /// `threshold` 0 disables the tracker.
    pub fn new(threshold: u32, period: std::time::Duration) -> ProblemTracker {
        ProblemTracker {
            threshold: threshold as usize,
            period: chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX),
            openings: HashMap::new(),
            raised: HashMap::new(),
        }
    }

    /// Feeds one action; returns a newly raised candidate.
    pub fn observe(&mut self, action: &Action, now: DateTime<Utc>) -> Option<ProblemCandidate> {
        if self.threshold == 0 || !matches!(action.kind, ActionKind::Open | ActionKind::Reopen) {
            return None;
        }
        let inc = &action.incident;
        let ci = inc.root_cause.as_ref().or(inc.ci.as_ref())?.id.clone();
        let cutoff = now - self.period;
        let list = self.openings.entry(ci.clone()).or_default();
        list.push_back((now, inc.key.clone()));
        while list.front().is_some_and(|(t, _)| *t < cutoff) {
            list.pop_front();
        }
        if list.len() < self.threshold || self.raised.get(&ci).is_some_and(|p| p.raised_at >= cutoff) {
            return None;
        }
        let incidents: Vec<String> = list.iter().map(|(_, k)| k.clone()).collect();
        let first = list.front().map_or(now, |(t, _)| *t);
        let candidate = ProblemCandidate {
            id: format!("prb-{:016x}", fnv1a(format!("{ci}|{}", incidents[0]).as_bytes())),
            ci: ci.clone(),
            reason: format!(
                "{} incident openings or reopenings ({} distinct incidents) with root cause {ci} within {} (threshold {})",
                incidents.len(),
                incidents.iter().collect::<std::collections::BTreeSet<_>>().len(),
                crate::duration::format_span(self.period),
                self.threshold
            ),
            incidents,
            first,
            last: now,
            raised_at: now,
        };
        self.raised.insert(ci, candidate.clone());
        Some(candidate)
    }

    /// Candidates raised within the last period, newest first.
    pub fn current(&mut self, now: DateTime<Utc>) -> Vec<ProblemCandidate> {
        let cutoff = now - self.period;
        self.raised.retain(|_, p| p.raised_at >= cutoff);
        self.openings.retain(|_, l| l.back().is_some_and(|(t, _)| *t >= cutoff));
        let mut v: Vec<ProblemCandidate> = self.raised.values().cloned().collect();
        v.sort_by(|a, b| b.raised_at.cmp(&a.raised_at).then_with(|| a.ci.cmp(&b.ci)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{CiRef, IncidentState};
    use chrono::TimeZone;

    fn action(kind: ActionKind, key: &str, root: &str) -> Action {
        let mut a = crate::incident::test_support::action(1, kind, key);
        a.incident.scope = format!("topology:{root}");
        a.incident.state = IncidentState::Open;
        a.incident.resolved_at = None;
        a.incident.event_count = 1;
        a.incident.root_cause = Some(CiRef { id: root.into(), name: root.into(), kind: "switch".into() });
        a
    }

    fn at(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap() + chrono::Duration::hours(h)
    }

    #[test]
    fn raised_once_when_the_threshold_is_reached_within_the_period() {
        let mut t = ProblemTracker::new(3, std::time::Duration::from_secs(24 * 3600));
        assert_eq!(t.observe(&action(ActionKind::Open, "k1", "sw-1"), at(0)), None);
        assert_eq!(t.observe(&action(ActionKind::Update, "k1", "sw-1"), at(1)), None, "updates do not count");
        assert_eq!(t.observe(&action(ActionKind::Open, "k9", "sw-2"), at(1)), None, "another CI");
        assert_eq!(t.observe(&action(ActionKind::Reopen, "k1", "sw-1"), at(2)), None);
        let p = t.observe(&action(ActionKind::Open, "k2", "sw-1"), at(3)).expect("third opening raises");
        assert_eq!((p.ci.as_str(), p.incidents.len(), p.first, p.last), ("sw-1", 3, at(0), at(3)));
        assert!(
            p.id.starts_with("prb-")
                && p.reason.contains("3 incident openings or reopenings (2 distinct incidents)")
                && p.reason.contains("1d"),
            "{p:?}"
        );
        assert_eq!(t.observe(&action(ActionKind::Open, "k3", "sw-1"), at(4)), None, "once per period");
        assert_eq!(t.current(at(5)).len(), 1);
        assert!(t.current(at(28)).is_empty(), "expires after the period");
    }

    #[test]
    fn openings_outside_the_period_do_not_count() {
        let mut t = ProblemTracker::new(2, std::time::Duration::from_secs(3600));
        assert_eq!(t.observe(&action(ActionKind::Open, "k1", "db-1"), at(0)), None);
        assert_eq!(t.observe(&action(ActionKind::Open, "k2", "db-1"), at(2)), None, "the first is two hours old");
        assert!(t.observe(&action(ActionKind::Open, "k3", "db-1"), at(2)).is_some());
    }

    #[test]
    fn threshold_zero_disables() {
        let mut t = ProblemTracker::new(0, std::time::Duration::from_secs(3600));
        for i in 0..5 {
            assert_eq!(t.observe(&action(ActionKind::Open, &format!("k{i}"), "x"), at(0)), None);
        }
    }
}
