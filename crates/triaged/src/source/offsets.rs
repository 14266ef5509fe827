//! The offset handle: stores offsets the core is done with (never backwards,
//! only for assigned partitions), commits them, and closes the consumer.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::context::{lock, ConsumerShared, SourceConsumer};
use super::SourceError;

/// Stores and commits offsets of the source's consumer. Clone + Send + Sync.
#[derive(Clone)]
pub struct OffsetHandle {
    pub(super) consumer: Arc<SourceConsumer>,
    pub(super) shared: Arc<ConsumerShared>,
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

    /// [`OffsetHandle::commit_now`] on a thread of its own, waiting at most
    /// `within`: with the broker down librdkafka's synchronous commit waits
    /// for a coordinator (up to the session timeout), which must not hold a
    /// shutdown past its deadline. Nothing is lost by giving up: the next
    /// start reads again from the last committed offset, and the changelog
    /// says what of that its state already reflects.
    pub async fn commit_within(&self, within: Duration) -> Result<(), SourceError> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let handle = self.clone();
        let spawned = std::thread::Builder::new().name("kafka-commit".into()).spawn(move || {
            let result = handle.commit_now();
            // Before the answer: a close that follows must hold the last handle.
            drop(handle);
            let _ = done_tx.send(result);
        });
        if spawned.is_err() {
            return self.commit_now();
        }
        match tokio::time::timeout(within, done_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(SourceError::CommitTimedOut(within)),
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
