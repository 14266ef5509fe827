//! The dead-letter producer: records the daemon could not handle, with
//! headers naming their origin and the error.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::log::{KafkaLog, Producer};
use rdkafka::util::Timeout;
use tracing::warn;

use super::client::producer_config;
use crate::config::KafkaConfig;
use crate::event::Origin;
use crate::source::{is_too_large, SourceError};

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

/// Producer for the dead-letter topic.
pub struct DeadLetter {
    producer: Producer,
    topic: String,
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
        let producer: Producer =
            cc.create_with_context(KafkaLog).map_err(|source| SourceError::Client { what: "dead-letter producer", source })?;
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
