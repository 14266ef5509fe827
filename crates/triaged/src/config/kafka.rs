//! `[kafka]`: brokers, input topics and their formats, the dead-letter topic,
//! and the librdkafka options the daemon leaves to the operator.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{dur, HumanDuration};

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
    /// passed through verbatim. Properties triaged owns cannot be overridden.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_channel_capacity() -> usize {
    4096
}

fn default_commit_interval() -> HumanDuration {
    dur("1s")
}

/// librdkafka properties triaged sets itself; `kafka.options` may not override them.
pub const OWNED_KAFKA_OPTIONS: &[&str] =
    &["bootstrap.servers", "group.id", "enable.auto.offset.store", "enable.auto.commit", "auto.commit.interval.ms"];
