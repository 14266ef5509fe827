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
