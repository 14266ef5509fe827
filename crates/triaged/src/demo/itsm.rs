//! The demo's ITSM: an in-process endpoint speaking the `generic` sink
//! profile (`PUT /incidents/{key}`, and `GET` to look one up). It records
//! every action it receives, in order. The test kit wraps its router to play
//! an ITSM in trouble.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
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

/// What the endpoint recorded, shared with whoever watches it.
#[derive(Clone, Default)]
pub struct Records {
    log: Arc<Mutex<Vec<Received>>>,
    changed: Arc<Notify>,
}

impl Records {
    /// Everything received so far.
    pub fn log(&self) -> Vec<Received> {
        self.log.lock().expect("receiver log").clone()
    }

    /// Wakes whoever waits in [`IncidentReceiver::wait_for`].
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }
}

async fn receive(State(s): State<Records>, UrlPath(key): UrlPath<String>, Json(body): Json<serde_json::Value>) -> Response {
    record(&s, None, key, body)
}

async fn receive_via(
    State(s): State<Records>,
    UrlPath((via, key)): UrlPath<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    record(&s, Some(via), key, body)
}

async fn look_up(State(s): State<Records>, UrlPath(key): UrlPath<String>) -> Response {
    find(&s, &key)
}

async fn look_up_via(State(s): State<Records>, UrlPath((_via, key)): UrlPath<(String, String)>) -> Response {
    find(&s, &key)
}

/// `GET .../incidents/{key}`: the incident as last written, or 404.
fn find(s: &Records, key: &str) -> Response {
    let log = s.log.lock().expect("receiver log");
    match log.iter().rev().find(|r| r.incident.key == key) {
        Some(r) => Json(serde_json::json!({ "incident": r.incident })).into_response(),
        None => (StatusCode::NOT_FOUND, "no such incident").into_response(),
    }
}

fn record(s: &Records, via: Option<String>, key: String, body: serde_json::Value) -> Response {
    let kind: Option<ActionKind> = serde_json::from_value(body["action"].clone()).ok();
    let incident: Option<Incident> = serde_json::from_value(body["incident"].clone()).ok();
    let notes: Vec<String> = serde_json::from_value(body["notes"].clone()).unwrap_or_default();
    match (kind, incident) {
        (Some(kind), Some(incident)) if incident.key == key => {
            s.log.lock().expect("receiver log").push(Received { kind, incident, notes, via, at: Instant::now() });
            s.notify();
            (StatusCode::OK, "ok").into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "expected {action, incident, notes} with incident.key matching the path").into_response(),
    }
}

/// The generic profile's routes over `records`.
pub fn router(records: Records) -> Router {
    Router::new()
        .route("/incidents/{key}", put(receive).get(look_up))
        .route("/{via}/incidents/{key}", put(receive_via).get(look_up_via))
        .with_state(records)
}

/// A running receiver; stops when dropped.
pub struct IncidentReceiver {
    pub addr: SocketAddr,
    records: Records,
    stop: CancellationToken,
}

impl IncidentReceiver {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<IncidentReceiver> {
        IncidentReceiver::start_with(Records::default(), |r| r).await
    }

    /// Like [`IncidentReceiver::start`], recording into `records`, with
    /// `wrap` applied to the router (a layer that injects faults, say).
    pub async fn start_with(records: Records, wrap: impl FnOnce(Router) -> Router) -> std::io::Result<IncidentReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let router = wrap(router(records.clone()));
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async move { s.cancelled().await }).await;
        });
        Ok(IncidentReceiver { addr, records, stop })
    }

    /// Base URL for the sink's `endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it recorded.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Everything received so far.
    pub fn log(&self) -> Vec<Received> {
        self.records.log()
    }

    /// Waits until `done(log)` holds, re-checking on every received action and
    /// at least every 200 ms; gives up after `timeout` and returns the log.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Result<Vec<Received>, Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.records.changed.notified();
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
