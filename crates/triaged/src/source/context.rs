//! The consumer's client context: the state shared between the rebalance
//! callbacks, the run loop and the offset handle, librdkafka's log and error
//! callbacks, and the rebalance and commit callbacks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{info, trace, warn};

use super::consumer::{PartitionChange, RevokeHook};
use crate::scale::ownership::Ownership;

// State shared between the consumer context (rebalance callbacks), the run
// loop and the offset handle.

#[derive(Default)]
pub(super) struct ConsumerShared {
    /// Assigned partitions -> highest NEXT offset stored (-1: none yet). Only
    /// assigned partitions have an entry, so stores for others are ignored.
    pub(super) stored: Mutex<HashMap<String, HashMap<i32, i64>>>,
    /// Partitions revoked since the run loop last looked.
    pub(super) revoked: Mutex<Vec<(String, i32)>>,
    /// Set on every assignment change; the run loop clears it.
    pub(super) rebalanced: AtomicBool,
    /// The source is waiting for room with its partitions paused: partitions
    /// assigned meanwhile are paused at once.
    pub(super) paused: AtomicBool,
    /// Signalled on every client error, so that the run loop notices a fatal
    /// one: the consumer will not deliver again (e.g. fenced), and `recv`
    /// does not say so by itself.
    pub(super) fatal: Notify,
    /// Set by [`KafkaSource::track_ownership`](super::KafkaSource::track_ownership): the rebalance callbacks
    /// record every change here and in `changes`.
    pub(super) ownership: std::sync::OnceLock<Arc<Ownership>>,
    pub(super) changes: Mutex<Vec<PartitionChange>>,
    /// Set by [`KafkaSource::report_assignments`](super::KafkaSource::report_assignments):
    /// the changes are passed on as items.
    pub(super) report: std::sync::atomic::AtomicBool,
    /// Signalled with every change, so the run loop passes it on at once.
    pub(super) changed: Notify,
    /// Called with the partitions about to be revoked, before the revoke
    /// takes effect (see [`KafkaSource::on_revoke`](super::KafkaSource::on_revoke)).
    pub(super) on_revoke: std::sync::OnceLock<RevokeHook>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConsumerShared {
    /// Consumption of a newly assigned partition started at `offset`: a stored
    /// offset below it (stale, from an earlier assignment) would go backwards.
    pub(super) fn raise_floor(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(v) = lock(&self.stored).get_mut(topic).and_then(|m| m.get_mut(&partition)) {
            *v = (*v).max(offset);
        }
    }
}

pub(super) struct SourceContext {
    pub(super) shared: Arc<ConsumerShared>,
    pub(super) paused_partitions: IntGauge,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The run loop asks librdkafka whether this one was fatal.
        self.shared.fatal.notify_one();
        // Mostly transient (broker down, reconnecting): librdkafka retries.
        crate::kafka::log::error(&error, reason);
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
                {
                    let mut changes = lock(&self.shared.changes);
                    for e in tpl.elements() {
                        if let Some(o) = self.shared.ownership.get() {
                            o.revoked(e.topic(), e.partition());
                        }
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
            {
                // Without ownership (no [rekey]) there are no claims: epoch 0.
                let mut changes = lock(&self.shared.changes);
                for e in tpl.elements() {
                    let epoch = self.shared.ownership.get().map_or(0, |o| o.assigned(e.topic(), e.partition()));
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
pub(super) fn describe(tpl: &TopicPartitionList) -> String {
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

pub(super) type SourceConsumer = StreamConsumer<SourceContext>;
