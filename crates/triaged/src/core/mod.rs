//! The correlation core: plain synchronous code over state it owns, with the
//! clock passed in, so it runs the same in the daemon, in tests and in replays.
//! This module holds the core's state, its public API and `decide`, which
//! takes each decision in turn by calling the module that makes it.
//!
//! Per event: rules classify it (drop, severity, binding, fingerprint,
//! suppression, grouping, topology; keys in `keys.rs`), maintenance or a rule
//! window suppresses it (`suppress.rs`), the fingerprint deduplicates repeats
//! (`dedup.rs`), and a firing event joins or starts an incident:
//! 1. a fingerprint that already belongs to a live incident rejoins it
//!    (reopening it when it was resolved within the reopen window; `lifecycle.rs`);
//! 2. with topology correlation and a bound CI: if an upstream CI (depends_on,
//!    runs_on, connects_to, followed transitively) is firing (until it clears
//!    or expires, however rarely its source re-sends), or cleared within the
//!    window but only after this event began (event time: one fault's events
//!    read out of order across partitions), the event joins that CI's
//!    incident; **the root cause is the deepest failing upstream CI** (in a
//!    dependency cycle, the one that failed first). A new root that is upstream
//!    of existing incidents absorbs them (`topology.rs`);
//! 3. else a `group` rule's key (rule name + field values) within its window;
//! 4. else the fingerprint alone (`group.rs`).
//!
//! New incidents wait `group_wait` before they are opened, so a storm becomes
//! one incident. One whose members all clear sooner is dropped as a flap if,
//! by the events' own times, the fault lasted less than `group_wait`;
//! otherwise it still opens, then resolves (late bursts, replays). Open incidents are updated at most every `update_interval`,
//! resolved after every member has stayed clear for `resolve_hold_down`, and
//! reopened by a recurrence within `reopen_window`; after that they close and
//! release their state (`lifecycle.rs`). Priority is ITIL impact x urgency
//! (`priority.rs`), carried in the incident snapshot (`snapshot.rs`).
//!
//! **Incident keys are deterministic**: a hash of the scope and the earliest
//! member's first-seen time, so replaying the same events gives the same key.
//!
//! Beside the core: its state as changelog records (`checkpoint.rs`), one core
//! or one per assigned partition (`partitions.rs`), which Kafka offsets may be
//! stored (`offset_book.rs`) and problem candidates (`problems.rs`).

mod checkpoint;
pub mod clock;
mod dedup;
mod expiry;
mod group;
pub mod keys;
mod lifecycle;
pub mod offset_book;
pub mod partitions;
mod priority;
pub mod problems;
mod redundancy;
pub mod remote;
mod snapshot;
mod suppress;
mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::CorrelationConfig;
use crate::event::{Event, Origin, Severity, Status};
use crate::incident::{Action, ActionKind, Incident};
use crate::rules::template::Template;
use crate::rules::RuleSet;
use crate::topology::{CiIdx, Snapshot};
use keys::Keys;
pub use keys::Route;
use offset_book::{OffsetBook, PartId};
pub use remote::{ClosedPolicy, Observation, Outcome as RemoteOutcome, SeenState};

/// Core timers and defaults.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub group_wait: chrono::Duration,
    pub update_interval: chrono::Duration,
    pub hold_down: chrono::Duration,
    pub reopen_window: chrono::Duration,
    pub topology_window: chrono::Duration,
    /// Group wait of a topology incident whose root has upstream CIs (at least `group_wait`).
    pub topology_wait: chrono::Duration,
    pub max_depth: usize,
    pub dedup_key: Template,
    /// State changes within `flap_window` that make a fingerprint flapping (0: off).
    pub flap_threshold: usize,
    pub flap_window: chrono::Duration,
    /// How long a resolve that arrived before its firing is held.
    pub max_lateness: chrono::Duration,
    /// A firing fingerprint not refreshed this long expires (0: never).
    pub stale_after: chrono::Duration,
    pub stale_after_by_source: HashMap<String, chrono::Duration>,
    pub max_fingerprints: usize,
    /// Below this severity an alert is context, not part of topology
    /// correlation (`correlation.topology_min_severity`).
    pub topology_min_severity: Severity,
    /// Per sink name: what to do with a record a person closed while its
    /// alerts fire (absent: reopen).
    pub closed_while_firing: HashMap<String, ClosedPolicy>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
            topology_wait: chrono_dur(c.topology_wait.0),
            max_depth: c.max_upstream_depth,
            dedup_key: Template::parse(&c.dedup_key).expect("validated dedup key template"),
            flap_threshold: c.flap_threshold as usize,
            flap_window: chrono_dur(c.flap_window.0),
            max_lateness: chrono_dur(c.max_lateness.0),
            stale_after: chrono_dur(c.stale_after.0),
            stale_after_by_source: c.stale_after_by_source.iter().map(|(k, v)| (k.clone(), chrono_dur(v.0))).collect(),
            topology_min_severity: c.topology_min_severity,
            max_fingerprints: c.max_fingerprints,
            closed_while_firing: HashMap::new(),
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
    /// A new fingerprint refused: the state holds `max_fingerprints`.
    Refused,
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
            DecisionKind::Refused => "refused",
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Scope {
    Topology(String),
    Group(String),
    Single(String),
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
enum Phase {
    Pending,
    Open,
    Resolving { since: DateTime<Utc> },
    Resolved { at: DateTime<Utc> },
}

/// Live state of one fingerprint. `C` names its CI: a [`CiIdx`] in the live
/// state, the CI id in a changelog record (`checkpoint.rs`), which leaves out
/// what only the running core knows (its incident, the offsets it holds).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Fp<C = CiIdx> {
    source: String,
    check: String,
    summary: String,
    severity: Severity,
    firing: bool,
    ci: Option<C>,
    count: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// Start of the current firing episode (event time).
    episode_start: DateTime<Utc>,
    /// Set on restore from the record that holds the fingerprint.
    #[serde(skip)]
    incident: Option<u64>,
    /// Topology correlation enabled for this fingerprint.
    topology: bool,
    /// Offsets this fingerprint's live state holds, one per partition.
    /// Not checkpointed: offsets before a checkpoint are settled by the changelog.
    #[serde(skip)]
    holds: Vec<(PartId, i64)>,
    /// Times of its recent state changes (fire, clear), for flap detection.
    changes: VecDeque<DateTime<Utc>>,
    /// Flapping: too many state changes within the flap window; ends once the
    /// fingerprint has been stable for a whole window (hysteresis).
    flapping: bool,
    /// Its incident has been told it flaps.
    flap_noted: bool,
    /// When it expires unless refreshed: `endsAt`, or the last event time
    /// plus `stale_after`.
    #[serde(default)]
    expires: Option<DateTime<Utc>>,
    /// Event time of its latest resolve: a firing from before it, read
    /// after it (another partition, a producer's retry), is stale.
    #[serde(default)]
    cleared_at: Option<DateTime<Utc>>,
}

/// One incident. `C` names its root CI, as in [`Fp`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Inc<C = CiIdx> {
    key: Option<String>,
    scope: Scope,
    root: Option<C>,
    members: BTreeSet<String>,
    phase: Phase,
    created: DateTime<Utc>,
    last_activity: DateTime<Utc>,
    opened_at: Option<DateTime<Utc>>,
    last_sent: Option<DateTime<Utc>>,
    dirty: bool,
    notes: Vec<String>,
    reasons: Vec<String>,
    /// Not checkpointed: a checkpoint is taken with no action in flight.
    #[serde(skip)]
    inflight: u32,
    sent_priority: Option<u8>,
    /// The highest priority (lowest number) sent so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peak_priority: Option<u8>,
    /// Absorbed by another incident; closes once its last action is acknowledged.
    merged: bool,
    /// What the ITSM holds of an incident merged away: its snapshot before
    /// its members moved, so its resolve carries its content (members,
    /// title, priority) and does not overwrite the record with an empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frozen: Option<Box<Incident>>,
    /// The latest action decided and not yet acknowledged by the ITSM. A
    /// restored incident sends it again (it is the incident's current state),
    /// and nothing older: what the ITSM acknowledged is never sent twice.
    #[serde(default)]
    pending: Option<ActionKind>,
    /// The last action the ITSM acknowledged.
    #[serde(default)]
    acked: Option<ActionKind>,
    /// The redundancy group that fell below its `min_up` while this incident
    /// had it as its root cause: its members' impact counts from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed_group: Option<String>,
    /// Per sink: what was read back of the incident's record there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    remote: BTreeMap<String, remote::SinkView>,
    /// Records replaced by new ones (`closed_while_firing = new`).
    #[serde(default, skip_serializing_if = "is_zero")]
    generation: u32,
    /// Core id of the latest action decided (not checkpointed).
    #[serde(skip)]
    last_action: u64,
}

/// Topology state of one CI: how many of its topology fingerprints fire, and
/// when it last cleared by event time. A cleared CI still explains downstream
/// events that began before it cleared (events of one fault arriving out of
/// order across partitions, after a backlog or a replay) for as long as its
/// incident lives and the topology window has not passed here.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Active {
    firing: u32,
    /// Watermark time of the last event that touched it.
    seen: DateTime<Utc>,
    /// Event time at which `firing` last dropped to zero.
    cleared_at: Option<DateTime<Utc>>,
    /// Set on restore from the record that holds it.
    #[serde(skip)]
    incident: u64,
}

/// A resolve that arrived before any firing of its fingerprint, held for
/// `max_lateness`: a firing that began no later than it is cleared by it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct EarlyResolve {
    /// Event time of the resolve.
    at: DateTime<Utc>,
    /// When it was handled here.
    seen: DateTime<Utc>,
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
    /// Resolves that arrived before their firing, by fingerprint.
    early: HashMap<String, EarlyResolve>,
    /// Expiry times of firing fingerprints, earliest first; an entry is
    /// checked against the fingerprint when due (refreshes move it later).
    expiry: std::collections::BinaryHeap<std::cmp::Reverse<(DateTime<Utc>, String)>>,
    next_incident: u64,
    next_action: u64,
    /// Actions in flight: id -> (incident, kind).
    inflight: HashMap<u64, (u64, ActionKind)>,
    outbox: Vec<Action>,
    offsets: OffsetBook,
    stats: CoreStats,
    /// What changed since the last checkpoint (`checkpoint.rs`).
    changes: checkpoint::Changes,
    /// When the timers last ran (`tick`).
    last_tick: Option<DateTime<Utc>>,
}

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
            early: HashMap::new(),
            expiry: Default::default(),
            next_incident: 1,
            next_action: 1,
            inflight: HashMap::new(),
            outbox: Vec::new(),
            offsets: OffsetBook::default(),
            stats: CoreStats::default(),
            changes: checkpoint::Changes::default(),
            last_tick: None,
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
        self.changes.everything();
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
        if let Some((inc_id, kind)) = self.inflight.remove(&id) {
            if let Some(inc) = self.incidents.get_mut(&inc_id) {
                inc.inflight = inc.inflight.saturating_sub(1);
                inc.acked = Some(kind);
                if inc.last_action == id {
                    inc.pending = None;
                }
                self.changes.incident(inc_id);
            }
        }
    }

    /// Where `ev` correlates, for the repartition stage: see [`keys::route`].
    pub fn route(&self, ev: &Event) -> Route {
        keys::route(&self.rules, &self.cmdb, &self.cfg.dedup_key, ev)
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, ev: &Event, now: DateTime<Utc>) -> Decision {
        self.stats.events += 1;
        let part = ev.origin.as_ref().map(|o| (self.offsets.handled(o), o.offset));
        let d = self.decide(ev, now, part);
        if let Some(fp) = &d.fingerprint {
            self.changes.fingerprint(fp);
        }
        if let Some(id) = d.incident {
            self.changes.incident(id);
        }
        *self.stats.decisions.entry(d.kind.as_str()).or_default() += 1;
        d
    }

    /// One decision after another, each made by its own module; the first
    /// that settles the event returns.
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
        let Keys { ci, bind_reason, fingerprint: key } = keys::keys(&self.cmdb, &self.cfg.dedup_key, ev, &class);

        if ev.status == Status::Resolved {
            return self.clear(&key, ev, now, part);
        }

        let live_incident = self.fps.get(&key).and_then(|f| f.incident).filter(|i| self.incidents.contains_key(i));
        if live_incident.is_none() {
            // Judged when the event happened, however late it is read.
            if let Some(d) = self.suppress(&class.suppress, ci, &key, ev.time) {
                return d;
            }
        }
        if let Some(d) = self.dedup(&key, ev, severity, now, part) {
            return d;
        }
        if let Some(d) = self.stale_firing(&key, ev) {
            return d;
        }
        if let Some(d) = self.cleared_early(&key, ev) {
            return d;
        }

        if !self.fps.contains_key(&key) && self.fps.len() >= self.cfg.max_fingerprints {
            return Decision {
                kind: DecisionKind::Refused,
                fingerprint: Some(key),
                incident: None,
                reason: format!("refused: the state holds max_fingerprints ({}) live fingerprints", self.cfg.max_fingerprints),
            };
        }
        // A new firing episode. Below the topology minimum it is context only.
        let min_severity = class.topology_min_severity.unwrap_or(self.cfg.topology_min_severity);
        let context = class.topology.is_some() && ci.is_some() && severity < min_severity;
        let topology = class.topology.is_some() && ci.is_some() && !context;
        self.start_episode(&key, ev, severity, ci, topology, part);
        let mut reason = self.maintenance_note(bind_reason, ci, ev.time);
        if let (true, Some(ci)) = (context, ci) {
            let window = topology::window_of(class.topology, &self.cfg);
            reason.push_str(&self.context_of(ci, severity, min_severity, ev, window, now));
        }

        // 1. Recurrence of a fingerprint whose incident is still live.
        if let Some(inc_id) = live_incident {
            return self.recur(key, inc_id, ci.filter(|_| topology), now, reason);
        }
        // 2. Topology.
        if let (true, Some(ci)) = (topology, ci) {
            let window = topology::window_of(class.topology, &self.cfg);
            return self.correlate_topology(key, ci, window, ev, now, reason);
        }
        // 3. Group rule, 4. the fingerprint alone.
        self.group(key, class.group, ev, ci, now, reason)
    }

    /// Runs the timers up to `t` as time would have passed: see
    /// [`clock::steps`].
    pub fn advance_to(&mut self, t: DateTime<Utc>) {
        for k in clock::steps(self.last_tick, t) {
            self.tick(k);
        }
    }

    /// When the timers last ran.
    pub fn last_tick(&self) -> Option<DateTime<Utc>> {
        self.last_tick
    }

    /// Advances timers: opens pending incidents, sends updates, resolves and
    /// closes. Actions are collected with `take_actions`.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        self.last_tick = Some(self.last_tick.map_or(now, |l| l.max(now)));
        // Cleared CIs explain late downstream events only within the topology window.
        let window = self.cfg.topology_window;
        let (incidents, changes) = (&self.incidents, &mut self.changes);
        self.ci_active.retain(|_, a| {
            let keep = a.firing > 0 || (now - a.seen <= window && incidents.contains_key(&a.incident));
            if !keep {
                changes.incident(a.incident);
            }
            keep
        });
        self.expire_due(now);
        let changes = &mut self.changes;
        let lateness = self.cfg.max_lateness;
        self.early.retain(|k, e| {
            let keep = now - e.seen <= lateness;
            if !keep {
                changes.early(k);
            }
            keep
        });
        let mut ids: Vec<u64> = self.incidents.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let inc = &self.incidents[&id];
            match inc.phase {
                Phase::Pending if now - inc.created >= self.wait_of(inc) => {
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
                        self.resolved_at_itsm(id);
                    }
                }
                Phase::Resolved { at } if inc.inflight == 0 && (inc.merged || now - at >= self.cfg.reopen_window) => {
                    self.close(id);
                }
                _ => {}
            }
        }
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

    /// Keys of the incidents this state says are open at the ITSM, to look
    /// up after a restore. Those that owe an action are left out: the action
    /// is sent again, and looks the incident up itself where it can.
    pub fn open_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .incidents
            .values()
            .filter(|i| matches!(i.phase, Phase::Open | Phase::Resolving { .. }) && i.pending.is_none())
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
