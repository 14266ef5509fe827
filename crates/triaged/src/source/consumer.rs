//! The Kafka source: a `StreamConsumer` in a consumer group that decodes each
//! message and hands it to the core, in partition order, over a bounded channel.
//!
//! Invariants:
//! - **Offsets are stored only by the core** (`OffsetHandle::store`), never
//!   automatically (`enable.auto.offset.store=false`). librdkafka's auto-commit
//!   commits what was stored, so a crash replays from the last stored offsets.
//! - **Every message reaches the core exactly once per assignment, in partition
//!   order**: `next_expected` per partition drops redeliveries (offset lower
//!   than expected) and seeks back over gaps (offset higher than expected).
//!   The first message after a seek is authoritative, so offsets that are not
//!   in the log (compaction, transaction markers) cost one seek, not a loop.
//!   A message waiting for room whose partition is revoked meanwhile is
//!   dropped: its new owner starts from the committed offset, before it.
//! - **Backpressure never leaves the group**: when the channel stays full, all
//!   assigned partitions are paused and the consumer keeps being polled (group
//!   session, rebalance callbacks) until the core makes room; then every
//!   partition is sought back to its next expected offset and resumed.
//! - **A message is never skipped silently**: undecodable messages go to the
//!   dead-letter topic (delivery awaited) before the core may store past them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::context::{describe, ConsumerShared, SourceConsumer, SourceContext};
use super::lag::LagProbe;
use super::runner::{Runner, Step};
use super::tracker::PartitionTracker;
use super::{OffsetHandle, SourceError};
use crate::config::KafkaConfig;
use crate::event::{Event, Origin};
use crate::kafka::{check_config, consumer_config, DeadLetter};
use crate::metrics::Metrics;
use crate::scale::ownership::Ownership;

/// How long a full channel is waited on before the partitions are paused: a
/// core busy with a batch should not cost a pause / seek / refetch cycle.
const PAUSE_AFTER: Duration = Duration::from_millis(100);
/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// One Kafka message's worth of work for the core, in partition order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// Decoded events; `origin` is also set on each event. `timestamp` is the
    /// message's Kafka timestamp (milliseconds), for the decision lag metric.
    Events { origin: Origin, events: Vec<Event>, timestamp: Option<i64> },
    /// Nothing for the core (undecodable, empty, no events): already
    /// dead-lettered (delivery awaited) or logged. The core just marks the
    /// offset done.
    Skipped { origin: Origin, reason: String },
    /// The assignment changed before the next message (only with
    /// [`KafkaSource::track_ownership`]): in callback order, so that every
    /// item before it belongs to the earlier assignment.
    Partitions(Vec<PartitionChange>),
}

/// One partition leaving or joining this consumer's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionChange {
    Revoked { topic: String, partition: i32 },
    Assigned { topic: String, partition: i32, epoch: u64 },
}

impl SourceItem {
    /// The message this item is for; `None` for assignment changes.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            SourceItem::Events { origin, .. } | SourceItem::Skipped { origin, .. } => Some(origin),
            SourceItem::Partitions(_) => None,
        }
    }
}

/// See [`KafkaSource::on_revoke`].
pub type RevokeHook = Box<dyn Fn(&[(String, i32)]) + Send + Sync>;

/// Kafka consumer feeding the core.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    runner: Runner,
}

impl KafkaSource {
    /// Builds the consumer and subscribes to the configured topics. Must be
    /// called inside a Tokio runtime. Also builds the dead-letter producer when
    /// `dead_letter_topic` is set.
    pub fn new(cfg: &KafkaConfig, metrics: Metrics) -> Result<KafkaSource, SourceError> {
        check_config(cfg)?;
        let shared = Arc::new(ConsumerShared::default());
        let consumer: SourceConsumer = consumer_config(cfg)
            .create_with_context(SourceContext { shared: shared.clone(), paused_partitions: metrics.paused_partitions.clone() })
            .map_err(|source| SourceError::Client { what: "consumer", source })?;
        let names: Vec<&str> = cfg.topics.iter().map(|t| t.name.as_str()).collect();
        consumer.subscribe(&names).map_err(|source| SourceError::Subscribe { topics: names.join(", "), source })?;
        let mut patterns = Vec::new();
        for t in cfg.topics.iter().filter(|t| t.name.starts_with('^')) {
            let re = regex::Regex::new(&t.name).map_err(|e| SourceError::Config(format!("topic pattern `{}`: {e}", t.name)))?;
            patterns.push((re, t.format));
        }
        let dead_letter = DeadLetter::new(cfg)?;
        let mut runner = Runner {
            topics: Vec::new(),
            patterns,
            tracker: PartitionTracker::default(),
            shared,
            dead_letters: metrics.dead_letters.with_label_values(&["decode"]),
            metrics,
            decoded: Vec::new(),
            dead_letter,
        };
        for t in cfg.topics.iter().filter(|t| !t.name.starts_with('^')) {
            runner.add_topic(&t.name, t.format);
        }
        info!(topics = %names.join(", "), group = %cfg.group_id, "Kafka consumer subscribed");
        Ok(KafkaSource { consumer: Arc::new(consumer), runner })
    }

    /// Records every assignment change in `ownership` and sends it to the
    /// core as [`SourceItem::Partitions`], for state that follows partitions.
    /// `ownership` also asks this consumer whether librdkafka declared its
    /// assignment lost, which it knows before the revoke reaches the
    /// rebalance callback (a weak reference: the context holds `ownership`).
    pub fn track_ownership(&self, ownership: Arc<Ownership>) {
        let consumer = Arc::downgrade(&self.consumer);
        ownership.probe_consumer(Box::new(move || consumer.upgrade().is_some_and(|c| c.assignment_lost())));
        let _ = self.runner.shared.ownership.set(ownership);
        self.report_assignments();
    }

    /// Passes assignment changes on as [`SourceItem::Partitions`], before
    /// the messages of the partitions they assign.
    pub fn report_assignments(&self) {
        self.runner.shared.report.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Runs `hook` in the rebalance callback, before revoked partitions are
    /// given up: offsets stored by then are committed with the revoke.
    pub fn on_revoke(&self, hook: RevokeHook) {
        let _ = self.runner.shared.on_revoke.set(hook);
    }

    /// A handle to store and commit offsets; it shares the consumer.
    pub fn offsets(&self) -> OffsetHandle {
        OffsetHandle { consumer: self.consumer.clone(), shared: self.runner.shared.clone() }
    }

    /// Consumes until `shutdown` is cancelled (or the receiver is dropped),
    /// sending one `SourceItem` per message. Stored offsets are not committed
    /// here: call `OffsetHandle::commit_now` afterwards.
    pub async fn run(self, tx: mpsc::Sender<SourceItem>, shutdown: CancellationToken) -> Result<(), SourceError> {
        let KafkaSource { consumer, mut runner } = self;
        let mut lag = LagProbe::default();
        let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Created once: a fresh `cancelled()` per message would register and
        // unregister a waiter each time.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            let received = tokio::select! {
                biased;
                _ = &mut cancelled => break,
                _ = lag_tick.tick() => {
                    lag.start(&consumer);
                    continue;
                }
                // Revocations reach the core without waiting for a message.
                _ = runner.shared.changed.notified() => {
                    runner.apply_rebalance();
                    if let Some(changes) = runner.take_changes() {
                        if !emit(&consumer, &mut runner, &tx, changes, &shutdown, &mut lag, &mut lag_tick).await? {
                            break;
                        }
                    }
                    continue;
                }
                Some(highs) = lag.wait() => {
                    runner.apply_lag(&consumer, &highs);
                    continue;
                }
                _ = runner.shared.fatal.notified() => {
                    check_fatal(&consumer)?;
                    continue;
                }
                r = consumer.recv() => r,
            };
            let msg = match received {
                Ok(m) => m,
                Err(e) => {
                    consume_error(&consumer, e)?;
                    continue;
                }
            };
            runner.apply_rebalance();
            if let Some(changes) = runner.take_changes() {
                if !emit(&consumer, &mut runner, &tx, changes, &shutdown, &mut lag, &mut lag_tick).await? {
                    break;
                }
            }
            let step = runner.process(&consumer, &msg);
            drop(msg);
            let item = match step {
                Step::Drop => continue,
                Step::Emit(item) => item,
                Step::DeadLetter { origin, key, payload, error, reason } => {
                    if !runner.dead_letter_with_retry(&origin, key.as_deref(), &payload, &error, &shutdown).await {
                        break;
                    }
                    SourceItem::Skipped { origin, reason }
                }
            };
            if !emit(&consumer, &mut runner, &tx, item, &shutdown, &mut lag, &mut lag_tick).await? {
                break;
            }
        }
        // A probe in flight holds the consumer: end it here (within
        // LAG_CALL), or the consumer's last reference would go with it, and its
        // close (leave group) would run on a blocking thread after the orderly
        // shutdown, against a broker that may be gone by then.
        lag.finish().await;
        info!("Kafka source stopped consuming");
        Ok(())
    }
}

/// Sends one item to the core, pausing the partitions while its channel is
/// full. `false` when the source must stop.
async fn emit(
    consumer: &Arc<SourceConsumer>,
    runner: &mut Runner,
    tx: &mpsc::Sender<SourceItem>,
    item: SourceItem,
    shutdown: &CancellationToken,
    lag: &mut LagProbe,
    lag_tick: &mut tokio::time::Interval,
) -> Result<bool, SourceError> {
    match tx.try_send(item) {
        Ok(()) => Ok(true),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            warn!("the core's channel is closed; the Kafka source stops");
            Ok(false)
        }
        Err(mpsc::error::TrySendError::Full(item)) => wait_for_capacity(consumer, runner, tx, item, shutdown, lag, lag_tick).await,
    }
}

/// Errors from `recv`: fatal ones end the source, the rest are logged
/// (librdkafka retries them itself).
fn consume_error(consumer: &SourceConsumer, e: KafkaError) -> Result<(), SourceError> {
    check_fatal(consumer)?;
    crate::kafka::log::consume_error(&e);
    Ok(())
}

/// Ends the source when librdkafka has raised a fatal error.
fn check_fatal(consumer: &SourceConsumer) -> Result<(), SourceError> {
    match consumer.client().fatal_error() {
        Some((code, reason)) => {
            error!(code = ?code, "fatal Kafka consumer error: {reason}; the source stops");
            Err(SourceError::Fatal { code, reason })
        }
        None => Ok(()),
    }
}

/// The channel is full: wait a little, then pause every assigned partition and
/// keep polling the consumer until the core makes room. Returns false when the
/// source must stop (shutdown, channel closed) without `item` being sent.
async fn wait_for_capacity(
    consumer: &Arc<SourceConsumer>,
    runner: &mut Runner,
    tx: &mpsc::Sender<SourceItem>,
    item: SourceItem,
    shutdown: &CancellationToken,
    lag: &mut LagProbe,
    lag_tick: &mut tokio::time::Interval,
) -> Result<bool, SourceError> {
    let mut item = Some(item);
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(false),
        permit = tx.reserve() => {
            return Ok(match permit {
                Ok(p) => {
                    p.send(item.take().expect("item present"));
                    true
                }
                Err(_) => false,
            });
        }
        _ = tokio::time::sleep(PAUSE_AFTER) => {}
    }
    let paused = pause_all(consumer, runner)?;
    debug!(partitions = %describe(&paused), "core channel full; Kafka partitions paused");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(false),
            permit = tx.reserve() => match permit {
                Ok(p) => {
                    let pending = item.take().expect("item present");
                    runner.apply_rebalance();
                    match pending.origin() {
                        Some(o) if !runner.is_tracked(o) => debug!(origin = %o, "pending item of a revoked partition dropped"),
                        _ => p.send(pending),
                    }
                    break;
                }
                Err(_) => return Ok(false),
            },
            _ = lag_tick.tick() => lag.start(consumer),
            Some(highs) = lag.wait() => runner.apply_lag(consumer, &highs),
            _ = runner.shared.fatal.notified() => check_fatal(consumer)?,
            r = consumer.recv() => match r {
                Ok(msg) => {
                    if runner.apply_rebalance() {
                        // Normally done in the rebalance callback already.
                        pause_all(consumer, runner)?;
                        let pending = item.as_ref().and_then(SourceItem::origin);
                        if pending.is_some_and(|o| !runner.is_tracked(o)) {
                            // Its partition was revoked: whoever owns it now
                            // resumes from the committed offset, before it.
                            debug!(origin = %pending.expect("checked"), "pending item of a revoked partition dropped");
                            drop(msg);
                            break;
                        }
                    }
                    runner.note_paused(&msg);
                }
                Err(e) => consume_error(consumer, e)?,
            },
        }
    }
    resume_all(consumer, runner)?;
    Ok(true)
}

/// Asynchronous seek: returns at once, but raises librdkafka's version
/// barrier first, so nothing fetched before it is delivered afterwards.
pub(super) fn seek(consumer: &SourceConsumer, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(offset), Timeout::After(Duration::ZERO)) {
        warn!(topic, partition, offset, error = %e, "seek failed");
    }
}

fn pause_all(consumer: &SourceConsumer, runner: &Runner) -> Result<TopicPartitionList, SourceError> {
    runner.shared.paused.store(true, Ordering::Release);
    let assignment = consumer.assignment().map_err(|source| SourceError::Partitions { action: "list assigned", source })?;
    consumer.pause(&assignment).map_err(|source| SourceError::Partitions { action: "pause", source })?;
    runner.metrics.paused_partitions.set(assignment.count() as i64);
    Ok(assignment)
}

/// Seeks every assigned partition back to its next expected offset (messages
/// received while paused were dropped), then resumes them all.
fn resume_all(consumer: &SourceConsumer, runner: &mut Runner) -> Result<(), SourceError> {
    runner.apply_rebalance();
    let assignment = consumer.assignment().map_err(|source| SourceError::Partitions { action: "list assigned", source })?;
    for e in assignment.elements() {
        let Some(t) = runner.topic_index(e.topic()) else {
            continue;
        };
        if let Some(expected) = runner.tracker.expected(t, e.partition()) {
            // Seek and resume are queued, in this order, on the partition's
            // own op queue.
            seek(consumer, e.topic(), e.partition(), expected);
            runner.tracker.sought(t, e.partition());
        }
    }
    runner.shared.paused.store(false, Ordering::Release);
    consumer.resume(&assignment).map_err(|source| SourceError::Partitions { action: "resume", source })?;
    runner.metrics.paused_partitions.set(0);
    debug!(partitions = %describe(&assignment), "core channel has room; Kafka partitions resumed");
    Ok(())
}
