//! The core task: the only owner of correlation state. It reads the source
//! channel (while the sink's circuit is closed), hands events to the cores,
//! dispatches their actions to the sink workers, applies acknowledgements,
//! reloads and partition changes, and stores the offsets that became safe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::core::partitions::Cores;
use crate::core::problems::{ProblemCandidate, ProblemTracker};
use crate::core::DecisionKind;
use crate::incident::{Action, Incident};
use crate::metrics::Metrics;
use crate::scale::changelog::Changelog;
use crate::scale::ownership::Ownership;
use crate::server::explain::DecisionLog;
use crate::source::{OffsetHandle, SourceItem};

use super::fanout::{Fanout, Sent};
use super::handover::{checkpoint, partitions_changed, Drain};
use super::reconcile::Reconcile;
use super::reconcile::{reconciled, Reconciled};
use super::reload::Reload;
use super::Summary;

/// What the last checkpoint leaves of the shutdown deadline for the
/// consumers' close (which gets at least 1 s) and the rest of the stop.
const CLOSE_RESERVE: Duration = Duration::from_millis(1500);

pub(super) struct CoreLoop {
    pub(super) core: Cores,
    /// Where the cores checkpoint their state (`state.changelog_topic`).
    pub(super) changelog: Arc<Changelog>,
    /// Per input partition, when the first message not yet in a checkpoint
    /// was handled: what a restart would read again, and since when.
    pub(super) replay_since: HashMap<(String, i32), Instant>,
    /// How long a checkpoint may take to be acknowledged: at most a quarter
    /// of the shutdown deadline, so a broker that is down cannot hold the
    /// stop past it.
    pub(super) checkpoint_within: Duration,
    /// The last checkpoint write failed (the broker is down, say).
    pub(super) changelog_failing: bool,
    /// Shutdown began: checkpoints other than the last are abandoned.
    pub(super) stopping: tokio_util::sync::CancellationToken,
    /// Taking the last checkpoint.
    pub(super) closing: bool,
    /// `shutdown.deadline`: the last checkpoint gets what is left of it once
    /// the consumers' close is set aside.
    pub(super) deadline: Duration,
    /// When a refused fingerprint was last logged.
    pub(super) refused_logged: Option<Instant>,
    /// Partitions to checkpoint before their revoke completes.
    pub(super) drains: mpsc::UnboundedReceiver<Drain>,
    /// Looks restored open incidents up at the ITSM (profiles that can).
    pub(super) reconcile: Option<Reconcile>,
    pub(super) reconciled: mpsc::UnboundedReceiver<Reconciled>,
    /// What read-backs and webhooks saw at the ITSM.
    pub(super) observed: mpsc::UnboundedReceiver<crate::core::partitions::Observed>,
    /// Pollers asking which incidents are open at the ITSM.
    pub(super) poll_requests: mpsc::Receiver<super::readback::PollRequest>,
    /// Only partitions still owned are checkpointed: a late write would
    /// overwrite what their new owner restored.
    pub(super) ownership: Option<Arc<Ownership>>,
    pub(super) checkpoint_every: Duration,
    pub(super) items: mpsc::Receiver<SourceItem>,
    /// `true` while every sink's circuit is closed; events are read only then.
    pub(super) circuit: watch::Receiver<bool>,
    pub(super) acks: mpsc::UnboundedReceiver<u64>,
    pub(super) swaps: mpsc::Receiver<Reload>,
    /// The sinks' workers, and which sinks each action goes to.
    pub(super) fanout: Fanout,
    pub(super) offsets: OffsetHandle,
    pub(super) metrics: Metrics,
    pub(super) incidents: watch::Sender<Arc<Vec<Incident>>>,
    pub(super) problems: ProblemTracker,
    pub(super) problems_tx: watch::Sender<Arc<Vec<ProblemCandidate>>>,
    pub(super) decisions: DecisionLog,
    /// Assignment and restore, for `/readyz`.
    pub(super) readiness: crate::server::ready::Readiness,
}

/// The core task: the only owner of correlation state. It ends when the
/// source has stopped (its channel closed) and in-flight actions are settled
/// or the sink workers gave up at the deadline.
pub(super) async fn core_loop(mut l: CoreLoop) -> Summary {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges = tokio::time::interval(Duration::from_secs(2));
    let mut checkpoints = tokio::time::interval(l.checkpoint_every);
    checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_event: Option<Instant> = None;
    let mut last_event = Instant::now();
    let mut source_open = true;
    let mut acks_open = true;
    // Actions wait for a checkpoint that could not be written: no more
    // events are read until it is, and it is tried again at each tick.
    let mut blocked = false;
    // Acknowledgements not yet in a checkpoint: recorded at the next tick,
    // so a restart soon after re-sends as little as possible.
    let mut unrecorded_acks = false;
    let mut stop_seen: Option<Instant> = None;
    loop {
        let mut ticked = false;
        if stop_seen.is_none() && l.stopping.is_cancelled() {
            stop_seen = Some(Instant::now());
        }
        // While the ITSM is unreachable, events stay in Kafka: the source
        // channel fills and the source pauses its partitions. At shutdown the
        // unread ones are left for the next start (their offsets are unstored).
        let circuit_closed = *l.circuit.borrow_and_update();
        if source_open && !circuit_closed && l.items.is_closed() {
            source_open = false;
        }
        tokio::select! {
            Ok(()) = l.circuit.changed() => {}
            item = l.items.recv(), if source_open && circuit_closed && !blocked => match item {
                Some(item) => {
                    let mut batch = vec![item];
                    while batch.len() < 512 {
                        match l.items.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    let now = Utc::now();
                    let mut stamps = Vec::with_capacity(batch.len());
                    for item in batch {
                        if let SourceItem::Events { timestamp: Some(t), .. } = item {
                            stamps.push(t);
                        }
                        match item {
                            SourceItem::Partitions(changes) => {
                                if !partitions_changed(&mut l, changes).await {
                                    return failed(&l, "the changelog could not be read back; see the errors above");
                                }
                            }
                            item => handle_item(&mut l, item, now),
                        }
                    }
                    // Every decision of the batch is taken by now.
                    let decided = Utc::now().timestamp_micros();
                    for t in stamps {
                        l.metrics.event_lag.observe((decided - t * 1000).max(0) as f64 / 1e6);
                    }
                    first_event.get_or_insert_with(Instant::now);
                    last_event = Instant::now();
                }
                None => source_open = false,
            },
            ack = l.acks.recv(), if acks_open => match ack {
                Some(id) => {
                    // Acknowledged to the core once every sink it went to has.
                    if l.fanout.ack(id) {
                        l.core.ack(id);
                    }
                    while let Ok(id) = l.acks.try_recv() {
                        if l.fanout.ack(id) {
                            l.core.ack(id);
                        }
                    }
                    unrecorded_acks = true;
                }
                None => acks_open = false,
            },
            Some(swap) = l.swaps.recv() => match swap {
                // Counted here, once in effect for the next event.
                Reload::Rules(r) => {
                    info!(rules = r.len(), "rules swapped in");
                    l.core.set_rules(r);
                    l.metrics.reloads.with_label_values(&["rules", "ok"]).inc();
                }
                Reload::Cmdb(c) => {
                    info!(cis = c.len(), "CMDB swapped in");
                    l.metrics.cmdb_cis.set(c.len() as i64);
                    l.metrics.cmdb_last_load.set(Utc::now().timestamp() as f64);
                    l.core.set_cmdb(c);
                    l.metrics.reloads.with_label_values(&["cmdb", "ok"]).inc();
                }
            },
            _ = tick.tick() => {
                ticked = true;
                if source_open {
                    // Idle partitions follow the wall clock only while events
                    // are read: behind an open circuit the backlog is unknown.
                    l.core.advance(Utc::now(), circuit_closed && !blocked);
                }
            }
            _ = gauges.tick() => publish_gauges(&mut l),
            // Once the source has stopped, only the last checkpoint is taken.
            _ = checkpoints.tick(), if source_open => blocked = !checkpoint(&mut l, None).await,
            Some(r) = l.reconciled.recv() => reconciled(&mut l, r),
            Some(o) = l.observed.recv() => super::readback::observed(&mut l, o),
            Some((sink, reply)) = l.poll_requests.recv() => {
                // Only what is routed to that sink is read back there.
                let routed = l.core.polled().into_iter().filter(|(_, i)| l.fanout.routes_to(i, &sink)).map(|(at, i)| (at, i.key));
                let _ = reply.send(routed.collect());
            }
            Some((parts, done)) = l.drains.recv() => {
                checkpoint(&mut l, Some(&parts)).await;
                let _ = done.send(());
            }
        }
        // Every action decided is in a checkpoint before it is sent, so no
        // restart sends again what the ITSM acknowledged.
        if (l.core.waiting_actions() > 0 && (!blocked || ticked)) || (unrecorded_acks && ticked) {
            blocked = !checkpoint(&mut l, None).await;
            unrecorded_acks &= blocked;
        }
        if !source_open && (l.core.inflight_actions() == 0 || !acks_open) {
            break;
        }
        if !source_open && l.fanout.all_closed() {
            break;
        }
    }
    // Still assigned until the consumer closes: the next owner starts here.
    // Skipping it loses nothing (no offset moved past the last checkpoint
    // written): the next start reads again what came after that one.
    let left = l.deadline.saturating_sub(stop_seen.map_or(Duration::ZERO, |t| t.elapsed()) + CLOSE_RESERVE);
    if l.changelog_failing || left.is_zero() {
        warn!("the changelog is not answering, or the deadline is spent: the last checkpoint is skipped; the next start reads again what came after the previous one");
    } else {
        l.closing = true;
        l.checkpoint_within = l.checkpoint_within.min(left);
        checkpoint(&mut l, None).await;
    }
    publish_gauges(&mut l);
    Summary {
        busy_seconds: first_event.map_or(0.0, |f| last_event.duration_since(f).as_secs_f64()),
        clean_shutdown: l.core.inflight_actions() == 0,
        ..counted(&l)
    }
}

/// The core's counters as a summary (no time, no verdict yet).
pub(super) fn counted(l: &CoreLoop) -> Summary {
    let stats = l.core.stats();
    Summary {
        events: stats.events,
        decisions: stats.decisions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        actions: stats.actions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..Summary::default()
    }
}

pub(super) fn failed(l: &CoreLoop, why: &str) -> Summary {
    error!("{why}");
    Summary { clean_shutdown: false, failure: Some(why.to_string()), ..counted(l) }
}

/// Sends checkpointed actions to the workers of their routed sinks; a full
/// worker queue blocks here, which stops reading the source channel, which
/// pauses the Kafka partitions. An action no route matches is acknowledged
/// at once.
pub(super) async fn dispatch(l: &mut CoreLoop, actions: Vec<Action>) {
    for action in actions {
        if let Some(p) = l.problems.observe(&action, Utc::now()) {
            warn!(problem = %p.id, ci = %p.ci, incidents = ?p.incidents, "problem candidate: {}", p.reason);
            l.metrics.problem_candidates.inc();
        }
        let id = action.id;
        if l.fanout.send(action).await == Sent::Unrouted {
            l.core.ack(id);
        }
    }
}

pub(super) fn handle_item(l: &mut CoreLoop, item: SourceItem, now: chrono::DateTime<Utc>) {
    if let Some(o) = item.origin() {
        l.metrics.messages_handled.inc();
        l.replay_since.entry((o.topic.clone(), o.partition)).or_insert_with(Instant::now);
    }
    match item {
        SourceItem::Skipped { origin, reason } => {
            l.decisions.record_skipped(&origin, &reason, now);
            l.core.skip(&origin, now);
        }
        SourceItem::Partitions(_) => unreachable!("handled by partitions_changed"),
        SourceItem::Events { origin, events, .. } => {
            if events.is_empty() {
                l.core.skip(&origin, now);
            }
            for ev in events {
                let started = Instant::now();
                let Some(d) = l.core.handle(&ev, now) else { break };
                l.metrics.rule_evaluation.with_label_values(&["event"]).observe(started.elapsed().as_secs_f64());
                l.metrics.decisions.with_label_values(&[d.kind.as_str()]).inc();
                match d.kind {
                    DecisionKind::Deduplicated => {
                        l.metrics.events_deduplicated.with_label_values(&[l.metrics.source_label(&ev.source)]).inc()
                    }
                    DecisionKind::Suppressed => {
                        l.metrics.events_suppressed.with_label_values(&[l.metrics.source_label(&ev.source), "rule"]).inc()
                    }
                    DecisionKind::Dropped => l.metrics.events_dropped.with_label_values(&[l.metrics.source_label(&ev.source)]).inc(),
                    DecisionKind::Cleared if ev.status == crate::event::Status::Firing => l.metrics.events_out_of_order.inc(),
                    DecisionKind::Refused if l.refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) => {
                        l.refused_logged = Some(Instant::now());
                        error!(fingerprints = l.core.fingerprint_count(), "correlation.max_fingerprints reached: new alerts are refused (counted in triaged_decisions_total{{decision=\"refused\"}}); logged at most once a minute");
                    }
                    _ => {}
                }
                debug!(origin = %origin, decision = d.kind.as_str(), fingerprint = ?d.fingerprint, reason = %d.reason, "decision");
                l.decisions.record(&ev, &d, now);
            }
        }
    }
}

pub(super) fn publish_gauges(l: &mut CoreLoop) {
    let open = l.core.open_incidents();
    // P1..P5 stay at zero when none is open (families exist from the start).
    let mut by_priority = [0i64; 5];
    l.metrics.open_incidents_by_service.reset();
    for i in &open {
        if let Some(n) = (i.priority as usize).checked_sub(1).and_then(|p| by_priority.get_mut(p)) {
            *n += 1;
        }
        for s in &i.impacted_services {
            l.metrics.open_incidents_by_service.with_label_values(&[s]).inc();
        }
    }
    for (p, n) in by_priority.iter().enumerate() {
        l.metrics.open_incidents.with_label_values(&[&format!("P{}", p + 1)]).set(*n);
    }
    l.metrics.fingerprints.set(l.core.fingerprint_count() as i64);
    for (t, p) in l.core.read_partitions() {
        let age = l.replay_since.get(&(t.clone(), p)).map_or(0.0, |since| since.elapsed().as_secs_f64());
        l.metrics.state_depended_age.with_label_values(&[&t, &p.to_string()]).set(age);
    }
    let _ = l.incidents.send(Arc::new(open));
    let _ = l.problems_tx.send(Arc::new(l.problems.current(Utc::now())));
}
