//! The core's live state as changelog records, and back.
//!
//! One record per incident, keyed by its ITSM key once it has one
//! (`incident:trg-…`) and by its correlation scope before (`topology:sw-1`,
//! `group:…`, `fingerprint:…`), holding the incident, its members'
//! fingerprints and the topology state of its CIs; fingerprints that belong
//! to no incident get a record of their own. CIs are named by id, so a record
//! survives a CMDB reload or another instance's CMDB order.
//!
//! A checkpoint can be taken at any time: an incident records the latest
//! action decided and not yet acknowledged (`pending`) and the last one the
//! ITSM acknowledged, and a restored incident sends its pending action again.
//! What changed is tracked as it changes ([`Changes`]), so a checkpoint costs
//! what changed, not the size of the state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::keys::fnv1a;
use super::{Active, Core, EarlyResolve, Fp, Inc};
use crate::incident::ActionKind;
use crate::topology::{CiIdx, Snapshot};

/// Version of the record format; records of another version are skipped.
const VERSION: u32 = 1;

/// An incident's record: the incident, its members' fingerprints and the
/// topology state of its CIs, CIs named by id.
#[derive(Serialize, Deserialize)]
struct IncRecord {
    v: u32,
    #[serde(flatten)]
    inc: Inc<String>,
    fingerprints: Vec<FpRecord>,
    active: Vec<ActiveRecord>,
}

/// A fingerprint and its key.
#[derive(Serialize, Deserialize)]
struct FpRecord {
    key: String,
    #[serde(flatten)]
    fp: Fp<String>,
}

/// The topology state of one CI, named by id.
#[derive(Serialize, Deserialize)]
struct ActiveRecord {
    ci: String,
    #[serde(flatten)]
    active: Active,
}

/// A fingerprint of no incident.
#[derive(Serialize, Deserialize)]
struct OrphanRecord {
    v: u32,
    fingerprint: FpRecord,
}

/// A resolve held for its late firing (key `resolve:<fingerprint>`).
#[derive(Serialize, Deserialize)]
struct EarlyRecord {
    v: u32,
    #[serde(flatten)]
    early: EarlyResolve,
}

const EARLY_PREFIX: &str = "resolve:";

fn early_record(e: &EarlyResolve) -> Vec<u8> {
    serde_json::to_vec(&EarlyRecord { v: VERSION, early: *e }).expect("records serialize")
}

impl<C> Fp<C> {
    /// The same fingerprint with its CI named by `ci` (none when it gives none).
    fn map_ci<D>(self, ci: impl FnOnce(C) -> Option<D>) -> Fp<D> {
        Fp {
            source: self.source,
            check: self.check,
            summary: self.summary,
            severity: self.severity,
            firing: self.firing,
            ci: self.ci.and_then(ci),
            count: self.count,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            episode_start: self.episode_start,
            incident: self.incident,
            topology: self.topology,
            holds: self.holds,
            changes: self.changes,
            flapping: self.flapping,
            flap_noted: self.flap_noted,
            expires: self.expires,
            cleared_at: self.cleared_at,
        }
    }
}

impl<C> Inc<C> {
    /// The same incident with its root CI named by `ci` (none when it gives none).
    fn map_ci<D>(self, ci: impl FnOnce(C) -> Option<D>) -> Inc<D> {
        Inc {
            key: self.key,
            scope: self.scope,
            root: self.root.and_then(ci),
            members: self.members,
            phase: self.phase,
            created: self.created,
            last_activity: self.last_activity,
            opened_at: self.opened_at,
            last_sent: self.last_sent,
            dirty: self.dirty,
            notes: self.notes,
            reasons: self.reasons,
            inflight: self.inflight,
            sent_priority: self.sent_priority,
            peak_priority: self.peak_priority,
            merged: self.merged,
            frozen: self.frozen,
            pending: self.pending,
            acked: self.acked,
            last_action: self.last_action,
            failed_group: self.failed_group,
            remote: self.remote,
            generation: self.generation,
        }
    }
}

/// The CI id of `idx`, for a record.
fn ci_id(cmdb: &Snapshot, idx: CiIdx) -> Option<String> {
    Some(cmdb.ci(idx).id.clone())
}

fn fp_record(cmdb: &Snapshot, key: &str, f: &Fp) -> FpRecord {
    FpRecord { key: key.to_owned(), fp: f.clone().map_ci(|c| ci_id(cmdb, c)) }
}

/// The live fingerprint of a record, member of `incident`. CIs no longer in
/// `cmdb` leave it unbound.
fn fp_from(cmdb: &Snapshot, r: FpRecord, incident: Option<u64>) -> (String, Fp) {
    let fp = Fp { incident, ..r.fp.map_ci(|id| cmdb.by_id(&id)) };
    (r.key, fp)
}

/// What changed since the last checkpoint, and what the changelog holds.
#[derive(Debug, Default)]
pub(super) struct Changes {
    incidents: HashSet<u64>,
    fingerprints: HashSet<String>,
    /// Held resolves, by fingerprint.
    early: HashSet<String>,
    /// Every record may have changed (a CMDB swap re-binds all).
    everything: bool,
    /// The record key each incident was last written under.
    written_as: HashMap<u64, String>,
    /// Digest of each record the changelog holds for this core.
    written: HashMap<String, u64>,
}

impl Changes {
    pub(super) fn incident(&mut self, id: u64) {
        self.incidents.insert(id);
    }

    pub(super) fn fingerprint(&mut self, key: &str) {
        if !self.fingerprints.contains(key) {
            self.fingerprints.insert(key.to_owned());
        }
    }

    pub(super) fn early(&mut self, key: &str) {
        if !self.early.contains(key) {
            self.early.insert(key.to_owned());
        }
    }

    pub(super) fn everything(&mut self) {
        self.everything = true;
    }
}

/// The records that changed since the last checkpoint; `None` deletes the
/// key (tombstone). Hand it back with [`Core::delta_written`] once durable.
#[derive(Debug, Default)]
pub struct Delta {
    pub records: Vec<(String, Option<Vec<u8>>)>,
    written_as: Vec<(u64, Option<String>)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// An action a restored incident still owes the ITSM.
const RESENT_NOTE: &str = "sent again after a restart: the ITSM's answer to it was not recorded";

impl Core {
    /// The record key of incident `inc`.
    fn record_key(inc: &Inc) -> String {
        match &inc.key {
            Some(k) => format!("incident:{k}"),
            None => inc.scope.text(),
        }
    }

    /// Topology state records per incident.
    fn active_records(&self) -> HashMap<u64, Vec<ActiveRecord>> {
        let mut owned: HashMap<u64, Vec<ActiveRecord>> = HashMap::new();
        for (ci, a) in &self.ci_active {
            owned.entry(a.incident).or_default().push(ActiveRecord { ci: self.cmdb.ci(*ci).id.clone(), active: *a });
        }
        owned
    }

    fn incident_record(&self, id: u64, inc: &Inc, owned: &mut HashMap<u64, Vec<ActiveRecord>>) -> (String, Vec<u8>) {
        let cmdb = &self.cmdb;
        let fingerprints =
            inc.members.iter().filter_map(|m| self.fps.get(m).filter(|f| f.incident == Some(id)).map(|f| fp_record(cmdb, m, f))).collect();
        let mut active = owned.remove(&id).unwrap_or_default();
        active.sort_by(|a, b| a.ci.cmp(&b.ci));
        let rec = IncRecord { v: VERSION, inc: inc.clone().map_ci(|c| ci_id(cmdb, c)), fingerprints, active };
        (Core::record_key(inc), serde_json::to_vec(&rec).expect("records serialize"))
    }

    fn is_orphan(&self, f: &Fp) -> bool {
        f.incident.is_none_or(|i| !self.incidents.contains_key(&i))
    }

    /// Every live incident (and fingerprint of none) as a changelog record.
    pub fn checkpoint(&self) -> Vec<(String, Vec<u8>)> {
        let mut owned = self.active_records();
        let mut out = Vec::with_capacity(self.incidents.len());
        for (id, inc) in &self.incidents {
            out.push(self.incident_record(*id, inc, &mut owned));
        }
        for (key, f) in &self.fps {
            if self.is_orphan(f) {
                let rec = OrphanRecord { v: VERSION, fingerprint: fp_record(&self.cmdb, key, f) };
                out.push((format!("orphan:{key}"), serde_json::to_vec(&rec).expect("records serialize")));
            }
        }
        out.extend(self.early.iter().map(|(k, e)| (format!("{EARLY_PREFIX}{k}"), early_record(e))));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The records that changed since the last [`Core::delta_written`]:
    /// only what was touched is serialized.
    pub fn delta(&self) -> Delta {
        let ch = &self.changes;
        let mut out: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut written_as = Vec::new();
        if ch.everything {
            let now = self.checkpoint();
            for k in ch.written.keys() {
                out.insert(k.clone(), None);
            }
            out.extend(now.into_iter().map(|(k, v)| (k, Some(v))));
            written_as.extend(self.incidents.iter().map(|(id, inc)| (*id, Some(Core::record_key(inc)))));
            written_as.extend(ch.written_as.keys().filter(|id| !self.incidents.contains_key(id)).map(|id| (*id, None)));
        } else {
            let mut ids: BTreeSet<u64> = ch.incidents.iter().copied().collect();
            for k in &ch.fingerprints {
                if let Some(i) = self.fps.get(k).and_then(|f| f.incident).filter(|i| self.incidents.contains_key(i)) {
                    ids.insert(i);
                }
            }
            // Tombstones first: a key given up by one incident may be taken by another.
            for id in &ids {
                let key = self.incidents.get(id).map(Core::record_key);
                if let Some(old) = ch.written_as.get(id).filter(|old| Some(*old) != key.as_ref()) {
                    out.insert(old.clone(), None);
                }
                written_as.push((*id, key));
            }
            let mut owned = if ids.is_empty() { HashMap::new() } else { self.active_records() };
            for id in &ids {
                if let Some(inc) = self.incidents.get(id) {
                    let (k, v) = self.incident_record(*id, inc, &mut owned);
                    out.insert(k, Some(v));
                }
            }
            for k in &ch.fingerprints {
                let key = format!("orphan:{k}");
                match self.fps.get(k).filter(|f| self.is_orphan(f)) {
                    Some(f) => {
                        let rec = OrphanRecord { v: VERSION, fingerprint: fp_record(&self.cmdb, k, f) };
                        out.insert(key, Some(serde_json::to_vec(&rec).expect("records serialize")));
                    }
                    None => {
                        out.entry(key).or_insert(None);
                    }
                }
            }
            for k in &ch.early {
                out.insert(format!("{EARLY_PREFIX}{k}"), self.early.get(k).map(early_record));
            }
        }
        // What the changelog already holds is not written again.
        let records = out
            .into_iter()
            .filter(|(k, v)| match v {
                Some(v) => ch.written.get(k) != Some(&fnv1a(v)),
                None => ch.written.contains_key(k),
            })
            .collect();
        Delta { records, written_as }
    }

    /// `d` (from [`Core::delta`], with nothing changed since) is durable.
    pub fn delta_written(&mut self, d: Delta) {
        let ch = &mut self.changes;
        for (k, v) in d.records {
            match v {
                Some(v) => ch.written.insert(k, fnv1a(&v)),
                None => ch.written.remove(&k),
            };
        }
        for (id, key) in d.written_as {
            match key {
                Some(k) => ch.written_as.insert(id, k),
                None => ch.written_as.remove(&id),
            };
        }
        ch.incidents.clear();
        ch.fingerprints.clear();
        ch.early.clear();
        ch.everything = false;
    }

    /// Whether anything changed since the last checkpoint.
    pub fn has_changes(&self) -> bool {
        let ch = &self.changes;
        ch.everything || !ch.incidents.is_empty() || !ch.fingerprints.is_empty() || !ch.early.is_empty()
    }

    /// Actions decided and not yet taken.
    pub fn waiting_actions(&self) -> usize {
        self.outbox.len()
    }

    /// Loads checkpoint records into an empty core. Returns how many
    /// incidents were restored, and the records that could not be read
    /// (key and why), which are left out.
    pub fn restore(&mut self, records: &[(String, Vec<u8>)]) -> (usize, Vec<(String, String)>) {
        let mut bad = Vec::new();
        let mut incidents = Vec::new();
        for (key, value) in records {
            if let Some(fp) = key.strip_prefix(EARLY_PREFIX) {
                match serde_json::from_slice::<EarlyRecord>(value) {
                    Ok(r) if r.v == VERSION => {
                        self.early.insert(fp.to_owned(), r.early);
                    }
                    Ok(r) => bad.push((key.clone(), format!("record version {} (expected {VERSION})", r.v))),
                    Err(e) => bad.push((key.clone(), e.to_string())),
                }
                continue;
            }
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
        incidents.sort_by(|a, b| a.inc.created.cmp(&b.inc.created).then_with(|| a.inc.scope.text().cmp(&b.inc.scope.text())));
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
                    self.ci_active.insert(ci, Active { incident: id, ..a.active });
                }
            }
            if !r.inc.merged {
                self.by_scope.insert(r.inc.scope.clone(), id);
            }
            let inc = r.inc.map_ci(|c| self.cmdb.by_id(&c));
            self.changes.written_as.insert(id, Core::record_key(&inc));
            let owed = inc.pending;
            let at = inc.last_sent.unwrap_or(inc.created);
            self.incidents.insert(id, inc);
            if let Some(kind) = owed {
                self.owe(id, kind, at);
            }
        }
        self.changes.written = records.iter().filter(|(k, _)| !k.starts_with("meta:")).map(|(k, v)| (k.clone(), fnv1a(v))).collect();
        self.changes.incidents.clear();
        self.changes.fingerprints.clear();
        self.changes.early.clear();
        let due: Vec<(chrono::DateTime<chrono::Utc>, String)> =
            self.fps.iter().filter(|(_, f)| f.firing).filter_map(|(k, f)| Some((f.expires?, k.clone()))).collect();
        self.expiry.extend(due.into_iter().map(std::cmp::Reverse));
        (restored, bad)
    }

    /// A restored incident still owes the ITSM its latest action: it is sent
    /// again, once, with the incident as it is now (re-sent actions are
    /// idempotent by key; profiles that can look up skip what the ITSM has).
    fn owe(&mut self, id: u64, kind: ActionKind, at: chrono::DateTime<chrono::Utc>) {
        self.incidents.get_mut(&id).expect("restored").notes.push(RESENT_NOTE.into());
        self.emit(id, kind, at);
        if let Some(a) = self.outbox.last_mut() {
            a.resent = true;
        }
        // Restoring alone changes nothing in the changelog.
        self.changes.incidents.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use chrono::{DateTime, Utc};

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

    /// A group that failed and recovered one member before a restart: the
    /// restored incident still carries the failed group and its priority.
    #[test]
    fn a_failed_redundancy_group_survives_a_restore() {
        const GROUPED: &str = "cis:\n  - { id: db-a, name: db-a, type: database, criticality: critical }\n  - { id: db-b, name: db-b, type: database, criticality: critical }\nredundancy_groups:\n  - { id: db, members: [db-a, db-b] }\n";
        let t0 = Utc::now();
        let s = chrono::Duration::seconds;
        let grouped = || {
            let cmdb = Snapshot::from_str(Path::new("cmdb.yaml"), GROUPED, false).unwrap();
            let rules = RuleSet::from_texts(&[(PathBuf::from("r.yaml"), RULES.into())]).unwrap();
            Core::new(CoreConfig::from_config(&CorrelationConfig::default()), Arc::new(rules), Arc::new(cmdb))
        };
        let mut a = grouped();
        a.handle(&ev("db-a", Status::Firing, t0), t0);
        a.handle(&ev("db-b", Status::Firing, t0 + s(5)), t0 + s(5));
        let opened = settle(&mut a, t0 + s(40));
        assert_eq!(opened.len(), 1, "one incident for the group");
        let group = |a: &Action| a.incident.redundancy_group.as_ref().map(|g| (g.id.clone(), g.failed));
        assert_eq!((opened[0].incident.priority, group(&opened[0])), (1, Some(("db".into(), true))));
        a.handle(&ev("db-b", Status::Resolved, t0 + s(50)), t0 + s(50));

        let mut b = grouped();
        let (restored, bad) = b.restore(&a.checkpoint());
        assert_eq!((restored, bad.len()), (1, 0));
        b.handle(&ev("db-a", Status::Firing, t0 + s(60)), t0 + s(60));
        let later = settle(&mut b, t0 + s(400));
        assert!(!later.is_empty());
        for act in &later {
            assert_eq!((act.incident.priority, group(act)), (1, Some(("db".into(), true))), "{:?}", act.kind);
        }
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
        let records = a.checkpoint();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|(k, _)| k.starts_with("incident:trg-")), "{:?}", records.iter().map(|r| &r.0).collect::<Vec<_>>());

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
    fn a_resolve_held_for_its_late_firing_survives_a_restart() {
        let t0 = Utc::now();
        let s = chrono::Duration::seconds;
        let mut a = core();
        a.handle(&ev("web-1", Status::Resolved, t0 + s(10)), t0 + s(10));
        let records = a.checkpoint();
        assert_eq!(records.len(), 1);
        assert!(records[0].0.starts_with("resolve:"), "{}", records[0].0);
        let mut b = core();
        b.restore(&records);
        let d = b.handle(&ev("web-1", Status::Firing, t0 + s(2)), t0 + s(20));
        assert_eq!(d.kind, crate::core::DecisionKind::Cleared, "{}", d.reason);
        assert!(b.checkpoint().is_empty(), "the held resolve is used up");
        // Not used: it expires after max_lateness.
        let mut c = core();
        c.restore(&records);
        c.tick(t0 + s(10) + chrono::Duration::minutes(3));
        assert!(c.checkpoint().is_empty());
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
