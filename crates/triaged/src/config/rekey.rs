//! `[rekey]` (scale-out: the repartition topic), `[state]` (the changelog
//! topic) and `[ingest]`
//! (the Alertmanager-compatible endpoint and the topic it writes to).

use serde::Deserialize;

use super::{Format, KafkaConfig, SecretSource};

/// `[rekey]`: input events are produced to `topic`, keyed by correlation
/// scope, and correlated from there, one core per partition, by consumer
/// group `group_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RekeyConfig {
    /// The repartition topic. It must exist; its partition count is the
    /// most instances that can share the correlation work.
    pub topic: String,
    /// Consumer group of the correlating consumer; default `<kafka.group_id>.correlate`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// What related events share: `component` (CIs connected by any
    /// relation; exact) or `site` (coarser partitions; cross-site
    /// dependencies are correlated apart).
    #[serde(default)]
    pub scope: RekeyScope,
    /// Moved to `state.changelog_topic`; read only to say so.
    #[serde(default)]
    pub changelog_topic: Option<String>,
}

impl RekeyConfig {
    pub fn group_id(&self, input_group: &str) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("{input_group}.correlate"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RekeyScope {
    #[default]
    Component,
    Site,
}

/// `[state]`: where the correlation state is kept, in every mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Compacted topic holding the correlation state (`cleanup.policy=compact`).
    /// It must exist. Without `[rekey]` the state is one unit in partition 0;
    /// with `[rekey]` it needs as many partitions as `rekey.topic`, partition
    /// n holding the state of repartition partition n.
    #[serde(default = "default_changelog_topic")]
    pub changelog_topic: String,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig { changelog_topic: default_changelog_topic() }
    }
}

fn default_changelog_topic() -> String {
    "triaged-state".into()
}

/// `POST /api/v2/alerts` on the HTTP listener, so Prometheus can send alerts
/// to triaged directly: each alert is produced into an input topic and takes
/// the same path as every other event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Input topic the alerts go to; default: the first input topic whose
    /// format is `auto` or `alertmanager`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Bearer token clients must send; absent: no authentication (loopback use).
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// Largest request body accepted (413 above).
    #[serde(default = "default_ingest_body")]
    pub max_body_bytes: usize,
}

fn default_ingest_body() -> usize {
    1 << 20
}

impl IngestConfig {
    /// The topic alerts are produced to, if one fits.
    pub fn target_topic<'a>(&'a self, kafka: &'a KafkaConfig) -> Option<&'a str> {
        match &self.topic {
            Some(t) => Some(t.as_str()),
            None => kafka.topics.iter().find(|t| matches!(t.format, Format::Auto | Format::Alertmanager)).map(|t| t.name.as_str()),
        }
    }
}
