//! The incident lifecycle: create, join (and reopen), merge, clear (and drop
//! a flap), hold-down, close, and emit the actions that tell the sink. New
//! incidents wait `group_wait` before they open; open ones resolve after every
//! member has stayed clear for the hold-down, reopen on a recurrence within
//! the reopen window, and close after it, releasing their state.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::dedup::{hold, note_change};
use super::offset_book::PartId;
use super::{Core, Decision, DecisionKind, EarlyResolve, Inc, Phase, Scope};
use crate::event::Event;
use crate::incident::{Action, ActionKind};
use crate::topology::CiIdx;

/// Reasons an incident keeps (each member's, then merges).
const MAX_REASONS: usize = 50;

impl Core {
    /// The firing fingerprint `key` recurs while its incident `inc_id` still
    /// lives (reopening it when resolved). `ci`: its CI, when it correlates by topology.
    pub(super) fn recur(&mut self, key: String, inc_id: u64, ci: Option<CiIdx>, now: DateTime<Utc>, mut reason: String) -> Decision {
        reason.push_str("; recurrence of a fingerprint of this incident");
        self.join(&key, inc_id, now, &reason);
        if let Some(ci) = ci {
            self.mark_ci_active(ci, now, inc_id);
        }
        Decision { kind: DecisionKind::Joined, fingerprint: Some(key), incident: Some(inc_id), reason }
    }

    /// Starts a pending incident of `scope` with the firing fingerprint `fp`.
    pub(super) fn create(&mut self, scope: Scope, root: Option<CiIdx>, fp: &str, now: DateTime<Utc>, reason: &str) -> u64 {
        let id = self.next_incident;
        self.next_incident += 1;
        let is_topology = matches!(scope, Scope::Topology(_));
        self.by_scope.insert(scope.clone(), id);
        self.incidents.insert(
            id,
            Inc {
                key: None,
                scope,
                root: if is_topology { root } else { None },
                members: BTreeSet::new(),
                phase: Phase::Pending,
                created: now,
                last_activity: now,
                opened_at: None,
                last_sent: None,
                dirty: false,
                notes: Vec::new(),
                reasons: Vec::new(),
                inflight: 0,
                sent_priority: None,
                peak_priority: None,
                merged: false,
                frozen: None,
                pending: None,
                acked: None,
                last_action: 0,
                failed_group: None,
                remote: Default::default(),
                generation: 0,
            },
        );
        self.join(fp, id, now, reason);
        id
    }

    /// Adds fingerprint `fp` (already firing) to incident `id`.
    pub(super) fn join(&mut self, fp: &str, id: u64, now: DateTime<Utc>, reason: &str) {
        let window = self.cfg.flap_window;
        let (flapping, announce) = match self.fps.get_mut(fp) {
            Some(f) => {
                f.incident = Some(id);
                let announce = f.flapping && !f.flap_noted;
                f.flap_noted |= announce;
                (f.flapping, announce.then_some(f.changes.len()))
            }
            None => (false, None),
        };
        self.changes.incident(id);
        self.changes.fingerprint(fp);
        let inc = self.incidents.get_mut(&id).expect("live incident");
        if let (Some(n), Phase::Open | Phase::Resolving { .. }) = (announce, inc.phase) {
            inc.phase = Phase::Open;
            inc.dirty = true;
            inc.notes.push(format!(
                "{fp} is flapping ({n} state changes within {}): its changes add no more notes, and the incident resolves only once it has been stable for {}",
                crate::duration::format_span(window),
                crate::duration::format_span(window)
            ));
        }
        inc.last_activity = now;
        let new_member = inc.members.insert(fp.to_string());
        if inc.reasons.len() < MAX_REASONS {
            inc.reasons.push(format!("{fp}: {reason}"));
        }
        match inc.phase {
            Phase::Pending => {}
            Phase::Open if flapping && !new_member => {}
            // Someone works on it: a repeat tells them nothing new.
            Phase::Open if !new_member && inc.acknowledged() => {}
            Phase::Open => {
                inc.dirty = true;
                inc.notes.push(if new_member { format!("{fp} joined: {reason}") } else { format!("{fp} fired again") });
            }
            Phase::Resolving { .. } if flapping || inc.acknowledged() => inc.phase = Phase::Open,
            Phase::Resolving { .. } => {
                inc.phase = Phase::Open;
                inc.dirty = true;
                inc.notes.push(format!("{fp} fired again during the resolve hold-down; incident stays open"));
            }
            Phase::Resolved { .. } => {
                inc.phase = Phase::Open;
                inc.dirty = true;
                inc.notes.push(format!("reopened: {fp} recurred within the reopen window ({reason})"));
                self.emit(id, ActionKind::Reopen, now);
            }
        }
    }

    /// Moves the members and reasons of incident `from` into `into`; an
    /// opened `from` resolves as merged, a pending one is dropped.
    pub(super) fn merge_into(&mut self, from: u64, into: u64, root_id: &str, now: DateTime<Utc>) {
        let frozen = self.incidents[&from].opened_at.is_some().then(|| Box::new(self.snapshot(from)));
        let (members, created, was_open, reasons, scope) = {
            let f = self.incidents.get_mut(&from).expect("live incident");
            (std::mem::take(&mut f.members), f.created, f.opened_at.is_some(), std::mem::take(&mut f.reasons), f.scope.clone())
        };
        self.unindex(&scope, from);
        self.changes.incident(from);
        self.changes.incident(into);
        for m in &members {
            if let Some(fp) = self.fps.get_mut(m) {
                fp.incident = Some(into);
                if let Some(a) = fp.ci.and_then(|c| self.ci_active.get_mut(&c)) {
                    if a.incident == from {
                        a.incident = into;
                    }
                }
            }
        }
        let from_key = self.incidents[&from].key.clone();
        let into_inc = self.incidents.get_mut(&into).expect("live incident");
        into_inc.created = into_inc.created.min(created);
        into_inc.last_activity = now;
        let n = members.len();
        into_inc.members.extend(members);
        for r in reasons {
            if into_inc.reasons.len() < MAX_REASONS {
                into_inc.reasons.push(r);
            }
        }
        into_inc.reasons.push(format!("absorbed {n} event streams rooted downstream of {root_id}"));
        if into_inc.opened_at.is_some() {
            into_inc.dirty = true;
            into_inc.notes.push(match &from_key {
                Some(k) => format!("merged incident {k} ({n} event streams): common root cause {root_id}"),
                None => format!("{n} event streams joined: common root cause {root_id}"),
            });
        }
        let into_key = into_inc.key.clone();
        if was_open {
            let f = self.incidents.get_mut(&from).unwrap();
            f.merged = true;
            f.frozen = frozen.map(|mut s| {
                s.parent = into_key.clone();
                s
            });
            f.phase = Phase::Resolved { at: now };
            f.notes.push(format!(
                "merged into {}: root cause {root_id} is upstream of this incident",
                into_key.as_deref().unwrap_or("a new incident")
            ));
            self.emit(from, ActionKind::Resolve, now);
        } else {
            self.incidents.remove(&from);
        }
    }

    /// A resolve of fingerprint `key`.
    pub(super) fn clear(&mut self, key: &str, ev: &Event, now: DateTime<Utc>, part: Option<(PartId, i64)>) -> Decision {
        let Some(fp) = self.fps.get_mut(key) else {
            // Its firing may still come, late, from another partition.
            let e = self.early.entry(key.to_string()).or_insert(EarlyResolve { at: ev.time, seen: now });
            e.at = e.at.max(ev.time);
            e.seen = now;
            self.changes.early(key);
            return Decision {
                kind: DecisionKind::ResolveUnknown,
                fingerprint: Some(key.to_string()),
                incident: None,
                reason: format!(
                    "resolve for a fingerprint with no live state; held for {} to clear a firing that began before it and arrives late",
                    crate::duration::format_span(self.cfg.max_lateness)
                ),
            };
        };
        if !fp.firing {
            fp.cleared_at = fp.cleared_at.max(Some(ev.time));
            return Decision {
                kind: DecisionKind::Deduplicated,
                fingerprint: Some(key.to_string()),
                incident: fp.incident,
                reason: "repeat of a resolve".into(),
            };
        }
        // A repeat of the previous episode's resolve, read after this episode
        // began. A resolve a little older than the only firing is that
        // firing's (the monitors' clocks differ), and clears it.
        if ev.time < fp.episode_start && fp.cleared_at.is_some_and(|c| ev.time <= c) {
            return Decision {
                kind: DecisionKind::Deduplicated,
                fingerprint: Some(key.to_string()),
                incident: fp.incident,
                reason: format!(
                    "resolve at {} belongs to an earlier episode, not the firing that began at {} (out of order): ignored",
                    ev.time.to_rfc3339(),
                    fp.episode_start.to_rfc3339()
                ),
            };
        }
        fp.cleared_at = fp.cleared_at.max(Some(ev.time));
        fp.firing = false;
        fp.last_seen = ev.time.max(fp.last_seen);
        note_change(fp, ev.time, self.cfg.flap_threshold, self.cfg.flap_window);
        let flapping = fp.flapping;
        if fp.incident.is_some() {
            hold(fp, &mut self.offsets, part);
        }
        let (inc_id, ci, topo) = (fp.incident, fp.ci, fp.topology);
        if topo {
            self.ci_cleared(ci, now, ev.time);
        }
        let Some(inc_id) = inc_id.filter(|i| self.incidents.contains_key(i)) else {
            self.release_fp(key);
            return Decision {
                kind: DecisionKind::Cleared,
                fingerprint: Some(key.to_string()),
                incident: None,
                reason: "cleared; no incident".into(),
            };
        };
        let all_clear = self.all_clear(inc_id);
        // By the events' own clock, did the fault last the group wait? One that
        // did is real even when its events arrive late and together (a backlog,
        // or a replay after a crash in which an earlier run may have opened it):
        // it stays pending, gathers its late members, opens when the group wait
        // ends here and resolves after the hold-down. One that did not is a flap.
        let lasted = self.incidents[&inc_id].members.iter().filter_map(|m| self.fps.get(m)).map(|f| ev.time - f.episode_start).max();
        let flap = lasted.is_none_or(|d| d < self.cfg.group_wait);
        let inc = self.incidents.get_mut(&inc_id).unwrap();
        inc.last_activity = now;
        let reason = match inc.phase {
            Phase::Pending if all_clear && !flap => format!(
                "cleared; the fault lasted {} by event time (group wait {}): the incident opens when the group wait ends, then resolves after the hold-down",
                crate::duration::format_span(lasted.unwrap_or_default()),
                crate::duration::format_span(self.cfg.group_wait)
            ),
            Phase::Pending if all_clear => {
                let members: Vec<String> = inc.members.iter().cloned().collect();
                self.changes.incident(inc_id);
                if let Some(gone) = self.incidents.remove(&inc_id) {
                    self.unindex(&gone.scope, inc_id);
                }
                for m in members {
                    self.release_fp(&m);
                }
                "cleared within the group wait, by event time and here; nothing sent".to_string()
            }
            Phase::Open if all_clear => {
                inc.phase = Phase::Resolving { since: now };
                inc.notes.push(format!("{key} cleared; all members clear, resolving after hold-down"));
                "cleared; all members clear, incident resolves after the hold-down".into()
            }
            _ => {
                if inc.phase == Phase::Open && !flapping {
                    inc.dirty = true;
                    inc.notes.push(format!("{key} cleared"));
                }
                "cleared; other members still firing".into()
            }
        };
        Decision { kind: DecisionKind::Cleared, fingerprint: Some(key.to_string()), incident: Some(inc_id), reason }
    }

    /// A firing of `key` that began no later than a resolve that arrived
    /// before it: cleared by that resolve, nothing starts. A later firing
    /// is a new episode and forgets the held resolve.
    pub(super) fn cleared_early(&mut self, key: &str, ev: &Event) -> Option<Decision> {
        let e = self.early.remove(key)?;
        self.changes.early(key);
        if ev.time > e.at {
            return None;
        }
        Some(Decision {
            kind: DecisionKind::Cleared,
            fingerprint: Some(key.to_string()),
            incident: None,
            reason: format!(
                "fired at {} but its resolve, at {}, arrived first (out of order): nothing to open",
                ev.time.to_rfc3339(),
                e.at.to_rfc3339()
            ),
        })
    }

    /// How long the new incident `inc` waits before it opens: the topology
    /// wait when it correlates by topology and its root CI depends on
    /// another (a root alert may still come, late, and take it in), else the
    /// group wait.
    pub(super) fn wait_of(&self, inc: &Inc) -> chrono::Duration {
        let below_something = matches!(inc.scope, Scope::Topology(_)) && inc.root.is_some_and(|r| !self.cmdb.upstream(r).is_empty());
        if below_something {
            self.cfg.group_wait.max(self.cfg.topology_wait)
        } else {
            self.cfg.group_wait
        }
    }

    /// The resolve hold-down of incident `id`: the flap window while a member
    /// flaps (changed state within the last window), else the configured one.
    pub(super) fn hold_down_of(&self, id: u64, now: DateTime<Utc>) -> chrono::Duration {
        let window = self.cfg.flap_window;
        let flaps = self.incidents[&id]
            .members
            .iter()
            .filter_map(|m| self.fps.get(m))
            .any(|f| f.flapping && f.changes.back().is_some_and(|t| now - *t < window));
        if flaps {
            self.cfg.hold_down.max(window)
        } else {
            self.cfg.hold_down
        }
    }

    /// No member of incident `id` is firing.
    pub(super) fn all_clear(&self, id: u64) -> bool {
        self.incidents[&id].members.iter().all(|m| self.fps.get(m).is_none_or(|f| !f.firing))
    }

    /// Incident `id` is no longer found by `scope` (a later incident may be).
    pub(super) fn unindex(&mut self, scope: &Scope, id: u64) {
        if self.by_scope.get(scope) == Some(&id) {
            self.by_scope.remove(scope);
        }
    }

    /// Drops incident `id` and releases its cleared members.
    pub(super) fn close(&mut self, id: u64) {
        let Some(inc) = self.incidents.remove(&id) else { return };
        self.unindex(&inc.scope, id);
        self.changes.incident(id);
        for m in inc.members {
            let clear = self.fps.get(&m).is_some_and(|f| !f.firing && f.incident == Some(id));
            if clear {
                self.release_fp(&m);
            }
        }
    }

    /// Queues an action of `kind` for incident `id`, with its pending notes.
    pub(super) fn emit(&mut self, id: u64, kind: ActionKind, now: DateTime<Utc>) {
        let incident = self.snapshot(id);
        let action_id = self.next_action;
        self.next_action += 1;
        let inc = self.incidents.get_mut(&id).unwrap();
        if let Some(p) = inc.sent_priority.filter(|p| *p != incident.priority) {
            inc.notes.push(format!("priority P{p} -> P{} (impact {} x urgency {})", incident.priority, incident.impact, incident.urgency));
        }
        let priority_changed = inc.sent_priority != Some(incident.priority);
        let notes = std::mem::take(&mut inc.notes);
        inc.dirty = false;
        inc.last_sent = Some(now);
        inc.sent_priority = Some(incident.priority);
        inc.peak_priority = Some(incident.peak_priority);
        inc.inflight += 1;
        inc.pending = Some(kind);
        inc.last_action = action_id;
        self.inflight.insert(action_id, (id, kind));
        self.changes.incident(id);
        *self.stats.actions.entry(kind.as_str()).or_default() += 1;
        self.outbox.push(Action { id: action_id, kind, incident, notes, claim: None, resent: false, priority_changed });
    }
}
