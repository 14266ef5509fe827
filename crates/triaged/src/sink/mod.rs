//! The ITSM sink: applies [`Action`]s over HTTP in one of six API profiles
//! (generic PUT, ServiceNow Table API, PagerDuty Events API v2, ServiceNow
//! Event Management, Jira Service Management Operations alerts, Request
//! Tracker REST2 tickets).
//!
//! Creation is idempotent by the incident's correlation key: the generic
//! profile PUTs by key, PagerDuty dedups by `dedup_key`, and for ServiceNow
//! the sink looks the key up (`correlation_id`) before every create, so a
//! create whose response was lost is found instead of duplicated. ServiceNow
//! Event Management folds every event of one `message_key` into one alert,
//! and Jira Service Management de-duplicates open alerts by `alias`. Request
//! Tracker tickets are searched for by the key's custom field before a create.
//!
//! This module builds the sink and dispatches `deliver` / `look_up` /
//! `read_back` to the profile (`profile/`); `http.rs` sends requests and classifies replies,
//! `tls.rs` sets the client's CA bundle and certificate, `secret.rs` reads secrets, `retry.rs` and `breaker.rs` pace the retries,
//! `rate.rs` paces every request to the sink's rate limit.
//! Secrets are read once at construction, kept out of `Debug`/`Display`, and
//! scrubbed from any response excerpt that ends up in an error.

pub mod breaker;
mod coalesce;
mod http;
mod profile;
pub mod rate;
pub mod retry;
mod routing_key;
mod secret;
mod tls;
pub(crate) mod worker;

pub use http::error_chain;
pub(crate) use profile::parse_priority;
pub(crate) use secret::{loose_permissions, read_secret, Secret};
pub use tls::SinkTlsError;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::scale::ownership::{Claim, Ownership};
use base64::Engine as _;
use moka::sync::Cache;
use reqwest::header::HeaderValue;
use reqwest::Url;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{AuthConfig, SinkConfig, SinkProfile};
use crate::incident::{Action, SinkError};
use crate::metrics::Metrics;
use breaker::{Breaker, Outcome};
use rate::RateLimit;
use retry::Backoff;
use routing_key::RoutingKeys;

/// Bound of each per-key cache (ServiceNow sys_ids, JSM priorities).
const SYS_ID_CACHE_CAPACITY: u64 = 50_000;
/// Entries unused this long leave the cache (they are looked up again).
const SYS_ID_CACHE_IDLE: Duration = Duration::from_secs(7 * 86_400);

/// Why the sink could not be built (at startup, before anything is consumed).
/// Messages name the config field and the env var or file, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error("{field}: environment variable `{var}` is not set")]
    MissingEnv { field: &'static str, var: String },
    #[error("{field}: environment variable `{var}` is not valid UTF-8")]
    EnvNotUnicode { field: &'static str, var: String },
    #[error("{field}: environment variable `{var}` is empty")]
    EmptyEnv { field: &'static str, var: String },
    #[error("{field}: cannot read secret file `{}`: {source}", path.display())]
    ReadFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: secret file `{}` is empty", path.display())]
    EmptyFile { field: &'static str, path: PathBuf },
    #[error("{field}: set `env` or `file`")]
    NoSecretSource { field: &'static str },
    #[error("{field}: set either `env` or `file`, not both")]
    BothSecretSources { field: &'static str },
    #[error("{field}: the secret contains characters that are not allowed in an HTTP header")]
    InvalidSecret { field: &'static str },
    #[error("sink.routing_key: required by the pagerduty profile (or routing_keys per on-call rotation)")]
    MissingRoutingKey,
    #[error("sink.endpoint: {0}")]
    Endpoint(String),
    #[error("sink: cannot build the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Tls(#[from] SinkTlsError),
}

/// What an ITSM holds under an incident key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Remote {
    Open,
    /// Resolved, closed or canceled there.
    Closed,
    /// No record.
    Missing,
    /// The profile cannot tell.
    #[default]
    Unknown,
}

/// What the ITSM's record of an incident says when it is read back by key:
/// its state, and what people did to it there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteRecord {
    pub state: Remote,
    /// Someone took the record: an owner or assignee set by a person, or an
    /// acknowledged / in-progress state.
    pub acknowledged: bool,
    /// The person who holds it, as the ITSM names them, when it says.
    pub assignee: Option<String>,
    /// The record's priority mapped back to P1..P5, when it holds one.
    pub priority: Option<u8>,
    /// The assignment group (or queue) as the ITSM names it, when it has one.
    pub group: Option<String>,
    /// When the record was closed, for a closed record whose ITSM says.
    pub closed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The ITSM sink. Cheap to clone (shared state behind an `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct RestSink {
    inner: Arc<SinkInner>,
    /// When state follows partitions: every request for an action, retries
    /// included, first checks that its partition is still assigned here.
    ownership: Option<Arc<Ownership>>,
    /// Set on the copy that works for one action ([`RestSink::for_action`]):
    /// its claim, and the shutdown that ends a wait for it.
    claim: Option<(Claim, CancellationToken)>,
    /// Set on that copy too: the PagerDuty routing key of the action
    /// (an index into `routing`), whose bucket its requests take.
    key: Option<usize>,
}

struct SinkInner {
    /// The sink's name (`default` for a lone `[sink]`).
    name: String,
    profile: SinkProfile,
    /// Endpoint with any trailing slash removed (path segments are appended).
    base: Url,
    client: reqwest::Client,
    /// Precomputed `Authorization` value, marked sensitive.
    auth: Option<HeaderValue>,
    /// `none`, `bearer`, `basic`, `genie_key` or `token` (for Debug).
    auth_kind: &'static str,
    /// PagerDuty: the routing key per rotation, each with its rate limit.
    routing: Option<RoutingKeys>,
    /// Every secret string (and encoding of one) to scrub from error text.
    scrub: Vec<Secret>,
    backoff: Backoff,
    /// Shared by every worker delivering through this sink.
    breaker: Breaker,
    /// Shared by every worker too: each request takes a token.
    rate: RateLimit,
    metrics: Metrics,
    /// Largest response body read (`sink.max_response_bytes`).
    max_response_bytes: usize,
    /// ServiceNow: correlation key -> sys_id of incidents seen or created;
    /// Request Tracker: incident key -> ticket id.
    sys_ids: Cache<String, String>,
    /// Jira Service Management: alias -> the priority last sent for it;
    /// Request Tracker: incident key -> the ticket priority last sent.
    priorities: Cache<String, String>,
    /// ServiceNow: `[sink.servicenow]` and the references looked up.
    servicenow: profile::SnOptions,
    /// Request Tracker: queue and key field (`[sink.rt]`).
    rt: profile::RtSettings,
}

/// `Authorization: <scheme> <token>` from the secret `token`, marked
/// sensitive; the token joins the strings scrubbed from error text.
fn token_header(scheme: &str, token: &crate::config::SecretSource, scrub: &mut Vec<Secret>) -> Result<HeaderValue, SinkBuildError> {
    let field = "sink.auth.token";
    let token = read_secret(field, token)?;
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose())).map_err(|_| SinkBuildError::InvalidSecret { field })?;
    value.set_sensitive(true);
    scrub.push(token);
    Ok(value)
}

/// The endpoint for humans: no password, no trailing slash.
fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.to_string().trim_end_matches('/').to_owned()
}

impl fmt::Debug for RestSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RestSink")
            .field("name", &i.name)
            .field("profile", &i.profile.as_str())
            .field("endpoint", &display_url(&i.base))
            .field("auth", &i.auth_kind)
            .field("routing", &i.routing)
            .field("backoff", &i.backoff)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RestSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sink at {}", self.inner.profile.as_str(), display_url(&self.inner.base))
    }
}

impl RestSink {
    /// Builds the sink: validates the endpoint, reads every secret now (so a
    /// missing one fails at startup, naming the env var or file) and builds
    /// the HTTP client with `cfg.timeout` per request.
    pub fn new(cfg: &SinkConfig, metrics: Metrics) -> Result<RestSink, SinkBuildError> {
        let trimmed = cfg.endpoint.trim().trim_end_matches('/');
        let base = Url::parse(trimmed).map_err(|e| SinkBuildError::Endpoint(format!("`{trimmed}` is not a URL: {e}")))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(SinkBuildError::Endpoint(format!("scheme `{}` is not http or https", base.scheme())));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(SinkBuildError::Endpoint(format!("`{}` has no host", display_url(&base))));
        }

        let mut scrub = Vec::new();
        let (auth, auth_kind) = match &cfg.auth {
            AuthConfig::None => (None, "none"),
            AuthConfig::Bearer { token } => (Some(token_header("Bearer", token, &mut scrub)?), "bearer"),
            AuthConfig::GenieKey { token } => (Some(token_header("GenieKey", token, &mut scrub)?), "genie_key"),
            AuthConfig::Token { token } => (Some(token_header("token", token, &mut scrub)?), "token"),
            AuthConfig::Basic { username, password } => {
                let field = "sink.auth.password";
                let password = read_secret(field, password)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
                let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| SinkBuildError::InvalidSecret { field })?;
                value.set_sensitive(true);
                scrub.push(password);
                scrub.push(Secret(encoded));
                (Some(value), "basic")
            }
        };
        // Only the pagerduty profile uses routing keys (config validation says so).
        let routing = match cfg.profile {
            SinkProfile::Pagerduty => Some(RoutingKeys::new(cfg, &mut scrub)?),
            _ => None,
        };

        let client = http::client(cfg)?;
        metrics.sink_families_at_zero(&cfg.name);

        let sys_ids = Cache::builder().max_capacity(SYS_ID_CACHE_CAPACITY).time_to_idle(SYS_ID_CACHE_IDLE).build();
        let priorities = Cache::builder().max_capacity(SYS_ID_CACHE_CAPACITY).time_to_idle(SYS_ID_CACHE_IDLE).build();
        Ok(RestSink {
            ownership: None,
            claim: None,
            key: None,
            inner: Arc::new(SinkInner {
                name: cfg.name.clone(),
                profile: cfg.profile,
                base,
                client,
                auth,
                auth_kind,
                routing,
                scrub,
                backoff: Backoff::new(&cfg.retry),
                breaker: Breaker::new(&cfg.circuit, &metrics, &cfg.name),
                rate: RateLimit::from_config(cfg),
                metrics,
                max_response_bytes: cfg.max_response_bytes,
                sys_ids,
                priorities,
                servicenow: profile::SnOptions::new(cfg.servicenow.as_ref()),
                rt: profile::RtSettings::new(&cfg.rt),
            }),
        })
    }

    /// The sink's name, as routes and metrics call it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `true` while the sink's circuit breaker is closed.
    pub fn circuit_closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.breaker.closed()
    }

    /// The backoff policy `deliver` uses.
    pub fn backoff(&self) -> &Backoff {
        &self.inner.backoff
    }

    /// The rate limit every request of this sink waits for (PagerDuty: the
    /// bucket of the routing key of the action this copy works for).
    pub fn rate_limit(&self) -> &RateLimit {
        match (&self.inner.routing, self.key) {
            (Some(r), Some(i)) => r.rate(i),
            _ => &self.inner.rate,
        }
    }

    /// The rate limit the requests for `action` wait for.
    pub fn rate_limit_for(&self, action: &Action) -> &RateLimit {
        match self.inner.routing.as_ref().and_then(|r| Some((r, r.index_for(&action.incident).ok()?))) {
            Some((r, i)) => r.rate(i),
            None => &self.inner.rate,
        }
    }

    /// Whether this profile can look incidents up by key (PagerDuty's
    /// Events API and ServiceNow Event Management cannot: events go in,
    /// alerts are not read back by key).
    pub fn can_look_up(&self) -> bool {
        !matches!(self.inner.profile, SinkProfile::Pagerduty | SinkProfile::ServicenowEm)
    }

    /// What the ITSM holds under incident `key`, with the sink's retries.
    pub async fn look_up(&self, key: &str, shutdown: &CancellationToken) -> Result<Remote, SinkError> {
        retry::retry(&self.inner.backoff, shutdown, || async move {
            match self.inner.profile {
                SinkProfile::Generic => self.generic_look_up(key).await,
                SinkProfile::Servicenow => self.sn_state(key).await,
                SinkProfile::Jsm => self.jsm_look_up(key).await,
                SinkProfile::Rt => self.rt_look_up(key).await,
                SinkProfile::Pagerduty | SinkProfile::ServicenowEm => Ok(Remote::Unknown),
            }
        })
        .await
    }

    /// Whether this profile can read a record back by key
    /// ([`RestSink::read_back`]): generic, servicenow and jsm. PagerDuty's
    /// state comes from its webhooks instead; Event Management alerts are
    /// not read by key.
    pub fn can_read_back(&self) -> bool {
        matches!(self.inner.profile, SinkProfile::Generic | SinkProfile::Servicenow | SinkProfile::Jsm | SinkProfile::Rt)
    }

    /// The ITSM's record of incident `key` (state, who took it, its
    /// priority and group), with the sink's retries; the default record
    /// (state `Unknown`) where the profile cannot read back.
    pub async fn read_back(&self, key: &str, shutdown: &CancellationToken) -> Result<RemoteRecord, SinkError> {
        retry::retry(&self.inner.backoff, shutdown, || async move {
            match self.inner.profile {
                SinkProfile::Generic => self.generic_read_back(key).await,
                SinkProfile::Servicenow => self.sn_read_back(key).await,
                SinkProfile::Jsm => self.jsm_read_back(key).await,
                SinkProfile::Rt => self.rt_read_back(key).await,
                SinkProfile::Pagerduty | SinkProfile::ServicenowEm => Ok(RemoteRecord::default()),
            }
        })
        .await
    }

    /// One attempt at applying `action` (possibly several requests, e.g. a
    /// ServiceNow lookup then a create). Failures of the ITSM are counted in
    /// `sink_errors_total{class}`; a claim lost or a shutdown while waiting
    /// for one is not the ITSM's (`deliver` counts the shutdown).
    pub async fn apply(&self, action: &Action) -> Result<(), SinkError> {
        let result = match self.inner.profile {
            SinkProfile::Generic => self.generic(action).await,
            SinkProfile::Servicenow => self.servicenow(action).await,
            SinkProfile::Pagerduty => self.pagerduty(action).await,
            SinkProfile::ServicenowEm => self.servicenow_em(action).await,
            SinkProfile::Jsm => self.jsm(action).await,
            SinkProfile::Rt => self.rt(action).await,
        };
        if let Err(e @ (SinkError::Retryable { .. } | SinkError::Permanent(_))) = &result {
            self.inner.metrics.sink_errors.with_label_values(&[&self.inner.name, e.class()]).inc();
        }
        result
    }

    /// Checks the claim of every action against `ownership` before each
    /// request.
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> RestSink {
        self.ownership = Some(ownership);
        self
    }

    /// This sink, checking `action`'s claim (when it has one and the sink
    /// follows ownership) right before every request it sends: an attempt
    /// of several requests (a ServiceNow lookup, then the create) can span a
    /// stall, and what follows it is judged again. Cheap: two `Arc`s and
    /// the claim.
    pub fn for_action(&self, action: &Action, shutdown: &CancellationToken) -> RestSink {
        let key = self.inner.routing.as_ref().and_then(|r| r.index_for(&action.incident).ok());
        RestSink { claim: action.claim.clone().map(|c| (c, shutdown.clone())), key, ..self.clone() }
    }

    /// Waits while the claim is unconfirmed after a stall: `Ok` once it
    /// holds (or there is none), [`SinkError::Disowned`] once it is lost.
    async fn claim_holds(&self) -> Result<(), SinkError> {
        let (Some(o), Some((claim, shutdown))) = (&self.ownership, &self.claim) else { return Ok(()) };
        match o.wait(claim, shutdown).await {
            Some(true) => Ok(()),
            Some(false) => Err(SinkError::Disowned { topic: claim.topic.clone(), partition: claim.partition }),
            None => Err(SinkError::Cancelled),
        }
    }

    /// Applies `action`, retrying retryable failures with backoff for as
    /// long as it takes, until success, a permanent error, a lost claim
    /// ([`SinkError::Disowned`]), or `shutdown` (then
    /// [`SinkError::Cancelled`], also for an attempt in flight).
    pub async fn deliver(&self, action: &Action, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let span = tracing::warn_span!(
            "sink_deliver",
            profile = self.inner.profile.as_str(),
            action_id = action.id,
            action = action.kind.as_str(),
            key = %action.incident.key,
        );
        let breaker = &self.inner.breaker;
        let sink = &self.for_action(action, shutdown);
        let attempt = || async move {
            let permit = breaker.admit().await;
            // The claim is checked before each request, so after the
            // breaker's wait, which can be long.
            let result = sink.apply(action).await;
            breaker.record(permit, Outcome::of(&result));
            result
        };
        let result = retry::retry(&self.inner.backoff, shutdown, attempt).instrument(span).await;
        if let Err(e @ SinkError::Cancelled) = &result {
            self.inner.metrics.sink_errors.with_label_values(&[&self.inner.name, e.class()]).inc();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_sink_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<RestSink>();
    }
}
