//! Alertmanager-compatible ingest: `POST /api/v2/alerts`, the endpoint
//! Prometheus sends alerts to. Each alert of the JSON list is checked by the
//! Alertmanager decoder, then produced as its own message (keyed by its CI
//! hint, so one CI's alerts stay in order) into an input topic, from where it
//! takes the same path as every other event. The request is answered 200 only
//! once Kafka has acknowledged every alert, so an alert is never lost between
//! Prometheus and the log: on 503 Prometheus sends it again.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::{Config, Format};
use crate::kafka::producer_config;
use crate::metrics::Metrics;
use crate::sink::{read_secret, Secret, SinkBuildError};
use crate::source::decode::decode;

/// How long Kafka may take to acknowledge a request's alerts before 503.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Ingest start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Token(#[source] SinkBuildError),
    #[error("ingest.topic: no input topic accepts Alertmanager alerts")]
    NoTopic,
    #[error("ingest: cannot create the Kafka producer: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
}

/// The ingest endpoint's state.
pub struct Ingest {
    producer: FutureProducer,
    topic: String,
    token: Option<Secret>,
    metrics: Metrics,
    /// Largest request body, enforced by the HTTP layer.
    pub max_body_bytes: usize,
}

/// Checks that the configured token can be read (for `triaged check`).
pub fn check_token(cfg: &crate::config::IngestConfig) -> Result<(), IngestError> {
    cfg.token.as_ref().map(|t| read_secret("ingest.token", t)).transpose().map(|_| ()).map_err(IngestError::Token)
}

impl Ingest {
    /// `None` when `[ingest]` is not configured.
    pub fn new(cfg: &Config, metrics: Metrics) -> Result<Option<Ingest>, IngestError> {
        let Some(ic) = &cfg.ingest else { return Ok(None) };
        let topic = ic.target_topic(&cfg.kafka).ok_or(IngestError::NoTopic)?.to_owned();
        let token = ic.token.as_ref().map(|t| read_secret("ingest.token", t)).transpose().map_err(IngestError::Token)?;
        let producer: FutureProducer = producer_config(&cfg.kafka)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create()
            .map_err(IngestError::Producer)?;
        Ok(Some(Ingest { producer, topic, token, metrics, max_body_bytes: ic.max_body_bytes }))
    }

    /// Handles one request; returns the status and a one-line body.
    pub async fn handle(&self, authorization: Option<&str>, body: &[u8]) -> (StatusCode, String) {
        let (code, message) = self.handle_inner(authorization, body).await;
        self.metrics.ingest_requests.with_label_values(&[code.as_str()]).inc();
        (code, message)
    }

    async fn handle_inner(&self, authorization: Option<&str>, body: &[u8]) -> (StatusCode, String) {
        if let Some(token) = &self.token {
            let given = authorization.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
            if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
                return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n".into());
            }
        }
        let alerts: Vec<&serde_json::value::RawValue> = match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("the body must be a JSON array of alerts: {e}\n")),
        };
        let now = Utc::now();
        let mut messages = Vec::with_capacity(alerts.len());
        for (i, alert) in alerts.iter().enumerate() {
            let payload = format!("[{}]", alert.get()).into_bytes();
            let events = match decode(Format::Alertmanager, &payload, now) {
                Ok(ev) => ev,
                Err(e) => return (StatusCode::BAD_REQUEST, format!("alerts[{i}]: {e}\n")),
            };
            let key = events.first().and_then(|e| e.ci.host.clone().or_else(|| e.ci.service.clone())).unwrap_or_default();
            messages.push((key, payload));
        }
        let mut pending = Vec::with_capacity(messages.len());
        for (key, payload) in &messages {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("Kafka producer queue: {e}; retry\n")),
            }
        }
        for delivery in pending {
            match tokio::time::timeout(PRODUCE_TIMEOUT, delivery).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => return (StatusCode::SERVICE_UNAVAILABLE, format!("Kafka did not take the alerts: {e}; retry\n")),
                Ok(Err(_)) => return (StatusCode::SERVICE_UNAVAILABLE, "Kafka producer went away; retry\n".into()),
                Err(_) => {
                    return (StatusCode::SERVICE_UNAVAILABLE, format!("Kafka did not acknowledge within {PRODUCE_TIMEOUT:?}; retry\n"))
                }
            }
        }
        self.metrics.ingest_alerts.inc_by(messages.len() as u64);
        (StatusCode::OK, String::new())
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(super::constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!super::constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!super::constant_time_eq(b"s3cret", b"s3cret!"));
        assert!(!super::constant_time_eq(b"", b"x"));
    }
}
