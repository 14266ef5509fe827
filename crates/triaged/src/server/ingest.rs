//! Alertmanager-compatible ingest: `POST /api/v2/alerts`, the endpoint
//! Prometheus sends alerts to. The token is checked before the body is read;
//! the body is read within `http.body_timeout` (408 after) and refused (413)
//! as soon as it passes `max_body_bytes`. Each alert of the JSON list is checked by the
//! Alertmanager decoder, then produced as its own message (keyed by its CI
//! hint, so one CI's alerts stay in order) into an input topic, from where it
//! takes the same path as every other event. The request is answered 200 only
//! once Kafka has acknowledged every alert, so an alert is never lost between
//! Prometheus and the log: on 503 Prometheus sends it again. An alert larger
//! than Kafka's `message.max.bytes` could never be produced, so it gets 413,
//! which Prometheus does not retry. Every answer is counted by code in
//! `triaged_ingest_requests_total`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::Utc;
use http_body_util::BodyExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use crate::kafka::log::{KafkaLog, Producer};

use crate::config::{Config, Format};
use crate::kafka::producer_config;
use crate::metrics::Metrics;
use crate::server::auth::BearerToken;
use crate::sink::{read_secret, SinkBuildError};
use crate::source::decode::decode;

/// How long Kafka may take to acknowledge a request's alerts before 503.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// Every code the ingest answers with: the label values of `triaged_ingest_requests_total`.
const CODES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::SERVICE_UNAVAILABLE,
];

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
    producer: Producer,
    topic: String,
    token: Option<BearerToken>,
    metrics: Metrics,
    /// Largest request body, enforced while it streams in.
    pub max_body_bytes: usize,
    /// Largest Kafka message (key and payload) the producer takes.
    max_message_bytes: usize,
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
        let token = ic
            .token
            .as_ref()
            .map(|t| read_secret("ingest.token", t).map(|s| BearerToken::new(&s)))
            .transpose()
            .map_err(IngestError::Token)?;
        let max_message_bytes =
            cfg.kafka.options.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        let producer: Producer = producer_config(&cfg.kafka)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create_with_context(KafkaLog)
            .map_err(IngestError::Producer)?;
        for code in CODES {
            metrics.ingest_requests.with_label_values(&[code.as_str()]);
        }
        Ok(Some(Ingest { producer, topic, token, metrics, max_body_bytes: ic.max_body_bytes, max_message_bytes }))
    }

    /// Handles one request: the token, then the body within `body_timeout`,
    /// then the alerts; returns the status and a one-line body.
    pub async fn handle(&self, headers: &HeaderMap, body: Body, body_timeout: Duration) -> (StatusCode, String) {
        let (code, message) = match self.admit(headers) {
            Err(refused) => refused,
            Ok(()) => match tokio::time::timeout(body_timeout, read_body(body, self.max_body_bytes)).await {
                Err(_) => {
                    (StatusCode::REQUEST_TIMEOUT, format!("the body did not arrive within {}\n", crate::duration::format(body_timeout)))
                }
                Ok(Err(refused)) => refused,
                Ok(Ok(body)) => self.accept(&body).await,
            },
        };
        debug_assert!(CODES.contains(&code), "{code} is not a label value of ingest_requests_total");
        self.metrics.ingest_requests.with_label_values(&[code.as_str()]).inc();
        (code, message)
    }

    /// The token and the announced length, before any of the body is read.
    fn admit(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        if let Some(token) = &self.token {
            if !token.admits(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())) {
                return Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n".into()));
            }
        }
        let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        match announced {
            Some(n) if n > self.max_body_bytes as u64 => Err(too_large(self.max_body_bytes)),
            _ => Ok(()),
        }
    }

    async fn accept(&self, body: &[u8]) -> (StatusCode, String) {
        let alerts: Vec<&serde_json::value::RawValue> = match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("the body must be a JSON array of alerts: {e}\n")),
        };
        let now = Utc::now();
        let mut messages = Vec::with_capacity(alerts.len());
        for (i, alert) in alerts.iter().enumerate() {
            let payload = format!("[{}]", alert.get()).into_bytes();
            if payload.len() > self.max_message_bytes {
                return too_big_for_kafka(i, payload.len(), self.max_message_bytes);
            }
            let events = match decode(Format::Alertmanager, &payload, now) {
                Ok(ev) => ev,
                Err(e @ crate::source::decode::DecodeError::TooLarge { .. }) => {
                    return (StatusCode::PAYLOAD_TOO_LARGE, format!("alerts[{i}]: {e}\n"))
                }
                Err(e) => return (StatusCode::BAD_REQUEST, format!("alerts[{i}]: {e}\n")),
            };
            let key = events.first().and_then(|e| e.ci.host.clone().or_else(|| e.ci.service.clone())).unwrap_or_default();
            if key.len() + payload.len() > self.max_message_bytes {
                return too_big_for_kafka(i, key.len() + payload.len(), self.max_message_bytes);
            }
            messages.push((key, payload));
        }
        let mut pending = Vec::with_capacity(messages.len());
        for (key, payload) in &messages {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) if too_big(&e) => return (StatusCode::PAYLOAD_TOO_LARGE, format!("Kafka refuses the alert: {e}\n")),
                Err((e, _)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("Kafka producer queue: {e}; retry\n")),
            }
        }
        for delivery in pending {
            match tokio::time::timeout(PRODUCE_TIMEOUT, delivery).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) if too_big(&e) => return (StatusCode::PAYLOAD_TOO_LARGE, format!("Kafka refuses the alert: {e}\n")),
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

fn too_big_for_kafka(i: usize, size: usize, max: usize) -> (StatusCode, String) {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("alerts[{i}] is {size} bytes, above Kafka's message.max.bytes ({max}); it can never be produced\n"),
    )
}

fn too_large(max: usize) -> (StatusCode, String) {
    (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than ingest.max_body_bytes ({max})\n"))
}

/// Whether Kafka refused a message for its size (a retry cannot help).
fn too_big(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageSizeTooLarge))
}

/// Reads `body`, refusing it (413) as soon as it passes `max` bytes.
async fn read_body(mut body: Body, max: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (StatusCode::BAD_REQUEST, format!("cannot read the body: {e}\n")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large(max));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_above_the_limit_are_refused() {
        let (code, _) = read_body(Body::from(vec![b'x'; 2501]), 2500).await.unwrap_err();
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(read_body(Body::from(vec![b'x'; 2500]), 2500).await.unwrap().len(), 2500);
    }
}
