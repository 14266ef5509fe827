//! Topology correlation and root cause. With topology correlation and a bound
//! CI, an event joins the incident of a failing upstream CI (depends_on,
//! runs_on, connects_to, followed transitively) or starts one rooted at its
//! own CI. The root cause is decided here, and only here: the deepest failing
//! upstream CI; in a dependency cycle the CI that failed first; and a new root
//! upstream of live incidents absorbs them. Also the topology state of CIs
//! (`Active`): which fire, when they were last touched and when they cleared.

use chrono::{DateTime, Utc};

use super::{chrono_dur, Active, Core, CoreConfig, Decision, DecisionKind, Phase, Scope};
use crate::event::{Event, Severity};
use crate::topology::CiIdx;

/// The topology window of a rule's `correlate: { topology, window }`, else the configured one.
pub(super) fn window_of(topology: Option<(&str, Option<std::time::Duration>)>, cfg: &CoreConfig) -> chrono::Duration {
    match topology {
        Some((_, Some(w))) => chrono_dur(w),
        _ => cfg.topology_window,
    }
}

impl Core {
    /// Correlates the firing fingerprint `key` on CI `ci` by topology within `window`.
    pub(super) fn correlate_topology(
        &mut self,
        key: String,
        ci: CiIdx,
        window: chrono::Duration,
        ev: &Event,
        now: DateTime<Utc>,
        mut reason: String,
    ) -> Decision {
        if let Some((up, dist, inc_id)) = self.failing_upstream(ci, window, ev.time, now) {
            let root = self.incidents[&inc_id].root.map(|r| self.cmdb.ci(r).id.clone()).unwrap_or_default();
            reason.push_str(&format!(
                "; topology: {} depends on failing {} (distance {dist}) within {}; root cause {root}",
                self.cmdb.ci(ci).id,
                self.cmdb.ci(up).id,
                crate::duration::format_span(window)
            ));
            if let Some(why) = self.settle_cycle_root(inc_id, ci, ev.time) {
                reason.push_str(&why);
            }
            self.join(&key, inc_id, now, &reason);
            self.mark_ci_active(ci, now, inc_id);
            let inc_id = self.after_member_fired(ci, inc_id, window, now, &mut reason);
            return Decision { kind: DecisionKind::Joined, fingerprint: Some(key), incident: Some(inc_id), reason };
        }
        let scope = Scope::Topology(self.cmdb.ci(ci).id.clone());
        let (inc_id, kind) = match self.by_scope.get(&scope).copied() {
            Some(id) => {
                reason.push_str(&format!("; topology: another event on root cause {}", self.cmdb.ci(ci).id));
                self.join(&key, id, now, &reason);
                (id, DecisionKind::Joined)
            }
            None => {
                reason.push_str(&format!(
                    "; topology: no failing upstream of {} within {}",
                    self.cmdb.ci(ci).id,
                    crate::duration::format_span(window)
                ));
                let id = self.create(scope, Some(ci), &key, now, &reason);
                (id, DecisionKind::New)
            }
        };
        self.mark_ci_active(ci, now, inc_id);
        if let Some(why) = self.covered_reason(ci) {
            // Its peers carry the load: its dependents' alerts are not its doing.
            reason.push_str(&why);
            return Decision { kind, fingerprint: Some(key), incident: Some(inc_id), reason };
        }
        // A failed group first picks which of its members' incidents carries it.
        let inc_id = self.after_member_fired(ci, inc_id, window, now, &mut reason);
        let inc_id = self.absorb_downstream(inc_id, ci, window, now);
        Decision { kind, fingerprint: Some(key), incident: Some(inc_id), reason }
    }

    /// Deepest upstream CI of `ci` that is failing: firing now, however long
    /// its source has been silent (Alertmanager re-sends every
    /// `repeat_interval`, Zabbix sends a problem once; stale alerts expire,
    /// `expiry.rs`), or cleared within `window` but only after `event_time`
    /// (the downstream fault began while it failed). A member of a
    /// redundancy group whose peers carry the load explains nothing
    /// (`redundancy.rs`).
    pub(super) fn failing_upstream(
        &self,
        ci: CiIdx,
        window: chrono::Duration,
        event_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(CiIdx, u32, u64)> {
        if self.ci_active.is_empty() {
            return None;
        }
        let mut best: Option<(CiIdx, u32, u64)> = None;
        for (up, dist) in self.cmdb.upstream_closure(ci, self.cfg.max_depth) {
            let Some(a) = self.ci_active.get(&up) else { continue };
            let failing = a.firing > 0 || a.cleared_at.is_some_and(|c| event_time <= c);
            if !failing || (a.firing == 0 && now - a.seen > window) || !self.incidents.contains_key(&a.incident) {
                continue;
            }
            if self.covered_by_peers(up) {
                continue;
            }
            let inc = a.incident;
            let better = match best {
                None => true,
                Some((b, bd, _)) => dist > bd || (dist == bd && self.cmdb.ci(up).id < self.cmdb.ci(b).id),
            };
            if better {
                best = Some((up, dist, inc));
            }
        }
        best
    }

    /// An alert of `severity`, below the topology minimum `min`, on `ci`:
    /// the incident of the CI or of its failing upstream gets a work note
    /// naming it as context; the alert itself takes no part (it stays an
    /// incident of its own). Returns the decision's reason.
    pub(super) fn context_of(
        &mut self,
        ci: CiIdx,
        severity: Severity,
        min: Severity,
        ev: &Event,
        window: chrono::Duration,
        now: DateTime<Utc>,
    ) -> String {
        let own = self.ci_active.get(&ci).filter(|a| a.firing > 0 && self.incidents.contains_key(&a.incident)).map(|a| (ci, a.incident));
        let found = own.or_else(|| self.failing_upstream(ci, window, ev.time, now).map(|(up, _, inc)| (up, inc)));
        let ci_id = self.cmdb.ci(ci).id.clone();
        let mut reason =
            format!("; topology: severity {} is below the topology minimum {}: context, not correlated", severity.as_str(), min.as_str());
        if let Some((up, inc_id)) = found {
            let up_id = self.cmdb.ci(up).id.clone();
            let inc = self.incidents.get_mut(&inc_id).expect("checked live");
            let name = inc.key.clone().unwrap_or_else(|| format!("pending incident #{inc_id}"));
            let on = if up == ci { format!("{ci_id}, the failing CI") } else { format!("{ci_id}, which depends on failing {up_id}") };
            inc.notes.push(format!("context: {} ({}) on {on}; not a member", ev.check, severity.as_str()));
            if inc.opened_at.is_some() {
                inc.dirty = true;
            }
            self.changes.incident(inc_id);
            reason.push_str(&format!(" (context for {name}, failing {up_id})"));
        }
        reason
    }

    /// In a dependency cycle (`ci` and the incident's root are upstream of each
    /// other, as in a meshed core-switch pair) arrival order must not pick the
    /// root, or a replay could name another root and key: the CI that failed
    /// first by event time is the root, ties going to the lower id.
    pub(super) fn settle_cycle_root(&mut self, inc_id: u64, ci: CiIdx, started: DateTime<Utc>) -> Option<String> {
        let inc = &self.incidents[&inc_id];
        let root = inc.root?;
        if root == ci || self.cmdb.is_upstream_of(ci, root, self.cfg.max_depth).is_none() {
            return None;
        }
        let root_start =
            inc.members.iter().filter_map(|m| self.fps.get(m)).filter(|f| f.ci == Some(root)).map(|f| f.episode_start).min()?;
        let (root_id, ci_id) = (self.cmdb.ci(root).id.clone(), self.cmdb.ci(ci).id.clone());
        if (started, &ci_id) >= (root_start, &root_id) {
            return None;
        }
        let scope = Scope::Topology(ci_id.clone());
        self.changes.incident(inc_id);
        let old = self.incidents[&inc_id].scope.clone();
        self.unindex(&old, inc_id);
        let inc = self.incidents.get_mut(&inc_id).expect("live incident");
        inc.root = Some(ci);
        inc.scope = scope.clone();
        if inc.opened_at.is_some() {
            inc.dirty = true;
        }
        inc.notes.push(format!("root cause moved to {ci_id}: in a dependency cycle with {root_id}, it failed first"));
        self.by_scope.insert(scope, inc_id);
        Some(format!("; {ci_id} and {root_id} depend on each other and {ci_id} failed first: it becomes the root cause"))
    }

    /// Marks CI `ci` firing in incident `inc`.
    pub(super) fn mark_ci_active(&mut self, ci: CiIdx, now: DateTime<Utc>, inc: u64) {
        let e = self.ci_active.entry(ci).or_insert(Active { firing: 0, seen: now, cleared_at: None, incident: inc });
        if e.incident != inc {
            self.changes.incident(e.incident);
        }
        e.firing += 1;
        e.seen = now;
        e.cleared_at = None;
        e.incident = inc;
        self.changes.incident(inc);
    }

    /// An event touched a topology fingerprint on `ci`: its CI stays active.
    pub(super) fn ci_seen(&mut self, ci: Option<CiIdx>, now: DateTime<Utc>) {
        if let Some(a) = ci.and_then(|c| self.ci_active.get_mut(&c)) {
            a.seen = now;
            self.changes.incident(a.incident);
        }
    }

    /// A topology fingerprint on `ci` cleared at event time `at`.
    pub(super) fn ci_cleared(&mut self, ci: Option<CiIdx>, now: DateTime<Utc>, at: DateTime<Utc>) {
        if let Some(c) = ci {
            if let Some(a) = self.ci_active.get_mut(&c) {
                self.changes.incident(a.incident);
                a.firing = a.firing.saturating_sub(1);
                a.seen = now;
                if a.firing == 0 {
                    a.cleared_at = Some(a.cleared_at.map_or(at, |t| t.max(at)));
                }
            }
        }
    }

    /// A new topology root `root` absorbs live incidents rooted downstream of it.
    /// Returns the incident that now carries the root.
    pub(super) fn absorb_downstream(&mut self, id: u64, root: CiIdx, window: chrono::Duration, now: DateTime<Utc>) -> u64 {
        // One walk down from `root`, not one walk up from every incident's root:
        // in a storm with thousands of incidents the latter made each new
        // incident cost thousands of walks.
        let below = self.cmdb.downstream_within(root, self.cfg.max_depth);
        let mut victims: Vec<(u64, u32)> = Vec::new();
        if below.is_empty() {
            return id;
        }
        for (&other, inc) in &self.incidents {
            if other == id || inc.merged || !matches!(inc.phase, Phase::Pending | Phase::Open) || now - inc.last_activity > window {
                continue;
            }
            let Some(r) = inc.root else { continue };
            if let Some(&d) = below.get(&r) {
                victims.push((other, d));
            }
        }
        if victims.is_empty() {
            return id;
        }
        victims.sort();
        // Keep the incident the ITSM already knows (earliest opened, the
        // root's own included); otherwise the new one.
        let mut candidates: Vec<u64> =
            victims.iter().map(|v| v.0).chain(std::iter::once(id)).filter(|v| self.incidents[v].opened_at.is_some()).collect();
        candidates.sort_by_key(|v| (self.incidents[v].opened_at, *v));
        let survivor = candidates.first().copied().unwrap_or(id);
        let root_id = self.cmdb.ci(root).id.clone();
        let mut losers: Vec<u64> = victims.iter().map(|v| v.0).filter(|v| *v != survivor).collect();
        if survivor != id {
            losers.push(id);
            let new_scope = Scope::Topology(root_id.clone());
            self.changes.incident(survivor);
            let old = self.incidents[&survivor].scope.clone();
            self.unindex(&old, survivor);
            let s = self.incidents.get_mut(&survivor).unwrap();
            s.scope = new_scope.clone();
            s.root = Some(root);
            s.dirty = true;
            s.notes.push(format!("root cause moved upstream to {root_id}"));
            self.by_scope.insert(new_scope, survivor);
        }
        for loser in losers {
            self.merge_into(loser, survivor, &root_id, now);
        }
        survivor
    }
}
