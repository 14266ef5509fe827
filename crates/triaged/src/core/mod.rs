//! The correlation core: plain synchronous code over state it owns, with the
//! clock passed in, so it runs the same in the daemon, in tests and in replays.
//!
//! Per event: rules classify it (drop, severity, binding, fingerprint,
//! suppression, grouping, topology), the fingerprint deduplicates repeats, and
//! a firing event joins or starts an incident:
//! 1. a fingerprint that already belongs to a live incident rejoins it
//!    (reopening it when it was resolved within the reopen window);
//! 2. with topology correlation and a bound CI: if an upstream CI (depends_on,
//!    runs_on, connects_to, followed transitively) has a firing event within the
//!    window, or cleared only after this event began (event time: one fault's
//!    events read out of order across partitions), the event joins that CI's
//!    incident; **the root cause is the deepest failing upstream CI** (in a
//!    dependency cycle, the one that failed first). A new root that is upstream
//!    of existing incidents absorbs them;
//! 3. else a `group` rule's key (rule name + field values) within its window;
//! 4. else the fingerprint alone.
//!
//! New incidents wait `group_wait` before they are opened, so a storm becomes
//! one incident. One whose members all clear sooner is dropped as a flap if,
//! by the events' own times, the fault lasted less than `group_wait`;
//! otherwise it still opens, then resolves (late bursts, replays). Open incidents are updated at most every `update_interval`,
//! resolved after every member has stayed clear for `resolve_hold_down`, and
//! reopened by a recurrence within `reopen_window`; after that they close and
//! release their state. Priority is ITIL impact x urgency.
//!
//! **Incident keys are deterministic**: a hash of the scope and the earliest
//! member's first-seen time, so replaying the same events gives the same key.

mod checkpoint;
pub mod offset_book;
pub mod partitions;
pub mod problems;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::CorrelationConfig;
use crate::event::{Event, Origin, Severity, Status};
use crate::incident::{Action, ActionKind, CiRef, Incident, IncidentState, Member};
use crate::rules::RuleSet;
use crate::template::Template;
use crate::topology::{CiIdx, Criticality, Snapshot};
use offset_book::{OffsetBook, PartId};

/// Core timers and defaults.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub group_wait: chrono::Duration,
    pub update_interval: chrono::Duration,
    pub hold_down: chrono::Duration,
    pub reopen_window: chrono::Duration,
    pub topology_window: chrono::Duration,
    pub max_depth: usize,
    pub dedup_key: Template,
    /// State changes within `flap_window` that make a fingerprint flapping (0: off).
    pub flap_threshold: usize,
    pub flap_window: chrono::Duration,
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl CoreConfig {
    /// From the validated `[correlation]` section.
    pub fn from_config(c: &CorrelationConfig) -> CoreConfig {
        CoreConfig {
            group_wait: chrono_dur(c.group_wait.0),
            update_interval: chrono_dur(c.update_interval.0),
            hold_down: chrono_dur(c.resolve_hold_down.0),
            reopen_window: chrono_dur(c.reopen_window.0),
            topology_window: chrono_dur(c.topology_window.0),
            max_depth: c.max_upstream_depth,
            dedup_key: Template::parse(&c.dedup_key).expect("validated dedup key template"),
            flap_threshold: c.flap_threshold as usize,
            flap_window: chrono_dur(c.flap_window.0),
        }
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A rule dropped it.
    Dropped,
    /// Maintenance, a change or a rule window suppressed it.
    Suppressed,
    /// It started a new incident.
    New,
    /// It joined an existing incident (topology, group, recurrence).
    Joined,
    /// It repeated a firing fingerprint.
    Deduplicated,
    /// It cleared a firing fingerprint.
    Cleared,
    /// A resolve for a fingerprint with no live state.
    ResolveUnknown,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Dropped => "dropped",
            DecisionKind::Suppressed => "suppressed",
            DecisionKind::New => "new",
            DecisionKind::Joined => "joined",
            DecisionKind::Deduplicated => "deduplicated",
            DecisionKind::Cleared => "cleared",
            DecisionKind::ResolveUnknown => "resolve_unknown",
        }
    }
}

/// The decision for one event, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub fingerprint: Option<String>,
    /// Internal incident id (keys are assigned when the incident opens).
    pub incident: Option<u64>,
    pub reason: String,
}

/// See [`Core::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub ci: Option<CiIdx>,
    pub group: Option<String>,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Scope {
    Topology(String),
    Group(String),
    Single(String),
}

impl Scope {
    fn text(&self) -> String {
        match self {
            Scope::Topology(ci) => format!("topology:{ci}"),
            Scope::Group(g) => format!("group:{g}"),
            Scope::Single(f) => format!("fingerprint:{f}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
enum Phase {
    Pending,
    Open,
    Resolving { since: DateTime<Utc> },
    Resolved { at: DateTime<Utc> },
}

#[derive(Debug)]
struct Fp {
    source: String,
    check: String,
    summary: String,
    severity: Severity,
    firing: bool,
    ci: Option<CiIdx>,
    count: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// Start of the current firing episode (event time).
    episode_start: DateTime<Utc>,
    incident: Option<u64>,
    /// Topology correlation enabled for this fingerprint.
    topology: bool,
    /// Offsets this fingerprint's live state holds, one per partition.
    holds: Vec<(PartId, i64)>,
    /// Times of its recent state changes (fire, clear), for flap detection.
    changes: VecDeque<DateTime<Utc>>,
    /// Flapping: too many state changes within the flap window; ends once the
    /// fingerprint has been stable for a whole window (hysteresis).
    flapping: bool,
    /// Its incident has been told it flaps.
    flap_noted: bool,
}

/// Records a state change of `fp` at event time `t`; true when it has just
/// started flapping. Keeps at most `threshold` change times.
fn note_change(fp: &mut Fp, t: DateTime<Utc>, threshold: usize, window: chrono::Duration) -> bool {
    if threshold == 0 {
        return false;
    }
    if fp.flapping && fp.changes.back().is_some_and(|last| t - *last >= window) {
        fp.flapping = false;
        fp.flap_noted = false;
    }
    fp.changes.push_back(t);
    while fp.changes.front().is_some_and(|c| t - *c > window) || fp.changes.len() > threshold {
        fp.changes.pop_front();
    }
    if !fp.flapping && fp.changes.len() >= threshold {
        fp.flapping = true;
        return true;
    }
    false
}

#[derive(Debug)]
struct Inc {
    key: Option<String>,
    scope: Scope,
    root: Option<CiIdx>,
    members: BTreeSet<String>,
    phase: Phase,
    created: DateTime<Utc>,
    last_activity: DateTime<Utc>,
    opened_at: Option<DateTime<Utc>>,
    last_sent: Option<DateTime<Utc>>,
    dirty: bool,
    notes: Vec<String>,
    reasons: Vec<String>,
    inflight: u32,
    sent_priority: Option<u8>,
    /// Absorbed by another incident; closes once its last action is acknowledged.
    merged: bool,
}

/// Topology state of one CI: how many of its topology fingerprints fire, and
/// when it last cleared by event time. A cleared CI still explains downstream
/// events that began before it cleared (events of one fault arriving out of
/// order across partitions, after a backlog or a replay) for as long as its
/// incident lives and the topology window has not passed here.
#[derive(Debug, Clone, Copy)]
struct Active {
    firing: u32,
    /// Processing time of the last event that touched it.
    seen: DateTime<Utc>,
    /// Event time at which `firing` last dropped to zero.
    cleared_at: Option<DateTime<Utc>>,
    incident: u64,
}

/// Counters for summaries and tests.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CoreStats {
    pub events: u64,
    pub decisions: HashMap<&'static str, u64>,
    pub actions: HashMap<&'static str, u64>,
}

/// The correlation core.
pub struct Core {
    cfg: CoreConfig,
    rules: Arc<RuleSet>,
    cmdb: Arc<Snapshot>,
    fps: HashMap<String, Fp>,
    incidents: HashMap<u64, Inc>,
    by_scope: HashMap<Scope, u64>,
    /// Topology-enabled fingerprints per CI, firing or recently cleared.
    ci_active: HashMap<CiIdx, Active>,
    next_incident: u64,
    next_action: u64,
    inflight: HashMap<u64, u64>,
    outbox: Vec<Action>,
    offsets: OffsetBook,
    stats: CoreStats,
}

const MAX_REASONS: usize = 50;

impl Core {
    pub fn new(cfg: CoreConfig, rules: Arc<RuleSet>, cmdb: Arc<Snapshot>) -> Core {
        Core {
            cfg,
            rules,
            cmdb,
            fps: HashMap::new(),
            incidents: HashMap::new(),
            by_scope: HashMap::new(),
            ci_active: HashMap::new(),
            next_incident: 1,
            next_action: 1,
            inflight: HashMap::new(),
            outbox: Vec::new(),
            offsets: OffsetBook::default(),
            stats: CoreStats::default(),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub fn cmdb(&self) -> &Arc<Snapshot> {
        &self.cmdb
    }

    /// Replaces the rule set; live fingerprints keep their keys.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules;
    }

    /// Replaces the CMDB snapshot, re-binding live state by CI id. State bound
    /// to CIs that no longer exist becomes unbound.
    pub fn set_cmdb(&mut self, cmdb: Arc<Snapshot>) {
        let old = std::mem::replace(&mut self.cmdb, cmdb);
        let remap = |idx: CiIdx, new: &Snapshot| new.by_id(&old.ci(idx).id);
        for fp in self.fps.values_mut() {
            fp.ci = fp.ci.and_then(|i| remap(i, &self.cmdb));
        }
        for inc in self.incidents.values_mut() {
            inc.root = inc.root.and_then(|i| remap(i, &self.cmdb));
        }
        let active = std::mem::take(&mut self.ci_active);
        for (idx, v) in active {
            if let Some(n) = remap(idx, &self.cmdb) {
                self.ci_active.insert(n, v);
            }
        }
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Live fingerprints.
    pub fn fingerprint_count(&self) -> usize {
        self.fps.len()
    }

    /// Records a message that produced no event (undecodable, dead-lettered).
    pub fn skip(&mut self, origin: &Origin) {
        self.offsets.handled(origin);
    }

    /// One past the last message handled, per partition: what may be stored
    /// once a checkpoint of the state is durable.
    pub fn handled_offsets(&self) -> Vec<(String, i32, i64)> {
        self.offsets.handled_next()
    }

    /// Safe next offsets to store that changed since the last call.
    pub fn take_offsets(&mut self) -> Vec<(String, i32, i64)> {
        self.offsets.take_changed()
    }

    /// Actions decided since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.outbox)
    }

    /// Actions sent to the sink and not yet acknowledged.
    pub fn inflight_actions(&self) -> usize {
        self.inflight.len()
    }

    /// The sink finished action `id`: delivered, or dead-lettered after a
    /// permanent failure. Either way its effect is settled.
    pub fn ack(&mut self, id: u64) {
        if let Some(inc_id) = self.inflight.remove(&id) {
            if let Some(inc) = self.incidents.get_mut(&inc_id) {
                inc.inflight = inc.inflight.saturating_sub(1);
            }
        }
    }

    /// Where `ev` correlates, for the repartition stage: the CI it binds to,
    /// its `group` rule's scope, and its fingerprint. The rules see it as
    /// firing, so that an alert and its resolve route alike.
    pub fn route(&self, ev: &Event) -> Route {
        let firing;
        let ev = if ev.status == Status::Resolved {
            firing = Event { status: Status::Firing, ..ev.clone() };
            &firing
        } else {
            ev
        };
        let class = self.rules.classify(ev);
        let (ci, _) = self.bind(ev, class.bind.map(|(r, t)| (r, t.render(ev, None, &class.captures))));
        let ci_id = ci.map(|i| self.cmdb.ci(i).id.clone());
        let fingerprint = match class.dedup_key {
            Some((_, t)) => t.render(ev, ci_id.as_deref(), &class.captures),
            None => self.cfg.dedup_key.render(ev, ci_id.as_deref(), &class.captures),
        };
        let group = class.group.map(|(rule, g)| {
            let values: Vec<&str> = g.by.iter().map(|f| ev.field(f).unwrap_or("")).collect();
            format!("{rule}:{}", values.join("|"))
        });
        Route { ci, group, fingerprint }
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, ev: &Event, now: DateTime<Utc>) -> Decision {
        self.stats.events += 1;
        let part = ev.origin.as_ref().map(|o| (self.offsets.handled(o), o.offset));
        let d = self.decide(ev, now, part);
        *self.stats.decisions.entry(d.kind.as_str()).or_default() += 1;
        d
    }

    fn decide(&mut self, ev: &Event, now: DateTime<Utc>, part: Option<(PartId, i64)>) -> Decision {
        let rules = Arc::clone(&self.rules);
        let class = rules.classify(ev);
        if let Some(rule) = class.drops(ev.status) {
            return Decision {
                kind: DecisionKind::Dropped,
                fingerprint: None,
                incident: None,
                reason: format!("dropped by rule `{rule}`"),
            };
        }
        let severity = class.severity.as_ref().map_or(ev.severity, |s| s.value);
        let (ci, bind_reason) = self.bind(ev, class.bind.map(|(r, t)| (r, t.render(ev, None, &class.captures))));
        let ci_id = ci.map(|i| self.cmdb.ci(i).id.clone());
        let key = match class.dedup_key {
            Some((_, t)) => t.render(ev, ci_id.as_deref(), &class.captures),
            None => self.cfg.dedup_key.render(ev, ci_id.as_deref(), &class.captures),
        };

        if ev.status == Status::Resolved {
            return self.clear(&key, ev, now, part);
        }

        let live_incident = self.fps.get(&key).and_then(|f| f.incident).filter(|i| self.incidents.contains_key(i));
        if live_incident.is_none() {
            if let Some(reason) = self.suppression(&class.suppress, ci, now) {
                return Decision { kind: DecisionKind::Suppressed, fingerprint: Some(key), incident: None, reason };
            }
        }

        // Repeat of a firing fingerprint: deduplicate.
        if let Some(fp) = self.fps.get_mut(&key) {
            if fp.firing {
                fp.count += 1;
                fp.last_seen = ev.time.max(fp.last_seen);
                if let Some((p, off)) = part {
                    if !fp.holds.iter().any(|(hp, _)| *hp == p) {
                        fp.holds.push((p, off));
                        self.offsets.hold(p, off);
                    }
                }
                let raised = severity > fp.severity;
                if raised {
                    fp.severity = severity;
                }
                let (inc_id, ci, topo) = (fp.incident, fp.ci, fp.topology);
                if topo {
                    if let Some(a) = ci.and_then(|c| self.ci_active.get_mut(&c)) {
                        a.seen = now;
                    }
                }
                if let Some(inc) = inc_id.and_then(|i| self.incidents.get_mut(&i)) {
                    inc.last_activity = now;
                    if raised {
                        inc.dirty = true;
                        inc.notes.push(format!("{key}: severity raised to {severity}"));
                    }
                }
                return Decision {
                    kind: DecisionKind::Deduplicated,
                    fingerprint: Some(key),
                    incident: inc_id,
                    reason: "repeat of a firing fingerprint".into(),
                };
            }
        }

        // A new firing episode.
        let topology = class.topology.is_some() && ci.is_some();
        let window = match class.topology {
            Some((_, Some(w))) => chrono_dur(w),
            _ => self.cfg.topology_window,
        };
        {
            let fp = self.fps.entry(key.clone()).or_insert_with(|| Fp {
                source: ev.source.clone(),
                check: ev.check.clone(),
                summary: String::new(),
                severity,
                firing: false,
                ci,
                count: 0,
                first_seen: ev.time,
                last_seen: ev.time,
                episode_start: ev.time,
                incident: None,
                topology,
                holds: Vec::new(),
                changes: VecDeque::new(),
                flapping: false,
                flap_noted: false,
            });
            fp.firing = true;
            note_change(fp, ev.time, self.cfg.flap_threshold, self.cfg.flap_window);
            fp.count += 1;
            fp.severity = severity;
            fp.summary = ev.summary.clone();
            fp.ci = ci;
            fp.topology = topology;
            fp.episode_start = ev.time;
            fp.last_seen = ev.time;
            if let Some((p, off)) = part {
                if !fp.holds.iter().any(|(hp, _)| *hp == p) {
                    fp.holds.push((p, off));
                    self.offsets.hold(p, off);
                }
            }
        }
        let mut reason = bind_reason;
        if let Some(m) = ci.and_then(|c| self.cmdb.active_maintenance(c, now)) {
            reason.push_str(&format!(
                "; under {} until {}{}",
                m.change_id.as_deref().map_or_else(|| "planned maintenance".to_string(), |c| format!("change {c}")),
                m.end.to_rfc3339(),
                m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }

        // 1. Recurrence of a fingerprint whose incident is still live.
        if let Some(inc_id) = live_incident {
            reason.push_str("; recurrence of a fingerprint of this incident");
            self.join(&key, inc_id, now, &reason);
            if let (true, Some(ci)) = (topology, ci) {
                self.mark_ci_active(ci, now, inc_id);
            }
            return Decision { kind: DecisionKind::Joined, fingerprint: Some(key), incident: Some(inc_id), reason };
        }

        // 2. Topology.
        if topology {
            let ci = ci.expect("topology needs a CI");
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
            let inc_id = self.absorb_downstream(inc_id, ci, window, now);
            return Decision { kind, fingerprint: Some(key), incident: Some(inc_id), reason };
        }

        // 3. Group rule, 4. the fingerprint alone.
        let (scope, window) = match class.group {
            Some((rule, g)) => {
                let values: Vec<&str> = g.by.iter().map(|f| ev.field(f).unwrap_or("")).collect();
                reason.push_str(&format!(
                    "; grouped by rule `{rule}` on {} = {:?} within {}",
                    g.by.join(","),
                    values,
                    crate::duration::format_span(chrono_dur(g.window))
                ));
                (Scope::Group(format!("{rule}:{}", values.join("|"))), chrono_dur(g.window))
            }
            None => (Scope::Single(key.clone()), self.cfg.reopen_window),
        };
        if let Some(id) = self.by_scope.get(&scope).copied() {
            let inc = &self.incidents[&id];
            let reopenable = matches!(inc.phase, Phase::Resolved { .. } | Phase::Resolving { .. });
            if reopenable || now - inc.last_activity <= window {
                self.join(&key, id, now, &reason);
                return Decision { kind: DecisionKind::Joined, fingerprint: Some(key), incident: Some(id), reason };
            }
            // The window has passed: the old incident keeps its members, the scope starts afresh.
            self.by_scope.remove(&scope);
        }
        let id = self.create(scope, ci, &key, now, &reason);
        Decision { kind: DecisionKind::New, fingerprint: Some(key), incident: Some(id), reason }
    }

    fn bind(&self, ev: &Event, rule_bind: Option<(&str, String)>) -> (Option<CiIdx>, String) {
        if let Some((rule, name)) = rule_bind {
            if let Some(i) = self.cmdb.lookup_name(&name).or_else(|| self.cmdb.lookup_ip(&name)) {
                return (Some(i), format!("bound to CI {} by rule `{rule}` ({name})", self.cmdb.ci(i).id));
            }
        }
        let hints = [("host", ev.ci.host.as_deref()), ("service", ev.ci.service.as_deref())];
        for (what, hint) in hints {
            if let Some(i) = hint.and_then(|h| self.cmdb.lookup_name(h)) {
                return (Some(i), format!("bound to CI {} by {what} name", self.cmdb.ci(i).id));
            }
        }
        if let Some(i) = ev.ci.ip.as_deref().and_then(|ip| self.cmdb.lookup_ip(ip)) {
            return (Some(i), format!("bound to CI {} by IP", self.cmdb.ci(i).id));
        }
        (None, "not bound to a CI".into())
    }

    fn suppression(&self, rules: &[(&str, &crate::rules::Suppress)], ci: Option<CiIdx>, now: DateTime<Utc>) -> Option<String> {
        for (rule, s) in rules {
            if let Some(w) = s.windows.iter().find(|w| w.start <= now && now < w.end) {
                return Some(format!(
                    "suppressed by rule `{rule}`: window {} .. {}{}",
                    w.start.to_rfc3339(),
                    w.end.to_rfc3339(),
                    w.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                ));
            }
            if s.in_maintenance {
                if let Some(m) = ci.and_then(|c| self.cmdb.active_maintenance(c, now)).filter(|m| !m.annotate) {
                    return Some(format!(
                        "suppressed by rule `{rule}`: CI {} in maintenance until {}{}{}",
                        self.cmdb.ci(ci.unwrap()).id,
                        m.end.to_rfc3339(),
                        m.change_id.as_deref().map(|c| format!(", change {c}")).unwrap_or_default(),
                        m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                    ));
                }
            }
        }
        None
    }

    /// Deepest upstream CI of `ci` failing within `window`: firing now, or
    /// cleared only after `event_time` (the downstream fault began while it failed).
    fn failing_upstream(
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
            if !failing || now - a.seen > window || !self.incidents.contains_key(&a.incident) {
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

    /// In a dependency cycle (`ci` and the incident's root are upstream of each
    /// other, as in a meshed core-switch pair) arrival order must not pick the
    /// root, or a replay could name another root and key: the CI that failed
    /// first by event time is the root, ties going to the lower id.
    fn settle_cycle_root(&mut self, inc_id: u64, ci: CiIdx, started: DateTime<Utc>) -> Option<String> {
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
        let inc = self.incidents.get_mut(&inc_id).expect("live incident");
        inc.root = Some(ci);
        inc.scope = scope.clone();
        if inc.opened_at.is_some() {
            inc.dirty = true;
        }
        inc.notes.push(format!("root cause moved to {ci_id}: in a dependency cycle with {root_id}, it failed first"));
        self.by_scope.retain(|_, v| *v != inc_id);
        self.by_scope.insert(scope, inc_id);
        Some(format!("; {ci_id} and {root_id} depend on each other and {ci_id} failed first: it becomes the root cause"))
    }

    fn mark_ci_active(&mut self, ci: CiIdx, now: DateTime<Utc>, inc: u64) {
        let e = self.ci_active.entry(ci).or_insert(Active { firing: 0, seen: now, cleared_at: None, incident: inc });
        e.firing += 1;
        e.seen = now;
        e.cleared_at = None;
        e.incident = inc;
    }

    fn create(&mut self, scope: Scope, root: Option<CiIdx>, fp: &str, now: DateTime<Utc>, reason: &str) -> u64 {
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
                merged: false,
            },
        );
        self.join(fp, id, now, reason);
        id
    }

    /// Adds fingerprint `fp` (already firing) to incident `id`.
    fn join(&mut self, fp: &str, id: u64, now: DateTime<Utc>, reason: &str) {
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
            Phase::Open => {
                inc.dirty = true;
                inc.notes.push(if new_member { format!("{fp} joined: {reason}") } else { format!("{fp} fired again") });
            }
            Phase::Resolving { .. } if flapping => inc.phase = Phase::Open,
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

    /// A new topology root `root` absorbs live incidents rooted downstream of it.
    /// Returns the incident that now carries the root.
    fn absorb_downstream(&mut self, id: u64, root: CiIdx, window: chrono::Duration, now: DateTime<Utc>) -> u64 {
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
        // Keep the incident the ITSM already knows (earliest opened); otherwise the new one.
        let mut candidates: Vec<u64> = victims.iter().map(|v| v.0).filter(|v| self.incidents[v].opened_at.is_some()).collect();
        candidates.sort_by_key(|v| (self.incidents[v].opened_at, *v));
        let survivor = candidates.first().copied().unwrap_or(id);
        let root_id = self.cmdb.ci(root).id.clone();
        let mut losers: Vec<u64> = victims.iter().map(|v| v.0).filter(|v| *v != survivor).collect();
        if survivor != id {
            losers.push(id);
            let new_scope = Scope::Topology(root_id.clone());
            let s = self.incidents.get_mut(&survivor).unwrap();
            s.scope = new_scope.clone();
            s.root = Some(root);
            s.dirty = true;
            s.notes.push(format!("root cause moved upstream to {root_id}"));
            self.by_scope.retain(|_, v| *v != survivor);
            self.by_scope.insert(new_scope, survivor);
        }
        for loser in losers {
            self.merge_into(loser, survivor, &root_id, now);
        }
        survivor
    }

    fn merge_into(&mut self, from: u64, into: u64, root_id: &str, now: DateTime<Utc>) {
        let (members, created, was_open, reasons) = {
            let f = self.incidents.get_mut(&from).expect("live incident");
            (std::mem::take(&mut f.members), f.created, f.opened_at.is_some(), std::mem::take(&mut f.reasons))
        };
        self.by_scope.retain(|_, v| *v != from);
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

    fn clear(&mut self, key: &str, ev: &Event, now: DateTime<Utc>, part: Option<(PartId, i64)>) -> Decision {
        let Some(fp) = self.fps.get_mut(key) else {
            return Decision {
                kind: DecisionKind::ResolveUnknown,
                fingerprint: Some(key.to_string()),
                incident: None,
                reason: "resolve for a fingerprint with no live state".into(),
            };
        };
        if !fp.firing {
            return Decision {
                kind: DecisionKind::Deduplicated,
                fingerprint: Some(key.to_string()),
                incident: fp.incident,
                reason: "repeat of a resolve".into(),
            };
        }
        fp.firing = false;
        fp.last_seen = ev.time.max(fp.last_seen);
        note_change(fp, ev.time, self.cfg.flap_threshold, self.cfg.flap_window);
        let flapping = fp.flapping;
        if let Some((p, off)) = part {
            if fp.incident.is_some() && !fp.holds.iter().any(|(hp, _)| *hp == p) {
                fp.holds.push((p, off));
                self.offsets.hold(p, off);
            }
        }
        let (inc_id, ci, topo) = (fp.incident, fp.ci, fp.topology);
        if topo {
            if let Some(c) = ci {
                if let Some(a) = self.ci_active.get_mut(&c) {
                    a.firing = a.firing.saturating_sub(1);
                    a.seen = now;
                    if a.firing == 0 {
                        a.cleared_at = Some(a.cleared_at.map_or(ev.time, |t| t.max(ev.time)));
                    }
                }
            }
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
                self.by_scope.retain(|_, v| *v != inc_id);
                self.incidents.remove(&inc_id);
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

    /// The resolve hold-down of incident `id`: the flap window while a member
    /// flaps (changed state within the last window), else the configured one.
    fn hold_down_of(&self, id: u64, now: DateTime<Utc>) -> chrono::Duration {
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
    fn all_clear(&self, id: u64) -> bool {
        self.incidents[&id].members.iter().all(|m| self.fps.get(m).is_none_or(|f| !f.firing))
    }

    /// Forgets a cleared fingerprint and releases its offsets.
    fn release_fp(&mut self, key: &str) {
        if let Some(fp) = self.fps.remove(key) {
            for (p, off) in fp.holds {
                self.offsets.release(p, off);
            }
        }
    }

    /// Advances timers: opens pending incidents, sends updates, resolves and
    /// closes. Actions are collected with `take_actions`.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        // Cleared CIs explain late downstream events only within the topology window.
        let window = self.cfg.topology_window;
        let incidents = &self.incidents;
        self.ci_active.retain(|_, a| a.firing > 0 || (now - a.seen <= window && incidents.contains_key(&a.incident)));
        let mut ids: Vec<u64> = self.incidents.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let inc = &self.incidents[&id];
            match inc.phase {
                Phase::Pending if now - inc.created >= self.cfg.group_wait => {
                    let key = self.key_for(inc);
                    let inc = self.incidents.get_mut(&id).unwrap();
                    inc.key = Some(key);
                    inc.phase = Phase::Open;
                    inc.opened_at = Some(now);
                    self.emit(id, ActionKind::Open, now);
                    if self.all_clear(id) {
                        let inc = self.incidents.get_mut(&id).unwrap();
                        inc.phase = Phase::Resolving { since: now };
                        inc.notes.push("all members cleared before the incident opened; resolving after hold-down".into());
                    }
                }
                Phase::Open => {
                    // Membership, severity and state changes all mark the incident dirty.
                    let due = inc.last_sent.is_none_or(|t| now - t >= self.cfg.update_interval);
                    if due && inc.dirty {
                        self.emit(id, ActionKind::Update, now);
                    }
                }
                Phase::Resolving { since } => {
                    let hold = self.hold_down_of(id, now);
                    if now - since >= hold {
                        let inc = self.incidents.get_mut(&id).unwrap();
                        inc.phase = Phase::Resolved { at: now };
                        inc.notes.push(format!("all member events clear for {}", crate::duration::format_span(hold)));
                        self.emit(id, ActionKind::Resolve, now);
                    }
                }
                Phase::Resolved { at } if inc.inflight == 0 && (inc.merged || now - at >= self.cfg.reopen_window) => {
                    self.close(id);
                }
                _ => {}
            }
        }
    }

    fn close(&mut self, id: u64) {
        let Some(inc) = self.incidents.remove(&id) else { return };
        self.by_scope.retain(|_, v| *v != id);
        for m in inc.members {
            let clear = self.fps.get(&m).is_some_and(|f| !f.firing && f.incident == Some(id));
            if clear {
                self.release_fp(&m);
            }
        }
    }

    fn key_for(&self, inc: &Inc) -> String {
        let earliest = inc.members.iter().filter_map(|m| self.fps.get(m)).map(|f| f.episode_start).min().unwrap_or(inc.created);
        let text = format!("{}|{}", inc.scope.text(), earliest.timestamp_millis());
        format!("trg-{:016x}", fnv1a(text.as_bytes()))
    }

    /// (priority, impact, urgency, impacted services, max severity)
    fn assess(&self, inc: &Inc) -> (u8, u8, u8, Vec<String>, Severity) {
        // Urgency follows the members still firing; once none is, the worst
        // the incident had (a resolve keeps the priority it was worked at).
        let (mut firing_sev, mut any_sev) = (None::<Severity>, Severity::Info);
        let mut crit = Criticality::Low;
        let mut services: BTreeSet<CiIdx> = BTreeSet::new();
        let mut cis: BTreeSet<CiIdx> = BTreeSet::new();
        for m in &inc.members {
            if let Some(f) = self.fps.get(m) {
                any_sev = any_sev.max(f.severity);
                if f.firing {
                    firing_sev = Some(firing_sev.map_or(f.severity, |s| s.max(f.severity)));
                }
                if let Some(c) = f.ci {
                    cis.insert(c);
                }
            }
        }
        if let Some(r) = inc.root {
            cis.insert(r);
        }
        for c in cis {
            crit = crit.min(self.cmdb.ci(c).criticality);
            services.extend(self.cmdb.impacted_services(c));
        }
        for s in &services {
            crit = crit.min(self.cmdb.ci(*s).criticality);
        }
        let impact = if crit == Criticality::Critical || services.len() >= 3 {
            1
        } else if crit == Criticality::High || !services.is_empty() {
            2
        } else {
            3
        };
        let severity = firing_sev.unwrap_or(any_sev);
        let urgency = match severity {
            Severity::Critical => 1,
            Severity::Major | Severity::Minor => 2,
            Severity::Warning | Severity::Info => 3,
        };
        let priority = match impact + urgency {
            2 => 1,
            3 => 2,
            4 => 3,
            5 => 4,
            _ => 5,
        };
        let names = services.into_iter().map(|s| self.cmdb.ci(s).name.clone()).collect();
        (priority, impact, urgency, names, severity)
    }

    fn ci_ref(&self, idx: CiIdx) -> CiRef {
        let c = self.cmdb.ci(idx);
        CiRef { id: c.id.clone(), name: c.name.clone(), kind: c.kind.clone() }
    }

    fn snapshot(&self, id: u64) -> Incident {
        let inc = &self.incidents[&id];
        let (priority, impact, urgency, impacted_services, severity) = self.assess(inc);
        let members: Vec<Member> = inc
            .members
            .iter()
            .filter_map(|m| self.fps.get(m).map(|f| (m, f)))
            .map(|(m, f)| Member {
                fingerprint: m.clone(),
                source: f.source.clone(),
                check: f.check.clone(),
                ci: f.ci.map(|c| self.ci_ref(c)),
                severity: f.severity,
                status: if f.firing { Status::Firing } else { Status::Resolved },
                count: f.count,
                first_seen: f.first_seen,
                last_seen: f.last_seen,
                summary: f.summary.clone(),
            })
            .collect();
        let event_count = members.iter().map(|m| m.count).sum();
        let ci = inc.root.or_else(|| members.iter().find_map(|m| m.ci.as_ref()).and_then(|c| self.cmdb.by_id(&c.id)));
        let ci_cmdb = ci.map(|c| self.cmdb.ci(c));
        let bound: BTreeSet<&str> = members.iter().filter_map(|m| m.ci.as_ref().map(|c| c.id.as_str())).collect();
        let title = match (inc.root, &inc.scope) {
            (Some(r), _) => {
                let c = self.cmdb.ci(r);
                if members.len() > 1 {
                    format!("{} {} failure: {} alerts on {} CIs", c.kind.replace('_', " "), c.name, members.len(), bound.len().max(1))
                } else {
                    format!("{} on {}", members.first().map_or("alert", |m| m.check.as_str()), c.name)
                }
            }
            (None, _) => {
                let first = members.first();
                let check = first.map_or("alert", |m| m.check.as_str());
                let on = ci_cmdb.map(|c| c.name.as_str()).unwrap_or("unbound CI");
                if members.len() > 1 {
                    format!("{check} on {} event streams ({on})", members.len())
                } else {
                    format!("{check} on {on}")
                }
            }
        };
        let state = match inc.phase {
            Phase::Resolved { .. } => IncidentState::Resolved,
            _ => IncidentState::Open,
        };
        Incident {
            key: inc.key.clone().expect("incident has a key once opened"),
            scope: inc.scope.text(),
            title,
            state,
            priority,
            impact,
            urgency,
            severity,
            root_cause: inc.root.map(|r| self.ci_ref(r)),
            ci: ci.map(|c| self.ci_ref(c)),
            assignment_group: ci_cmdb.and_then(|c| c.owner_group.clone()),
            oncall: ci_cmdb.and_then(|c| c.oncall.clone()),
            runbook: ci_cmdb.and_then(|c| c.runbook.clone()),
            impacted_services,
            opened_at: inc.opened_at.unwrap_or(inc.created),
            resolved_at: match inc.phase {
                Phase::Resolved { at } => Some(at),
                _ => None,
            },
            event_count,
            members,
            reasons: inc.reasons.clone(),
        }
    }

    fn emit(&mut self, id: u64, kind: ActionKind, now: DateTime<Utc>) {
        let incident = self.snapshot(id);
        let action_id = self.next_action;
        self.next_action += 1;
        let inc = self.incidents.get_mut(&id).unwrap();
        if let Some(p) = inc.sent_priority.filter(|p| *p != incident.priority) {
            inc.notes.push(format!("priority P{p} -> P{} (impact {} x urgency {})", incident.priority, incident.impact, incident.urgency));
        }
        let notes = std::mem::take(&mut inc.notes);
        inc.dirty = false;
        inc.last_sent = Some(now);
        inc.sent_priority = Some(incident.priority);
        inc.inflight += 1;
        self.inflight.insert(action_id, id);
        *self.stats.actions.entry(kind.as_str()).or_default() += 1;
        self.outbox.push(Action { id: action_id, kind, incident, notes, claim: None });
    }

    /// Snapshots of incidents currently open at the sink (for gauges and `/incidents`).
    pub fn open_incidents(&self) -> Vec<Incident> {
        let mut ids: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(_, i)| matches!(i.phase, Phase::Open | Phase::Resolving { .. }) && i.key.is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| self.snapshot(id)).collect()
    }

    /// Incidents waiting in group wait.
    pub fn pending_incidents(&self) -> usize {
        self.incidents.values().filter(|i| i.phase == Phase::Pending).count()
    }

    /// Keys of the incidents this state says are open at the ITSM.
    pub fn open_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .incidents
            .values()
            .filter(|i| matches!(i.phase, Phase::Open | Phase::Resolving { .. }))
            .filter_map(|i| i.key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// The ITSM has no record under `key` although this state says it is
    /// open: opens it again, whole, with `why` as a work note. False when
    /// no open incident has that key (any more).
    pub fn open_again(&mut self, key: &str, why: &str, now: DateTime<Utc>) -> bool {
        let found = self
            .incidents
            .iter()
            .find(|(_, i)| i.key.as_deref() == Some(key) && matches!(i.phase, Phase::Open | Phase::Resolving { .. }))
            .map(|(id, _)| *id);
        let Some(id) = found else { return false };
        let inc = self.incidents.get_mut(&id).expect("found above");
        inc.notes.push(why.to_owned());
        inc.reasons.push(why.to_owned());
        self.emit(id, ActionKind::Open, now);
        true
    }
}

/// FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
