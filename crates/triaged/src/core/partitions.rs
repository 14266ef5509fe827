//! The correlation cores of one instance, and their checkpoints.
//!
//! Events read straight from the input topics go through a single core, which
//! correlates across all partitions; its state is changelog partition 0.
//! Events read from a repartition topic (`[rekey]`) were keyed by correlation
//! scope, so related events share a partition; then every partition gets a
//! core of its own, created when the partition is assigned (restored from
//! the changelog partition of the same number) and dropped, with everything
//! it held, when it is revoked. Actions of a dropped core are not sent (see
//! `ownership.rs`).
//!
//! A checkpoint holds the records that changed and, last, the next input
//! offset of every partition the core read (`meta:next-offset:<topic>:<n>`):
//! what is below it is in the state, so a restored core skips it even when
//! the committed offset lags.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{debug, info};

use super::checkpoint::Delta;
use super::clock::EventClock;
use super::{Core, CoreConfig, CoreStats, Decision};
use crate::event::{Event, Origin};
use crate::incident::{Action, Incident};
use crate::rules::RuleSet;
use crate::scale::ownership::Claim;
use crate::topology::Snapshot;

mod observed;
pub use observed::{Observed, PolledAt};

type TopicPartition = (String, i32);

struct Slot {
    core: Core,
    claim: Option<Claim>,
    /// Next input offsets the changelog says this core's state reflects.
    /// Messages below are already in the restored state: the committed
    /// offset can lag the checkpoint (a commit refused during a rebalance, a
    /// crash before the next commit), and applying them again would, say,
    /// reopen an incident with an alert that cleared since.
    reflected: HashMap<TopicPartition, i64>,
    /// Next input offsets stored for commit by this run. After a restore
    /// they can lag what the changelog reflects: the skipped messages below
    /// it still move the committed offset.
    stored: HashMap<TopicPartition, i64>,
    /// The event-time watermark over the partitions the core reads.
    clock: EventClock,
}

impl Slot {
    fn new(core: Core, claim: Option<Claim>) -> Slot {
        Slot { core, claim, reflected: HashMap::new(), stored: HashMap::new(), clock: EventClock::default() }
    }

    /// Runs the core's timers up to the watermark at wall time `wall`.
    fn advance(&mut self, wall: DateTime<Utc>, reading: bool) -> Option<DateTime<Utc>> {
        let w = self.clock.watermark(wall, reading)?;
        self.core.advance_to(w);
        Some(w)
    }
}

/// Prefix of the changelog keys of the input offsets a checkpoint reflects.
const OFFSET_PREFIX: &str = "meta:next-offset";

fn offset_key(topic: &str, partition: i32) -> String {
    format!("{OFFSET_PREFIX}:{topic}:{partition}")
}

/// The input partition of an offset key; `None` for the one-partition form
/// (`meta:next-offset`) of earlier versions, which names the core's own.
fn offset_key_partition(key: &str) -> Option<Option<TopicPartition>> {
    let rest = key.strip_prefix(OFFSET_PREFIX)?;
    if rest.is_empty() {
        return Some(None);
    }
    let (topic, partition) = rest.strip_prefix(':')?.rsplit_once(':')?;
    Some(Some((topic.to_owned(), partition.parse().ok()?)))
}

/// The changes of one core's state since its last checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The changelog partition it goes to.
    pub partition: i32,
    /// The claim of the core it was taken from (with `[rekey]`).
    pub claim: Option<Claim>,
    /// Changed records, then the input offsets; `None` deletes the key.
    pub records: Vec<(String, Option<Vec<u8>>)>,
    delta: Delta,
    slot: Option<TopicPartition>,
    /// Input offsets settled once the records are durable.
    pub offsets: Vec<(String, i32, i64)>,
    /// Actions waiting for this checkpoint before they may be sent.
    pub actions: usize,
}

/// One core, or one per assigned partition.
pub struct Cores {
    cfg: CoreConfig,
    rules: Arc<RuleSet>,
    cmdb: Arc<Snapshot>,
    per_partition: bool,
    slots: HashMap<Option<TopicPartition>, Slot>,
    /// Action ids handed out here -> the slot and the core's own id.
    actions: HashMap<u64, (Option<TopicPartition>, u64)>,
    next_action: u64,
    /// Counters of dropped cores.
    retired: CoreStats,
}

impl Cores {
    /// A single core for every partition.
    pub fn single(cfg: CoreConfig, rules: Arc<RuleSet>, cmdb: Arc<Snapshot>) -> Cores {
        let mut c = Cores::new(cfg, rules, cmdb, false);
        let core = c.new_core();
        c.slots.insert(None, Slot::new(core, None));
        c
    }

    /// A core per partition, created by [`Cores::assign`].
    pub fn per_partition(cfg: CoreConfig, rules: Arc<RuleSet>, cmdb: Arc<Snapshot>) -> Cores {
        Cores::new(cfg, rules, cmdb, true)
    }

    fn new(cfg: CoreConfig, rules: Arc<RuleSet>, cmdb: Arc<Snapshot>, per_partition: bool) -> Cores {
        Cores {
            cfg,
            rules,
            cmdb,
            per_partition,
            slots: HashMap::new(),
            actions: HashMap::new(),
            next_action: 1,
            retired: CoreStats::default(),
        }
    }

    fn new_core(&self) -> Core {
        Core::new(self.cfg.clone(), Arc::clone(&self.rules), Arc::clone(&self.cmdb))
    }

    fn slot_key(&self, origin: Option<&Origin>) -> Option<TopicPartition> {
        if self.per_partition {
            origin.map(|o| (o.topic.clone(), o.partition))
        } else {
            None
        }
    }

    /// A partition was assigned under `epoch`: it starts with an empty core
    /// (the log is read from its committed offset). Ignored with a single core.
    pub fn assign(&mut self, topic: &str, partition: i32, epoch: u64) {
        if !self.per_partition {
            return;
        }
        self.revoke(topic, partition);
        let core = self.new_core();
        let claim = Claim { topic: topic.to_owned(), partition, epoch };
        info!(topic, partition, epoch, "correlation state for the partition starts");
        self.slots.insert(Some((topic.to_owned(), partition)), Slot::new(core, Some(claim)));
    }

    /// Like [`Cores::assign`], with the state of a changelog read back.
    /// Returns the incidents restored and the records left out (key, why).
    pub fn assign_restored(
        &mut self,
        topic: &str,
        partition: i32,
        epoch: u64,
        records: &[(String, Vec<u8>)],
    ) -> (usize, Vec<(String, String)>) {
        self.assign(topic, partition, epoch);
        self.restore_slot(Some((topic.to_owned(), partition)), records)
    }

    /// Replaces the single core's state with its changelog records (at each
    /// new assignment). Acknowledgements of the replaced core's actions are
    /// ignored; what it owed is owed by the restored state.
    pub fn restore_single(&mut self, records: &[(String, Vec<u8>)]) -> (usize, Vec<(String, String)>) {
        let mut slot = Slot::new(self.new_core(), None);
        if let Some(old) = self.slots.remove(&None) {
            add_stats(&mut self.retired, old.core.stats());
            // The partitions read and their marks are this process's own.
            slot.clock = old.clock;
        }
        self.slots.insert(None, slot);
        self.actions.retain(|_, (k, _)| k.is_some());
        self.restore_slot(None, records)
    }

    fn restore_slot(&mut self, key: Option<TopicPartition>, records: &[(String, Vec<u8>)]) -> (usize, Vec<(String, String)>) {
        let Some(slot) = self.slots.get_mut(&key) else { return (0, Vec::new()) };
        let (meta, state): (Vec<_>, Vec<_>) = records.iter().cloned().partition(|(k, _)| k.starts_with("meta:"));
        let (restored, mut bad) = slot.core.restore(&state);
        for (k, v) in meta {
            let next = std::str::from_utf8(&v).ok().and_then(|t| t.trim().parse::<i64>().ok());
            match (offset_key_partition(&k), next) {
                (Some(Some(tp)), Some(next)) => {
                    slot.reflected.insert(tp, next);
                }
                (Some(None), Some(next)) if key.is_some() => {
                    slot.reflected.insert(key.clone().expect("checked"), next);
                }
                _ => bad.push((k, "not an input offset record".into())),
            }
        }
        (restored, bad)
    }

    /// Checkpoints of every core with changes, actions waiting, or input
    /// offsets that moved.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        for (key, slot) in &self.slots {
            let partition = match key {
                Some((_, p)) => *p,
                None => 0,
            };
            let delta = slot.core.delta();
            let mut records = delta.records.clone();
            let offsets: Vec<(String, i32, i64)> =
                slot.core.handled_offsets().into_iter().filter(|(t, p, next)| slot.stored.get(&(t.clone(), *p)) != Some(next)).collect();
            // The offsets the state reflects, written after the state itself.
            records.extend(
                offsets
                    .iter()
                    .filter(|(t, p, next)| slot.reflected.get(&(t.clone(), *p)) != Some(next))
                    .map(|(t, p, next)| (offset_key(t, *p), Some(next.to_string().into_bytes()))),
            );
            let actions = slot.core.waiting_actions();
            if records.is_empty() && offsets.is_empty() && actions == 0 {
                continue;
            }
            out.push(Checkpoint { partition, claim: slot.claim.clone(), records, delta, slot: key.clone(), offsets, actions });
        }
        out.sort_by_key(|c| c.partition);
        out
    }

    /// Keys of the incidents the core of `topic`/`partition` (under
    /// `epoch`) says are open at the ITSM.
    pub fn open_keys(&self, topic: &str, partition: i32, epoch: u64) -> Vec<String> {
        self.slot_at(topic, partition, epoch).map(|s| s.core.open_keys()).unwrap_or_default()
    }

    /// See [`Core::open_again`]; with a core per partition, only while the
    /// partition's core is the one of `epoch`.
    pub fn open_again(&mut self, topic: &str, partition: i32, epoch: u64, key: &str, why: &str, now: DateTime<Utc>) -> bool {
        let slot = if self.per_partition {
            self.slots.get_mut(&Some((topic.to_owned(), partition))).filter(|s| s.claim.as_ref().is_some_and(|c| c.epoch == epoch))
        } else {
            self.slots.get_mut(&None)
        };
        slot.is_some_and(|s| s.core.open_again(key, why, now))
    }

    /// Keys of the incidents the single core says are open at the ITSM.
    pub fn open_keys_single(&self) -> Vec<String> {
        self.slots.get(&None).map(|s| s.core.open_keys()).unwrap_or_default()
    }

    /// Whether every partition has a core of its own (`[rekey]`).
    pub fn has_partition_cores(&self) -> bool {
        self.per_partition
    }

    /// Input partitions the cores have read from.
    pub fn read_partitions(&self) -> Vec<(String, i32)> {
        self.slots.values().flat_map(|s| s.core.handled_offsets()).map(|(t, p, _)| (t, p)).collect()
    }

    /// `cp` will not be written: its core's partition is owned elsewhere.
    /// Returns its actions, which the sink workers refuse.
    pub fn disowned(&mut self, cp: Checkpoint) -> Vec<Action> {
        self.take_slot_actions(cp.slot)
    }

    fn slot_at(&self, topic: &str, partition: i32, epoch: u64) -> Option<&Slot> {
        self.slots.get(&Some((topic.to_owned(), partition))).filter(|s| s.claim.as_ref().is_some_and(|c| c.epoch == epoch))
    }

    /// `cp` is durable in the changelog: its actions may be sent, its
    /// offsets stored. Returns the actions.
    pub fn checkpointed(&mut self, cp: Checkpoint) -> Vec<Action> {
        let same = |s: &Slot| s.claim.as_ref().map(|c| c.epoch) == cp.claim.as_ref().map(|c| c.epoch);
        let Some(slot) = self.slots.get_mut(&cp.slot).filter(|s| same(s)) else { return Vec::new() };
        slot.core.delta_written(cp.delta);
        for (t, p, next) in cp.offsets {
            slot.reflected.insert((t.clone(), p), next);
            slot.stored.insert((t, p), next);
        }
        self.take_slot_actions(cp.slot)
    }

    /// A partition was revoked: its core and everything it held go.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if !self.per_partition {
            if let Some(slot) = self.slots.get_mut(&None) {
                slot.clock.revoked(topic, partition);
            }
            return;
        }
        let key = Some((topic.to_owned(), partition));
        if let Some(slot) = self.slots.remove(&key) {
            info!(
                topic,
                partition,
                fingerprints = slot.core.fingerprint_count(),
                in_flight = slot.core.inflight_actions(),
                "partition revoked; its correlation state is dropped, its new owner rebuilds it from the log"
            );
            add_stats(&mut self.retired, slot.core.stats());
            self.actions.retain(|_, (k, _)| *k != key);
        }
    }

    /// Handles one event read at wall time `wall`, at its own time (see
    /// `clock.rs`): the core's timers first run up to the watermark. `None`
    /// when its partition has no core (a message of a partition already
    /// revoked): it is left to the new owner.
    pub fn handle(&mut self, ev: &Event, wall: DateTime<Utc>) -> Option<Decision> {
        let key = self.slot_key(ev.origin.as_ref());
        match self.slots.get_mut(&key) {
            Some(slot) => match &ev.origin {
                Some(o) if slot.reflected.get(&(o.topic.clone(), o.partition)).is_some_and(|r| o.offset < *r) => {
                    slot.clock.read(Some(o), wall);
                    slot.core.skip(o);
                    None
                }
                _ => {
                    slot.clock.observe(ev.origin.as_ref(), ev.time, wall);
                    let own = ev.time.min(wall);
                    let at = slot.advance(wall, true).map_or(own, |w| w.max(own));
                    Some(slot.core.handle(ev, at))
                }
            },
            None => {
                debug!(origin = ?ev.origin, "event of a partition not assigned here ignored");
                None
            }
        }
    }

    /// Partitions were assigned at wall time `wall` (see `clock.rs`).
    pub fn assigned(&mut self, wall: DateTime<Utc>) {
        for slot in self.slots.values_mut() {
            slot.clock.assigned(wall);
        }
    }

    /// Records a message, read at wall time `wall`, that produced no event.
    pub fn skip(&mut self, origin: &Origin, wall: DateTime<Utc>) {
        let key = self.slot_key(Some(origin));
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.clock.read(Some(origin), wall);
            slot.core.skip(origin);
        }
    }

    /// Runs every core's timers up to its watermark at wall time `wall`;
    /// `reading` is false while no event is read (see `clock.rs`).
    pub fn advance(&mut self, wall: DateTime<Utc>, reading: bool) {
        for slot in self.slots.values_mut() {
            slot.advance(wall, reading);
        }
    }

    /// Actions of the core of slot `key` decided since the last call, each
    /// with an id unique across cores and the claim of its core.
    fn take_slot_actions(&mut self, key: Option<TopicPartition>) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(&key) else { return Vec::new() };
        let mut out = Vec::new();
        for mut a in slot.core.take_actions() {
            let id = self.next_action;
            self.next_action += 1;
            self.actions.insert(id, (key.clone(), a.id));
            a.id = id;
            a.claim = slot.claim.clone();
            out.push(a);
        }
        out
    }

    /// Actions decided since the last call, whether checkpointed or not
    /// (tests and tools that keep no changelog).
    pub fn take_actions(&mut self) -> Vec<Action> {
        let keys: Vec<Option<TopicPartition>> = self.slots.keys().cloned().collect();
        keys.into_iter().flat_map(|k| self.take_slot_actions(k)).collect()
    }

    /// Actions decided and waiting for a checkpoint.
    pub fn waiting_actions(&self) -> usize {
        self.slots.values().map(|s| s.core.waiting_actions()).sum()
    }

    /// The sink settled action `id`. Acknowledgements of a dropped core's
    /// actions are ignored.
    pub fn ack(&mut self, id: u64) {
        if let Some((key, local)) = self.actions.remove(&id) {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.core.ack(local);
            }
        }
    }

    pub fn inflight_actions(&self) -> usize {
        self.slots.values().map(|s| s.core.inflight_actions()).sum()
    }

    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        for slot in self.slots.values_mut() {
            slot.core.set_rules(Arc::clone(&rules));
        }
        self.rules = rules;
    }

    pub fn set_cmdb(&mut self, cmdb: Arc<Snapshot>) {
        for slot in self.slots.values_mut() {
            slot.core.set_cmdb(Arc::clone(&cmdb));
        }
        self.cmdb = cmdb;
    }

    /// Counters of every core this instance ran.
    pub fn stats(&self) -> CoreStats {
        let mut s = self.retired.clone();
        for slot in self.slots.values() {
            add_stats(&mut s, slot.core.stats());
        }
        s
    }

    pub fn fingerprint_count(&self) -> usize {
        self.slots.values().map(|s| s.core.fingerprint_count()).sum()
    }

    pub fn open_incidents(&self) -> Vec<Incident> {
        let mut all: Vec<Incident> = self.slots.values().flat_map(|s| s.core.open_incidents()).collect();
        all.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then_with(|| a.key.cmp(&b.key)));
        all
    }

    /// Partitions with a core of their own.
    pub fn partitions(&self) -> usize {
        self.slots.keys().filter(|k| k.is_some()).count()
    }
}

fn add_stats(into: &mut CoreStats, s: &CoreStats) {
    into.events += s.events;
    for (k, v) in &s.decisions {
        *into.decisions.entry(k).or_default() += v;
    }
    for (k, v) in &s.actions {
        *into.actions.entry(k).or_default() += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorrelationConfig;
    use crate::event::Status;

    fn cores(per_partition: bool) -> Cores {
        let rules = Arc::new(RuleSet::default());
        let cmdb = Arc::new(Snapshot::empty());
        let cfg = CoreConfig::from_config(&CorrelationConfig::default());
        if per_partition {
            Cores::per_partition(cfg, rules, cmdb)
        } else {
            Cores::single(cfg, rules, cmdb)
        }
    }

    fn event(host: &str, partition: i32, offset: i64, at: DateTime<Utc>) -> Event {
        Event { origin: Some(Origin { topic: "r".into(), partition, offset }), ..Event::host_down(host, Status::Firing, at) }
    }

    fn opened(c: &mut Cores, at: DateTime<Utc>) -> Vec<Action> {
        c.advance(at + chrono::Duration::minutes(5), true);
        c.take_actions()
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn a_backlog_read_at_once_is_decided_at_the_events_own_time() {
        // Read in one go an hour late (behind an open circuit, say): a fault
        // that cleared at +10 min resolves after the hold-down, and its
        // return at +15 min reopens it; on the wall clock the three events
        // would be one unbroken incident.
        let t = Utc::now() - chrono::Duration::hours(1);
        let wall = Utc::now();
        let mut c = cores(false);
        let m = chrono::Duration::minutes;
        c.handle(&event("a", 0, 0, t), wall).unwrap();
        c.handle(&Event { status: Status::Resolved, ..event("a", 0, 1, t + m(10)) }, wall).unwrap();
        c.handle(&event("a", 0, 2, t + m(15)), wall).unwrap();
        let actions = c.take_actions();
        assert_eq!(kinds(&actions), vec!["open", "resolve", "reopen"], "{actions:#?}");
    }

    #[test]
    fn behind_an_open_circuit_the_watermark_waits_for_the_backlog() {
        let t = Utc::now();
        let mut c = cores(false);
        c.handle(&event("a", 0, 0, t), t).unwrap();
        // Nothing is read for ten minutes: timers do not run on the wall clock.
        c.advance(t + chrono::Duration::minutes(10), false);
        assert!(c.take_actions().is_empty(), "group wait is not over in event time");
        c.advance(t + chrono::Duration::minutes(10), true);
        assert_eq!(kinds(&c.take_actions()), vec!["open"]);
    }

    #[test]
    fn each_partition_correlates_in_its_own_core_and_actions_carry_its_claim() {
        let t = Utc::now();
        let mut c = cores(true);
        assert!(c.handle(&event("a", 0, 0, t), t).is_none(), "no core before the assignment");
        c.assign("r", 0, 7);
        c.assign("r", 1, 8);
        c.handle(&event("a", 0, 0, t), t).unwrap();
        c.handle(&event("b", 1, 0, t), t).unwrap();
        let actions = opened(&mut c, t);
        assert_eq!(actions.len(), 2);
        let mut claims: Vec<(i32, u64)> = actions.iter().map(|a| a.claim.as_ref().map(|c| (c.partition, c.epoch)).unwrap()).collect();
        claims.sort();
        assert_eq!(claims, vec![(0, 7), (1, 8)]);
        assert_ne!(actions[0].id, actions[1].id, "ids are unique across cores");
        assert_eq!(c.inflight_actions(), 2);

        // Revoking partition 0 drops its state and its action in flight; the
        // late acknowledgement is ignored.
        let on_0 = actions.iter().find(|a| a.claim.as_ref().unwrap().partition == 0).unwrap().id;
        c.revoke("r", 0);
        assert_eq!(c.inflight_actions(), 1);
        assert_eq!(c.fingerprint_count(), 1);
        c.ack(on_0);
        assert_eq!(c.inflight_actions(), 1);
        assert_eq!(c.stats().events, 2, "counters of dropped cores are kept");
        assert_eq!(c.partitions(), 1);
    }

    #[test]
    fn a_restored_partition_skips_what_its_checkpoint_reflects() {
        let t = Utc::now();
        let mut c = cores(true);
        c.assign("r", 0, 1);
        c.handle(&event("a", 0, 0, t), t).unwrap();
        c.handle(&event("b", 0, 1, t), t).unwrap();
        let cps = c.checkpoints();
        assert_eq!(cps.len(), 1);
        let cp = &cps[0];
        assert_eq!(cp.offsets, vec![("r".to_string(), 0, 2)]);
        // The state (two pending incidents), then the offset it reflects.
        assert_eq!(cp.records.len(), 3);
        assert_eq!(cp.records.last().map(|(k, v)| (k.as_str(), v.as_deref())), Some(("meta:next-offset:r:0", Some(&b"2"[..]))));
        let records: Vec<(String, Vec<u8>)> = cp.records.iter().map(|(k, v)| (k.clone(), v.clone().unwrap())).collect();
        c.checkpointed(cps.into_iter().next().unwrap());
        assert!(c.checkpoints().is_empty(), "nothing changed since");

        // Another instance restores it; the log is read again from offset 0.
        let mut other = cores(true);
        let (incidents, bad) = other.assign_restored("r", 0, 5, &records);
        assert_eq!((incidents, bad.len()), (2, 0));
        assert!(other.handle(&event("a", 0, 0, t), t).is_none(), "already in the state");
        assert!(other.handle(&event("b", 0, 1, t), t).is_none());
        assert!(other.handle(&event("c", 0, 2, t), t).is_some());
        assert_eq!(other.fingerprint_count(), 3);
        assert_eq!(other.stats().events, 1);
        let next = other.checkpoints();
        assert_eq!(next[0].offsets, vec![("r".to_string(), 0, 3)], "skipped messages still move the offset");
        assert_eq!(next[0].records.len(), 2, "only the new incident and the offset are written: {:?}", next[0].records);

        // A restart that reads only what the changelog reflects writes
        // nothing, but stores the offsets for commit: the committed offset lagged.
        let mut third = cores(true);
        third.assign_restored("r", 0, 6, &records);
        third.handle(&event("a", 0, 0, t), t);
        third.handle(&event("b", 0, 1, t), t);
        let cps = third.checkpoints();
        assert_eq!((cps[0].records.len(), cps[0].offsets.clone()), (0, vec![("r".to_string(), 0, 2)]));
        third.checkpointed(cps.into_iter().next().unwrap());
        assert!(third.checkpoints().is_empty());
    }

    #[test]
    fn actions_are_taken_only_with_the_checkpoint_that_records_them() {
        let t = Utc::now();
        let mut c = cores(false);
        c.handle(&event("a", 0, 0, t), t).unwrap();
        c.advance(t + chrono::Duration::minutes(5), true);
        assert_eq!(c.waiting_actions(), 1);
        let cp = c.checkpoints().pop().unwrap();
        assert_eq!((cp.partition, cp.actions), (0, 1), "the single core's state is changelog partition 0");
        let pending = cp.records.iter().find(|(k, _)| k.starts_with("incident:")).and_then(|(_, v)| v.clone()).unwrap();
        let text = String::from_utf8(pending).unwrap();
        assert!(text.contains(r#""pending":"open""#), "{text}");
        let actions = c.checkpointed(cp);
        assert_eq!(actions.len(), 1);
        assert_eq!(c.waiting_actions(), 0);

        // Restored before the acknowledgement: the open is owed and sent again.
        let records: Vec<(String, Vec<u8>)> = vec![("incident:x".into(), text.clone().into_bytes())];
        let mut other = cores(false);
        other.restore_single(&records);
        let again = other.take_actions();
        assert_eq!(again.len(), 1);
        assert!(again[0].resent && again[0].kind == crate::incident::ActionKind::Open);

        // Acknowledged, checkpointed, restored: nothing is owed.
        c.ack(actions[0].id);
        let cp = c.checkpoints().pop().unwrap();
        let acked = cp.records.iter().find(|(k, _)| k.starts_with("incident:")).and_then(|(_, v)| v.clone()).unwrap();
        c.checkpointed(cp);
        let mut third = cores(false);
        third.restore_single(&[("incident:x".into(), acked)]);
        assert!(third.take_actions().is_empty(), "what the ITSM acknowledged is not sent again");
    }

    #[test]
    fn a_single_core_ignores_assignments_and_has_no_claims() {
        let t = Utc::now();
        let mut c = cores(false);
        c.assign("r", 0, 1);
        c.handle(&event("a", 0, 0, t), t).unwrap();
        c.handle(&event("b", 1, 0, t), t).unwrap();
        c.revoke("r", 0);
        let actions = opened(&mut c, t);
        assert_eq!(actions.len(), 2);
        assert!(actions.iter().all(|a| a.claim.is_none()));
        for a in &actions {
            c.ack(a.id);
        }
        assert_eq!(c.inflight_actions(), 0);
    }
}
