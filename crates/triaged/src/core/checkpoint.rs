//! The core's live state as changelog records, and back.
//!
//! One record per incident, keyed by its correlation scope (`topology:sw-1`,
//! `group:…`, `fingerprint:…`), holding the incident, its members'
//! fingerprints and the topology state of its CIs; fingerprints that belong
//! to no incident get a record of their own. CIs are named by id, so a record
//! survives a CMDB reload or another instance's CMDB order. Taken only while
//! no action is in flight, so every action the state says was sent was
//! acknowledged.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Active, Core, Fp, Inc, Phase, Scope};
use crate::event::Severity;
use crate::topology::Snapshot;

/// Version of the record format; records of another version are skipped.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct IncRecord {
    v: u32,
    key: Option<String>,
    scope: Scope,
    root: Option<String>,
    members: BTreeSet<String>,
    phase: Phase,
    created: DateTime<Utc>,
    last_activity: DateTime<Utc>,
    opened_at: Option<DateTime<Utc>>,
    last_sent: Option<DateTime<Utc>>,
    dirty: bool,
    notes: Vec<String>,
    reasons: Vec<String>,
    sent_priority: Option<u8>,
    merged: bool,
    fingerprints: Vec<FpRecord>,
    active: Vec<ActiveRecord>,
}

#[derive(Serialize, Deserialize)]
struct FpRecord {
    key: String,
    source: String,
    check: String,
    summary: String,
    severity: Severity,
    firing: bool,
    ci: Option<String>,
    count: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    episode_start: DateTime<Utc>,
    topology: bool,
    changes: VecDeque<DateTime<Utc>>,
    flapping: bool,
    flap_noted: bool,
}

#[derive(Serialize, Deserialize)]
struct ActiveRecord {
    ci: String,
    firing: u32,
    seen: DateTime<Utc>,
    cleared_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct OrphanRecord {
    v: u32,
    fingerprint: FpRecord,
}

fn fp_record(cmdb: &Snapshot, key: &str, f: &Fp) -> FpRecord {
    FpRecord {
        key: key.to_owned(),
        source: f.source.clone(),
        check: f.check.clone(),
        summary: f.summary.clone(),
        severity: f.severity,
        firing: f.firing,
        ci: f.ci.map(|c| cmdb.ci(c).id.clone()),
        count: f.count,
        first_seen: f.first_seen,
        last_seen: f.last_seen,
        episode_start: f.episode_start,
        topology: f.topology,
        changes: f.changes.clone(),
        flapping: f.flapping,
        flap_noted: f.flap_noted,
    }
}

fn fp_from(cmdb: &Snapshot, r: FpRecord, incident: Option<u64>) -> (String, Fp) {
    let fp = Fp {
        source: r.source,
        check: r.check,
        summary: r.summary,
        severity: r.severity,
        firing: r.firing,
        ci: r.ci.as_deref().and_then(|id| cmdb.by_id(id)),
        count: r.count,
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        episode_start: r.episode_start,
        incident,
        topology: r.topology,
        // Offsets before the checkpoint are settled by the changelog.
        holds: Vec::new(),
        changes: r.changes,
        flapping: r.flapping,
        flap_noted: r.flap_noted,
    };
    (r.key, fp)
}

impl Core {
    /// Whether no action is waiting or in flight: the state is then a
    /// consistent checkpoint.
    pub fn is_settled(&self) -> bool {
        self.outbox.is_empty() && self.inflight.is_empty()
    }

    /// Every live incident (and fingerprint of none) as a changelog record.
    pub fn checkpoint(&self) -> Vec<(String, Vec<u8>)> {
        let cmdb = &self.cmdb;
        let mut out = Vec::with_capacity(self.incidents.len());
        let mut owned: HashMap<u64, Vec<ActiveRecord>> = HashMap::new();
        for (ci, a) in &self.ci_active {
            owned.entry(a.incident).or_default().push(ActiveRecord {
                ci: cmdb.ci(*ci).id.clone(),
                firing: a.firing,
                seen: a.seen,
                cleared_at: a.cleared_at,
            });
        }
        for (id, inc) in &self.incidents {
            let fingerprints = inc
                .members
                .iter()
                .filter_map(|m| self.fps.get(m).filter(|f| f.incident == Some(*id)).map(|f| fp_record(cmdb, m, f)))
                .collect();
            let mut active = owned.remove(id).unwrap_or_default();
            active.sort_by(|a, b| a.ci.cmp(&b.ci));
            let rec = IncRecord {
                v: VERSION,
                key: inc.key.clone(),
                scope: inc.scope.clone(),
                root: inc.root.map(|c| cmdb.ci(c).id.clone()),
                members: inc.members.clone(),
                phase: inc.phase,
                created: inc.created,
                last_activity: inc.last_activity,
                opened_at: inc.opened_at,
                last_sent: inc.last_sent,
                dirty: inc.dirty,
                notes: inc.notes.clone(),
                reasons: inc.reasons.clone(),
                sent_priority: inc.sent_priority,
                merged: inc.merged,
                fingerprints,
                active,
            };
            out.push((inc.scope.text(), serde_json::to_vec(&rec).expect("records serialize")));
        }
        for (key, f) in &self.fps {
            if f.incident.is_none_or(|i| !self.incidents.contains_key(&i)) {
                let rec = OrphanRecord { v: VERSION, fingerprint: fp_record(cmdb, key, f) };
                out.push((format!("orphan:{key}"), serde_json::to_vec(&rec).expect("records serialize")));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Loads checkpoint records into an empty core. Returns how many
    /// incidents were restored, and the records that could not be read
    /// (key and why), which are left out.
    pub fn restore(&mut self, records: &[(String, Vec<u8>)]) -> (usize, Vec<(String, String)>) {
        let mut bad = Vec::new();
        let mut incidents = Vec::new();
        for (key, value) in records {
            if key.starts_with("orphan:") {
                match serde_json::from_slice::<OrphanRecord>(value) {
                    Ok(r) if r.v == VERSION => {
                        let (k, fp) = fp_from(&self.cmdb, r.fingerprint, None);
                        self.fps.insert(k, fp);
                    }
                    Ok(r) => bad.push((key.clone(), format!("record version {} (expected {VERSION})", r.v))),
                    Err(e) => bad.push((key.clone(), e.to_string())),
                }
                continue;
            }
            match serde_json::from_slice::<IncRecord>(value) {
                Ok(r) if r.v == VERSION => incidents.push(r),
                Ok(r) => bad.push((key.clone(), format!("record version {} (expected {VERSION})", r.v))),
                Err(e) => bad.push((key.clone(), e.to_string())),
            }
        }
        // Internal ids in creation order, which is the order timers run in.
        incidents.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.scope.text().cmp(&b.scope.text())));
        let restored = incidents.len();
        for r in incidents {
            let id = self.next_incident;
            self.next_incident += 1;
            for f in r.fingerprints {
                let (k, fp) = fp_from(&self.cmdb, f, Some(id));
                self.fps.insert(k, fp);
            }
            for a in r.active {
                if let Some(ci) = self.cmdb.by_id(&a.ci) {
                    self.ci_active.insert(ci, Active { firing: a.firing, seen: a.seen, cleared_at: a.cleared_at, incident: id });
                }
            }
            self.by_scope.insert(r.scope.clone(), id);
            self.incidents.insert(
                id,
                Inc {
                    key: r.key,
                    scope: r.scope,
                    root: r.root.as_deref().and_then(|c| self.cmdb.by_id(c)),
                    members: r.members,
                    phase: r.phase,
                    created: r.created,
                    last_activity: r.last_activity,
                    opened_at: r.opened_at,
                    last_sent: r.last_sent,
                    dirty: r.dirty,
                    notes: r.notes,
                    reasons: r.reasons,
                    inflight: 0,
                    sent_priority: r.sent_priority,
                    merged: r.merged,
                },
            );
        }
        (restored, bad)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::config::CorrelationConfig;
    use crate::core::CoreConfig;
    use crate::event::{Event, Status};
    use crate::incident::Action;
    use crate::rules::RuleSet;

    const CMDB: &str = r#"
cis:
  - { id: sw-1, name: sw-1, type: switch }
  - { id: web-1, name: web-1, type: vm, connects_to: [sw-1] }
  - { id: web-2, name: web-2, type: vm, connects_to: [sw-1] }
  - { id: db-1, name: db-1, type: database }
"#;
    const RULES: &str = "rules:\n  - name: topo\n    match: {}\n    correlate: { topology: true, window: 5m }\n";

    fn core() -> Core {
        let cmdb = Snapshot::from_str(Path::new("cmdb.yaml"), CMDB, false).unwrap();
        let rules = RuleSet::from_texts(&[(PathBuf::from("r.yaml"), RULES.into())]).unwrap();
        Core::new(CoreConfig::from_config(&CorrelationConfig::default()), Arc::new(rules), Arc::new(cmdb))
    }

    fn ev(host: &str, status: Status, at: DateTime<Utc>) -> Event {
        Event::host_down(host, status, at)
    }

    /// Ticks at `at` and acknowledges what the tick decided.
    fn settle(c: &mut Core, at: DateTime<Utc>) -> Vec<Action> {
        c.tick(at);
        let actions = c.take_actions();
        for a in &actions {
            c.ack(a.id);
        }
        actions
    }

    fn shape(actions: &[Action]) -> Vec<(String, String, usize, crate::incident::IncidentState)> {
        actions.iter().map(|a| (a.kind.as_str().to_owned(), a.incident.key.clone(), a.incident.members.len(), a.incident.state)).collect()
    }

    #[test]
    fn a_restored_core_carries_on_exactly_like_the_original() {
        let t0 = Utc::now();
        let s = chrono::Duration::seconds;
        let mut a = core();
        for (host, at) in [("web-1", 0), ("web-2", 1), ("sw-1", 2), ("db-1", 3), ("web-1", 4)] {
            a.handle(&ev(host, Status::Firing, t0 + s(at)), t0 + s(at));
        }
        let opened = settle(&mut a, t0 + s(40));
        assert_eq!(opened.len(), 2, "the switch storm and the database");
        a.handle(&ev("web-2", Status::Resolved, t0 + s(50)), t0 + s(50));
        assert!(a.is_settled());
        let records = a.checkpoint();
        assert_eq!(records.len(), 2);
        assert!(records.iter().any(|(k, _)| k == "topology:sw-1"), "{:?}", records.iter().map(|r| &r.0).collect::<Vec<_>>());

        let mut b = core();
        let (restored, bad) = b.restore(&records);
        assert_eq!((restored, bad.len()), (2, 0));
        assert_eq!(b.fingerprint_count(), a.fingerprint_count());
        assert_eq!(b.open_incidents(), a.open_incidents());
        assert_eq!(b.checkpoint(), records, "a restored core checkpoints to the same records");

        // The same events from here on give the same actions.
        for c in [&mut a, &mut b] {
            c.handle(&ev("web-3-unknown", Status::Firing, t0 + s(60)), t0 + s(60));
            for host in ["sw-1", "web-1", "db-1"] {
                c.handle(&ev(host, Status::Resolved, t0 + s(70)), t0 + s(70));
            }
        }
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        for at in [80, 120, 200, 400, 4000] {
            got_a.extend(settle(&mut a, t0 + s(at)));
            got_b.extend(settle(&mut b, t0 + s(at)));
        }
        assert!(got_a.iter().any(|x| x.kind == crate::incident::ActionKind::Resolve));
        assert_eq!(shape(&got_b), shape(&got_a));
        assert_eq!(b.fingerprint_count(), a.fingerprint_count());
    }

    #[test]
    fn unreadable_records_are_named_and_skipped() {
        let mut c = core();
        let (n, bad) = c.restore(&[("topology:x".into(), b"{not json".to_vec()), ("group:y".into(), br#"{"v": 99}"#.to_vec())]);
        assert_eq!(n, 0);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0, "topology:x");
        assert_eq!(c.fingerprint_count(), 0);
    }
}
