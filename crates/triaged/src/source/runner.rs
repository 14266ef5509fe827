//! The source's per-run state and per-message work: the sequence check,
//! decoding, metrics, dead-lettering with retries and lag, kept apart from
//! the consumer so that a received message (borrowing the consumer) and this
//! state can be used together.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, trace, warn};

use super::consumer::{seek, SourceItem};
use super::context::{lock, ConsumerShared, SourceConsumer};
use super::tracker::{PartitionTracker, Position};
use crate::config::Format;
use crate::event::Origin;
use crate::kafka::DeadLetter;
use crate::metrics::Metrics;
use crate::source::decode;

/// Dead-letter retry backoff (doubles up to the cap).
const DEAD_LETTER_BACKOFF: Duration = Duration::from_millis(100);
const DEAD_LETTER_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) struct TopicState {
    name: String,
    format: Format,
    received: IntCounter,
    failed: IntCounter,
}

/// Per-run state, separate from the consumer so that a received message
/// (borrowing the consumer) and this state can be used together.
pub(super) struct Runner {
    pub(super) topics: Vec<TopicState>,
    /// Regex subscriptions (`^...` topic names) and their format, for topics
    /// discovered at run time.
    pub(super) patterns: Vec<(regex::Regex, Format)>,
    pub(super) tracker: PartitionTracker,
    pub(super) shared: Arc<ConsumerShared>,
    pub(super) metrics: Metrics,
    /// `events_decoded` per source system, most recent first.
    pub(super) decoded: Vec<(String, IntCounter)>,
    pub(super) dead_letters: IntCounter,
    pub(super) dead_letter: Option<DeadLetter>,
}

/// What to do with one received message.
pub(super) enum Step {
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

impl Runner {
    pub(super) fn add_topic(&mut self, name: &str, format: Format) -> usize {
        self.topics.push(TopicState {
            name: name.to_owned(),
            format,
            received: self.metrics.messages_received.with_label_values(&[name]),
            failed: self.metrics.events_failed.with_label_values(&[name]),
        });
        self.topics.len() - 1
    }

    /// Whether `origin`'s partition is still assigned (not revoked since).
    pub(super) fn is_tracked(&self, origin: &Origin) -> bool {
        self.topic_index(&origin.topic).and_then(|t| self.tracker.expected(t, origin.partition)).is_some()
    }

    pub(super) fn topic_index(&self, name: &str) -> Option<usize> {
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
    pub(super) fn take_changes(&mut self) -> Option<SourceItem> {
        if !self.shared.report.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let changes = std::mem::take(&mut *lock(&self.shared.changes));
        (!changes.is_empty()).then_some(SourceItem::Partitions(changes))
    }

    /// Drops the bookkeeping of revoked partitions. Returns whether the
    /// assignment changed since the last call.
    pub(super) fn apply_rebalance(&mut self) -> bool {
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
    pub(super) fn process(&mut self, consumer: &SourceConsumer, msg: &BorrowedMessage<'_>) -> Step {
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
                    let cut = ev.cap_fields();
                    if cut > 0 {
                        self.metrics.fields_truncated.inc_by(cut as u64);
                        debug!(%origin, fields = cut, "oversized event fields cut");
                    }
                    count_decoded(&mut self.decoded, &self.metrics, self.metrics.source_label(&ev.source));
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
    pub(super) fn note_paused(&mut self, msg: &BorrowedMessage<'_>) {
        let t = self.topic_index_or_add(msg.topic());
        self.tracker.note_unhanded(t, msg.partition(), msg.offset());
    }

    /// Writes one undecodable message to the dead-letter topic, retrying with
    /// a capped backoff. Returns false if shutdown came first (the item must
    /// then not be emitted, so its offset is never stored).
    pub(super) async fn dead_letter_with_retry(
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
                    debug!(%origin, topic = %dl.topic(), "undecodable message dead-lettered");
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
    pub(super) fn apply_lag(&mut self, consumer: &SourceConsumer, highs: &[(String, i32, i64)]) {
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

/// Counts one decoded event under its `source` label ([`Metrics::source_label`]).
/// Labels are few and messages come in runs from the same one: a short scan
/// of the labels seen beats hashing the name.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_events_are_counted_per_source() {
        let metrics = Metrics::new();
        let mut counters = Vec::new();
        for source in ["zabbix", "zabbix", "nagios", "zabbix", "alertmanager", "nagios"] {
            count_decoded(&mut counters, &metrics, metrics.source_label(source));
        }
        let got = |s: &str| metrics.events_decoded.with_label_values(&[s]).get();
        assert_eq!((got("zabbix"), got("nagios"), got("alertmanager")), (3, 2, 1));
        assert_eq!(counters.len(), 3);
        assert_eq!(counters[0].0, "nagios", "most recent first");
        for i in 0..1000 {
            count_decoded(&mut counters, &metrics, metrics.source_label(&format!("tenant-{i}")));
        }
        assert_eq!(metrics.events_decoded.with_label_values(&["other"]).get(), 1000);
        assert_eq!(counters.len(), 4, "the scan is over labels, not over sources seen");
    }
}
