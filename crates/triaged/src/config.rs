//! Daemon configuration: TOML, every struct `deny_unknown_fields`, validated as
//! a whole (all errors collected) before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A configuration problem, located by file and field (or line for syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted field path (`sink.endpoint`) or `line N, column M`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.location, self.message)
    }
}

/// A duration written as `250ms`, `30s`, `5m`, `2h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// See [`crate::duration::parse`].
    pub fn parse(s: &str) -> Result<Duration, String> {
        crate::duration::parse(s)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

impl From<HumanDuration> for Duration {
    fn from(h: HumanDuration) -> Duration {
        h.0
    }
}

fn dur(s: &str) -> HumanDuration {
    HumanDuration(HumanDuration::parse(s).expect("valid default duration"))
}

/// Top-level configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub cmdb: CmdbConfig,
    pub rules: RulesConfig,
    pub sink: SinkConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub correlation: CorrelationConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub problems: ProblemsConfig,
    /// Change calendar merged into the CMDB as maintenance windows.
    #[serde(default)]
    pub changes: Option<ChangesConfig>,
    /// Alertmanager-compatible `POST /api/v2/alerts`; absent: not served.
    #[serde(default)]
    pub ingest: Option<IngestConfig>,
    /// Re-key stage for running several instances (`src/rekey.rs`); absent:
    /// one instance correlates everything it reads.
    #[serde(default)]
    pub rekey: Option<RekeyConfig>,
}

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
    /// Compacted topic with the correlation state of each repartition
    /// partition (same partition count). Unset: a partition's state is
    /// rebuilt by reading it again from the oldest live incident's first event.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdbConfig {
    /// CMDB export (YAML or JSON), relative paths resolve against the config file.
    pub path: PathBuf,
    /// Reload the file this often (besides SIGHUP). Unset: only on SIGHUP.
    #[serde(default)]
    pub refresh_interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of `*.yaml` rule files, loaded in name order.
    pub dir: PathBuf,
}

/// Which ITSM API the sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkProfile {
    /// `PUT {endpoint}/incidents/{key}` with the whole incident as JSON.
    Generic,
    /// ServiceNow Table API (`/api/now/table/incident`).
    Servicenow,
    /// PagerDuty Events API v2 (`/v2/enqueue`).
    Pagerduty,
}

impl SinkProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkProfile::Generic => "generic",
            SinkProfile::Servicenow => "servicenow",
            SinkProfile::Pagerduty => "pagerduty",
        }
    }
}

/// Where a secret comes from. Secrets are never logged.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (trailing newline stripped).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum AuthConfig {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: SecretSource },
    /// HTTP basic auth.
    Basic { username: String, password: SecretSource },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff; doubles per attempt up to `max_backoff`, with full jitter.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    /// Backoff cap (also caps a server's Retry-After).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { initial_backoff: default_initial_backoff(), max_backoff: default_max_backoff() }
    }
}

/// `[sink.circuit]`: the circuit breaker shared by the sink workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Retryable failures in a row that open the circuit; 0 disables it.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe request is let through.
    #[serde(default = "default_open_for")]
    pub open_for: HumanDuration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig { failure_threshold: default_failure_threshold(), open_for: default_open_for() }
    }
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_open_for() -> HumanDuration {
    dur("15s")
}

fn default_initial_backoff() -> HumanDuration {
    dur("200ms")
}
fn default_max_backoff() -> HumanDuration {
    dur("30s")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// API dialect.
    pub profile: SinkProfile,
    /// Base URL, e.g. `https://example.service-now.com` or `http://127.0.0.1:8080`.
    pub endpoint: String,
    /// Per-request timeout.
    #[serde(default = "default_sink_timeout")]
    pub timeout: HumanDuration,
    /// Parallel sink workers; actions for one incident always go to the same worker, in order.
    #[serde(default = "default_sink_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// PagerDuty integration (routing) key; required for the pagerduty profile.
    #[serde(default)]
    pub routing_key: Option<SecretSource>,
}

fn default_sink_timeout() -> HumanDuration {
    dur("10s")
}
fn default_sink_concurrency() -> usize {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_listen() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

/// Timers of the correlation core.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// How long a new incident collects related events before it is opened.
    #[serde(default = "default_group_wait")]
    pub group_wait: HumanDuration,
    /// Minimum interval between two updates of one open incident.
    #[serde(default = "default_update_interval")]
    pub update_interval: HumanDuration,
    /// All members must stay cleared this long before the incident is resolved.
    #[serde(default = "default_hold_down")]
    pub resolve_hold_down: HumanDuration,
    /// A recurrence within this time after resolve reopens the incident.
    #[serde(default = "default_reopen_window")]
    pub reopen_window: HumanDuration,
    /// Default dedup key template when no rule sets one.
    #[serde(default = "default_dedup_key")]
    pub dedup_key: String,
    /// Default topology correlation window when a rule enables topology
    /// correlation without its own window.
    #[serde(default = "default_topology_window")]
    pub topology_window: HumanDuration,
    /// How far up the dependency graph root-cause search goes.
    #[serde(default = "default_max_depth")]
    pub max_upstream_depth: usize,
    /// State changes of one alert within `flap_window` that make it flapping
    /// (0: no flap detection). A flapping alert stops adding work notes and
    /// holds its incident's resolve until it has been stable for `flap_window`.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    #[serde(default = "default_flap_window")]
    pub flap_window: HumanDuration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            group_wait: default_group_wait(),
            update_interval: default_update_interval(),
            resolve_hold_down: default_hold_down(),
            reopen_window: default_reopen_window(),
            dedup_key: default_dedup_key(),
            topology_window: default_topology_window(),
            max_upstream_depth: default_max_depth(),
            flap_threshold: default_flap_threshold(),
            flap_window: default_flap_window(),
        }
    }
}

fn default_flap_threshold() -> u32 {
    4
}
fn default_flap_window() -> HumanDuration {
    dur("10m")
}
fn default_group_wait() -> HumanDuration {
    dur("30s")
}
fn default_update_interval() -> HumanDuration {
    dur("60s")
}
fn default_hold_down() -> HumanDuration {
    dur("2m")
}
fn default_reopen_window() -> HumanDuration {
    dur("30m")
}
fn default_dedup_key() -> String {
    "{source}|{ci}|{check}".into()
}
fn default_topology_window() -> HumanDuration {
    dur("5m")
}
fn default_max_depth() -> usize {
    8
}

/// `[changes]`: the change calendar file (`src/changes.rs` shows its format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    pub path: PathBuf,
}

/// Problem candidates: `threshold` incidents on one root-cause CI within `period`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemsConfig {
    /// Incidents opened or reopened on the same CI that make a problem candidate; 0 turns it off.
    #[serde(default = "default_problem_threshold")]
    pub threshold: u32,
    #[serde(default = "default_problem_period")]
    pub period: HumanDuration,
}

impl Default for ProblemsConfig {
    fn default() -> Self {
        ProblemsConfig { threshold: default_problem_threshold(), period: default_problem_period() }
    }
}

fn default_problem_threshold() -> u32 {
    3
}

fn default_problem_period() -> HumanDuration {
    dur("24h")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long in-flight sink work may take before the daemon exits anyway.
    #[serde(default = "default_deadline")]
    pub deadline: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { deadline: default_deadline() }
    }
}

fn default_deadline() -> HumanDuration {
    dur("30s")
}

/// librdkafka properties triaged sets itself; `kafka.options` may not override them.
pub const OWNED_KAFKA_OPTIONS: &[&str] =
    &["bootstrap.servers", "group.id", "enable.auto.offset.store", "enable.auto.commit", "auto.commit.interval.ms"];

impl Config {
    /// Reads and validates `path`; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        match Config::load_checked(path)? {
            (cfg, errors) if errors.is_empty() => Ok(cfg),
            (_, errors) => Err(errors),
        }
    }

    /// Like [`Config::load`], but a file that parses is returned with its
    /// validation errors, so `triaged check` can go on to the rules and CMDB
    /// it names. Errors only when the file cannot be read or parsed.
    pub fn load_checked(path: &Path) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![ConfigError { file: path.to_owned(), location: "file".into(), message: e.to_string() }])?;
        let (mut cfg, errors) = Config::parse_checked(path, &text)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve_paths(&base);
        Ok((cfg, errors))
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
        match Config::parse_checked(path, text)? {
            (cfg, errors) if errors.is_empty() => Ok(cfg),
            (_, errors) => Err(errors),
        }
    }

    fn parse_checked(path: &Path, text: &str) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}")
                }
                None => "file".into(),
            };
            vec![ConfigError { file: path.to_owned(), location, message: e.message().to_string() }]
        })?;
        let errors = cfg.validate(path);
        Ok((cfg, errors))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.cmdb.path);
        fix(&mut self.rules.dir);
        if let Some(c) = self.changes.as_mut() {
            fix(&mut c.path);
        }
        let fix_secret = |s: &mut SecretSource| {
            if let Some(f) = s.file.as_mut() {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        };
        match &mut self.sink.auth {
            AuthConfig::None => {}
            AuthConfig::Bearer { token } => fix_secret(token),
            AuthConfig::Basic { password, .. } => fix_secret(password),
        }
        if let Some(rk) = self.sink.routing_key.as_mut() {
            fix_secret(rk);
        }
        if let Some(token) = self.ingest.as_mut().and_then(|i| i.token.as_mut()) {
            fix_secret(token);
        }
    }

    /// Checks everything serde cannot; returns every problem found.
    pub fn validate(&self, file: &Path) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err =
            |location: &str, message: String| errs.push(ConfigError { file: file.to_owned(), location: location.into(), message });
        if self.kafka.brokers.trim().is_empty() {
            err("kafka.brokers", "must name at least one broker".into());
        }
        if let Some(ing) = &self.ingest {
            match ing.target_topic(&self.kafka) {
                None => err("ingest.topic", "no input topic has format `auto` or `alertmanager`; name one".into()),
                Some(t) => match self.kafka.topics.iter().find(|x| x.name == t) {
                    None => err("ingest.topic", format!("`{t}` is not one of kafka.topics, so its alerts would never be read")),
                    Some(x) if !matches!(x.format, Format::Auto | Format::Alertmanager) => {
                        err("ingest.topic", format!("`{t}` is read as {:?}, not Alertmanager alerts", x.format))
                    }
                    Some(_) => {}
                },
            }
            if ing.max_body_bytes == 0 || ing.max_body_bytes > 16 << 20 {
                err("ingest.max_body_bytes", "must be between 1 and 16777216".into());
            }
        }
        if self.kafka.commit_interval.0.is_zero() {
            err("kafka.commit_interval", "must be greater than zero".into());
        }
        if self.kafka.group_id.trim().is_empty() {
            err("kafka.group_id", "must not be empty".into());
        }
        if self.kafka.topics.is_empty() {
            err("kafka.topics", "must list at least one topic".into());
        }
        for (i, t) in self.kafka.topics.iter().enumerate() {
            if t.name.trim().is_empty() {
                err(&format!("kafka.topics[{i}].name"), "must not be empty".into());
            }
            if Some(&t.name) == self.kafka.dead_letter_topic.as_ref() {
                err(&format!("kafka.topics[{i}].name"), "is also the dead-letter topic".into());
            }
        }
        if self.kafka.channel_capacity == 0 {
            err("kafka.channel_capacity", "must be at least 1".into());
        }
        if let Some(r) = &self.rekey {
            if r.topic.trim().is_empty() {
                err("rekey.topic", "must not be empty".into());
            } else if self.kafka.topics.iter().any(|t| t.name == r.topic) {
                err("rekey.topic", format!("`{}` is also an input topic", r.topic));
            } else if Some(&r.topic) == self.kafka.dead_letter_topic.as_ref() {
                err("rekey.topic", format!("`{}` is also the dead-letter topic", r.topic));
            }
            if let Some(c) = &r.changelog_topic {
                if c.trim().is_empty() {
                    err("rekey.changelog_topic", "must not be empty".into());
                } else if c == &r.topic
                    || self.kafka.topics.iter().any(|t| &t.name == c)
                    || Some(c) == self.kafka.dead_letter_topic.as_ref()
                {
                    err("rekey.changelog_topic", format!("`{c}` is also an input, repartition or dead-letter topic"));
                }
            }
            if r.group_id(&self.kafka.group_id) == self.kafka.group_id {
                err("rekey.group_id", "must differ from kafka.group_id (the input consumer's group)".into());
            }
        }
        for key in self.kafka.options.keys() {
            if OWNED_KAFKA_OPTIONS.contains(&key.as_str()) {
                err(&format!("kafka.options.{key}"), "is set by triaged itself and cannot be overridden".into());
            }
        }
        match reqwest::Url::parse(&self.sink.endpoint) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => err("sink.endpoint", format!("scheme `{}` is not http or https", u.scheme())),
            Err(e) => err("sink.endpoint", format!("`{}` is not a URL: {e}", self.sink.endpoint)),
        }
        if self.sink.concurrency == 0 || self.sink.concurrency > 256 {
            err("sink.concurrency", "must be between 1 and 256".into());
        }
        if self.sink.timeout.0.is_zero() {
            err("sink.timeout", "must be greater than zero".into());
        }
        if self.sink.circuit.failure_threshold > 0 && self.sink.circuit.open_for.0.is_zero() {
            err("sink.circuit.open_for", "must be above zero (set failure_threshold = 0 to disable the breaker)".into());
        }
        if self.sink.retry.initial_backoff > self.sink.retry.max_backoff {
            err("sink.retry.initial_backoff", "is larger than sink.retry.max_backoff".into());
        }
        let mut check_secret = |loc: &str, s: &SecretSource| match (&s.env, &s.file) {
            (Some(_), Some(_)) => err(loc, "set either `env` or `file`, not both".into()),
            (None, None) => err(loc, "set `env` or `file`".into()),
            _ => {}
        };
        match &self.sink.auth {
            AuthConfig::None => {}
            AuthConfig::Bearer { token } => check_secret("sink.auth.token", token),
            AuthConfig::Basic { password, .. } => check_secret("sink.auth.password", password),
        }
        match (&self.sink.profile, &self.sink.routing_key) {
            (SinkProfile::Pagerduty, None) => check_secret("sink.routing_key", &SecretSource { env: None, file: None }),
            (SinkProfile::Pagerduty, Some(rk)) => check_secret("sink.routing_key", rk),
            (_, Some(_)) => err("sink.routing_key", "is only used by the pagerduty profile".into()),
            _ => {}
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            err("http.listen", format!("`{}` is not an address:port", self.http.listen));
        }
        let c = &self.correlation;
        if c.max_upstream_depth == 0 || c.max_upstream_depth > 64 {
            err("correlation.max_upstream_depth", "must be between 1 and 64".into());
        }
        if let Err(e) = crate::template::Template::parse(&c.dedup_key) {
            err("correlation.dedup_key", e);
        }
        if self.shutdown.deadline.0.is_zero() {
            err("shutdown.deadline", "must be greater than zero".into());
        }
        errs
    }
}

/// 1-based line and column of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
group_id = "triaged"
topics = [{ name = "events" }]
[cmdb]
path = "cmdb.yaml"
[rules]
dir = "rules"
[sink]
profile = "generic"
endpoint = "http://127.0.0.1:8080"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.correlation.group_wait.0, Duration::from_secs(30));
        assert_eq!(cfg.kafka.topics[0].format, Format::Auto);
        assert_eq!(cfg.sink.concurrency, 4);
    }

    #[test]
    fn unknown_field_names_line() {
        let text = MINIMAL.replace("group_id", "groupid");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].location.starts_with("line 4"), "{}", errs[0]);
        assert!(errs[0].message.contains("groupid"), "{}", errs[0]);
    }

    #[test]
    fn validation_collects_every_error() {
        let text = MINIMAL
            .replace("http://127.0.0.1:8080", "ftp://x")
            .replace("[sink]", "[sink]\nconcurrency = 0")
            .replace("[rules]", "[kafka.options]\n\"group.id\" = \"x\"\n[rules]");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        let locs: Vec<_> = errs.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locs, ["kafka.options.group.id", "sink.endpoint", "sink.concurrency"]);
    }

    #[test]
    fn circuit_breaker_defaults_and_validation() {
        let cfg = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!((cfg.sink.circuit.failure_threshold, cfg.sink.circuit.open_for.0), (5, Duration::from_secs(15)));
        let zero = format!("{MINIMAL}[sink.circuit]\nopen_for = \"0s\"\n");
        let errs = Config::parse(Path::new("t.toml"), &zero).unwrap_err();
        assert_eq!(errs[0].location, "sink.circuit.open_for");
        let disabled = format!("{MINIMAL}[sink.circuit]\nfailure_threshold = 0\nopen_for = \"0s\"\n");
        assert!(Config::parse(Path::new("t.toml"), &disabled).is_ok());
    }

    #[test]
    fn rekey_topics_and_groups_are_checked() {
        let ok = format!("{MINIMAL}[rekey]\ntopic = \"rk\"\nchangelog_topic = \"cl\"\n");
        let cfg = Config::parse(Path::new("t.toml"), &ok).unwrap();
        let rk = cfg.rekey.unwrap();
        assert_eq!((rk.group_id("triaged"), rk.scope), ("triaged.correlate".to_string(), RekeyScope::Component));
        let bad = format!("{MINIMAL}[rekey]\ntopic = \"events\"\ngroup_id = \"triaged\"\nchangelog_topic = \"events\"\nscope = \"site\"\n");
        let errs = Config::parse(Path::new("t.toml"), &bad).unwrap_err();
        let locs: Vec<_> = errs.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locs, ["rekey.topic", "rekey.changelog_topic", "rekey.group_id"], "{errs:?}");
        let scope = format!("{MINIMAL}[rekey]\ntopic = \"rk\"\nscope = \"rack\"\n");
        let errs = Config::parse(Path::new("t.toml"), &scope).unwrap_err();
        assert!(errs[0].message.contains("rack"), "{}", errs[0]);
    }

    #[test]
    fn pagerduty_needs_routing_key() {
        let text = MINIMAL.replace("\"generic\"", "\"pagerduty\"");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(errs[0].location, "sink.routing_key");
    }

    #[test]
    fn durations() {
        assert_eq!(HumanDuration::parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(HumanDuration::parse("5m").unwrap(), Duration::from_secs(300));
        assert!(HumanDuration::parse("5 minutes").is_err());
        assert!(HumanDuration::parse("m").is_err());
    }
}
