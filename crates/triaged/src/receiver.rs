//! An in-process ITSM endpoint speaking the `generic` sink profile
//! (`PUT /incidents/{key}`, and `GET` to look one up), used by `triaged demo`
//! and the end-to-end tests.
//! It records every action it receives, in order, and can play an ITSM in
//! trouble: answer every request with an error status (and `Retry-After`),
//! recording nothing, until told to heal.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::incident::{ActionKind, Incident};

/// One action as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: ActionKind,
    pub incident: Incident,
    pub notes: Vec<String>,
    /// The first path segment when the sink's endpoint had one
    /// (`{url}/a/incidents/{key}` gives `a`): tells instances apart.
    pub via: Option<String>,
    /// When it was recorded.
    pub at: Instant,
}

/// An injected failure: every request is answered with it.
#[derive(Debug, Clone, Copy)]
struct Fault {
    status: StatusCode,
    retry_after_secs: Option<u64>,
}

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    changed: Arc<Notify>,
    fault: Arc<Mutex<Option<Fault>>>,
    /// Requests answered with the injected failure: incident key, when.
    rejected: Arc<Mutex<Vec<(String, Instant)>>>,
    /// Record each action, then answer only after this long (an ITSM that
    /// applies a request and answers after the client gave up).
    late: Arc<Mutex<Option<Duration>>>,
    /// Keys whose record the ITSM lost (`forget`): looked up as 404 until
    /// written again.
    gone: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// A running receiver; stops when dropped.
pub struct IncidentReceiver {
    pub addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

async fn receive(State(s): State<Shared>, UrlPath(key): UrlPath<String>, Json(body): Json<serde_json::Value>) -> Response {
    answer(s, None, key, body).await
}

async fn receive_via(
    State(s): State<Shared>,
    UrlPath((via, key)): UrlPath<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    answer(s, Some(via), key, body).await
}

async fn answer(s: Shared, via: Option<String>, key: String, body: serde_json::Value) -> Response {
    let late = *s.late.lock().expect("receiver delay");
    let response = record(s, via, key, body);
    if let Some(d) = late.filter(|_| response.status().is_success()) {
        tokio::time::sleep(d).await;
    }
    response
}

async fn look_up(State(s): State<Shared>, UrlPath(key): UrlPath<String>) -> Response {
    find(&s, &key)
}

async fn look_up_via(State(s): State<Shared>, UrlPath((_via, key)): UrlPath<(String, String)>) -> Response {
    find(&s, &key)
}

/// `GET .../incidents/{key}`: the incident as last written, or 404.
fn find(s: &Shared, key: &str) -> Response {
    if let Some(f) = *s.fault.lock().expect("receiver fault") {
        return (f.status, "injected failure").into_response();
    }
    if s.gone.lock().expect("receiver gone").contains(key) {
        return (StatusCode::NOT_FOUND, "no such incident").into_response();
    }
    let log = s.log.lock().expect("receiver log");
    match log.iter().rev().find(|r| r.incident.key == key) {
        Some(r) => Json(serde_json::json!({ "incident": r.incident })).into_response(),
        None => (StatusCode::NOT_FOUND, "no such incident").into_response(),
    }
}

fn record(s: Shared, via: Option<String>, key: String, body: serde_json::Value) -> Response {
    if let Some(f) = *s.fault.lock().expect("receiver fault") {
        s.rejected.lock().expect("receiver rejections").push((key, Instant::now()));
        s.changed.notify_waiters();
        return match f.retry_after_secs {
            Some(secs) => (f.status, [(header::RETRY_AFTER, secs.to_string())], "injected failure").into_response(),
            None => (f.status, "injected failure").into_response(),
        };
    }
    let kind: Option<ActionKind> = serde_json::from_value(body["action"].clone()).ok();
    let incident: Option<Incident> = serde_json::from_value(body["incident"].clone()).ok();
    let notes: Vec<String> = serde_json::from_value(body["notes"].clone()).unwrap_or_default();
    match (kind, incident) {
        (Some(kind), Some(incident)) if incident.key == key => {
            s.gone.lock().expect("receiver gone").remove(&key);
            s.log.lock().expect("receiver log").push(Received { kind, incident, notes, via, at: Instant::now() });
            s.changed.notify_waiters();
            (StatusCode::OK, "ok").into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "expected {action, incident, notes} with incident.key matching the path").into_response(),
    }
}

impl IncidentReceiver {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<IncidentReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let stop = CancellationToken::new();
        let router = Router::new()
            .route("/incidents/{key}", put(receive).get(look_up))
            .route("/{via}/incidents/{key}", put(receive_via).get(look_up_via))
            .with_state(shared.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async move { s.cancelled().await }).await;
        });
        Ok(IncidentReceiver { addr, shared, stop })
    }

    /// Base URL for the sink's `endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answers every request with `status` (and `Retry-After`
    /// when given) and records nothing.
    pub fn fail_with(&self, status: StatusCode, retry_after_secs: Option<u64>) {
        *self.shared.fault.lock().expect("receiver fault") = Some(Fault { status, retry_after_secs });
    }

    /// Ends an injected failure or delay.
    pub fn heal(&self) {
        *self.shared.fault.lock().expect("receiver fault") = None;
        *self.shared.late.lock().expect("receiver delay") = None;
    }

    /// Loses the record of incident `key`: it is looked up as 404 until an
    /// action writes it again.
    pub fn forget(&self, key: &str) {
        self.shared.gone.lock().expect("receiver gone").insert(key.to_owned());
    }

    /// From now on, records every action and then answers only after `delay`.
    pub fn answer_late(&self, delay: Duration) {
        *self.shared.late.lock().expect("receiver delay") = Some(delay);
    }

    /// Requests answered with an injected failure so far.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.lock().expect("receiver rejections").len() as u64
    }

    /// Requests answered with an injected failure: incident key and arrival time.
    pub fn rejections(&self) -> Vec<(String, Instant)> {
        self.shared.rejected.lock().expect("receiver rejections").clone()
    }

    /// Everything received so far.
    pub fn log(&self) -> Vec<Received> {
        self.shared.log.lock().expect("receiver log").clone()
    }

    /// Waits until `done(log)` holds, re-checking on every received action and
    /// at least every 200 ms; gives up after `timeout` and returns the log.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Result<Vec<Received>, Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            let log = self.log();
            if done(&log) {
                return Ok(log);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(log);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

impl Drop for IncidentReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Keys of incidents opened, in order of first opening.
pub fn opened_keys(log: &[Received]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for r in log {
        if r.kind == ActionKind::Open && !keys.contains(&r.incident.key) {
            keys.push(r.incident.key.clone());
        }
    }
    keys
}

/// The last action received for each incident key.
pub fn latest(log: &[Received]) -> Vec<&Received> {
    let mut out: Vec<&Received> = Vec::new();
    for r in log.iter().rev() {
        if !out.iter().any(|o| o.incident.key == r.incident.key) {
            out.push(r);
        }
    }
    out.reverse();
    out
}
