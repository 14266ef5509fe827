//! An in-process ITSM endpoint speaking the `generic` sink profile
//! (`PUT /incidents/{key}`), used by `triaged demo` and the end-to-end tests.
//! It records every action it receives, in order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
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
}

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    changed: Arc<Notify>,
}

/// A running receiver; stops when dropped.
pub struct IncidentReceiver {
    pub addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

async fn receive(
    State(s): State<Shared>,
    UrlPath(key): UrlPath<String>,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, &'static str) {
    let kind: Option<ActionKind> = serde_json::from_value(body["action"].clone()).ok();
    let incident: Option<Incident> = serde_json::from_value(body["incident"].clone()).ok();
    let notes: Vec<String> = serde_json::from_value(body["notes"].clone()).unwrap_or_default();
    match (kind, incident) {
        (Some(kind), Some(incident)) if incident.key == key => {
            s.log.lock().expect("receiver log").push(Received { kind, incident, notes });
            s.changed.notify_waiters();
            (StatusCode::OK, "ok")
        }
        _ => (StatusCode::BAD_REQUEST, "expected {action, incident, notes} with incident.key matching the path"),
    }
}

impl IncidentReceiver {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<IncidentReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let stop = CancellationToken::new();
        let router = Router::new().route("/incidents/{key}", put(receive)).with_state(shared.clone());
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
