//! The demo's in-process ITSM ([`triaged::demo::itsm`]) with faults on
//! demand: answer every request with an error status (and `Retry-After`),
//! recording nothing, until told to heal; record and then answer late; lose
//! a record.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use triaged::demo::itsm::{latest, opened_keys, Received, Records};

/// An injected failure: every request is answered with it.
#[derive(Debug, Clone, Copy)]
struct Fault {
    status: StatusCode,
    retry_after_secs: Option<u64>,
}

#[derive(Clone, Default)]
struct Faults {
    fault: Arc<Mutex<Option<Fault>>>,
    /// Requests answered with the injected failure: incident key, when.
    rejected: Arc<Mutex<Vec<(String, Instant)>>>,
    /// Record each action, then answer only after this long (an ITSM that
    /// applies a request and answers after the client gave up).
    late: Arc<Mutex<Option<Duration>>>,
    /// Keys whose record the ITSM lost (`forget`): looked up as 404 until
    /// written again.
    gone: Arc<Mutex<HashSet<String>>>,
    records: Records,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("receiver fault state")
}

/// The incident key: the last segment of `.../incidents/{key}`.
fn key_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

async fn inject(State(f): State<Faults>, req: Request, next: Next) -> Response {
    let key = key_of(req.uri().path());
    let writes = req.method() == Method::PUT;
    if let Some(fault) = *lock(&f.fault) {
        if writes {
            lock(&f.rejected).push((key, Instant::now()));
            f.records.notify();
        }
        return match fault.retry_after_secs {
            Some(secs) => (fault.status, [(header::RETRY_AFTER, secs.to_string())], "injected failure").into_response(),
            None => (fault.status, "injected failure").into_response(),
        };
    }
    if !writes && lock(&f.gone).contains(&key) {
        return (StatusCode::NOT_FOUND, "no such incident").into_response();
    }
    let late = *lock(&f.late);
    let response = next.run(req).await;
    if writes && response.status().is_success() {
        lock(&f.gone).remove(&key);
        if let Some(d) = late {
            tokio::time::sleep(d).await;
        }
    }
    response
}

/// A running receiver that can play an ITSM in trouble; stops when dropped.
pub struct IncidentReceiver {
    inner: triaged::demo::itsm::IncidentReceiver,
    faults: Faults,
}

impl std::ops::Deref for IncidentReceiver {
    type Target = triaged::demo::itsm::IncidentReceiver;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl IncidentReceiver {
    /// Listens on 127.0.0.1 on a free port; healthy until told otherwise.
    pub async fn start() -> std::io::Result<IncidentReceiver> {
        let records = Records::default();
        let faults = Faults { records: records.clone(), ..Faults::default() };
        let layer = middleware::from_fn_with_state(faults.clone(), inject);
        let inner = triaged::demo::itsm::IncidentReceiver::start_with(records, move |r| r.layer(layer)).await?;
        Ok(IncidentReceiver { inner, faults })
    }

    /// From now on, answers every request with `status` (and `Retry-After`
    /// when given) and records nothing.
    pub fn fail_with(&self, status: StatusCode, retry_after_secs: Option<u64>) {
        *lock(&self.faults.fault) = Some(Fault { status, retry_after_secs });
    }

    /// Ends an injected failure or delay.
    pub fn heal(&self) {
        *lock(&self.faults.fault) = None;
        *lock(&self.faults.late) = None;
    }

    /// Loses the record of incident `key`: it is looked up as 404 until an
    /// action writes it again.
    pub fn forget(&self, key: &str) {
        lock(&self.faults.gone).insert(key.to_owned());
    }

    /// From now on, records every action and then answers only after `delay`.
    pub fn answer_late(&self, delay: Duration) {
        *lock(&self.faults.late) = Some(delay);
    }

    /// Requests answered with an injected failure so far.
    pub fn rejected(&self) -> u64 {
        lock(&self.faults.rejected).len() as u64
    }

    /// Requests answered with an injected failure: incident key and arrival time.
    pub fn rejections(&self) -> Vec<(String, Instant)> {
        lock(&self.faults.rejected).clone()
    }
}
