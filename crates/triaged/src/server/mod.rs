//! HTTP side door: `/metrics` (Prometheus text), `/healthz` (process alive),
//! `/readyz` (200 only while running with a broker, partitions and their
//! state restored; 503 naming what is missing) and
//! `/incidents` (open incidents as JSON, with their reasons), `/problems`
//! (problem candidates), `/explain/{id}` (why, for an incident key, a
//! fingerprint, an event id or a Kafka origin), and with
//! `[ingest]` the Alertmanager-compatible `POST /api/v2/alerts`.

pub mod auth;
pub mod explain;
mod idle;
pub mod ingest;
mod listen;
pub mod metrics;
pub mod ready;
pub mod tls;
pub mod webhook;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::core::problems::ProblemCandidate;
use crate::incident::Incident;
use crate::metrics::Metrics;
use crate::server::auth::BearerToken;
use crate::server::explain::{DecisionLog, Explanation};
use crate::server::ingest::Ingest;
pub use crate::server::listen::Limits;
use crate::server::ready::Readiness;
use crate::sink::{read_secret, SinkBuildError};

/// Lifecycle phase driving `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Starting,
    Running,
    Draining,
}

/// Why the listener cannot start (also reported by `triaged check`).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("{0}")]
    Token(#[source] SinkBuildError),
    #[error("{0}")]
    Tls(#[source] tls::TlsError),
}

/// What `[http]` asks of the listener, its secrets and certificates read.
#[derive(Clone, Default)]
pub struct Listener {
    pub limits: Limits,
    /// Required on the read endpoints.
    pub read_token: Option<Arc<BearerToken>>,
    pub token_covers_metrics: bool,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    pub fn new(cfg: &HttpConfig) -> Result<Listener, ListenerError> {
        let read_token = cfg
            .token
            .as_ref()
            .map(|t| read_secret("http.token", t).map(|s| Arc::new(BearerToken::new(&s))))
            .transpose()
            .map_err(ListenerError::Token)?;
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose().map_err(ListenerError::Tls)?;
        Ok(Listener { limits: Limits::from_config(cfg), read_token, token_covers_metrics: cfg.token_covers_metrics, tls })
    }
}

#[derive(Clone)]
pub struct ServerState {
    pub metrics: Metrics,
    pub phase: watch::Receiver<Lifecycle>,
    pub readiness: Readiness,
    pub incidents: watch::Receiver<Arc<Vec<Incident>>>,
    pub ingest: Option<Arc<Ingest>>,
    pub problems: watch::Receiver<Arc<Vec<ProblemCandidate>>>,
    pub decisions: DecisionLog,
    pub listener: Listener,
    /// `POST /webhooks/{sink}` for the sinks with a `[sink.webhook]`.
    pub webhooks: Option<Arc<webhook::Webhooks>>,
}

pub fn router(state: ServerState) -> Router {
    let mut read =
        Router::new().route("/incidents", get(incidents)).route("/problems", get(problems)).route("/explain/{*id}", get(explain));
    let mut scrape = Router::new().route("/metrics", get(metrics));
    if let Some(token) = &state.listener.read_token {
        read = read.route_layer(middleware::from_fn_with_state(token.clone(), require_token));
        if state.listener.token_covers_metrics {
            scrape = scrape.route_layer(middleware::from_fn_with_state(token.clone(), require_token));
        }
    }
    let mut app = Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).merge(read).merge(scrape);
    if state.ingest.is_some() {
        app = app.route("/api/v2/alerts", post(ingest_alerts));
    }
    if state.webhooks.is_some() {
        app = app.route("/webhooks/{sink}", post(webhook));
    }
    app.with_state(state)
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: ServerState, stop: CancellationToken) {
    let (limits, tls, metrics) = (state.listener.limits, state.listener.tls.clone(), state.metrics.clone());
    listen::accept_loop(listener, router(state), limits, tls, metrics, stop).await;
}

/// 401 unless the request carries the read token.
async fn require_token(State(token): State<Arc<BearerToken>>, req: Request, next: Next) -> Response {
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if token.admits(auth) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "missing or wrong bearer token\n").into_response()
    }
}

async fn metrics(State(s): State<ServerState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<ServerState>) -> Response {
    let phase = *s.phase.borrow();
    match phase {
        Lifecycle::Running => match s.readiness.missing() {
            m if m.is_empty() => (StatusCode::OK, "ready\n").into_response(),
            m => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", m.join("; "))).into_response(),
        },
        Lifecycle::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        Lifecycle::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
    }
}

/// The body is read by the ingest only after the token was checked.
/// A signed webhook from an ITSM (`webhook.rs`); the body is read within
/// `body_timeout` and up to [`webhook::MAX_BODY`].
async fn webhook(State(s): State<ServerState>, Path(sink): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let Some(hooks) = &s.webhooks else { return StatusCode::NOT_FOUND.into_response() };
    let read = tokio::time::timeout(s.listener.limits.body_timeout, axum::body::to_bytes(body, webhook::MAX_BODY)).await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONNECTION, "close")], "body too large\n").into_response(),
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], "body not sent in time\n").into_response(),
    };
    hooks.handle(&sink, &headers, &bytes).into_response()
}

async fn ingest_alerts(State(s): State<ServerState>, headers: HeaderMap, body: Body) -> Response {
    let Some(ing) = &s.ingest else { return StatusCode::NOT_FOUND.into_response() };
    let (code, text) = ing.handle(&headers, body, s.listener.limits.body_timeout).await;
    let mut r = (code, text).into_response();
    if code == StatusCode::PAYLOAD_TOO_LARGE || code == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body is not read; the connection cannot carry another request.
        r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    r
}

async fn explain(State(s): State<ServerState>, Path(id): Path<String>) -> Result<Json<Explanation>, (StatusCode, String)> {
    let open = s.incidents.borrow().clone();
    s.decisions.explain(&id, &open).map(Json).ok_or_else(|| {
        (StatusCode::NOT_FOUND, format!("`{id}` is no open incident key, nor a recent event's fingerprint, event id or origin\n"))
    })
}

async fn problems(State(s): State<ServerState>) -> Json<Vec<ProblemCandidate>> {
    let list = s.problems.borrow().clone();
    Json(list.as_ref().clone())
}

async fn incidents(State(s): State<ServerState>) -> Json<Vec<Incident>> {
    let list = s.incidents.borrow().clone();
    Json(list.as_ref().clone())
}
