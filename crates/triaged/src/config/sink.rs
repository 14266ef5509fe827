//! `[sink]`: the ITSM profile and endpoint, its secrets, retries and circuit breaker.

use std::path::PathBuf;

use serde::Deserialize;

use super::{dur, HumanDuration};

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
