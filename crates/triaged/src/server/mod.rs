//! HTTP side door: `/metrics` (Prometheus text), `/healthz` (process alive),
//! `/readyz` (200 only while running, 503 while starting or draining) and
//! `/incidents` (open incidents as JSON, with their reasons), `/problems`
//! (problem candidates), `/explain/{id}` (why, for an incident key, a
//! fingerprint, an event id or a Kafka origin), and with
//! `[ingest]` the Alertmanager-compatible `POST /api/v2/alerts`.

pub mod explain;
pub mod ingest;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::core::problems::ProblemCandidate;
use crate::incident::Incident;
use crate::metrics::Metrics;
use crate::server::explain::{DecisionLog, Explanation};
use crate::server::ingest::Ingest;

/// Lifecycle phase driving `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Starting,
    Running,
    Draining,
}

#[derive(Clone)]
pub struct ServerState {
    pub metrics: Metrics,
    pub phase: watch::Receiver<Lifecycle>,
    pub incidents: watch::Receiver<Arc<Vec<Incident>>>,
    pub ingest: Option<Arc<Ingest>>,
    pub problems: watch::Receiver<Arc<Vec<ProblemCandidate>>>,
    pub decisions: DecisionLog,
}

pub fn router(state: ServerState) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/incidents", get(incidents))
        .route("/problems", get(problems))
        .route("/explain/{*id}", get(explain));
    if let Some(ing) = &state.ingest {
        app = app.route("/api/v2/alerts", post(ingest_alerts).layer(DefaultBodyLimit::max(ing.max_body_bytes)));
    }
    app.with_state(state)
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: ServerState, stop: CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn metrics(State(s): State<ServerState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<ServerState>) -> Response {
    let phase = *s.phase.borrow();
    match phase {
        Lifecycle::Running => (StatusCode::OK, "ready\n").into_response(),
        Lifecycle::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        Lifecycle::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
    }
}

async fn ingest_alerts(State(s): State<ServerState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(ing) = &s.ingest else { return StatusCode::NOT_FOUND.into_response() };
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    ing.handle(auth, &body).await.into_response()
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
