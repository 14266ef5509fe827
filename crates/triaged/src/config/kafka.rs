//! `[kafka]`: brokers, input topics and their formats, the dead-letter topic,
//! and the librdkafka options the daemon leaves to the operator.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{dur, HumanDuration, SecretSource};
use crate::sink::Secret;

/// Input format of a topic's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect per message from its shape.
    #[default]
    Auto,
    /// triaged's own JSON event (`event.rs`).
    Native,
    /// Alertmanager webhook payload, version 4.
    Alertmanager,
    /// Zabbix webhook media type JSON.
    Zabbix,
    /// Nagios / Icinga notification JSON.
    Nagios,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Message format on this topic.
    #[serde(default)]
    pub format: Format,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Input topics.
    pub topics: Vec<TopicConfig>,
    /// Topic that receives undecodable messages and permanently failed sink
    /// actions, with origin headers. Unset: they are logged and counted only.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Capacity of the bounded channel between the consumer and the core.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// How often stored offsets are committed (librdkafka `auto.commit.interval.ms`).
    #[serde(default = "default_commit_interval")]
    pub commit_interval: HumanDuration,
    /// Extra librdkafka properties (security.protocol, sasl.*, ssl.*, ...),
    /// passed through verbatim. Properties triaged owns cannot be overridden,
    /// and the secret ones are `sasl_password` and `ssl_key_password`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka `sasl.password` (SASL PLAIN or SCRAM), from env or a file.
    #[serde(default)]
    pub sasl_password: Option<SecretSource>,
    /// librdkafka `ssl.key.password` (the password of `ssl.key.location`),
    /// from env or a file.
    #[serde(default)]
    pub ssl_key_password: Option<SecretSource>,
    /// The secrets above once read ([`KafkaConfig::read_secrets`]); never
    /// from the file itself.
    #[serde(skip)]
    pub secrets: KafkaSecrets,
}

/// The Kafka secrets as read from their env var or file.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecrets {
    pub(crate) sasl_password: Option<Secret>,
    pub(crate) ssl_key_password: Option<Secret>,
}

impl KafkaSecrets {
    /// The librdkafka properties they set, by name.
    pub(crate) fn properties(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let sasl = self.sasl_password.as_ref().map(|s| ("sasl.password", s.expose()));
        let key = self.ssl_key_password.as_ref().map(|s| ("ssl.key.password", s.expose()));
        sasl.into_iter().chain(key)
    }
}

impl KafkaConfig {
    /// Reads `sasl_password` and `ssl_key_password` into [`KafkaConfig::secrets`];
    /// returns each failure as (field, message).
    pub fn read_secrets(&mut self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        let mut read = |field: &'static str, src: &Option<SecretSource>| match src {
            None => None,
            Some(src) => match crate::sink::read_secret(field, src) {
                Ok(s) => Some(s),
                Err(e) => {
                    let text = e.to_string();
                    let text = text.strip_prefix(field).and_then(|t| t.strip_prefix(": ")).unwrap_or(&text).to_owned();
                    errs.push((field, text));
                    None
                }
            },
        };
        let sasl_password = read("kafka.sasl_password", &self.sasl_password);
        let ssl_key_password = read("kafka.ssl_key_password", &self.ssl_key_password);
        self.secrets = KafkaSecrets { sasl_password, ssl_key_password };
        errs
    }
}

/// librdkafka properties that are secrets: never inline in `kafka.options`,
/// each with the `[kafka]` key that reads it from env or a file.
pub const SECRET_KAFKA_OPTIONS: &[(&str, &str)] = &[("sasl.password", "sasl_password"), ("ssl.key.password", "ssl_key_password")];

fn default_channel_capacity() -> usize {
    4096
}

fn default_commit_interval() -> HumanDuration {
    dur("1s")
}

/// librdkafka properties triaged sets itself; `kafka.options` may not override them.
pub const OWNED_KAFKA_OPTIONS: &[&str] =
    &["bootstrap.servers", "group.id", "enable.auto.offset.store", "enable.auto.commit", "auto.commit.interval.ms"];
