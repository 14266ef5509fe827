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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntGauge};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};

use crate::config::{Format, KafkaConfig, OWNED_KAFKA_OPTIONS};
use crate::event::{Event, Origin};
use crate::metrics::Metrics;
use crate::scale::ownership::Ownership;
use crate::source::decode;

/// How long a full channel is waited on before the partitions are paused: a
/// core busy with a batch should not cost a pause / seek / refetch cycle.
const PAUSE_AFTER: Duration = Duration::from_millis(100);
/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// Budget of one lag measurement (all assigned partitions).
const LAG_BUDGET: Duration = Duration::from_secs(3);
/// Dead-letter retry backoff (doubles up to the cap).
const DEAD_LETTER_BACKOFF: Duration = Duration::from_millis(100);
const DEAD_LETTER_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Dead-letter `message.timeout.ms` unless `kafka.options` sets it.
const DEAD_LETTER_MESSAGE_TIMEOUT_MS: &str = "30000";
/// A payload the dead-letter topic refuses as too large is sent cut to this size.
const DEAD_LETTER_TRUNCATE_BYTES: usize = 64 * 1024;

/// Dead-letter record headers.
pub const HEADER_KIND: &str = "triaged-kind";
pub const HEADER_ORIGIN_TOPIC: &str = "triaged-origin-topic";
pub const HEADER_ORIGIN_PARTITION: &str = "triaged-origin-partition";
pub const HEADER_ORIGIN_OFFSET: &str = "triaged-origin-offset";
pub const HEADER_ERROR: &str = "triaged-error";
/// Set (to the original size in bytes) when the payload had to be truncated.
pub const HEADER_TRUNCATED_FROM: &str = "triaged-truncated-from";

/// Errors of the Kafka source, the offset handle and the dead-letter producer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    #[error("cannot create the Kafka {what}: {source}")]
    Client { what: &'static str, source: KafkaError },
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("cannot store offsets: {0}")]
    Store(KafkaError),
    #[error("cannot commit offsets: {0}")]
    Commit(KafkaError),
    #[error("cannot {action} partitions: {source}")]
    Partitions { action: &'static str, source: KafkaError },
    #[error("fatal Kafka consumer error {code:?}: {reason}")]
    Fatal { code: RDKafkaErrorCode, reason: String },
    #[error("dead-letter write to `{topic}` failed: {source}")]
    DeadLetter { topic: String, source: KafkaError },
}

impl SourceError {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Config(_) | SourceError::Client { .. } | SourceError::Subscribe { .. } => false,
            SourceError::Fatal { .. } => false,
            SourceError::DeadLetter { source, .. } => !is_too_large(source),
            SourceError::Store(_) | SourceError::Commit(_) | SourceError::Partitions { .. } => true,
        }
    }
}

fn is_too_large(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize))
}

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

// ---------------------------------------------------------------------------
// Shared state between the consumer context (rebalance callbacks), the run
// loop and the offset handle.

#[derive(Default)]
struct Shared {
    /// Assigned partitions -> highest NEXT offset stored (-1: none yet). Only
    /// assigned partitions have an entry, so stores for others are ignored.
    stored: Mutex<HashMap<String, HashMap<i32, i64>>>,
    /// Partitions revoked since the run loop last looked.
    revoked: Mutex<Vec<(String, i32)>>,
    /// Set on every assignment change; the run loop clears it.
    rebalanced: AtomicBool,
    /// The source is waiting for room with its partitions paused: partitions
    /// assigned meanwhile are paused at once.
    paused: AtomicBool,
    /// Signalled on every client error, so that the run loop notices a fatal
    /// one: the consumer will not deliver again (e.g. fenced), and `recv`
    /// does not say so by itself.
    fatal: Notify,
    /// Set by [`KafkaSource::track_ownership`]: the rebalance callbacks
    /// record every change here and in `changes`.
    ownership: std::sync::OnceLock<Arc<Ownership>>,
    changes: Mutex<Vec<PartitionChange>>,
    /// Signalled with every change, so the run loop passes it on at once.
    changed: Notify,
    /// Called with the partitions about to be revoked, before the revoke
    /// takes effect (see [`KafkaSource::on_revoke`]).
    on_revoke: std::sync::OnceLock<RevokeHook>,
}

/// See [`KafkaSource::on_revoke`].
pub type RevokeHook = Box<dyn Fn(&[(String, i32)]) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Consumption of a newly assigned partition started at `offset`: a stored
    /// offset below it (stale, from an earlier assignment) would go backwards.
    fn raise_floor(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(v) = lock(&self.stored).get_mut(topic).and_then(|m| m.get_mut(&partition)) {
            *v = (*v).max(offset);
        }
    }
}

struct SourceContext {
    shared: Arc<Shared>,
    paused_partitions: IntGauge,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Debug => debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The run loop asks librdkafka whether this one was fatal.
        self.shared.fatal.notify_one();
        // Mostly transient (broker down, reconnecting): librdkafka retries.
        warn!(error = %error, "Kafka client error: {reason}");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                info!(partitions = %describe(tpl), "Kafka partitions revoked");
                if let Some(hook) = self.shared.on_revoke.get() {
                    let parts: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                    hook(&parts);
                }
                let mut stored = lock(&self.shared.stored);
                let mut revoked = lock(&self.shared.revoked);
                if let Some(o) = self.shared.ownership.get() {
                    let mut changes = lock(&self.shared.changes);
                    for e in tpl.elements() {
                        o.revoked(e.topic(), e.partition());
                        changes.push(PartitionChange::Revoked { topic: e.topic().to_owned(), partition: e.partition() });
                    }
                    self.shared.changed.notify_one();
                }
                for e in tpl.elements() {
                    if let Some(m) = stored.get_mut(e.topic()) {
                        m.remove(&e.partition());
                        if m.is_empty() {
                            stored.remove(e.topic());
                        }
                    }
                    revoked.push((e.topic().to_owned(), e.partition()));
                }
                self.shared.rebalanced.store(true, Ordering::Release);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "Kafka rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let paused = self.shared.paused.load(Ordering::Acquire);
        if let Rebalance::Assign(tpl) = rebalance {
            info!(partitions = %describe(tpl), "Kafka partitions assigned");
            {
                let mut stored = lock(&self.shared.stored);
                for e in tpl.elements() {
                    stored.entry(e.topic().to_owned()).or_default().entry(e.partition()).or_insert(-1);
                }
            }
            if let Some(o) = self.shared.ownership.get() {
                let mut changes = lock(&self.shared.changes);
                for e in tpl.elements() {
                    let epoch = o.assigned(e.topic(), e.partition());
                    changes.push(PartitionChange::Assigned { topic: e.topic().to_owned(), partition: e.partition(), epoch });
                }
                self.shared.changed.notify_one();
            }
            self.shared.rebalanced.store(true, Ordering::Release);
            // librdkafka keeps an application pause across unassign/assign:
            // give the new partitions the source's current state, so that a
            // partition paused, revoked and assigned again later is not left
            // paused forever, and one assigned while paused does not flow.
            let result = if paused { consumer.pause(tpl) } else { consumer.resume(tpl) };
            if let Err(e) = result {
                warn!(error = %e, paused, "cannot set the pause state of assigned partitions");
            }
        }
        if paused {
            if let Ok(a) = consumer.assignment() {
                self.paused_partitions.set(a.count() as i64);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => trace!(offsets = %describe_offsets(offsets), "offsets committed"),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => {
                warn!(error = %e, offsets = %describe_offsets(offsets), "offset commit failed")
            }
        }
    }
}

/// `events[0,1] other[3]`.
fn describe(tpl: &TopicPartitionList) -> String {
    let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
    for e in tpl.elements() {
        match by_topic.iter_mut().find(|(t, _)| t == e.topic()) {
            Some((_, ps)) => ps.push(e.partition()),
            None => by_topic.push((e.topic().to_owned(), vec![e.partition()])),
        }
    }
    if by_topic.is_empty() {
        return "none".into();
    }
    by_topic
        .iter_mut()
        .map(|(t, ps)| {
            ps.sort_unstable();
            format!("{t}{ps:?}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_offsets(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            other => format!("{}/{}@{other:?}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

type SourceConsumer = StreamConsumer<SourceContext>;

// ---------------------------------------------------------------------------
// Next-expected bookkeeping (pure, unit-tested).

/// Where a received message stands relative to its partition's next expected offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The next message to hand to the core (or the first one seen).
    Next,
    /// Already handed over: a redelivery. Drop it.
    Redelivery { expected: i64 },
    /// Messages before it were not handed over (e.g. prefetched, then
    /// discarded by a pause): seek back to `expected` and drop it.
    Gap { expected: i64 },
    /// The first message since a seek back to `expected` is further on: the
    /// log has no messages in between (compaction, transaction markers).
    /// Hand it over.
    Hole { expected: i64 },
}

#[derive(Debug, Clone, Copy)]
struct PartState {
    expected: i64,
    /// A seek to `expected` was issued and no message has been handed over
    /// since. librdkafka discards everything fetched before a seek (version
    /// barrier), so the next message is the first one at or after `expected`.
    sought: bool,
}

/// `next_expected` per (topic index, partition): a dense table, since both
/// are small indexes, so the per-message lookups do not hash.
#[derive(Debug, Default)]
struct PartitionTracker {
    parts: Vec<Vec<Option<PartState>>>,
}

impl PartitionTracker {
    fn get(&self, topic: usize, partition: i32) -> Option<&PartState> {
        let p = usize::try_from(partition).ok()?;
        self.parts.get(topic)?.get(p)?.as_ref()
    }

    fn get_mut(&mut self, topic: usize, partition: i32) -> Option<&mut PartState> {
        let p = usize::try_from(partition).ok()?;
        self.parts.get_mut(topic)?.get_mut(p)?.as_mut()
    }

    /// The slot of a partition, created empty on first use (`None` for a
    /// negative partition, which Kafka never delivers).
    fn slot(&mut self, topic: usize, partition: i32) -> Option<&mut Option<PartState>> {
        let p = usize::try_from(partition).ok()?;
        if self.parts.len() <= topic {
            self.parts.resize_with(topic + 1, Vec::new);
        }
        let parts = &mut self.parts[topic];
        if parts.len() <= p {
            parts.resize(p + 1, None);
        }
        Some(&mut parts[p])
    }

    fn classify(&self, topic: usize, partition: i32, offset: i64) -> Position {
        match self.get(topic, partition) {
            None => Position::Next,
            Some(s) if offset == s.expected => Position::Next,
            Some(s) if offset < s.expected => Position::Redelivery { expected: s.expected },
            Some(s) if s.sought => Position::Hole { expected: s.expected },
            Some(s) => Position::Gap { expected: s.expected },
        }
    }

    /// The message at `offset` is handed over. Returns true when it is the
    /// first one of the partition since its assignment.
    fn accept(&mut self, topic: usize, partition: i32, offset: i64) -> bool {
        let Some(slot) = self.slot(topic, partition) else {
            return false;
        };
        let first = slot.is_none();
        *slot = Some(PartState { expected: offset + 1, sought: false });
        first
    }

    /// A message received while paused is dropped; if nothing was handed over
    /// from its partition yet, it is where consumption must resume.
    fn note_unhanded(&mut self, topic: usize, partition: i32, offset: i64) {
        if let Some(slot) = self.slot(topic, partition) {
            slot.get_or_insert(PartState { expected: offset, sought: false });
        }
    }

    /// A seek back to the expected offset was issued.
    fn sought(&mut self, topic: usize, partition: i32) {
        if let Some(s) = self.get_mut(topic, partition) {
            s.sought = true;
        }
    }

    fn expected(&self, topic: usize, partition: i32) -> Option<i64> {
        self.get(topic, partition).map(|s| s.expected)
    }

    fn forget(&mut self, topic: usize, partition: i32) {
        if let Some(slot) = self.slot(topic, partition) {
            *slot = None;
        }
    }
}

// ---------------------------------------------------------------------------
// The source.

struct TopicState {
    name: String,
    format: Format,
    received: IntCounter,
    failed: IntCounter,
}

/// Per-run state, separate from the consumer so that a received message
/// (borrowing the consumer) and this state can be used together.
struct Runner {
    topics: Vec<TopicState>,
    /// Regex subscriptions (`^...` topic names) and their format, for topics
    /// discovered at run time.
    patterns: Vec<(regex::Regex, Format)>,
    tracker: PartitionTracker,
    shared: Arc<Shared>,
    metrics: Metrics,
    /// `events_decoded` per source system, most recent first.
    decoded: Vec<(String, IntCounter)>,
    dead_letters: IntCounter,
    dead_letter: Option<DeadLetter>,
}

/// What to do with one received message.
enum Step {
    /// Nothing for the core: a redelivery or a gap.
    Drop,
    Emit(SourceItem),
    /// Undecodable: dead-letter it, then emit `Skipped`.
    DeadLetter {
        origin: Origin,
        key: Option<String>,
        payload: Vec<u8>,
        error: String,
        reason: String,
    },
}

/// Kafka consumer feeding the core.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    runner: Runner,
}

/// Stores and commits offsets of the source's consumer. Clone + Send + Sync.
#[derive(Clone)]
pub struct OffsetHandle {
    consumer: Arc<SourceConsumer>,
    shared: Arc<Shared>,
}

fn check_config(cfg: &KafkaConfig) -> Result<(), SourceError> {
    let mut problems = Vec::new();
    if cfg.brokers.trim().is_empty() {
        problems.push("`brokers` is empty".to_string());
    }
    if cfg.group_id.trim().is_empty() {
        problems.push("`group_id` is empty".to_string());
    }
    if cfg.topics.is_empty() {
        problems.push("no input `topics`".to_string());
    }
    if cfg.topics.iter().any(|t| t.name.trim().is_empty()) {
        problems.push("a topic name is empty".to_string());
    }
    if cfg.commit_interval.0.is_zero() {
        problems.push("`commit_interval` must be greater than zero".to_string());
    }
    for key in cfg.options.keys() {
        if OWNED_KAFKA_OPTIONS.contains(&key.as_str()) {
            problems.push(format!("option `{key}` is set by triaged itself"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Config(problems.join("; ")))
    }
}

/// The client configuration of a producer beside the consumer (dead letters,
/// ingest): the brokers and the shared `kafka.options`, without the
/// consumer-only ones a producer would warn about and ignore.
pub(crate) fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in cfg.options.iter().filter(|(k, _)| !is_consumer_only(k)) {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cfg.brokers);
    cc
}

/// Produces `messages` (key, payload) to `topic`, each on the partition
/// `partition_of` gives it (or by key), and waits for every delivery. A full
/// producer queue is waited out: half of what is queued is delivered first.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(String, Vec<u8>)],
    partition_of: Option<&[i32]>,
) -> Result<(), KafkaError> {
    async fn delivered(f: rdkafka::producer::DeliveryFuture) -> Result<(), KafkaError> {
        match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(KafkaError::Canceled),
        }
    }
    let mut pending = std::collections::VecDeque::new();
    for (i, (key, payload)) in messages.iter().enumerate() {
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(payload);
            if let Some(p) = partition_of.and_then(|p| p.get(i)) {
                record = record.partition(*p);
            }
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push_back(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    for _ in 0..pending.len() / 2 + 1 {
                        if let Some(f) = pending.pop_front() {
                            delivered(f).await?;
                        }
                    }
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    for f in pending {
        delivered(f).await?;
    }
    Ok(())
}

pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in &cfg.options {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", cfg.commit_interval.0.as_millis().max(1).to_string())
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    cc
}

impl KafkaSource {
    /// Builds the consumer and subscribes to the configured topics. Must be
    /// called inside a Tokio runtime. Also builds the dead-letter producer when
    /// `dead_letter_topic` is set.
    pub fn new(cfg: &KafkaConfig, metrics: Metrics) -> Result<KafkaSource, SourceError> {
        check_config(cfg)?;
        let shared = Arc::new(Shared::default());
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
    pub fn track_ownership(&self, ownership: Arc<Ownership>) {
        let _ = self.runner.shared.ownership.set(ownership);
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
    warn!(error = %e, "Kafka consume error");
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
fn seek(consumer: &SourceConsumer, topic: &str, partition: i32, offset: i64) {
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

impl Runner {
    fn add_topic(&mut self, name: &str, format: Format) -> usize {
        self.topics.push(TopicState {
            name: name.to_owned(),
            format,
            received: self.metrics.messages_received.with_label_values(&[name]),
            failed: self.metrics.events_failed.with_label_values(&[name]),
        });
        self.topics.len() - 1
    }

    /// Whether `origin`'s partition is still assigned (not revoked since).
    fn is_tracked(&self, origin: &Origin) -> bool {
        self.topic_index(&origin.topic).and_then(|t| self.tracker.expected(t, origin.partition)).is_some()
    }

    fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == name)
    }

    /// Index of `name`, registering a topic found through a regex subscription.
    fn topic_index_or_add(&mut self, name: &str) -> usize {
        if let Some(i) = self.topic_index(name) {
            return i;
        }
        let format = self.patterns.iter().find(|(re, _)| re.is_match(name)).map_or(Format::Auto, |(_, f)| *f);
        self.add_topic(name, format)
    }

    /// Assignment changes since the last call, as one item for the core.
    fn take_changes(&mut self) -> Option<SourceItem> {
        self.shared.ownership.get()?;
        let changes = std::mem::take(&mut *lock(&self.shared.changes));
        (!changes.is_empty()).then_some(SourceItem::Partitions(changes))
    }

    /// Drops the bookkeeping of revoked partitions. Returns whether the
    /// assignment changed since the last call.
    fn apply_rebalance(&mut self) -> bool {
        if !self.shared.rebalanced.swap(false, Ordering::AcqRel) {
            return false;
        }
        let revoked = std::mem::take(&mut *lock(&self.shared.revoked));
        for (topic, partition) in revoked {
            if let Some(t) = self.topic_index(&topic) {
                self.tracker.forget(t, partition);
            }
            let _ = self.metrics.consumer_lag.remove_label_values(&[&topic, &partition.to_string()]);
        }
        true
    }

    /// Sequence check, decode and metrics for one message (no I/O besides an
    /// occasional asynchronous seek).
    fn process(&mut self, consumer: &SourceConsumer, msg: &BorrowedMessage<'_>) -> Step {
        let t = self.topic_index_or_add(msg.topic());
        let (partition, offset) = (msg.partition(), msg.offset());
        match self.tracker.classify(t, partition, offset) {
            Position::Next => {}
            Position::Redelivery { expected } => {
                trace!(topic = msg.topic(), partition, offset, expected, "redelivered message dropped");
                return Step::Drop;
            }
            Position::Gap { expected } => {
                debug!(topic = msg.topic(), partition, offset, expected, "offset gap; seeking back");
                seek(consumer, msg.topic(), partition, expected);
                self.tracker.sought(t, partition);
                return Step::Drop;
            }
            Position::Hole { expected } => {
                debug!(topic = msg.topic(), partition, offset, expected, "offsets absent from the log (compaction or transaction markers)");
            }
        }
        if self.tracker.accept(t, partition, offset) {
            self.shared.raise_floor(msg.topic(), partition, offset);
        }
        let topic = &self.topics[t];
        topic.received.inc();
        let origin = Origin { topic: topic.name.clone(), partition, offset };
        let payload = match msg.payload() {
            Some(p) if !p.is_empty() => p,
            _ => {
                debug!(%origin, "message without payload skipped");
                return Step::Emit(SourceItem::Skipped { origin, reason: "message has no payload".into() });
            }
        };
        let timestamp = msg.timestamp().to_millis();
        let received = timestamp.and_then(DateTime::from_timestamp_millis).unwrap_or_else(Utc::now);
        match decode::decode(topic.format, payload, received) {
            Ok(mut events) => {
                if events.is_empty() {
                    debug!(%origin, "message holds no events");
                    return Step::Emit(SourceItem::Skipped { origin, reason: "message holds no events".into() });
                }
                for ev in &mut events {
                    count_decoded(&mut self.decoded, &self.metrics, &ev.source);
                    ev.origin = Some(origin.clone());
                }
                Step::Emit(SourceItem::Events { origin, events, timestamp })
            }
            Err(e) => {
                topic.failed.inc();
                self.dead_letters.inc();
                warn!(topic = %origin.topic, partition, offset, kind = e.kind(), error = %e, bytes = payload.len(), "undecodable message");
                let reason = format!("undecodable ({}): {e}", e.kind());
                if self.dead_letter.is_some() {
                    Step::DeadLetter {
                        origin,
                        key: msg.key().and_then(|k| std::str::from_utf8(k).ok()).map(str::to_owned),
                        payload: payload.to_vec(),
                        error: e.to_string(),
                        reason,
                    }
                } else {
                    Step::Emit(SourceItem::Skipped { origin, reason })
                }
            }
        }
    }

    /// A message received while paused is dropped; it is fetched again after
    /// the seek on resume.
    fn note_paused(&mut self, msg: &BorrowedMessage<'_>) {
        let t = self.topic_index_or_add(msg.topic());
        self.tracker.note_unhanded(t, msg.partition(), msg.offset());
    }

    /// Writes one undecodable message to the dead-letter topic, retrying with
    /// a capped backoff. Returns false if shutdown came first (the item must
    /// then not be emitted, so its offset is never stored).
    async fn dead_letter_with_retry(
        &self,
        origin: &Origin,
        key: Option<&str>,
        payload: &[u8],
        error: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(dl) = &self.dead_letter else {
            return true;
        };
        let mut backoff = DEAD_LETTER_BACKOFF;
        loop {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return false,
                r = dl.send("decode", Some(origin), key, payload, error) => r,
            };
            match result {
                Ok(()) => {
                    debug!(%origin, topic = %dl.topic, "undecodable message dead-lettered");
                    return true;
                }
                Err(e) if !e.is_retryable() => {
                    error!(%origin, error = %e, "dead-letter write failed permanently; the message is skipped and only this log records it");
                    return true;
                }
                Err(e) => {
                    warn!(%origin, error = %e, retry_in = ?backoff, "dead-letter write failed; retrying");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(DEAD_LETTER_BACKOFF_MAX);
                }
            }
        }
    }

    /// Lag = high watermark - next offset to hand over (or the consumer
    /// position when nothing was handed over yet).
    fn apply_lag(&mut self, consumer: &SourceConsumer, highs: &[(String, i32, i64)]) {
        let mut positions: Option<TopicPartitionList> = None;
        for (topic, partition, high) in highs {
            let expected = self.topic_index(topic).and_then(|t| self.tracker.expected(t, *partition));
            let pos = match expected {
                Some(p) => Some(p),
                None => {
                    let tpl = positions.get_or_insert_with(|| consumer.position().unwrap_or_default());
                    match tpl.find_partition(topic, *partition).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Some(o),
                        _ => None,
                    }
                }
            };
            if let Some(pos) = pos {
                self.metrics.consumer_lag.with_label_values(&[topic, &partition.to_string()]).set((high - pos).max(0));
            }
        }
    }
}

/// Counts one decoded event of `source`. Sources are few and messages come
/// in runs from the same one: a short scan beats hashing the name.
fn count_decoded(counters: &mut Vec<(String, IntCounter)>, metrics: &Metrics, source: &str) {
    match counters.iter().position(|(s, _)| s == source) {
        Some(0) => counters[0].1.inc(),
        Some(i) => {
            counters[i].1.inc();
            counters.swap(0, i);
        }
        None => {
            let c = metrics.events_decoded.with_label_values(&[source]);
            c.inc();
            counters.push((source.to_owned(), c));
            let last = counters.len() - 1;
            counters.swap(0, last);
        }
    }
}

/// Longest one watermark query of a probe may block, so that a probe told to
/// stop (shutdown) ends this soon even when the broker does not answer. A
/// query can wait behind a fetch long poll on the same connection
/// (`fetch.wait.max.ms`, 500 ms by default), so this is twice that.
const LAG_CALL: Duration = Duration::from_secs(1);

/// Measures high watermarks off the runtime (the query blocks), one probe at a time.
#[derive(Default)]
struct LagProbe {
    task: Option<tokio::task::JoinHandle<Vec<(String, i32, i64)>>>,
    /// Tells the probe in flight to stop before its next query.
    stop: Arc<AtomicBool>,
}

impl LagProbe {
    fn start(&mut self, consumer: &Arc<SourceConsumer>) {
        if self.task.is_some() {
            return;
        }
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let parts: Vec<(String, i32)> = assignment.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        if parts.is_empty() {
            return;
        }
        let consumer = consumer.clone();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        self.task = Some(tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + LAG_BUDGET;
            let mut highs = Vec::with_capacity(parts.len());
            for (topic, partition) in parts {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || stop.load(Ordering::Acquire) {
                    break;
                }
                match consumer.client().fetch_watermarks(&topic, partition, left.min(LAG_CALL)) {
                    Ok((_low, high)) => highs.push((topic, partition, high)),
                    Err(e) => debug!(topic, partition, error = %e, "watermark query failed"),
                }
            }
            highs
        }));
    }

    /// Stops the probe in flight, if any, within `LAG_CALL`, and waits for it.
    async fn finish(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Resolves when a probe finishes; pending forever when none runs.
    async fn wait(&mut self) -> Option<Vec<(String, i32, i64)>> {
        match &mut self.task {
            Some(handle) => {
                let r = handle.await;
                self.task = None;
                r.ok()
            }
            None => std::future::pending().await,
        }
    }
}

impl OffsetHandle {
    /// Stores, for each (topic, partition), the NEXT offset to consume (Kafka's
    /// committed-offset meaning: one past the last message done). Offsets never
    /// go backwards: a value not above the one already stored (or below where
    /// consumption of the partition started) is ignored. Partitions not
    /// assigned to this consumer (unknown, revoked) are ignored quietly.
    /// Auto-commit later commits what was stored.
    pub fn store(&self, next: &[(String, i32, i64)]) -> Result<(), SourceError> {
        if next.is_empty() {
            return Ok(());
        }
        let mut stored = lock(&self.shared.stored);
        let mut updates: Vec<(&str, i32, i64)> = Vec::new();
        for (topic, partition, offset) in next {
            let Some(current) = stored.get(topic.as_str()).and_then(|m| m.get(partition)) else {
                continue;
            };
            if *offset <= *current {
                continue;
            }
            match updates.iter_mut().find(|u| u.0 == topic.as_str() && u.1 == *partition) {
                Some(u) => u.2 = u.2.max(*offset),
                None => updates.push((topic, *partition, *offset)),
            }
        }
        if updates.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::with_capacity(updates.len());
        for (topic, partition, offset) in &updates {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(SourceError::Store)?;
        }
        let result = self.consumer.store_offsets(&tpl);
        let mut failure = None;
        let mut any_element_error = false;
        for e in tpl.elements() {
            match e.error() {
                Ok(()) => {
                    if let (Offset::Offset(o), Some(v)) = (e.offset(), stored.get_mut(e.topic()).and_then(|m| m.get_mut(&e.partition()))) {
                        *v = (*v).max(o);
                    }
                }
                Err(err) => {
                    any_element_error = true;
                    match err.rdkafka_error_code() {
                        // Revoked between our check and librdkafka's.
                        Some(RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition) => {
                            debug!(topic = e.topic(), partition = e.partition(), "offset for an unassigned partition ignored")
                        }
                        _ => failure = Some(err),
                    }
                }
            }
        }
        match (result, failure) {
            (_, Some(err)) => Err(SourceError::Store(err)),
            (Err(err), None) if !any_element_error => Err(SourceError::Store(err)),
            _ => Ok(()),
        }
    }

    /// Synchronously commits the stored offsets (shutdown, tests). Blocks the
    /// calling thread until the broker answers.
    pub fn commit_now(&self) -> Result<(), SourceError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => Ok(()),
            Err(e) => Err(SourceError::Commit(e)),
        }
    }

    /// Closes the consumer (leave the group) on a thread of its own, waiting
    /// at most `within`. librdkafka's close can block for as long as the
    /// broker lets it (a fenced consumer waits on a live broker); past
    /// `within` the daemon goes on exiting without it. The last handle must
    /// be this one for the close to happen here.
    pub async fn close(self, within: Duration) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let consumer = self.consumer;
        let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
            drop(consumer);
            let _ = done_tx.send(());
        });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to close the Kafka consumer; it is left to the process exit");
            return;
        }
        if tokio::time::timeout(within, done_rx).await.is_err() {
            warn!(?within, "the Kafka consumer did not close in time; exiting without leaving the group (the broker expires the session)");
        }
    }
}

// ---------------------------------------------------------------------------
// Dead letters.

/// Producer for the dead-letter topic.
pub struct DeadLetter {
    producer: FutureProducer,
    topic: String,
}

/// librdkafka properties that only a consumer understands (column `C` of
/// librdkafka's CONFIGURATION.md). The dead-letter producer shares the
/// connection options (security, SASL, TLS, timeouts) but not these, which a
/// producer would warn about and ignore.
fn is_consumer_only(key: &str) -> bool {
    const PREFIXES: &[&str] = &["group.", "fetch.", "queued.", "auto.commit.", "offset.store."];
    const NAMES: &[&str] = &[
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "partition.assignment.strategy",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "isolation.level",
        "check.crcs",
        "enable.partition.eof",
        "coordinator.query.interval.ms",
        "consume.callback.max.messages",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || NAMES.contains(&key)
}

impl DeadLetter {
    /// `None` when no `dead_letter_topic` is configured. Uses the brokers and
    /// `kafka.options` of the consumer.
    pub fn new(cfg: &KafkaConfig) -> Result<Option<DeadLetter>, SourceError> {
        let Some(topic) = &cfg.dead_letter_topic else {
            return Ok(None);
        };
        if topic.trim().is_empty() {
            return Err(SourceError::Config("`dead_letter_topic` is empty".into()));
        }
        if cfg.topics.iter().any(|t| &t.name == topic) {
            return Err(SourceError::Config(format!("`dead_letter_topic` `{topic}` is also an input topic")));
        }
        let mut cc = producer_config(cfg);
        if !cfg.options.contains_key("message.timeout.ms") && !cfg.options.contains_key("delivery.timeout.ms") {
            cc.set("message.timeout.ms", DEAD_LETTER_MESSAGE_TIMEOUT_MS);
        }
        let producer: FutureProducer = cc.create().map_err(|source| SourceError::Client { what: "dead-letter producer", source })?;
        Ok(Some(DeadLetter { producer, topic: topic.clone() }))
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces one record and awaits its delivery. Headers: `triaged-kind`
    /// (`decode` | `sink`), `triaged-origin-topic`, `-partition`, `-offset`
    /// (when `origin` is given) and `triaged-error`. A payload the broker
    /// refuses as too large is sent again truncated, with
    /// `triaged-truncated-from` holding its original size.
    pub async fn send(
        &self,
        kind: &str,
        origin: Option<&Origin>,
        key: Option<&str>,
        payload: &[u8],
        error: &str,
    ) -> Result<(), SourceError> {
        match self.produce(kind, origin, key, payload, error, None).await {
            Err(e) if is_too_large(&e) && payload.len() > DEAD_LETTER_TRUNCATE_BYTES => {
                warn!(topic = %self.topic, bytes = payload.len(), "dead-letter payload too large; sending it truncated");
                let cut = &payload[..DEAD_LETTER_TRUNCATE_BYTES];
                self.produce(kind, origin, key, cut, error, Some(payload.len()))
                    .await
                    .map_err(|source| SourceError::DeadLetter { topic: self.topic.clone(), source })
            }
            r => r.map_err(|source| SourceError::DeadLetter { topic: self.topic.clone(), source }),
        }
    }

    async fn produce(
        &self,
        kind: &str,
        origin: Option<&Origin>,
        key: Option<&str>,
        payload: &[u8],
        error: &str,
        truncated_from: Option<usize>,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(6).insert(Header { key: HEADER_KIND, value: Some(kind) });
        if let Some(o) = origin {
            headers = headers
                .insert(Header { key: HEADER_ORIGIN_TOPIC, value: Some(o.topic.as_str()) })
                .insert(Header { key: HEADER_ORIGIN_PARTITION, value: Some(&o.partition.to_string()) })
                .insert(Header { key: HEADER_ORIGIN_OFFSET, value: Some(&o.offset.to_string()) });
        }
        headers = headers.insert(Header { key: HEADER_ERROR, value: Some(error) });
        if let Some(n) = truncated_from {
            headers = headers.insert(Header { key: HEADER_TRUNCATED_FROM, value: Some(&n.to_string()) });
        }
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).payload(payload).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.producer.send(record, Timeout::After(Duration::from_secs(5))).await.map(|_| ()).map_err(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dead_letter_producer_skips_consumer_only_options() {
        for k in ["session.timeout.ms", "heartbeat.interval.ms", "group.instance.id", "fetch.min.bytes", "auto.offset.reset"] {
            assert!(super::is_consumer_only(k), "{k}");
        }
        for k in ["security.protocol", "sasl.mechanism", "ssl.ca.location", "socket.timeout.ms", "message.timeout.ms", "client.id"] {
            assert!(!super::is_consumer_only(k), "{k}");
        }
    }

    use super::*;

    #[test]
    fn tracker_sequences_each_partition() {
        let mut t = PartitionTracker::default();
        // The first message of a partition is accepted whatever its offset.
        assert_eq!(t.classify(0, 0, 42), Position::Next);
        assert!(t.accept(0, 0, 42));
        assert!(!t.accept(0, 0, 43));
        let cases = [
            (44, Position::Next),
            (43, Position::Redelivery { expected: 44 }),
            (10, Position::Redelivery { expected: 44 }),
            (45, Position::Gap { expected: 44 }),
            (100, Position::Gap { expected: 44 }),
        ];
        for (offset, want) in cases {
            assert_eq!(t.classify(0, 0, offset), want, "offset {offset}");
        }
        // Partitions and topics are independent.
        assert_eq!(t.classify(0, 1, 0), Position::Next);
        assert_eq!(t.classify(1, 0, 7), Position::Next);
        assert_eq!(t.expected(0, 0), Some(44));
        t.forget(0, 0);
        assert_eq!(t.classify(0, 0, 3), Position::Next);
        assert_eq!(t.expected(0, 0), None);
    }

    #[test]
    fn messages_seen_while_paused_set_the_resume_point_once() {
        let mut t = PartitionTracker::default();
        // Known partition: the resume point stays the next expected offset.
        t.accept(0, 0, 9);
        t.note_unhanded(0, 0, 10);
        t.note_unhanded(0, 0, 11);
        assert_eq!(t.expected(0, 0), Some(10));
        // Unknown partition: the first message seen is where to resume.
        t.note_unhanded(0, 1, 5);
        t.note_unhanded(0, 1, 6);
        assert_eq!(t.expected(0, 1), Some(5));
        assert_eq!(t.classify(0, 1, 5), Position::Next);
        assert_eq!(t.classify(0, 1, 6), Position::Gap { expected: 5 });
    }

    #[test]
    fn after_a_seek_the_next_message_is_authoritative() {
        let mut t = PartitionTracker::default();
        t.accept(0, 0, 4);
        // A gap before any seek: seek back, drop the message.
        assert_eq!(t.classify(0, 0, 9), Position::Gap { expected: 5 });
        t.sought(0, 0);
        // After the seek: the expected offset is handed over as usual...
        assert_eq!(t.classify(0, 0, 5), Position::Next);
        // ...and a later one means the log holds nothing in between.
        assert_eq!(t.classify(0, 0, 8), Position::Hole { expected: 5 });
        assert_eq!(t.classify(0, 0, 3), Position::Redelivery { expected: 5 });
        t.accept(0, 0, 8);
        // Handing over a message ends the post-seek state.
        assert_eq!(t.classify(0, 0, 12), Position::Gap { expected: 9 });
        // Seeking an unknown partition marks nothing.
        t.sought(0, 1);
        assert_eq!(t.expected(0, 1), None);
    }

    #[test]
    fn decoded_events_are_counted_per_source() {
        let metrics = Metrics::new();
        let mut counters = Vec::new();
        for source in ["zabbix", "zabbix", "nagios", "zabbix", "alertmanager", "nagios"] {
            count_decoded(&mut counters, &metrics, source);
        }
        let got = |s: &str| metrics.events_decoded.with_label_values(&[s]).get();
        assert_eq!((got("zabbix"), got("nagios"), got("alertmanager")), (3, 2, 1));
        assert_eq!(counters.len(), 3);
        assert_eq!(counters[0].0, "nagios", "most recent first");
    }

    #[test]
    fn negative_partitions_are_never_tracked() {
        let mut t = PartitionTracker::default();
        assert!(!t.accept(0, -1, 5));
        t.note_unhanded(0, -1, 5);
        assert_eq!(t.expected(0, -1), None);
        assert_eq!(t.classify(0, -1, 0), Position::Next);
        t.forget(3, 7); // unknown: nothing to do
        assert_eq!(t.expected(3, 7), None);
    }

    #[test]
    fn config_problems_are_collected() {
        let cfg = KafkaConfig {
            brokers: " ".into(),
            group_id: String::new(),
            topics: vec![],
            dead_letter_topic: None,
            channel_capacity: 1,
            commit_interval: crate::config::HumanDuration(Duration::ZERO),
            options: [("group.id".to_string(), "x".to_string())].into_iter().collect(),
        };
        let SourceError::Config(msg) = check_config(&cfg).unwrap_err() else { panic!("config error expected") };
        for part in ["brokers", "group_id", "topics", "commit_interval", "group.id"] {
            assert!(msg.contains(part), "{part} missing from {msg}");
        }
    }

    #[test]
    fn owned_consumer_settings_win() {
        let cfg = KafkaConfig {
            brokers: "b:9092".into(),
            group_id: "g".into(),
            topics: vec![crate::config::TopicConfig { name: "events".into(), format: Format::Auto }],
            dead_letter_topic: None,
            channel_capacity: 1,
            commit_interval: crate::config::HumanDuration(Duration::from_millis(250)),
            options: [("security.protocol".to_string(), "ssl".to_string())].into_iter().collect(),
        };
        let cc = consumer_config(&cfg);
        let want = [
            ("bootstrap.servers", "b:9092"),
            ("group.id", "g"),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "250"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("security.protocol", "ssl"),
        ];
        for (k, v) in want {
            assert_eq!(cc.get(k), Some(v), "{k}");
        }
    }

    #[test]
    fn only_size_errors_are_permanent_for_dead_letters() {
        let too_large =
            SourceError::DeadLetter { topic: "dlq".into(), source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) };
        let timed_out =
            SourceError::DeadLetter { topic: "dlq".into(), source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) };
        assert!(!too_large.is_retryable());
        assert!(timed_out.is_retryable());
        assert!(timed_out.to_string().contains("`dlq`"), "{timed_out}");
    }
}
