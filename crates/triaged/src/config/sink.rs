//! `[sink]`: the ITSM profile and endpoint, its secrets, retries, circuit
//! breaker and rate limit.

use std::path::PathBuf;

use serde::Deserialize;

use super::{dur, HumanDuration};

/// Which ITSM API the sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkProfile {
    /// `PUT {endpoint}/incidents/{key}` with the whole incident as JSON.
    Generic,
    /// ServiceNow Table API (`/api/now/table/incident`).
    Servicenow,
    /// PagerDuty Events API v2 (`/v2/enqueue`).
    Pagerduty,
    /// ServiceNow Event Management (`/api/global/em/jsonv2`), events
    /// correlated into one alert by `message_key`.
    ServicenowEm,
    /// Jira Service Management Operations alerts (`/v1/alerts`), by alias.
    Jsm,
    /// Request Tracker 5 REST2 tickets (`/REST/2.0/ticket`), found by the
    /// incident key in a ticket custom field (`[sink.rt]`).
    Rt,
}

impl SinkProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkProfile::Generic => "generic",
            SinkProfile::Servicenow => "servicenow",
            SinkProfile::Pagerduty => "pagerduty",
            SinkProfile::ServicenowEm => "servicenow_em",
            SinkProfile::Jsm => "jsm",
            SinkProfile::Rt => "rt",
        }
    }
}

/// Where a secret comes from. Secrets are never logged, and never written
/// inline: a string where a secret goes is an error saying how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// File holding the secret (trailing newline stripped).
    pub file: Option<PathBuf>,
}

/// What a secret table may hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretTable {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

/// The error for a secret written inline.
pub const INLINE_SECRET: &str = "secrets are not written inline: use { env = \"VAR\" } or { file = \"/path\" }";

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{ env = \"VAR\" } or { file = \"/path\" }")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretSource, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SecretSource, A::Error> {
                let t = SecretTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretSource { env: t.env, file: t.file })
            }
        }
        d.deserialize_any(Visitor)
    }
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
    /// `Authorization: GenieKey <token>`: a Jira Service Management
    /// Operations API integration key; `jsm` profile only.
    #[serde(rename = "genie_key")]
    GenieKey { token: SecretSource },
    /// `Authorization: token <token>`: a Request Tracker auth token;
    /// `rt` profile only.
    Token { token: SecretSource },
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

/// `[sink.rate_limit]`: a token bucket shared by the sink's workers; every
/// HTTP request (look-ups and retries too) takes a token. While a worker
/// waits for one, the updates it has queued for an incident coalesce into
/// the latest; opens, reopens and resolves are only delayed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per minute; 0 is no limit. Default: 120 for `pagerduty`,
    /// no limit for the other profiles.
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// Requests that may go at once after a quiet spell (the bucket's
    /// size). Default: 20, and never above `per_minute`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// PagerDuty's Events API v2 accepts about 120 events a minute per routing
/// key and answers 429 past that:
/// <https://developer.pagerduty.com/docs/events-api-v2-overview#rate-limits>.
pub const PAGERDUTY_PER_MINUTE: u32 = 120;
/// The default burst, PagerDuty's included.
pub const DEFAULT_BURST: u32 = 20;

impl RateLimitConfig {
    /// `(per_minute, burst)` in force for `profile`, `None` for no limit.
    /// A burst of 0 is returned as is (validation refuses it).
    pub fn resolved(&self, profile: SinkProfile) -> Option<(u32, u32)> {
        let default = match profile {
            SinkProfile::Pagerduty => PAGERDUTY_PER_MINUTE,
            _ => 0,
        };
        let per_minute = self.per_minute.unwrap_or(default);
        if per_minute == 0 {
            return None;
        }
        Some((per_minute, self.burst.unwrap_or(DEFAULT_BURST.min(per_minute))))
    }

    /// What `check` and `run` refuse: `(field, message)`.
    pub fn errors(&self, profile: SinkProfile) -> Vec<(&'static str, String)> {
        match self.resolved(profile) {
            Some((_, 0)) => vec![("rate_limit.burst", "must be at least 1 with a rate limit (per_minute = 0 is no limit)".into())],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name, for routes, metrics and logs (`default` for a lone
    /// `[sink]`); set from the table's name, never read from the file.
    #[serde(skip, default = "default_sink_name")]
    pub name: String,
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
    /// Requests per minute and burst (`[sink.rate_limit]`).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// ServiceNow Table API options (`[sink.servicenow]`); servicenow
    /// profile only, defaults when absent.
    #[serde(default)]
    pub servicenow: Option<super::ServicenowConfig>,
    /// PagerDuty integration (routing) key; required for the pagerduty
    /// profile unless `routing_keys` has one for every rotation. The one
    /// used when no entry of `routing_keys` names the incident's rotation.
    #[serde(default)]
    pub routing_key: Option<SecretSource>,
    /// PagerDuty only: the routing key per on-call rotation (the CMDB's
    /// `oncall`, the incident's `oncall`), e.g. `"dba-oncall" = { env = "PD_KEY_DBA" }`.
    #[serde(default)]
    pub routing_keys: std::collections::BTreeMap<String, SecretSource>,
    /// Largest response body read from the ITSM, in bytes; a successful
    /// reply with a larger one is an error naming this cap, and an error
    /// reply's body is cut at it.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// PEM bundle of the CAs that sign the ITSM's certificate (a private
    /// CA). When set it replaces the built-in web roots for this sink.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the ITSM (mutual TLS); set with
    /// `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`; readable by the daemon only.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Reading records back, and what to do with one a person closed
    /// (`[sink.read_back]`).
    #[serde(default)]
    pub read_back: ReadBackConfig,
    /// Signed webhooks this ITSM pushes (`[sink.webhook]`), served on the
    /// listener at `POST /webhooks/{sink name}`.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Request Tracker options (`[sink.rt]`), used by the `rt` profile.
    #[serde(default)]
    pub rt: RtConfig,
}

/// `[sink.read_back]`: polling the ITSM's records by key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadBackConfig {
    /// How often every open incident's record is read back, where the
    /// profile can (`0s`: never). Each read takes a token of the rate limit.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// A record a person closed while its alerts still fire: `reopen` it
    /// (within the reopen window, else a new record), open a `new` one, or
    /// add one `note` and leave it closed.
    #[serde(default)]
    pub closed_while_firing: crate::core::ClosedPolicy,
}

impl Default for ReadBackConfig {
    fn default() -> Self {
        ReadBackConfig { poll_interval: default_poll_interval(), closed_while_firing: Default::default() }
    }
}

fn default_poll_interval() -> HumanDuration {
    dur("1m")
}

impl ReadBackConfig {
    /// What `check` and `run` refuse: `(field, message)`.
    pub fn errors(&self, profile: SinkProfile) -> Vec<(&'static str, String)> {
        let no_notes = matches!(profile, SinkProfile::Pagerduty | SinkProfile::ServicenowEm);
        if no_notes && self.closed_while_firing == crate::core::ClosedPolicy::Note {
            let why = "the profile cannot add a note to a closed record (every event it sends is a new trigger): use reopen or new";
            return vec![(
                "sink.read_back.closed_while_firing",
                format!("`note` is not possible with the {} profile: {why}", profile.as_str()),
            )];
        }
        Vec::new()
    }
}

/// `[sink.webhook]`: the secret that signs what the ITSM pushes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// PagerDuty: the webhook subscription's secret (`X-PagerDuty-Signature`).
    /// Others: the key of `X-Triaged-Signature: sha256=<HMAC of the body>`.
    pub secret: SecretSource,
}

/// `[sink.rt]`: where the `rt` profile files tickets and how it finds them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RtConfig {
    /// Queue new tickets are created in (its name).
    #[serde(default = "default_rt_queue")]
    pub queue: String,
    /// Ticket custom field holding the incident key: tickets are found by
    /// it (TicketSQL `CF.{name}`), so it must be applied to `queue`.
    #[serde(default = "default_rt_key_field")]
    pub key_field: String,
}

impl Default for RtConfig {
    fn default() -> Self {
        RtConfig { queue: default_rt_queue(), key_field: default_rt_key_field() }
    }
}

fn default_rt_queue() -> String {
    "General".into()
}

fn default_rt_key_field() -> String {
    "TriagedKey".into()
}

impl RtConfig {
    /// What `check` and `run` refuse: `(field, message)`. The key field
    /// goes into TicketSQL as `CF.{name}`, so braces and quotes are refused.
    pub fn errors(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.queue.trim().is_empty() {
            out.push(("sink.rt.queue", "must name the queue tickets are created in".into()));
        }
        if self.key_field.trim().is_empty() {
            out.push(("sink.rt.key_field", "must name the ticket custom field holding the incident key".into()));
        } else if self.key_field.chars().any(|c| matches!(c, '{' | '}' | '\'' | '"' | '\\') || c.is_control()) {
            out.push(("sink.rt.key_field", "may not contain braces, quotes, backslashes or control characters".into()));
        }
        out
    }
}

impl SinkConfig {
    /// What `check` and `run` refuse in this sink's table: `(field, message)`,
    /// the field relative to the table (`endpoint`, `auth.token`).
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let err = |errs: &mut Vec<(String, String)>, field: &str, message: String| errs.push((field.to_string(), message));
        match reqwest::Url::parse(&self.endpoint) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => err(&mut errs, "endpoint", format!("scheme `{}` is not http or https", u.scheme())),
            Err(e) => err(&mut errs, "endpoint", format!("`{}` is not a URL: {e}", self.endpoint)),
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            err(&mut errs, "concurrency", "must be between 1 and 256".into());
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > 64 << 20 {
            err(&mut errs, "max_response_bytes", "must be between 1 and 67108864".into());
        }
        if self.timeout.0.is_zero() {
            err(&mut errs, "timeout", "must be greater than zero".into());
        }
        if self.circuit.failure_threshold > 0 && self.circuit.open_for.0.is_zero() {
            err(&mut errs, "circuit.open_for", "must be above zero (set failure_threshold = 0 to disable the breaker)".into());
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => err(&mut errs, "client_key_file", "is needed with client_cert_file: set both or neither".into()),
            (None, Some(_)) => err(&mut errs, "client_cert_file", "is needed with client_key_file: set both or neither".into()),
            _ => {}
        }
        // The shared checks name their field from `sink.`; here it is relative.
        let relative = |f: &str| f.strip_prefix("sink.").unwrap_or(f).to_string();
        for (field, message) in self.rate_limit.errors(self.profile) {
            err(&mut errs, field, message);
        }
        for (field, message) in self.read_back.errors(self.profile) {
            err(&mut errs, &relative(field), message);
        }
        for (field, message) in super::servicenow::errors(self.profile, self.servicenow.as_ref()) {
            err(&mut errs, &relative(field), message);
        }
        if self.retry.initial_backoff > self.retry.max_backoff {
            err(&mut errs, "retry.initial_backoff", "is larger than retry.max_backoff".into());
        }
        let check_secret = |errs: &mut Vec<(String, String)>, loc: &str, s: &SecretSource| match (&s.env, &s.file) {
            (Some(_), Some(_)) => errs.push((loc.into(), "set either `env` or `file`, not both".into())),
            (None, None) => errs.push((loc.into(), "set `env` or `file`".into())),
            _ => {}
        };
        match &self.auth {
            AuthConfig::None => {}
            AuthConfig::Bearer { token } | AuthConfig::GenieKey { token } | AuthConfig::Token { token } => {
                check_secret(&mut errs, "auth.token", token)
            }
            AuthConfig::Basic { password, .. } => check_secret(&mut errs, "auth.password", password),
        }
        if let Some(w) = &self.webhook {
            check_secret(&mut errs, "webhook.secret", &w.secret);
        }
        let pagerduty = self.profile == SinkProfile::Pagerduty;
        match &self.routing_key {
            None if pagerduty && self.routing_keys.is_empty() => {
                check_secret(&mut errs, "routing_key", &SecretSource { env: None, file: None })
            }
            Some(rk) if pagerduty => check_secret(&mut errs, "routing_key", rk),
            Some(_) if !pagerduty => err(&mut errs, "routing_key", "is only used by the pagerduty profile".into()),
            _ => {}
        }
        for (rotation, key) in &self.routing_keys {
            if pagerduty {
                check_secret(&mut errs, &format!("routing_keys.\"{rotation}\""), key);
            }
        }
        if !pagerduty && !self.routing_keys.is_empty() {
            err(&mut errs, "routing_keys", "is only used by the pagerduty profile".into());
        }
        let jsm = self.profile == SinkProfile::Jsm;
        match &self.auth {
            AuthConfig::None | AuthConfig::Bearer { .. } if jsm => err(
                &mut errs,
                "auth",
                "the jsm profile authenticates with kind = \"genie_key\" (an API integration key) or \"basic\" (email and API token)"
                    .into(),
            ),
            AuthConfig::GenieKey { .. } if !jsm => err(&mut errs, "auth", "kind = \"genie_key\" is only used by the jsm profile".into()),
            _ => {}
        }
        let rt = self.profile == SinkProfile::Rt;
        match &self.auth {
            AuthConfig::None | AuthConfig::Bearer { .. } | AuthConfig::GenieKey { .. } if rt => err(
                &mut errs,
                "auth",
                "the rt profile authenticates with kind = \"token\" (an RT auth token) or \"basic\" (user and password)".into(),
            ),
            AuthConfig::Token { .. } if !rt => err(&mut errs, "auth", "kind = \"token\" is only used by the rt profile".into()),
            _ => {}
        }
        if rt {
            for (field, message) in self.rt.errors() {
                err(&mut errs, &relative(field), message);
            }
        }
        errs
    }
}

fn default_sink_name() -> String {
    "default".into()
}

fn default_max_response_bytes() -> usize {
    64 << 10
}

fn default_sink_timeout() -> HumanDuration {
    dur("10s")
}

fn default_sink_concurrency() -> usize {
    4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_minute: Option<u32>, burst: Option<u32>) -> RateLimitConfig {
        RateLimitConfig { per_minute, burst }
    }

    #[test]
    fn rate_limit_defaults_by_profile() {
        let none = RateLimitConfig::default();
        assert_eq!(none.resolved(SinkProfile::Pagerduty), Some((120, 20)));
        assert_eq!(none.resolved(SinkProfile::Servicenow), None);
        assert_eq!(none.resolved(SinkProfile::Generic), None);
        assert_eq!(limit(Some(0), None).resolved(SinkProfile::Pagerduty), None, "0 turns the default off");
        assert_eq!(limit(Some(600), Some(50)).resolved(SinkProfile::Servicenow), Some((600, 50)));
        assert_eq!(limit(Some(6), None).resolved(SinkProfile::Generic), Some((6, 6)), "burst capped at per_minute");
        assert_eq!(limit(None, Some(5)).resolved(SinkProfile::Pagerduty), Some((120, 5)));
    }

    #[test]
    fn rt_options_name_the_field_they_refuse() {
        assert!(RtConfig::default().errors().is_empty());
        let fields = |c: RtConfig| c.errors().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(fields(RtConfig { queue: " ".into(), key_field: String::new() }), ["sink.rt.queue", "sink.rt.key_field"]);
        for bad in ["Key}", "K'ey", "K\\ey", "a\nb"] {
            assert_eq!(fields(RtConfig { key_field: bad.into(), ..RtConfig::default() }), ["sink.rt.key_field"], "{bad:?}");
        }
        assert!(fields(RtConfig { queue: "Ops Queue".into(), key_field: "Triaged Key-1".into() }).is_empty());
    }

    #[test]
    fn burst_zero_is_refused_only_with_a_limit() {
        let errs = limit(Some(60), Some(0)).errors(SinkProfile::Generic);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "rate_limit.burst");
        assert_eq!(limit(None, Some(0)).errors(SinkProfile::Pagerduty).len(), 1);
        assert!(limit(None, Some(0)).errors(SinkProfile::Generic).is_empty(), "no limit, nothing to refuse");
        assert!(limit(Some(0), Some(0)).errors(SinkProfile::Pagerduty).is_empty());
    }
}
