//! Daemon configuration: TOML, every struct `deny_unknown_fields`, validated as
//! a whole (all errors collected) before anything starts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod correlation;
mod http;
mod kafka;
mod log;
mod rekey;
mod routes;
mod servicenow;
mod sink;

pub use self::correlation::{CorrelationConfig, ProblemsConfig};
pub use self::http::{HttpConfig, TlsConfig};
pub use self::kafka::{Format, KafkaConfig, KafkaSecrets, TopicConfig, OWNED_KAFKA_OPTIONS, SECRET_KAFKA_OPTIONS};
pub use self::log::LogConfig;
pub use self::rekey::{IngestConfig, RekeyConfig, RekeyScope, StateConfig};
pub use self::routes::{unused_sinks, valid_sink_name, RouteConfig};
pub use self::servicenow::{ReferenceBy, ServicenowConfig};
pub use self::sink::{
    AuthConfig, CircuitConfig, RateLimitConfig, ReadBackConfig, RetryConfig, RtConfig, SecretSource, SinkConfig, SinkProfile, WebhookConfig,
};

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
    /// `[sink]`: the one sink, named `default`, that gets every incident.
    #[serde(default)]
    pub sink: Option<SinkConfig>,
    /// `[sinks.NAME]`: several sinks, each a `[sink]` table named by its key;
    /// `[[routes]]` say which incidents go to which.
    #[serde(default)]
    pub sinks: std::collections::BTreeMap<String, SinkConfig>,
    /// `[[routes]]`: with `[sinks.NAME]`, which incidents go to which sinks.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
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
    /// Re-key stage for running several instances (`scale/rekey.rs`); absent:
    /// one instance correlates everything it reads.
    #[serde(default)]
    pub rekey: Option<RekeyConfig>,
    /// Where the correlation state is checkpointed (`scale/changelog.rs`).
    #[serde(default)]
    pub state: StateConfig,
    /// `[metrics]`: what metric labels may say.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[log]`: the log format and filter.
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Event `source` values shown as themselves in the `source` label,
    /// besides the decoder kinds (native, alertmanager, zabbix, nagios);
    /// every other source is counted as `other`.
    #[serde(default)]
    pub source_labels: Vec<String>,
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

/// `[changes]`: the change calendar file (`topology/changes.rs` shows its format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    pub path: PathBuf,
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
        let (mut cfg, mut errors) = Config::parse_checked(path, &text)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve_paths(&base);
        for (field, message) in cfg.kafka.read_secrets() {
            errors.push(ConfigError { file: path.to_owned(), location: field.into(), message });
        }
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
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}")
                }
                None => "file".into(),
            };
            vec![ConfigError { file: path.to_owned(), location, message: e.message().to_string() }]
        })?;
        for (name, sink) in cfg.sinks.iter_mut() {
            sink.name = name.clone();
        }
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
        for sink in self.sink.iter_mut().chain(self.sinks.values_mut()) {
            match &mut sink.auth {
                AuthConfig::None => {}
                AuthConfig::Bearer { token } | AuthConfig::GenieKey { token } | AuthConfig::Token { token } => fix_secret(token),
                AuthConfig::Basic { password, .. } => fix_secret(password),
            }
            for rk in sink.routing_key.iter_mut().chain(sink.routing_keys.values_mut()) {
                fix_secret(rk);
            }
            if let Some(w) = sink.webhook.as_mut() {
                fix_secret(&mut w.secret);
            }
            for p in [&mut sink.ca_file, &mut sink.client_cert_file, &mut sink.client_key_file].into_iter().flatten() {
                fix(p);
            }
        }
        if let Some(token) = self.ingest.as_mut().and_then(|i| i.token.as_mut()) {
            fix_secret(token);
        }
        if let Some(token) = self.http.token.as_mut() {
            fix_secret(token);
        }
        if let Some(tls) = self.http.tls.as_mut() {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        for secret in [self.kafka.sasl_password.as_mut(), self.kafka.ssl_key_password.as_mut()].into_iter().flatten() {
            fix_secret(secret);
        }
    }

    /// Every sink: the lone `[sink]`, or each `[sinks.NAME]` in name order.
    pub fn sink_configs(&self) -> Vec<&SinkConfig> {
        self.sink.iter().chain(self.sinks.values()).collect()
    }

    /// Every sink with the table it is written in (`sink`, `sinks.NAME`).
    pub fn sink_tables(&self) -> Vec<(String, &SinkConfig)> {
        let lone = self.sink.iter().map(|s| ("sink".to_string(), s));
        lone.chain(self.sinks.iter().map(|(n, s)| (format!("sinks.{n}"), s))).collect()
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
            if let Some(first) = self.kafka.topics[..i].iter().position(|o| o.name == t.name) {
                err(&format!("kafka.topics[{i}].name"), format!("`{}` is already kafka.topics[{first}]", t.name));
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
            if r.changelog_topic.is_some() {
                err("rekey.changelog_topic", "moved to `[state] changelog_topic`, which every mode uses".into());
            }
            if r.group_id(&self.kafka.group_id) == self.kafka.group_id {
                err("rekey.group_id", "must differ from kafka.group_id (the input consumer's group)".into());
            }
        }
        let c = &self.state.changelog_topic;
        if c.trim().is_empty() {
            err("state.changelog_topic", "must not be empty".into());
        } else if self.rekey.as_ref().is_some_and(|r| &r.topic == c)
            || self.kafka.topics.iter().any(|t| &t.name == c)
            || Some(c) == self.kafka.dead_letter_topic.as_ref()
        {
            err("state.changelog_topic", format!("`{c}` is also an input, repartition or dead-letter topic"));
        }
        for key in self.kafka.options.keys() {
            if OWNED_KAFKA_OPTIONS.contains(&key.as_str()) {
                err(&format!("kafka.options.{key}"), "is set by triaged itself and cannot be overridden".into());
            }
            if let Some((_, field)) = SECRET_KAFKA_OPTIONS.iter().find(|(k, _)| k == key) {
                err(
                    &format!("kafka.options.{key}"),
                    format!("is a secret, not written inline: use kafka.{field} = {{ env = \"VAR\" }} or {{ file = \"/path\" }}"),
                );
            }
        }
        for (key, message) in crate::kafka::check_options(&self.kafka) {
            err(&format!("kafka.options.\"{key}\""), message);
        }
        for (at, sink) in self.sink_tables() {
            for (field, message) in sink.errors() {
                err(&format!("{at}.{field}"), message);
            }
        }
        for (field, message) in routes::errors(self.sink.as_ref(), &self.sinks, &self.routes) {
            err(&field, message);
        }
        let mut check_secret = |loc: &str, s: &SecretSource| match (&s.env, &s.file) {
            (Some(_), Some(_)) => err(loc, "set either `env` or `file`, not both".into()),
            (None, None) => err(loc, "set `env` or `file`".into()),
            _ => {}
        };
        if let Some(t) = &self.http.token {
            check_secret("http.token", t);
        }
        if let Some(s) = &self.kafka.sasl_password {
            check_secret("kafka.sasl_password", s);
        }
        if let Some(s) = &self.kafka.ssl_key_password {
            check_secret("kafka.ssl_key_password", s);
        }
        self.http.validate(&mut err);
        self.log.validate(&mut err);
        let c = &self.correlation;
        if c.max_upstream_depth == 0 || c.max_upstream_depth > 64 {
            err("correlation.max_upstream_depth", "must be between 1 and 64".into());
        }
        match crate::rules::template::Template::parse(&c.dedup_key) {
            Err(e) => err("correlation.dedup_key", e),
            Ok(t) => {
                for f in t.fields().filter(|f| !crate::event::Event::is_known_field(f)) {
                    err("correlation.dedup_key", crate::event::Event::unknown_field(f));
                }
            }
        }
        for (i, l) in self.metrics.source_labels.iter().enumerate() {
            if l.trim().is_empty() || l.len() > 64 {
                err(&format!("metrics.source_labels[{i}]"), "must be 1 to 64 characters".into());
            }
        }
        if self.metrics.source_labels.len() > 100 {
            err("metrics.source_labels", "lists more than 100 sources; each adds series to every source family".into());
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
pub(crate) mod tests {
    use super::*;

    /// The sections every config needs but the sinks (`[sink]` or `[sinks]`).
    macro_rules! no_sink {
        () => {
            r#"
[kafka]
brokers = "127.0.0.1:9092"
group_id = "triaged"
topics = [{ name = "events" }]
[cmdb]
path = "cmdb.yaml"
[rules]
dir = "rules"
"#
        };
    }

    /// A config without its sinks, for tests that add `[sinks.NAME]`.
    pub(crate) const NO_SINK: &str = no_sink!();

    pub(super) const MINIMAL: &str = concat!(no_sink!(), "[sink]\nprofile = \"generic\"\nendpoint = \"http://127.0.0.1:8080\"\n");

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.correlation.group_wait.0, Duration::from_secs(30));
        assert_eq!(cfg.kafka.topics[0].format, Format::Auto);
        assert_eq!(cfg.sink.as_ref().unwrap().concurrency, 4);
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
        assert_eq!(
            (cfg.sink.as_ref().unwrap().circuit.failure_threshold, cfg.sink.as_ref().unwrap().circuit.open_for.0),
            (5, Duration::from_secs(15))
        );
        let zero = format!("{MINIMAL}[sink.circuit]\nopen_for = \"0s\"\n");
        let errs = Config::parse(Path::new("t.toml"), &zero).unwrap_err();
        assert_eq!(errs[0].location, "sink.circuit.open_for");
        let disabled = format!("{MINIMAL}[sink.circuit]\nfailure_threshold = 0\nopen_for = \"0s\"\n");
        assert!(Config::parse(Path::new("t.toml"), &disabled).is_ok());
    }

    #[test]
    fn rekey_topics_and_groups_are_checked() {
        let ok = format!("{MINIMAL}[rekey]\ntopic = \"rk\"\n[state]\nchangelog_topic = \"cl\"\n");
        let cfg = Config::parse(Path::new("t.toml"), &ok).unwrap();
        let rk = cfg.rekey.unwrap();
        assert_eq!((rk.group_id("triaged"), rk.scope), ("triaged.correlate".to_string(), RekeyScope::Component));
        assert_eq!(cfg.state.changelog_topic, "cl");
        let bad = format!("{MINIMAL}[rekey]\ntopic = \"events\"\ngroup_id = \"triaged\"\nchangelog_topic = \"x\"\nscope = \"site\"\n[state]\nchangelog_topic = \"events\"\n");
        let errs = Config::parse(Path::new("t.toml"), &bad).unwrap_err();
        let locs: Vec<_> = errs.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locs, ["rekey.topic", "rekey.changelog_topic", "rekey.group_id", "state.changelog_topic"], "{errs:?}");
        assert!(errs[1].message.contains("[state] changelog_topic"), "{}", errs[1]);
        let default = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(default.state.changelog_topic, "triaged-state", "every mode has a changelog");
        let scope = format!("{MINIMAL}[rekey]\ntopic = \"rk\"\nscope = \"rack\"\n");
        let errs = Config::parse(Path::new("t.toml"), &scope).unwrap_err();
        assert!(errs[0].message.contains("rack"), "{}", errs[0]);
    }

    #[test]
    fn event_management_profile_by_name() {
        let em = MINIMAL.replace("\"generic\"", "\"servicenow_em\"");
        assert_eq!(Config::parse(Path::new("t.toml"), &em).unwrap().sink.unwrap().profile, SinkProfile::ServicenowEm);
    }

    #[test]
    fn rt_profile_takes_a_token_or_basic_and_a_queue_and_key_field() {
        let rt = MINIMAL.replace("\"generic\"", "\"rt\"");
        let token = "[sink.auth]\nkind = \"token\"\ntoken = { env = \"RT_TOKEN\" }\n";
        let cfg = Config::parse(Path::new("t.toml"), &format!("{rt}{token}")).unwrap();
        assert_eq!(
            (
                cfg.sink.as_ref().unwrap().profile,
                cfg.sink.as_ref().unwrap().rt.queue.as_str(),
                cfg.sink.as_ref().unwrap().rt.key_field.as_str()
            ),
            (SinkProfile::Rt, "General", "TriagedKey")
        );
        assert!(matches!(cfg.sink.as_ref().unwrap().auth, AuthConfig::Token { .. }));
        let opts = "[sink.rt]\nqueue = \"Network\"\nkey_field = \"Incident Key\"\n";
        let cfg = Config::parse(Path::new("t.toml"), &format!("{rt}{opts}{token}")).unwrap();
        assert_eq!(
            (cfg.sink.as_ref().unwrap().rt.queue.as_str(), cfg.sink.as_ref().unwrap().rt.key_field.as_str()),
            ("Network", "Incident Key")
        );
        let locs = |text: &str| Config::parse(Path::new("t.toml"), text).unwrap_err().into_iter().map(|e| e.location).collect::<Vec<_>>();
        assert_eq!(locs(&rt), ["sink.auth"], "no auth");
        assert_eq!(locs(&format!("{rt}[sink.rt]\nqueue = \"\"\nkey_field = \"\"\n{token}")), ["sink.rt.queue", "sink.rt.key_field"]);
        assert!(locs(&format!("{rt}[sink.rt]\nqeue = \"x\"\n"))[0].starts_with("line"), "unknown fields are refused");
        let errs = Config::parse(Path::new("t.toml"), &format!("{MINIMAL}{token}")).unwrap_err();
        assert_eq!(errs[0].location, "sink.auth");
        assert!(errs[0].message.contains("only used by the rt profile"), "{}", errs[0]);
    }

    #[test]
    fn jsm_profile_by_name_authenticates_with_a_genie_key_or_basic() {
        let auth = "[sink.auth]\nkind = \"genie_key\"\ntoken = { env = \"JSM_API_KEY\" }\n";
        let jsm = format!("{}{auth}", MINIMAL.replace("\"generic\"", "\"jsm\""));
        let cfg = Config::parse(Path::new("t.toml"), &jsm).unwrap();
        assert_eq!(cfg.sink.as_ref().unwrap().profile, SinkProfile::Jsm);
        assert!(matches!(cfg.sink.as_ref().unwrap().auth, AuthConfig::GenieKey { .. }));
        let basic = "[sink.auth]\nkind = \"basic\"\nusername = \"ops@example.com\"\npassword = { env = \"JSM_API_TOKEN\" }\n";
        assert!(Config::parse(Path::new("t.toml"), &format!("{}{basic}", MINIMAL.replace("\"generic\"", "\"jsm\""))).is_ok());
        let no_auth = MINIMAL.replace("\"generic\"", "\"jsm\"");
        let errs = Config::parse(Path::new("t.toml"), &no_auth).unwrap_err();
        assert_eq!(errs[0].location, "sink.auth");
        assert!(errs[0].message.contains("genie_key"), "{}", errs[0]);
        let elsewhere = format!("{MINIMAL}{auth}");
        let errs = Config::parse(Path::new("t.toml"), &elsewhere).unwrap_err();
        assert_eq!(errs[0].location, "sink.auth");
        assert!(errs[0].message.contains("only used by the jsm profile"), "{}", errs[0]);
    }

    #[test]
    fn pagerduty_needs_routing_key() {
        let text = MINIMAL.replace("\"generic\"", "\"pagerduty\"");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(errs[0].location, "sink.routing_key");
    }

    #[test]
    fn kafka_options_librdkafka_refuses_are_errors_naming_the_option() {
        let text = MINIMAL.replace("[cmdb]", "[kafka.options]\n\"sesion.timeout.ms\" = \"6000\"\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n[cmdb]");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(errs.len(), 1, "TLS and SCRAM are built in: {errs:?}");
        assert_eq!(errs[0].location, "kafka.options.\"sesion.timeout.ms\"");
        assert!(errs[0].message.contains("No such configuration property"), "{}", errs[0]);
    }

    #[test]
    fn kafka_secrets_are_not_inline_and_come_from_env_or_file() {
        let inline = MINIMAL.replace("[cmdb]", "[kafka.options]\n\"sasl.password\" = \"hunter2\"\n[cmdb]");
        let errs = Config::parse(Path::new("t.toml"), &inline).unwrap_err();
        assert_eq!(errs[0].location, "kafka.options.sasl.password");
        assert!(errs[0].message.contains("kafka.sasl_password = { env = \"VAR\" }"), "{}", errs[0]);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kafka.pw"), "s3cret\n").unwrap();
        let text = MINIMAL.replace(
            "group_id = \"triaged\"",
            "group_id = \"triaged\"\nsasl_password = { file = \"kafka.pw\" }\nssl_key_password = { env = \"TRIAGED_TEST_UNSET_KEY_PW\" }",
        );
        std::fs::write(dir.path().join("t.toml"), &text).unwrap();
        let errs = Config::load(&dir.path().join("t.toml")).unwrap_err();
        let locs: Vec<_> = errs.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locs, ["kafka.ssl_key_password"], "{errs:?}");
        assert!(errs[0].message.contains("TRIAGED_TEST_UNSET_KEY_PW"), "{}", errs[0]);

        let text = text.replace("\nssl_key_password = { env = \"TRIAGED_TEST_UNSET_KEY_PW\" }", "");
        std::fs::write(dir.path().join("t.toml"), &text).unwrap();
        let cfg = Config::load(&dir.path().join("t.toml")).unwrap();
        assert_eq!(crate::kafka::consumer_config(&cfg.kafka).get("sasl.password"), Some("s3cret"));
        assert!(!format!("{:?}", cfg.kafka).contains("s3cret"), "Debug hides the secret");
    }

    #[test]
    fn a_topic_listed_twice_is_an_error() {
        let text = MINIMAL
            .replace("topics = [{ name = \"events\" }]", "topics = [{ name = \"events\" }, { name = \"events\", format = \"native\" }]");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(errs[0].location, "kafka.topics[1].name");
        assert!(errs[0].message.contains("already kafka.topics[0]"), "{}", errs[0]);
    }

    #[test]
    fn an_inline_secret_says_how_to_write_one() {
        let text = MINIMAL.replace(
            "endpoint = \"http://127.0.0.1:8080\"",
            "endpoint = \"http://127.0.0.1:8080\"\nauth = { kind = \"bearer\", token = \"abc\" }",
        );
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(errs[0].message.contains("secrets are not written inline: use { env = \"VAR\" } or { file = \"/path\" }"), "{}", errs[0]);
        assert!(errs[0].location.starts_with("line 13"), "{}", errs[0]);
        let typo = text.replace("token = \"abc\"", "token = { envv = \"X\" }");
        let errs = Config::parse(Path::new("t.toml"), &typo).unwrap_err();
        assert!(errs[0].message.contains("envv"), "{}", errs[0]);
        let ok = text.replace("token = \"abc\"", "token = { env = \"X\" }");
        assert!(Config::parse(Path::new("t.toml"), &ok).is_ok());
    }

    #[test]
    fn an_overflowing_backoff_is_an_error() {
        let text = format!("{MINIMAL}[sink.retry]\nmax_backoff = \"307445734561825861m\"\n");
        let errs = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(errs[0].message.contains("too long"), "{}", errs[0]);
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_paths_resolve() {
        let half = MINIMAL.replace("[sink]\n", "[sink]\nclient_cert_file = \"c.pem\"\n");
        let errs = Config::parse(Path::new("t.toml"), &half).unwrap_err();
        assert_eq!(errs[0].location, "sink.client_key_file");
        assert!(errs[0].message.contains("both or neither"), "{}", errs[0]);
        let dir = tempfile::tempdir().unwrap();
        let both = MINIMAL.replace("[sink]\n", "[sink]\nca_file = \"ca.pem\"\nclient_cert_file = \"c.pem\"\nclient_key_file = \"c.key\"\n");
        std::fs::write(dir.path().join("t.toml"), both).unwrap();
        let (cfg, _) = Config::load_checked(&dir.path().join("t.toml")).unwrap();
        assert_eq!(cfg.sink.as_ref().unwrap().ca_file, Some(dir.path().join("ca.pem")));
        assert_eq!(cfg.sink.as_ref().unwrap().client_key_file, Some(dir.path().join("c.key")));
    }

    #[test]
    fn durations() {
        assert_eq!(HumanDuration::parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(HumanDuration::parse("5m").unwrap(), Duration::from_secs(300));
        assert!(HumanDuration::parse("5 minutes").is_err());
        assert!(HumanDuration::parse("m").is_err());
    }
}
