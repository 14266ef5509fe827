//! Kafka client configuration: the consumer's, a producer's beside it (the
//! shared `kafka.options` minus the consumer-only ones), and the checks of
//! the `kafka` settings.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseProducer;
use rdkafka::types::RDKafkaRespErr;

use crate::config::{KafkaConfig, OWNED_KAFKA_OPTIONS, SECRET_KAFKA_OPTIONS};
use crate::source::SourceError;

pub(crate) fn check_config(cfg: &KafkaConfig) -> Result<(), SourceError> {
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

/// Each `kafka.options` property librdkafka itself refuses (an unknown name,
/// an unsupported value such as a protocol this build lacks), as (property,
/// librdkafka's reason). Properties triaged owns or that are secrets are
/// reported by the config's own checks.
pub(crate) fn check_options(cfg: &KafkaConfig) -> Vec<(String, String)> {
    let skip = |k: &str| OWNED_KAFKA_OPTIONS.contains(&k) || SECRET_KAFKA_OPTIONS.iter().any(|(s, _)| *s == k);
    cfg.options
        .iter()
        .filter(|(k, _)| !skip(k))
        .filter_map(|(k, v)| match ClientConfig::new().set(k, v).create_native_config() {
            Ok(_) => None,
            Err(KafkaError::ClientConfig(_, reason, _, _)) => Some((k.clone(), reason)),
            Err(e) => Some((k.clone(), e.to_string())),
        })
        .collect()
}

/// Creates the clients `run` would (the consumer and a producer beside it)
/// without subscribing or sending anything, so librdkafka's own refusals
/// (a TLS file it cannot load, a mechanism this build lacks) come out now.
pub(crate) fn build_clients(cfg: &KafkaConfig) -> Result<(), String> {
    let mut consumer = consumer_config(cfg);
    // Without a group the consumer does not look for a coordinator.
    consumer.remove("group.id");
    consumer.create::<BaseConsumer>().map_err(|e| format!("consumer: {e}"))?;
    producer_config(cfg).create::<BaseProducer>().map_err(|e| format!("producer: {e}"))?;
    Ok(())
}

/// The client configuration of a producer beside the consumer (dead letters,
/// ingest): the brokers and the shared `kafka.options`, without the
/// consumer-only ones a producer would warn about and ignore.
pub(crate) fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in cfg.options.iter().filter(|(k, _)| !is_consumer_only(k)) {
        cc.set(k, v);
    }
    for (k, v) in cfg.secrets.properties() {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cfg.brokers);
    cc
}

pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in &cfg.options {
        cc.set(k, v);
    }
    for (k, v) in cfg.secrets.properties() {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Format;

    #[test]
    fn dead_letter_producer_skips_consumer_only_options() {
        for k in ["session.timeout.ms", "heartbeat.interval.ms", "group.instance.id", "fetch.min.bytes", "auto.offset.reset"] {
            assert!(super::is_consumer_only(k), "{k}");
        }
        for k in ["security.protocol", "sasl.mechanism", "ssl.ca.location", "socket.timeout.ms", "message.timeout.ms", "client.id"] {
            assert!(!super::is_consumer_only(k), "{k}");
        }
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
            sasl_password: None,
            ssl_key_password: None,
            secrets: Default::default(),
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
            sasl_password: None,
            ssl_key_password: None,
            secrets: Default::default(),
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
}

/// What the broker says about a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Described {
    Partitions(usize),
    Missing,
    /// The broker did not answer in time, or answered with another error.
    Unknown,
}

/// Describes `topic` with a metadata request (blocking, up to `within`).
pub fn describe_topic(cc: &ClientConfig, topic: &str, within: Duration) -> Described {
    let Ok(consumer) = cc.create::<BaseConsumer>() else { return Described::Unknown };
    match consumer.fetch_metadata(Some(topic), within) {
        Err(_) => Described::Unknown,
        Ok(m) => match m.topics().first() {
            Some(mt) if mt.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Described::Missing,
            Some(mt) if mt.error().is_none() && !mt.partitions().is_empty() => Described::Partitions(mt.partitions().len()),
            _ => Described::Unknown,
        },
    }
}

/// Records the client errors librdkafka reports, for [`refused_by_brokers`].
#[derive(Default)]
struct Recorder {
    errors: std::sync::Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>,
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, _fac: &str, message: &str) {
        if matches!(level, RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error) {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            errors.push((None, message.to_owned()));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.push((error.rdkafka_error_code(), reason.to_owned()));
    }
}

impl rdkafka::consumer::ConsumerContext for Recorder {}

/// Asks the brokers for metadata (up to `within`) and returns why they
/// refused this client: a TLS handshake or an authentication that failed.
/// Brokers that are only down or slow are not a refusal (`None`).
pub(crate) fn refused_by_brokers(cfg: &KafkaConfig, within: Duration) -> Option<String> {
    let consumer: BaseConsumer<Recorder> = producer_config(cfg).create_with_context(Recorder::default()).ok()?;
    let answered = consumer.fetch_metadata(None, within).is_ok();
    // Error events are served by a poll; logs arrive on their own.
    let _ = consumer.poll(Duration::from_millis(100));
    let errors = std::mem::take(&mut *consumer.context().errors.lock().unwrap_or_else(|p| p.into_inner()));
    if answered {
        return None;
    }
    let refusal = |code: Option<RDKafkaErrorCode>, reason: &str| {
        matches!(code, Some(RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed))
            || ["SSL handshake failed", "SASL authentication error", "Authentication failed"].iter().any(|m| reason.contains(m))
    };
    errors.into_iter().find_map(|(code, reason)| refusal(code, &reason).then_some(reason))
}
