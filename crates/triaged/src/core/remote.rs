//! What people do at the ITSM, read back (polled by key, or pushed by a
//! signed webhook) and acted on: an acknowledgement is recorded and repeat
//! notes stop; a record closed while its alerts still fire is reopened, or
//! replaced by a new one, or left closed with a note, by the sink's
//! `closed_while_firing` policy; a priority or assignment a person changed is
//! theirs from then on. All of it lives in the incident's state
//! ([`SinkView`]), so it survives restarts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::keys::fnv1a;
use super::{Core, Inc, Phase};
use crate::incident::{Acknowledgement, ActionKind, HumanOwned};

/// What a read-back saw of an incident's record at one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The sink's name.
    pub sink: String,
    /// The incident key the record is under.
    pub key: String,
    pub state: SeenState,
    /// The person who holds it, when the ITSM says.
    pub assignee: Option<String>,
    /// The record's priority, 1..5.
    pub priority: Option<u8>,
    /// The record's assignment group or queue.
    pub group: Option<String>,
    /// When the ITSM says the record was closed, if it is and it says.
    pub closed_at: Option<DateTime<Utc>>,
    /// `poll` or `webhook`, for the reasons.
    pub via: &'static str,
}

/// The record's state as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenState {
    Open,
    /// Open, and someone took it.
    Acknowledged,
    /// Resolved, closed or canceled there.
    Closed,
    /// No record under the key.
    Missing,
}

/// What to do when a person closes a record whose alerts still fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedPolicy {
    /// Reopen the record, with a note saying which alerts still fire, when it
    /// was closed within `reopen_window`; past it, open a new record.
    #[default]
    Reopen,
    /// Open a new record (a new key) and leave the closed one closed.
    New,
    /// Add one note to the closed record, then leave it closed.
    Note,
}

impl ClosedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedPolicy::Reopen => "reopen",
            ClosedPolicy::New => "new",
            ClosedPolicy::Note => "note",
        }
    }
}

/// What triaged knows of the incident's record at one sink. Checkpointed
/// with the incident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SinkView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acked_by: Option<String>,
    /// Times triaged reopened the record after a person closed it.
    #[serde(default)]
    reopened: u32,
    #[serde(default)]
    owned: HumanOwned,
    /// The record's priority when last read, and what triaged had sent then:
    /// a change at the ITSM while triaged sent none is a person's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen_priority: Option<(u8, Option<u8>)>,
    /// Likewise for the assignment group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen_group: Option<(String, Option<String>)>,
}

/// What an observation changed, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// First acknowledgement, this long after the incident opened.
    Acknowledged { by: Option<String>, after: chrono::Duration },
    /// Closed by a person while firing; triaged reopened it.
    Reopened,
    /// Closed by a person while firing; triaged opened a new record.
    NewRecord { old: String, new: String },
    /// Closed by a person; triaged leaves it closed (one note, or none).
    LeftClosed { noted: bool },
    /// A person changed the priority; triaged no longer writes it there.
    PriorityOwned { to: u8 },
    /// A person changed the assignment group; likewise.
    AssignmentOwned { to: String },
    /// The record is gone; the incident was opened again.
    OpenedAgain,
}

impl Outcome {
    /// Label value for `triaged_itsm_readback_total{outcome}`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Acknowledged { .. } => "acknowledged",
            Outcome::Reopened => "reopened",
            Outcome::NewRecord { .. } => "new_record",
            Outcome::LeftClosed { .. } => "left_closed",
            Outcome::PriorityOwned { .. } => "priority_owned",
            Outcome::AssignmentOwned { .. } => "assignment_owned",
            Outcome::OpenedAgain => "opened_again",
        }
    }
}

/// A record this young that reads back missing may not be created yet
/// (some ITSMs create asynchronously): it is not opened again.
const MISSING_GRACE: chrono::Duration = chrono::Duration::minutes(2);

impl Inc {
    /// Someone took the incident at some sink.
    pub(super) fn acknowledged(&self) -> bool {
        self.remote.values().any(|v| v.acked_at.is_some())
    }
}

impl<C> Inc<C> {
    /// Per sink, what people own of the record (only sinks where they own something).
    pub(super) fn human_owned(&self) -> std::collections::BTreeMap<String, HumanOwned> {
        self.remote.iter().filter(|(_, v)| v.owned != HumanOwned::default()).map(|(k, v)| (k.clone(), v.owned)).collect()
    }

    /// The first acknowledgement read back, if any.
    pub(super) fn first_ack(&self) -> Option<Acknowledgement> {
        self.remote
            .iter()
            .filter_map(|(sink, v)| v.acked_at.map(|at| Acknowledgement { sink: sink.clone(), by: v.acked_by.clone(), at }))
            .min_by_key(|a| a.at)
    }
}

impl Core {
    /// Acts on what a read-back saw of incident `o.key` at sink `o.sink`.
    /// Observations of an incident with an action in flight are ignored: the
    /// record may not show that action yet, and the next read judges it.
    pub fn observe(&mut self, o: &Observation, now: DateTime<Utc>) -> Vec<Outcome> {
        let found = self
            .incidents
            .iter()
            .find(|(_, i)| i.key.as_deref() == Some(o.key.as_str()) && matches!(i.phase, Phase::Open | Phase::Resolving { .. }))
            .map(|(id, _)| *id);
        let Some(id) = found else { return Vec::new() };
        if self.incidents[&id].inflight > 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        // What triaged sends as the group, only when there is one to compare.
        let snapshot_group = o.group.as_ref().and_then(|_| self.snapshot(id).assignment_group);
        let inc = self.incidents.get_mut(&id).expect("found above");
        let opened = inc.opened_at.unwrap_or(inc.created);
        let sent_priority = inc.sent_priority;
        let view = inc.remote.entry(o.sink.clone()).or_default();
        let mut notes = Vec::new();

        let taken = o.state == SeenState::Acknowledged;
        if taken && view.acked_at.is_none() {
            view.acked_at = Some(now);
            view.acked_by = o.assignee.clone();
            let by = o.assignee.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
            let after = now - opened;
            notes.push(format!(
                "acknowledged at {}{by}, {} after it opened ({}); repeat notes stop",
                o.sink,
                crate::duration::format_span(after),
                o.via
            ));
            out.push(Outcome::Acknowledged { by: o.assignee.clone(), after });
        }

        if let Some(p) = o.priority {
            if let Some((was, sent_then)) = view.seen_priority {
                if was != p && sent_then == sent_priority && !view.owned.priority {
                    view.owned.priority = true;
                    notes.push(format!("priority set to P{p} at {} by a person (was P{was}); triaged no longer writes it there", o.sink));
                    out.push(Outcome::PriorityOwned { to: p });
                }
            }
            view.seen_priority = Some((p, sent_priority));
        }
        if let Some(g) = &o.group {
            if let Some((was, sent_then)) = &view.seen_group {
                if was != g && *sent_then == snapshot_group && !view.owned.assignment {
                    view.owned.assignment = true;
                    notes.push(format!(
                        "reassigned at {} to {g} by a person (was {was}); triaged no longer writes the assignment there",
                        o.sink
                    ));
                    out.push(Outcome::AssignmentOwned { to: g.clone() });
                }
            }
            view.seen_group = Some((g.clone(), snapshot_group));
        }
        // Other sinks hear of it at the next update (a PagerDuty
        // acknowledgement becomes a work note in ServiceNow).
        inc.dirty |= !notes.is_empty();
        for n in notes {
            inc.reasons.push(n.clone());
            inc.notes.push(n);
        }
        self.changes.incident(id);

        match o.state {
            SeenState::Closed => out.extend(self.closed_at_itsm(id, o, now)),
            SeenState::Missing if now - opened >= MISSING_GRACE => {
                let why = format!("the record at {} is gone ({}); opened again", o.sink, o.via);
                if self.open_again(&o.key, &why, now) {
                    out.push(Outcome::OpenedAgain);
                }
            }
            _ => {}
        }
        out
    }

    /// A person closed incident `id`'s record at `o.sink` while triaged
    /// holds it open.
    fn closed_at_itsm(&mut self, id: u64, o: &Observation, now: DateTime<Utc>) -> Option<Outcome> {
        let policy = self.cfg.closed_while_firing.get(&o.sink).copied().unwrap_or_default();
        let window = self.cfg.reopen_window;
        let inc = self.incidents.get_mut(&id).expect("live incident");
        let view = inc.remote.entry(o.sink.clone()).or_default();
        if view.owned.closed {
            return None;
        }
        let sink = &o.sink;
        if let Phase::Resolving { .. } = inc.phase {
            // Every alert is clear: the person is ahead of the hold-down.
            view.owned.closed = true;
            let why = format!("closed at {sink} by a person while every alert was clear; left closed");
            inc.reasons.push(why);
            return Some(Outcome::LeftClosed { noted: false });
        }
        let firing = self.firing_members(id);
        let inc = self.incidents.get_mut(&id).expect("live incident");
        let view = inc.remote.entry(sink.clone()).or_default();
        if view.reopened > 0 {
            // Reopened once already and closed again: the person wins.
            view.owned.closed = true;
            let why = format!("closed again at {sink} after triaged reopened it; left closed, nothing more is written to it");
            inc.reasons.push(why);
            return Some(Outcome::LeftClosed { noted: false });
        }
        let closed_for = o.closed_at.map_or(chrono::Duration::zero(), |at| now - at);
        let policy = match policy {
            ClosedPolicy::Reopen if closed_for > window => ClosedPolicy::New,
            p => p,
        };
        let still = format!("{} alert(s) still fire: {}", firing.len(), firing.join(", "));
        match policy {
            ClosedPolicy::Reopen => {
                view.reopened += 1;
                let why = format!("closed at {sink} by a person while {still}; reopened (closed_while_firing = reopen)");
                inc.notes.push(why.clone());
                inc.reasons.push(why);
                self.emit(id, ActionKind::Reopen, now);
                Some(Outcome::Reopened)
            }
            ClosedPolicy::Note => {
                let why = format!(
                    "closed at {sink} by a person while {still}; left closed (closed_while_firing = note): this is the last note triaged writes to it"
                );
                inc.notes.push(why.clone());
                inc.reasons.push(why);
                // The note goes out before the record is marked left closed.
                self.emit(id, ActionKind::Update, now);
                let inc = self.incidents.get_mut(&id).expect("live incident");
                inc.remote.entry(sink.clone()).or_default().owned.closed = true;
                Some(Outcome::LeftClosed { noted: true })
            }
            ClosedPolicy::New => Some(self.new_record(id, sink, &still, now)),
        }
    }

    /// Replaces incident `id`'s records with new ones under a new key: the
    /// other sinks' records of the old key are resolved, the closed one is
    /// left alone.
    fn new_record(&mut self, id: u64, sink: &str, still: &str, now: DateTime<Utc>) -> Outcome {
        let inc = self.incidents.get_mut(&id).expect("live incident");
        let old = inc.key.clone().expect("an open incident has a key");
        inc.generation += 1;
        let new = format!("trg-{:016x}", fnv1a(format!("{old}|record {}", inc.generation).as_bytes()));
        inc.remote.entry(sink.to_owned()).or_default().owned.closed = true;
        inc.notes.push(format!("closed at {sink} by a person while {still}; continued as {new} (closed_while_firing = new)"));
        // The old records end as a resolve (the snapshot says resolved).
        inc.phase = Phase::Resolved { at: now };
        self.emit(id, ActionKind::Resolve, now);
        let inc = self.incidents.get_mut(&id).expect("live incident");
        inc.phase = Phase::Open;
        inc.key = Some(new.clone());
        inc.remote.clear();
        inc.opened_at = Some(now);
        let why = format!("continues {old}, whose record at {sink} a person closed while {still}");
        inc.notes.push(why.clone());
        inc.reasons.push(why);
        self.emit(id, ActionKind::Open, now);
        Outcome::NewRecord { old, new }
    }

    /// The fingerprints of incident `id` that fire.
    fn firing_members(&self, id: u64) -> Vec<String> {
        self.incidents[&id].members.iter().filter(|m| self.fps.get(*m).is_some_and(|f| f.firing)).cloned().collect()
    }

    /// Incident `id` resolved: a record a person closed agrees with it now,
    /// and a recurrence reopens it as usual.
    pub(super) fn resolved_at_itsm(&mut self, id: u64) {
        if let Some(inc) = self.incidents.get_mut(&id) {
            for v in inc.remote.values_mut() {
                v.owned.closed = false;
                v.reopened = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::config::CorrelationConfig;
    use crate::core::checkpoint::tests::settle;
    use crate::core::CoreConfig;
    use crate::event::{Event, Status};
    use crate::incident::Action;
    use crate::rules::RuleSet;
    use crate::topology::Snapshot;

    const CMDB: &str = "cis:\n  - { id: web-1, name: web-1, type: vm }\n  - { id: web-2, name: web-2, type: vm }\n";
    const RULES: &str = "rules:\n  - name: topo\n    match: {}\n    correlate: { topology: true, window: 5m }\n";
    const SN: &str = "servicenow";

    fn core_with(policy: Option<ClosedPolicy>) -> Core {
        let cmdb = Snapshot::from_str(Path::new("cmdb.yaml"), CMDB, false).unwrap();
        let rules = RuleSet::from_texts(&[(PathBuf::from("r.yaml"), RULES.into())]).unwrap();
        let mut cfg = CoreConfig::from_config(&CorrelationConfig::default());
        if let Some(p) = policy {
            cfg.closed_while_firing.insert(SN.into(), p);
        }
        Core::new(cfg, Arc::new(rules), Arc::new(cmdb))
    }

    fn s(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    /// A core with one open incident on web-1, its key, and the time it opened.
    fn opened(policy: Option<ClosedPolicy>) -> (Core, String, DateTime<Utc>) {
        let t0 = Utc::now();
        let mut c = core_with(policy);
        c.handle(&Event::host_down("web-1", Status::Firing, t0), t0);
        let open = settle(&mut c, t0 + s(40));
        assert_eq!(open.len(), 1);
        (c, open[0].incident.key.clone(), t0 + s(40))
    }

    fn seen(key: &str, state: SeenState) -> Observation {
        Observation { sink: SN.into(), key: key.into(), state, assignee: None, priority: None, group: None, closed_at: None, via: "poll" }
    }

    fn kinds(actions: &[Action]) -> Vec<(ActionKind, String)> {
        actions.iter().map(|a| (a.kind, a.incident.key.clone())).collect()
    }

    /// web-1 clears and fires again within the hold-down.
    fn flap(c: &mut Core, t: DateTime<Utc>) {
        for (n, st) in [(1, Status::Resolved), (2, Status::Firing)] {
            c.handle(&Event::host_down("web-1", st, t + s(n)), t + s(n));
        }
    }

    #[test]
    fn an_acknowledgement_is_recorded_and_repeats_stop_updating() {
        // Without one, an alert that fires again updates the record.
        let (mut c, _, t) = opened(None);
        flap(&mut c, t + s(10));
        let updates = settle(&mut c, t + s(120));
        assert_eq!(updates.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActionKind::Update]);
        assert!(updates[0].notes.iter().any(|n| n.contains("fired again")), "{:?}", updates[0].notes);

        let (mut c, key, t) = opened(None);
        let mut o = seen(&key, SeenState::Acknowledged);
        o.assignee = Some("jdoe".into());
        let out = c.observe(&o, t + s(5));
        assert_eq!(out, [Outcome::Acknowledged { by: Some("jdoe".into()), after: s(5) }]);
        assert!(c.observe(&o, t + s(6)).is_empty(), "recorded once");
        // The acknowledgement itself is a note on the record.
        let ack_note = settle(&mut c, t + s(100));
        assert_eq!(ack_note.len(), 1);
        assert!(ack_note[0].notes.iter().any(|n| n.contains("acknowledged at servicenow by jdoe")), "{:?}", ack_note[0].notes);
        flap(&mut c, t + s(110));
        let later = settle(&mut c, t + s(300));
        assert!(later.is_empty(), "{:?}", later.iter().map(|a| &a.notes).collect::<Vec<_>>());
        let inc = &c.open_incidents()[0];
        let ack = inc.acknowledged.as_ref().expect("acknowledged");
        assert_eq!((ack.sink.as_str(), ack.by.as_deref(), ack.at), (SN, Some("jdoe"), t + s(5)));
    }

    #[test]
    fn closed_while_firing_is_reopened_once_then_left_to_the_person() {
        let (mut c, key, t) = opened(None);
        assert_eq!(c.observe(&seen(&key, SeenState::Closed), t + s(60)), [Outcome::Reopened]);
        let reopen = c.take_actions();
        assert_eq!(kinds(&reopen), [(ActionKind::Reopen, key.clone())]);
        assert!(
            reopen[0].notes.iter().any(|n| n.contains("closed at servicenow by a person while 1 alert(s) still fire")),
            "{:?}",
            reopen[0].notes
        );
        assert!(c.observe(&seen(&key, SeenState::Closed), t + s(61)).is_empty(), "ignored while the reopen is in flight");
        c.ack(reopen[0].id);

        assert_eq!(c.observe(&seen(&key, SeenState::Closed), t + s(120)), [Outcome::LeftClosed { noted: false }]);
        assert!(c.take_actions().is_empty(), "nothing written to the record closed again");
        let inc = &c.open_incidents()[0];
        assert!(inc.owned_at(SN).closed);
        // Once every alert clears, the record agrees: the flag goes with the resolve.
        c.handle(&Event::host_down("web-1", Status::Resolved, t + s(130)), t + s(130));
        let resolve = settle(&mut c, t + s(1000));
        assert_eq!(resolve.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActionKind::Resolve]);
        assert!(resolve[0].incident.owned_at(SN).closed, "the resolve is not sent to the closed record");
        c.handle(&Event::host_down("web-1", Status::Firing, t + s(1100)), t + s(1100));
        let again = c.take_actions();
        assert_eq!(again.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActionKind::Reopen]);
        assert!(!again[0].incident.owned_at(SN).closed, "a recurrence reopens it as usual");
    }

    #[test]
    fn policy_note_writes_one_note_then_nothing() {
        let (mut c, key, t) = opened(Some(ClosedPolicy::Note));
        assert_eq!(c.observe(&seen(&key, SeenState::Closed), t + s(60)), [Outcome::LeftClosed { noted: true }]);
        let note = settle(&mut c, t + s(60));
        assert_eq!(kinds(&note), [(ActionKind::Update, key.clone())]);
        assert!(!note[0].incident.owned_at(SN).closed, "the note itself reaches the record");
        assert!(note[0].notes.iter().any(|n| n.contains("last note")), "{:?}", note[0].notes);
        flap(&mut c, t + s(70));
        let later = settle(&mut c, t + s(200));
        assert!(!later.is_empty());
        let ours: Vec<_> = later.iter().filter(|a| a.incident.key == key).collect();
        assert!(!ours.is_empty());
        assert!(ours.iter().all(|a| a.incident.owned_at(SN).closed), "every later action skips the closed record");
    }

    #[test]
    fn policy_new_resolves_the_old_key_elsewhere_and_opens_a_new_one() {
        let (mut c, key, t) = opened(Some(ClosedPolicy::New));
        let out = c.observe(&seen(&key, SeenState::Closed), t + s(60));
        let [Outcome::NewRecord { old, new }] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!(old, &key);
        assert_ne!(new, &key);
        let actions = c.take_actions();
        assert_eq!(kinds(&actions), [(ActionKind::Resolve, key.clone()), (ActionKind::Open, new.clone())]);
        assert!(actions[0].incident.owned_at(SN).closed, "the closed record is left alone");
        assert_eq!(actions[0].incident.state, crate::incident::IncidentState::Resolved);
        assert!(!actions[1].incident.owned_at(SN).closed);
        assert!(actions[1].notes.iter().any(|n| n.contains(&format!("continues {key}"))), "{:?}", actions[1].notes);
    }

    #[test]
    fn reopen_turns_into_new_for_a_record_closed_longer_than_the_reopen_window() {
        let (mut c, key, t) = opened(None);
        let mut o = seen(&key, SeenState::Closed);
        o.closed_at = Some(t - chrono::Duration::hours(2));
        let out = c.observe(&o, t + s(60));
        assert!(matches!(out.as_slice(), [Outcome::NewRecord { .. }]), "{out:?}");
    }

    #[test]
    fn a_priority_a_person_changed_is_theirs_but_one_triaged_changed_is_not() {
        let (mut c, key, t) = opened(None);
        let mut o = seen(&key, SeenState::Open);
        o.priority = Some(5);
        assert!(c.observe(&o, t + s(60)).is_empty(), "the first read is the baseline");
        o.priority = Some(2);
        assert_eq!(c.observe(&o, t + s(120)), [Outcome::PriorityOwned { to: 2 }]);
        assert!(c.open_incidents()[0].owned_at(SN).priority);
        assert!(!c.open_incidents()[0].owned_at(SN).assignment);
        let mut g = o.clone();
        g.group = Some("network".into());
        assert!(c.observe(&g, t + s(130)).is_empty());
        g.group = Some("dba".into());
        assert_eq!(c.observe(&g, t + s(140)), [Outcome::AssignmentOwned { to: "dba".into() }]);
    }

    #[test]
    fn a_priority_change_triaged_sent_itself_is_not_a_persons() {
        let (mut c, key, t) = opened(None);
        let mut o = seen(&key, SeenState::Open);
        o.priority = Some(5);
        c.observe(&o, t + s(60));
        // triaged sends a new priority (here: faked by the record of what it sent).
        c.incidents.values_mut().for_each(|i| i.sent_priority = Some(1));
        o.priority = Some(1);
        assert!(c.observe(&o, t + s(120)).is_empty());
        assert!(!c.open_incidents()[0].owned_at(SN).priority);
    }

    #[test]
    fn closed_while_resolving_is_left_closed_without_a_write() {
        let (mut c, key, t) = opened(None);
        c.handle(&Event::host_down("web-1", Status::Resolved, t + s(5)), t + s(5));
        settle(&mut c, t + s(6));
        assert_eq!(c.observe(&seen(&key, SeenState::Closed), t + s(10)), [Outcome::LeftClosed { noted: false }]);
        assert!(c.take_actions().is_empty());
    }

    #[test]
    fn what_was_read_back_survives_a_restore() {
        let (mut c, key, t) = opened(None);
        let mut o = seen(&key, SeenState::Acknowledged);
        o.assignee = Some("jdoe".into());
        o.priority = Some(4);
        c.observe(&o, t + s(60));
        o.priority = Some(1);
        c.observe(&o, t + s(70));
        let mut b = core_with(None);
        let (n, bad) = b.restore(&c.checkpoint());
        assert_eq!((n, bad.len()), (1, 0));
        let inc = &b.open_incidents()[0];
        assert!(inc.owned_at(SN).priority);
        assert_eq!(inc.acknowledged.as_ref().and_then(|a| a.by.as_deref()), Some("jdoe"));
        assert!(b.observe(&o, t + s(80)).is_empty(), "not acknowledged twice after the restart");
    }
}
