//! The ITSM sink: applies [`Action`]s over HTTP in one of three API profiles
//! (generic PUT, ServiceNow Table API, PagerDuty Events API v2).
//!
//! Creation is idempotent by the incident's correlation key: the generic
//! profile PUTs by key, PagerDuty dedups by `dedup_key`, and for ServiceNow
//! the sink looks the key up (`correlation_id`) before every create, so a
//! create whose response was lost is found instead of duplicated.
//!
//! Secrets are read once at construction, kept out of `Debug`/`Display`, and
//! scrubbed from any response excerpt that ends up in an error.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::scale::ownership::Ownership;
use base64::Engine as _;
use moka::sync::Cache;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::config::{AuthConfig, SecretSource, SinkConfig, SinkProfile};
use crate::event::Severity;
use crate::incident::breaker::{Breaker, Outcome};
use crate::incident::retry::{self, Backoff};
use crate::incident::{Action, ActionKind, Incident, SinkError};
use crate::metrics::Metrics;

/// ServiceNow `short_description` limit applied by the sink.
const SN_SHORT_DESCRIPTION_MAX: usize = 160;
/// PagerDuty `payload.summary` limit.
const PD_SUMMARY_MAX: usize = 1024;
/// Longest response-body excerpt carried in an error.
const EXCERPT_MAX: usize = 200;
/// Bound of the ServiceNow key -> sys_id cache.
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
    #[error("sink.routing_key: required by the pagerduty profile")]
    MissingRoutingKey,
    #[error("sink.endpoint: {0}")]
    Endpoint(String),
    #[error("sink: cannot build the HTTP client: {0}")]
    Client(String),
}

/// A secret value; `Debug` never shows it and there is no `Display`.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads a secret from its env var or file, trailing newline(s) trimmed.
pub(crate) fn read_secret(field: &'static str, src: &SecretSource) -> Result<Secret, SinkBuildError> {
    let trim = |s: String| s.trim_end_matches(['\n', '\r']).to_owned();
    match (&src.env, &src.file) {
        (Some(_), Some(_)) => Err(SinkBuildError::BothSecretSources { field }),
        (None, None) => Err(SinkBuildError::NoSecretSource { field }),
        (Some(var), None) => {
            let value = match std::env::var(var) {
                Ok(v) => trim(v),
                Err(std::env::VarError::NotPresent) => return Err(SinkBuildError::MissingEnv { field, var: var.clone() }),
                Err(std::env::VarError::NotUnicode(_)) => return Err(SinkBuildError::EnvNotUnicode { field, var: var.clone() }),
            };
            if value.is_empty() {
                return Err(SinkBuildError::EmptyEnv { field, var: var.clone() });
            }
            Ok(Secret(value))
        }
        (None, Some(path)) => {
            let value = std::fs::read_to_string(path).map_err(|source| SinkBuildError::ReadFile { field, path: path.clone(), source })?;
            let value = trim(value);
            if value.is_empty() {
                return Err(SinkBuildError::EmptyFile { field, path: path.clone() });
            }
            Ok(Secret(value))
        }
    }
}

/// What an ITSM holds under an incident key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Open,
    /// Resolved, closed or canceled there.
    Closed,
    /// No record.
    Missing,
    /// The profile cannot tell.
    Unknown,
}

/// The ITSM sink. Cheap to clone (shared state behind an `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct RestSink {
    inner: Arc<Inner>,
    /// When state follows partitions: every attempt, retries included,
    /// first checks that the action's partition is still assigned here.
    ownership: Option<Arc<Ownership>>,
}

struct Inner {
    profile: SinkProfile,
    /// Endpoint with any trailing slash removed (path segments are appended).
    base: Url,
    client: reqwest::Client,
    /// Precomputed `Authorization` value, marked sensitive.
    auth: Option<HeaderValue>,
    /// `none`, `bearer` or `basic` (for Debug).
    auth_kind: &'static str,
    routing_key: Option<Secret>,
    /// Every secret string (and encoding of one) to scrub from error text.
    scrub: Vec<Secret>,
    backoff: Backoff,
    /// Shared by every worker delivering through this sink.
    breaker: Breaker,
    metrics: Metrics,
    /// ServiceNow: correlation key -> sys_id of incidents seen or created.
    sys_ids: Cache<String, String>,
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
            .field("profile", &i.profile.as_str())
            .field("endpoint", &display_url(&i.base))
            .field("auth", &i.auth_kind)
            .field("routing_key", &i.routing_key)
            .field("backoff", &i.backoff)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RestSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sink at {}", self.inner.profile.as_str(), display_url(&self.inner.base))
    }
}

/// A response that arrived (any status), body read.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// Outcome of a ServiceNow PATCH that tolerates a stale cached sys_id.
enum Patched {
    Done,
    /// 404: the record behind the cached sys_id is gone.
    Gone,
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
            AuthConfig::Bearer { token } => {
                let field = "sink.auth.token";
                let token = read_secret(field, token)?;
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| SinkBuildError::InvalidSecret { field })?;
                value.set_sensitive(true);
                scrub.push(token);
                (Some(value), "bearer")
            }
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
        let routing_key = match (cfg.profile, &cfg.routing_key) {
            (SinkProfile::Pagerduty, None) => return Err(SinkBuildError::MissingRoutingKey),
            (SinkProfile::Pagerduty, Some(src)) => {
                let key = read_secret("sink.routing_key", src)?;
                scrub.push(key.clone());
                Some(key)
            }
            // Only the pagerduty profile uses a routing key (config validation says so).
            _ => None,
        };

        let timeout = cfg.timeout.0;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("triaged/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkBuildError::Client(error_chain(&e)))?;

        let sys_ids = Cache::builder().max_capacity(SYS_ID_CACHE_CAPACITY).time_to_idle(SYS_ID_CACHE_IDLE).build();
        Ok(RestSink {
            ownership: None,
            inner: Arc::new(Inner {
                profile: cfg.profile,
                base,
                client,
                auth,
                auth_kind,
                routing_key,
                scrub,
                backoff: Backoff::new(&cfg.retry),
                breaker: Breaker::new(&cfg.circuit, metrics.clone()),
                metrics,
                sys_ids,
            }),
        })
    }

    /// `true` while the sink's circuit breaker is closed.
    pub fn circuit_closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.breaker.closed()
    }

    /// The backoff policy `deliver` uses.
    pub fn backoff(&self) -> &Backoff {
        &self.inner.backoff
    }

    /// Whether this profile can look incidents up by key (PagerDuty's
    /// Events API cannot).
    pub fn can_look_up(&self) -> bool {
        !matches!(self.inner.profile, SinkProfile::Pagerduty)
    }

    /// What the ITSM holds under incident `key`, with the sink's retries.
    pub async fn look_up(&self, key: &str, shutdown: &CancellationToken) -> Result<Remote, SinkError> {
        retry::retry(&self.inner.backoff, shutdown, || async move {
            match self.inner.profile {
                SinkProfile::Generic => self.generic_look_up(key).await,
                SinkProfile::Servicenow => self.sn_state(key).await,
                SinkProfile::Pagerduty => Ok(Remote::Unknown),
            }
        })
        .await
    }

    async fn generic_look_up(&self, key: &str) -> Result<Remote, SinkError> {
        let reply = self.send("lookup", Method::GET, self.url(&["incidents", key]), None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Remote::Missing);
        }
        let body = self.check("lookup", reply)?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let state = value.pointer("/incident/state").or_else(|| value.get("state")).and_then(Value::as_str).unwrap_or("open");
        Ok(if matches!(state.to_ascii_lowercase().as_str(), "resolved" | "closed") { Remote::Closed } else { Remote::Open })
    }

    /// ServiceNow incident states 6 (Resolved), 7 (Closed) and 8 (Canceled) are closed.
    async fn sn_state(&self, key: &str) -> Result<Remote, SinkError> {
        let (row, _) = self.sn_find(key).await?;
        Ok(match row {
            None => Remote::Missing,
            Some(r) => match r.get("state") {
                Some(Value::String(st)) if matches!(st.as_str(), "6" | "7" | "8") => Remote::Closed,
                _ => Remote::Open,
            },
        })
    }

    /// One attempt at applying `action` (possibly several requests, e.g. a
    /// ServiceNow lookup then a create). Failures are counted in
    /// `sink_errors_total{class}`.
    pub async fn apply(&self, action: &Action) -> Result<(), SinkError> {
        let result = match self.inner.profile {
            SinkProfile::Generic => self.generic(action).await,
            SinkProfile::Servicenow => self.servicenow(action).await,
            SinkProfile::Pagerduty => self.pagerduty(action).await,
        };
        if let Err(e) = &result {
            self.inner.metrics.sink_errors.with_label_values(&[e.class()]).inc();
        }
        result
    }

    /// Applies `action`, retrying retryable failures with backoff for as
    /// long as it takes, until success, a permanent error, or `shutdown`
    /// (then [`SinkError::Cancelled`], also for an attempt in flight).
    /// Checks the claim of every action against `ownership` before each attempt.
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> RestSink {
        self.ownership = Some(ownership);
        self
    }

    pub async fn deliver(&self, action: &Action, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let span = tracing::warn_span!(
            "sink_deliver",
            profile = self.inner.profile.as_str(),
            action_id = action.id,
            action = action.kind.as_str(),
            key = %action.incident.key,
        );
        let breaker = &self.inner.breaker;
        let gate = self.ownership.as_deref().zip(action.claim.as_ref());
        let attempt = || async move {
            let permit = breaker.admit().await;
            // Checked after the breaker's wait, which can be long.
            let owned = match gate {
                None => Ok(()),
                Some((o, claim)) => match o.wait(claim, shutdown).await {
                    Some(true) => Ok(()),
                    Some(false) => Err(SinkError::Disowned { topic: claim.topic.clone(), partition: claim.partition }),
                    None => Err(SinkError::Cancelled),
                },
            };
            let result = match owned {
                Ok(()) => self.apply(action).await,
                Err(e) => Err(e),
            };
            breaker.record(permit, Outcome::of(&result));
            result
        };
        let result = retry::retry(&self.inner.backoff, shutdown, attempt).instrument(span).await;
        if let Err(e @ SinkError::Cancelled) = &result {
            self.inner.metrics.sink_errors.with_label_values(&[e.class()]).inc();
        }
        result
    }

    // ----- generic -------------------------------------------------------

    async fn generic(&self, action: &Action) -> Result<(), SinkError> {
        let url = self.url(&["incidents", &action.incident.key]);
        let body = json!({
            "action": action.kind,
            "incident": action.incident,
            "notes": action.notes,
        });
        self.call("put", Method::PUT, url, Some(&body)).await.map(drop)
    }

    // ----- pagerduty -----------------------------------------------------

    async fn pagerduty(&self, action: &Action) -> Result<(), SinkError> {
        let routing_key =
            self.inner.routing_key.as_ref().ok_or_else(|| SinkError::Permanent("pagerduty: no routing key configured".into()))?;
        let body = pagerduty_event(action, routing_key.expose());
        self.call("enqueue", Method::POST, self.url(&["v2", "enqueue"]), Some(&body)).await.map(drop)
    }

    // ----- servicenow ----------------------------------------------------

    async fn servicenow(&self, action: &Action) -> Result<(), SinkError> {
        let key = &action.incident.key;
        if let Some(sys_id) = self.inner.sys_ids.get(key) {
            match self.sn_patch(action, &sys_id, true).await? {
                Patched::Done => return Ok(()),
                Patched::Gone => {
                    debug!(key = %key, sys_id = %sys_id, "cached ServiceNow record is gone; looking the key up again");
                    self.inner.sys_ids.invalidate(key);
                }
            }
        }
        // Not cached (or stale): always look up before creating, so a create
        // whose response was lost (timeout) is found, not duplicated.
        if let Some(sys_id) = self.sn_lookup(key).await? {
            self.inner.sys_ids.insert(key.clone(), sys_id.clone());
            self.sn_patch(action, &sys_id, false).await?;
            return Ok(());
        }
        let created = self.sn_create(action).await?;
        match action.kind {
            // The create carried the whole snapshot and the notes.
            ActionKind::Open | ActionKind::Update => Ok(()),
            // Create first, then the transition, so no effect is lost.
            ActionKind::Resolve | ActionKind::Reopen => {
                let sys_id = match created {
                    Some(id) => id,
                    None => self.sn_lookup(key).await?.ok_or_else(|| {
                        SinkError::Permanent(format!(
                            "servicenow: created incident {key} but the response had no sys_id and a lookup does not find it"
                        ))
                    })?,
                };
                self.sn_patch(action, &sys_id, false).await?;
                Ok(())
            }
        }
    }

    /// The first incident row (`sys_id`, `state`) whose `correlation_id` is
    /// `key`, if any, and the response body (for error excerpts).
    async fn sn_find(&self, key: &str) -> Result<(Option<Value>, Vec<u8>), SinkError> {
        let mut url = self.url(&["api", "now", "table", "incident"]);
        url.query_pairs_mut()
            // `^` separates encoded-query terms; a literal one is written `^^`.
            .append_pair("sysparm_query", &format!("correlation_id={}", key.replace('^', "^^")))
            .append_pair("sysparm_fields", "sys_id,state")
            .append_pair("sysparm_limit", "1");
        let body = self.call("lookup", Method::GET, url, None).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable("lookup", &body))?;
        let rows = value.get("result").and_then(Value::as_array).ok_or_else(|| self.unusable("lookup", &body))?;
        Ok((rows.first().cloned(), body))
    }

    /// `sys_id` of the incident whose `correlation_id` is `key`, if any.
    async fn sn_lookup(&self, key: &str) -> Result<Option<String>, SinkError> {
        let (row, body) = self.sn_find(key).await?;
        match row {
            None => Ok(None),
            Some(row) => match row.get("sys_id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
                _ => Err(self.unusable("lookup", &body)),
            },
        }
    }

    /// Creates the incident from the snapshot; returns its sys_id (cached).
    async fn sn_create(&self, action: &Action) -> Result<Option<String>, SinkError> {
        let inc = &action.incident;
        let work_notes = match action.kind {
            ActionKind::Open | ActionKind::Update => action.notes.join("\n"),
            ActionKind::Resolve | ActionKind::Reopen => {
                format!("Created by triaged while delivering a {} for an incident not found in ServiceNow.", action.kind.as_str())
            }
        };
        let mut body = Map::new();
        body.insert("correlation_id".into(), inc.key.clone().into());
        body.insert("correlation_display".into(), "triaged".into());
        body.insert("short_description".into(), truncate(&inc.title, SN_SHORT_DESCRIPTION_MAX).into());
        body.insert("description".into(), sn_description(inc).into());
        if let Some(ci) = &inc.ci {
            body.insert("cmdb_ci".into(), ci.name.clone().into());
        }
        if let Some(group) = &inc.assignment_group {
            body.insert("assignment_group".into(), group.clone().into());
        }
        body.insert("urgency".into(), inc.urgency.to_string().into());
        body.insert("impact".into(), inc.impact.to_string().into());
        if !work_notes.is_empty() {
            body.insert("work_notes".into(), work_notes.into());
        }
        let url = self.url(&["api", "now", "table", "incident"]);
        let reply = self.call("create", Method::POST, url, Some(&Value::Object(body))).await?;
        let sys_id = serde_json::from_slice::<Value>(&reply)
            .ok()
            .and_then(|v| v.pointer("/result/sys_id").and_then(Value::as_str).map(str::to_owned))
            .filter(|id| !id.is_empty());
        match &sys_id {
            Some(id) => self.inner.sys_ids.insert(inc.key.clone(), id.clone()),
            None => debug!(key = %inc.key, "ServiceNow create response carries no result.sys_id"),
        }
        Ok(sys_id)
    }

    /// PATCHes the record with what `action` changes. With `tolerate_gone`, a
    /// 404 is reported as [`Patched::Gone`] instead of a permanent error.
    async fn sn_patch(&self, action: &Action, sys_id: &str, tolerate_gone: bool) -> Result<Patched, SinkError> {
        let inc = &action.incident;
        let notes = action.notes.join("\n");
        let mut body = Map::new();
        match action.kind {
            ActionKind::Open | ActionKind::Update => {
                body.insert("short_description".into(), truncate(&inc.title, SN_SHORT_DESCRIPTION_MAX).into());
                body.insert("urgency".into(), inc.urgency.to_string().into());
                body.insert("impact".into(), inc.impact.to_string().into());
                if !notes.is_empty() {
                    body.insert("work_notes".into(), notes.into());
                }
            }
            ActionKind::Resolve => {
                let close_notes = if notes.is_empty() {
                    "All member events cleared; resolved automatically by triaged.".to_owned()
                } else {
                    notes.clone()
                };
                body.insert("state".into(), "6".into());
                body.insert("close_code".into(), "Solved (Permanently)".into());
                body.insert("close_notes".into(), close_notes.into());
                let work_notes = if notes.is_empty() { "Resolved by triaged.".to_owned() } else { notes };
                body.insert("work_notes".into(), work_notes.into());
            }
            ActionKind::Reopen => {
                let work_notes = if notes.is_empty() { "Reopened by triaged: the problem recurred.".to_owned() } else { notes };
                body.insert("state".into(), "2".into());
                body.insert("work_notes".into(), work_notes.into());
            }
        }
        let url = self.url(&["api", "now", "table", "incident", sys_id]);
        let reply = self.send("update", Method::PATCH, url, Some(&Value::Object(body))).await?;
        if tolerate_gone && reply.status == StatusCode::NOT_FOUND {
            return Ok(Patched::Gone);
        }
        self.check("update", reply).map(|_| Patched::Done)
    }

    // ----- HTTP plumbing -------------------------------------------------

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().extend(segments);
        url
    }

    /// Sends and classifies: `Ok(body)` for 2xx.
    async fn call(&self, op: &'static str, method: Method, url: Url, body: Option<&Value>) -> Result<Vec<u8>, SinkError> {
        let reply = self.send(op, method, url, body).await?;
        self.check(op, reply)
    }

    /// Sends one request and reads the response; transport failures become
    /// [`SinkError`]s, any status is returned. The duration is observed in
    /// `sink_request_duration_seconds{profile, operation}`.
    async fn send(&self, op: &'static str, method: Method, url: Url, body: Option<&Value>) -> Result<Reply, SinkError> {
        let mut req: RequestBuilder = self.inner.client.request(method, url).header(ACCEPT, "application/json");
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let started = Instant::now();
        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            match resp.bytes().await {
                Ok(body) => Ok(Reply { status, retry_after, body: body.to_vec() }),
                // The status decides for a failure; a success needs its body.
                Err(_) if !status.is_success() => Ok(Reply { status, retry_after, body: Vec::new() }),
                Err(e) => Err(e),
            }
        }
        .await;
        self.inner
            .metrics
            .sink_request_duration
            .with_label_values(&[self.inner.profile.as_str(), op])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| self.transport_error(op, e))
    }

    /// Status classification shared by all profiles.
    fn check(&self, op: &'static str, reply: Reply) -> Result<Vec<u8>, SinkError> {
        let status = reply.status;
        if status.is_success() {
            return Ok(reply.body);
        }
        let profile = self.inner.profile.as_str();
        let excerpt = self.excerpt(&reply.body);
        let detail = if excerpt.is_empty() { String::new() } else { format!(": {excerpt}") };
        if is_retryable_status(status) {
            Err(SinkError::Retryable {
                message: format!("{profile} {op}: HTTP {status}{detail}"),
                retry_after: reply.retry_after,
                maybe_applied: false,
            })
        } else {
            Err(SinkError::Permanent(format!("{profile} {op}: HTTP {status}{detail}")))
        }
    }

    fn transport_error(&self, op: &'static str, e: reqwest::Error) -> SinkError {
        let profile = self.inner.profile.as_str();
        let what = if e.is_builder() {
            return SinkError::Permanent(self.scrubbed(format!("{profile} {op}: cannot build request: {}", error_chain(&e))));
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        // Only a failure to connect proves nothing reached the server.
        let maybe_applied = !e.is_connect();
        SinkError::Retryable {
            message: self.scrubbed(format!("{profile} {op}: {what}: {}", error_chain(&e.without_url()))),
            retry_after: None,
            maybe_applied,
        }
    }

    fn unusable(&self, op: &'static str, body: &[u8]) -> SinkError {
        let profile = self.inner.profile.as_str();
        SinkError::Permanent(format!("{profile} {op}: unusable response: {}", self.excerpt(body)))
    }

    /// A short, single-line, secret-free excerpt of a response body.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        truncate(&self.scrubbed(text), EXCERPT_MAX)
    }

    fn scrubbed(&self, mut text: String) -> String {
        for secret in &self.inner.scrub {
            if !secret.expose().is_empty() && text.contains(secret.expose()) {
                text = text.replace(secret.expose(), "[redacted]");
            }
        }
        text
    }
}

/// 408, 429 and 5xx other than 501 are worth retrying.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, SystemTime::now())
}

/// An error and its causes, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// At most `max` characters, the last one an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Major => "error",
        Severity::Minor | Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// PagerDuty Events API v2 event for `action`.
fn pagerduty_event(action: &Action, routing_key: &str) -> Value {
    let inc = &action.incident;
    if action.kind == ActionKind::Resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": inc.key,
        });
    }
    let members: Vec<String> = inc.members.iter().map(member_line).collect();
    let mut details = Map::new();
    details.insert("priority".into(), format!("P{}", inc.priority).into());
    details.insert("impact".into(), inc.impact.into());
    details.insert("urgency".into(), inc.urgency.into());
    details.insert("impacted_services".into(), json!(inc.impacted_services));
    details.insert("members".into(), json!(members));
    details.insert("notes".into(), json!(action.notes));
    if let Some(runbook) = &inc.runbook {
        details.insert("runbook".into(), runbook.clone().into());
    }
    if let Some(oncall) = &inc.oncall {
        details.insert("oncall".into(), oncall.clone().into());
    }
    let mut payload = Map::new();
    payload.insert("summary".into(), truncate(&inc.title, PD_SUMMARY_MAX).into());
    payload.insert("source".into(), inc.ci.as_ref().map_or("triaged", |c| c.name.as_str()).into());
    payload.insert("severity".into(), pd_severity(inc.severity).into());
    payload.insert("timestamp".into(), inc.opened_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
    if let Some(root) = &inc.root_cause {
        payload.insert("component".into(), root.name.clone().into());
    }
    if let Some(service) = inc.impacted_services.first() {
        payload.insert("group".into(), service.clone().into());
    }
    payload.insert("class".into(), inc.scope.clone().into());
    payload.insert("custom_details".into(), Value::Object(details));
    let mut event = Map::new();
    event.insert("routing_key".into(), routing_key.into());
    event.insert("event_action".into(), "trigger".into());
    event.insert("dedup_key".into(), inc.key.clone().into());
    event.insert("payload".into(), Value::Object(payload));
    if let Some(runbook) = &inc.runbook {
        event.insert("links".into(), json!([{ "href": runbook, "text": "Runbook" }]));
    }
    Value::Object(event)
}

/// `source/check on ci: severity status, N events: summary`
fn member_line(m: &crate::incident::Member) -> String {
    let on = m.ci.as_ref().map(|c| format!(" on {}", c.name)).unwrap_or_default();
    format!("{}/{}{on}: {} {}, {} event(s): {}", m.source, m.check, m.severity.as_str(), m.status.as_str(), m.count, m.summary)
}

/// ServiceNow `description`: what an operator needs without opening triaged.
fn sn_description(inc: &Incident) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    match &inc.root_cause {
        Some(rc) => line(format!("Root cause: {} ({}, {})", rc.name, rc.kind, rc.id)),
        None => line("Root cause: not determined".into()),
    }
    if inc.impacted_services.is_empty() {
        line("Impacted services: none known".into());
    } else {
        line(format!("Impacted services: {}", inc.impacted_services.join(", ")));
    }
    line(format!("Priority: P{} (impact {}, urgency {}), severity {}", inc.priority, inc.impact, inc.urgency, inc.severity.as_str()));
    line(format!("Scope: {}", inc.scope));
    if let Some(runbook) = &inc.runbook {
        line(format!("Runbook: {runbook}"));
    }
    if let Some(oncall) = &inc.oncall {
        line(format!("On-call: {oncall}"));
    }
    line(format!("Members ({}, {} events in total):", inc.members.len(), inc.event_count));
    for m in &inc.members {
        line(format!("- {}", member_line(m)));
    }
    if !inc.reasons.is_empty() {
        line("Reasons:".into());
        for r in &inc.reasons {
            line(format!("- {r}"));
        }
    }
    line(format!("Correlation key: {} (triaged)", inc.key));
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for code in [408, 429, 500, 502, 503, 504, 507, 599] {
            assert!(is_retryable_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501] {
            assert!(!is_retryable_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("short", 160), "short");
        let long = "é".repeat(200);
        let t = truncate(&long, 160);
        assert_eq!(t.chars().count(), 160);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn severity_mapping() {
        assert_eq!(pd_severity(Severity::Critical), "critical");
        assert_eq!(pd_severity(Severity::Major), "error");
        assert_eq!(pd_severity(Severity::Minor), "warning");
        assert_eq!(pd_severity(Severity::Warning), "warning");
        assert_eq!(pd_severity(Severity::Info), "info");
    }

    #[test]
    fn secrets_do_not_debug() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn rest_sink_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<RestSink>();
    }
}
