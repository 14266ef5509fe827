//! An in-process ITSM that plays one of the sink's three counterparts closely
//! enough for its profile code: the generic endpoint (`PUT`/`GET
//! /incidents/{key}`), the ServiceNow Table API (`/api/now/table/incident`)
//! or the PagerDuty Events API v2 (`POST /v2/enqueue`). It keeps its
//! records the way that ITSM would and logs every request it receives with
//! what the request means there, so a test can say exactly what the ITSM
//! acknowledged.
//!
//! A test can also hold the next request that matches a predicate: it is
//! received and logged, and neither applied nor answered until the test
//! [releases](Mimic::release) or [abandons](Mimic::abandon) it (after
//! killing the daemon that sent it). A request takes effect when it is
//! answered, so an abandoned one left no trace in the records.
//!
//! Every wait is a notification (the log's version, on a watch channel)
//! bounded by a timeout.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, watch};

/// The ITSM a [`Mimic`] plays: one per sink profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Itsm {
    Generic,
    ServiceNow,
    PagerDuty,
}

impl Itsm {
    /// The sink profile that speaks to it (`profile = "..."` in `[sink]`).
    pub fn profile(self) -> &'static str {
        match self {
            Itsm::Generic => "generic",
            Itsm::ServiceNow => "servicenow",
            Itsm::PagerDuty => "pagerduty",
        }
    }

    /// What the request that opens an incident means there.
    pub fn opening(self) -> Meaning {
        match self {
            Itsm::Generic => Meaning::Open,
            Itsm::ServiceNow => Meaning::Create,
            Itsm::PagerDuty => Meaning::Trigger,
        }
    }
}

/// What a request means to the ITSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Reads a record (generic `GET`, ServiceNow query or `GET` by sys_id).
    Lookup,
    /// Generic `action: open`.
    Open,
    /// Generic `action: update`; a ServiceNow `PATCH` that changes no state.
    Update,
    /// Generic `action: resolve`; a ServiceNow `PATCH` to state 6 or 7;
    /// a PagerDuty `resolve` event.
    Resolve,
    /// Generic `action: reopen`; a ServiceNow `PATCH` to state 2.
    Reopen,
    /// A ServiceNow `POST`: a new record.
    Create,
    /// A PagerDuty `trigger` event (opens an incident, or adds an alert to an open one).
    Trigger,
    /// A PagerDuty `acknowledge` event.
    Acknowledge,
    /// Nothing this ITSM knows (answered 4xx).
    Unknown,
}

impl Meaning {
    pub fn as_str(self) -> &'static str {
        match self {
            Meaning::Lookup => "lookup",
            Meaning::Open => "open",
            Meaning::Update => "update",
            Meaning::Resolve => "resolve",
            Meaning::Reopen => "reopen",
            Meaning::Create => "create",
            Meaning::Trigger => "trigger",
            Meaning::Acknowledge => "acknowledge",
            Meaning::Unknown => "unknown",
        }
    }
}

/// Where a logged request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Received, being handled.
    Received,
    /// Received and held by [`Mimic::hold`]: not applied, not answered.
    Held,
    /// Applied (when 2xx) and answered with this status.
    Answered(u16),
    /// Held, then given up by [`Mimic::abandon`]: never applied.
    Abandoned,
}

/// One request as the ITSM logged it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// 1, 2, ... in order of arrival.
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub meaning: Meaning,
    /// The incident key it is about: the generic path's key, ServiceNow's
    /// `correlation_id` (found through the sys_id for a `PATCH`), PagerDuty's `dedup_key`.
    pub key: Option<String>,
    /// The incident title it carries (generic `incident.title`, ServiceNow
    /// `short_description`, PagerDuty `payload.summary`).
    pub title: Option<String>,
    /// When it arrived, since the mimic started.
    pub at: Duration,
    /// When it was answered, since the mimic started.
    pub answered_at: Option<Duration>,
    pub outcome: Outcome,
}

impl Exchange {
    /// Answered with a 2xx status (and so applied).
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Answered(s) if (200..300).contains(&s))
    }

    /// Whether this is `meaning` for incident `key`.
    pub fn is(&self, meaning: Meaning, key: &str) -> bool {
        self.meaning == meaning && self.key.as_deref() == Some(key)
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} +{:.3}s {} {} {} key={} ",
            self.seq,
            self.at.as_secs_f64(),
            self.method,
            self.path,
            self.meaning.as_str(),
            self.key.as_deref().unwrap_or("-")
        )?;
        match self.outcome {
            Outcome::Received => write!(f, "received"),
            Outcome::Held => write!(f, "held"),
            Outcome::Answered(s) => write!(f, "answered {s}"),
            Outcome::Abandoned => write!(f, "abandoned"),
        }
    }
}

/// Whether the ITSM holds an incident as open or as resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Open,
    Resolved,
}

/// A ServiceNow incident record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnRecord {
    pub sys_id: String,
    pub number: String,
    pub correlation_id: String,
    pub short_description: String,
    /// `1` new, `2` in progress, `6` resolved, `7` closed, `8` canceled.
    pub state: String,
    pub close_code: Option<String>,
    pub close_notes: Option<String>,
    /// The work notes journal, oldest first.
    pub work_notes: Vec<String>,
    /// Every other field written, as sent.
    pub fields: Map<String, Value>,
}

impl SnRecord {
    fn closed(&self) -> bool {
        matches!(self.state.as_str(), "6" | "7" | "8")
    }

    fn to_json(&self) -> Value {
        let mut o = self.fields.clone();
        o.insert("sys_id".into(), self.sys_id.clone().into());
        o.insert("number".into(), self.number.clone().into());
        o.insert("correlation_id".into(), self.correlation_id.clone().into());
        o.insert("short_description".into(), self.short_description.clone().into());
        o.insert("state".into(), self.state.clone().into());
        o.insert("close_code".into(), self.close_code.clone().unwrap_or_default().into());
        o.insert("close_notes".into(), self.close_notes.clone().unwrap_or_default().into());
        o.insert("work_notes".into(), self.work_notes.join("\n\n").into());
        Value::Object(o)
    }
}

/// A PagerDuty incident's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdStatus {
    Triggered,
    Acknowledged,
    Resolved,
}

/// A PagerDuty incident: what one page opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdIncident {
    /// 1, 2, ... in order of opening.
    pub number: u64,
    pub dedup_key: String,
    pub status: PdStatus,
    /// Trigger events folded into it, the first included.
    pub alerts: u32,
}

/// A generic-profile record: the latest body written under a key.
#[derive(Debug, Clone)]
pub struct GenericRecord {
    pub body: Value,
    pub state: RecordState,
}

/// What the ITSM holds.
#[derive(Default)]
struct Books {
    generic: HashMap<String, GenericRecord>,
    servicenow: Vec<SnRecord>,
    pagerduty: Vec<PdIncident>,
}

/// A request as the handlers see it.
struct Req {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    authorization: Option<String>,
    body: Option<Value>,
}

/// What a request is about, as classified on arrival.
struct Parsed {
    meaning: Meaning,
    key: Option<String>,
    title: Option<String>,
}

const SN_TABLE: &str = "/api/now/table/incident";

fn str_of<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `correlation_id=VALUE` of a ServiceNow encoded query (`^^` is a literal `^`).
fn correlation_of(query: &str) -> Option<String> {
    let value = query.strip_prefix("correlation_id=")?;
    // A single `^` would start another term, which this ITSM does not support.
    if value.replace("^^", "").contains('^') {
        return None;
    }
    Some(value.replace("^^", "^"))
}

fn sn_error(status: StatusCode, message: &str) -> (StatusCode, Value) {
    (status, json!({ "error": { "message": message, "detail": message }, "status": "failure" }))
}

fn pd_invalid(message: &str) -> (StatusCode, Value) {
    (StatusCode::BAD_REQUEST, json!({ "status": "invalid event", "message": "Event object is invalid", "errors": [message] }))
}

impl Books {
    fn sn_by_sys_id(&self, sys_id: &str) -> Option<&SnRecord> {
        self.servicenow.iter().find(|r| r.sys_id == sys_id)
    }

    fn classify(&self, itsm: Itsm, req: &Req) -> Parsed {
        let body = req.body.as_ref().unwrap_or(&Value::Null);
        let unknown = Parsed { meaning: Meaning::Unknown, key: None, title: None };
        match itsm {
            Itsm::Generic => {
                let Some(key) = req.path.strip_prefix("/incidents/").filter(|k| !k.is_empty() && !k.contains('/')) else {
                    return unknown;
                };
                let meaning = match (&req.method, str_of(body, "/action")) {
                    (&Method::GET, _) => Meaning::Lookup,
                    (&Method::PUT, Some("open")) => Meaning::Open,
                    (&Method::PUT, Some("update")) => Meaning::Update,
                    (&Method::PUT, Some("resolve")) => Meaning::Resolve,
                    (&Method::PUT, Some("reopen")) => Meaning::Reopen,
                    _ => Meaning::Unknown,
                };
                Parsed { meaning, key: Some(key.to_owned()), title: str_of(body, "/incident/title").map(str::to_owned) }
            }
            Itsm::ServiceNow => {
                let title = str_of(body, "/short_description").map(str::to_owned);
                if req.path == SN_TABLE {
                    return match req.method {
                        Method::GET => Parsed {
                            meaning: Meaning::Lookup,
                            key: req.query.get("sysparm_query").and_then(|q| correlation_of(q)),
                            title: None,
                        },
                        Method::POST => Parsed { meaning: Meaning::Create, key: str_of(body, "/correlation_id").map(str::to_owned), title },
                        _ => unknown,
                    };
                }
                let Some(sys_id) = req.path.strip_prefix(&format!("{SN_TABLE}/")).filter(|s| !s.contains('/')) else {
                    return unknown;
                };
                let key = self.sn_by_sys_id(sys_id).map(|r| r.correlation_id.clone());
                let meaning = match (&req.method, str_of(body, "/state")) {
                    (&Method::GET, _) => Meaning::Lookup,
                    (&Method::PATCH | &Method::PUT, Some("6" | "7")) => Meaning::Resolve,
                    (&Method::PATCH | &Method::PUT, Some("2")) => Meaning::Reopen,
                    (&Method::PATCH | &Method::PUT, _) => Meaning::Update,
                    _ => Meaning::Unknown,
                };
                Parsed { meaning, key, title }
            }
            Itsm::PagerDuty => {
                if req.method != Method::POST || req.path != "/v2/enqueue" {
                    return unknown;
                }
                let meaning = match str_of(body, "/event_action") {
                    Some("trigger") => Meaning::Trigger,
                    Some("acknowledge") => Meaning::Acknowledge,
                    Some("resolve") => Meaning::Resolve,
                    _ => Meaning::Unknown,
                };
                Parsed {
                    meaning,
                    key: str_of(body, "/dedup_key").map(str::to_owned),
                    title: str_of(body, "/payload/summary").map(str::to_owned),
                }
            }
        }
    }

    /// Applies `req` and says what to answer.
    fn apply(&mut self, itsm: Itsm, req: &Req, parsed: &Parsed, routing_key: Option<&str>) -> (StatusCode, Value) {
        match itsm {
            Itsm::Generic => self.generic(req, parsed),
            Itsm::ServiceNow => self.servicenow(req, parsed),
            Itsm::PagerDuty => self.pagerduty(req, parsed, routing_key),
        }
    }

    fn generic(&mut self, req: &Req, parsed: &Parsed) -> (StatusCode, Value) {
        let Some(key) = &parsed.key else { return (StatusCode::NOT_FOUND, json!({ "error": "no such route" })) };
        if parsed.meaning == Meaning::Lookup {
            return match self.generic.get(key) {
                Some(r) => {
                    let mut incident = r.body["incident"].clone();
                    let state = if r.state == RecordState::Resolved { "resolved" } else { "open" };
                    if let Some(o) = incident.as_object_mut() {
                        o.insert("state".into(), state.into());
                    }
                    (StatusCode::OK, json!({ "incident": incident }))
                }
                None => (StatusCode::NOT_FOUND, json!({ "error": "no such incident" })),
            };
        }
        let body = req.body.clone().unwrap_or(Value::Null);
        if parsed.meaning == Meaning::Unknown || str_of(&body, "/incident/key") != Some(key.as_str()) {
            return (StatusCode::BAD_REQUEST, json!({ "error": "expected {action, incident, notes} with incident.key matching the path" }));
        }
        let state = if parsed.meaning == Meaning::Resolve { RecordState::Resolved } else { RecordState::Open };
        self.generic.insert(key.clone(), GenericRecord { body, state });
        (StatusCode::OK, json!({ "status": "ok" }))
    }

    fn servicenow(&mut self, req: &Req, parsed: &Parsed) -> (StatusCode, Value) {
        let body = req.body.as_ref().and_then(Value::as_object).cloned().unwrap_or_default();
        match (parsed.meaning, req.path.as_str()) {
            (Meaning::Lookup, SN_TABLE) => {
                let Some(key) = &parsed.key else {
                    return sn_error(StatusCode::BAD_REQUEST, "only sysparm_query=correlation_id=... is supported");
                };
                let fields: Option<Vec<&str>> = req.query.get("sysparm_fields").map(|f| f.split(',').map(str::trim).collect());
                let limit = req.query.get("sysparm_limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
                let rows: Vec<Value> = self
                    .servicenow
                    .iter()
                    .filter(|r| &r.correlation_id == key)
                    .take(limit)
                    .map(|r| {
                        let full = r.to_json();
                        match &fields {
                            None => full,
                            Some(fs) => {
                                Value::Object(fs.iter().map(|f| ((*f).to_owned(), full.get(*f).cloned().unwrap_or(json!("")))).collect())
                            }
                        }
                    })
                    .collect();
                (StatusCode::OK, json!({ "result": rows }))
            }
            (Meaning::Lookup, path) => {
                let sys_id = path.rsplit('/').next().unwrap_or_default();
                match self.sn_by_sys_id(sys_id) {
                    Some(r) => (StatusCode::OK, json!({ "result": r.to_json() })),
                    None => sn_error(StatusCode::NOT_FOUND, "No Record found"),
                }
            }
            (Meaning::Create, _) => {
                let Some(correlation_id) = parsed.key.clone() else {
                    return sn_error(StatusCode::BAD_REQUEST, "correlation_id is required by this instance");
                };
                let n = self.servicenow.len() as u64 + 1;
                let mut record = SnRecord {
                    sys_id: format!("{:032x}", 0x5eed_0000_0000_u64 + n),
                    number: format!("INC{:07}", 10_000 + n),
                    correlation_id,
                    short_description: String::new(),
                    state: "1".into(),
                    close_code: None,
                    close_notes: None,
                    work_notes: Vec::new(),
                    fields: Map::new(),
                };
                sn_write(&mut record, body);
                let answer = json!({ "result": record.to_json() });
                self.servicenow.push(record);
                (StatusCode::CREATED, answer)
            }
            (Meaning::Update | Meaning::Resolve | Meaning::Reopen, path) => {
                let sys_id = path.rsplit('/').next().unwrap_or_default();
                match self.servicenow.iter_mut().find(|r| r.sys_id == sys_id) {
                    Some(record) => {
                        sn_write(record, body);
                        (StatusCode::OK, json!({ "result": record.to_json() }))
                    }
                    None => sn_error(StatusCode::NOT_FOUND, "No Record found"),
                }
            }
            _ => sn_error(StatusCode::BAD_REQUEST, "not a Table API request for incident"),
        }
    }

    fn pagerduty(&mut self, req: &Req, parsed: &Parsed, routing_key: Option<&str>) -> (StatusCode, Value) {
        if parsed.meaning == Meaning::Unknown {
            return match &req.body {
                Some(_) if req.path == "/v2/enqueue" => pd_invalid("event_action must be trigger, acknowledge or resolve"),
                Some(_) => (StatusCode::NOT_FOUND, json!({ "status": "not found" })),
                None => pd_invalid("the body is not JSON"),
            };
        }
        let body = req.body.as_ref().unwrap_or(&Value::Null);
        match (str_of(body, "/routing_key"), routing_key) {
            (None, _) => return pd_invalid("routing_key is missing"),
            (Some(got), Some(want)) if got != want => return pd_invalid("routing_key is not an integration key of this account"),
            _ => {}
        }
        let key = match (&parsed.key, parsed.meaning) {
            (Some(k), _) => k.clone(),
            // PagerDuty makes one up for a trigger without a dedup_key.
            (None, Meaning::Trigger) => format!("pd-generated-{}", self.pagerduty.len() + 1),
            (None, _) => return pd_invalid("dedup_key is required to acknowledge or resolve"),
        };
        match parsed.meaning {
            Meaning::Trigger => {
                if ["/payload/summary", "/payload/source", "/payload/severity"].iter().any(|p| str_of(body, p).is_none()) {
                    return pd_invalid("payload.summary, payload.source and payload.severity are required");
                }
                let n = self.pagerduty.len() as u64 + 1;
                match self.pagerduty.iter_mut().rev().find(|i| i.dedup_key == key) {
                    Some(i) if i.status != PdStatus::Resolved => i.alerts += 1,
                    // Unknown, or resolved: a new incident, a new page.
                    _ => self.pagerduty.push(PdIncident { number: n, dedup_key: key.clone(), status: PdStatus::Triggered, alerts: 1 }),
                }
            }
            Meaning::Acknowledge | Meaning::Resolve => {
                // Events for no open incident are accepted and change nothing.
                if let Some(i) = self.pagerduty.iter_mut().rev().find(|i| i.dedup_key == key && i.status != PdStatus::Resolved) {
                    i.status = if parsed.meaning == Meaning::Resolve { PdStatus::Resolved } else { PdStatus::Acknowledged };
                }
            }
            _ => unreachable!("classified as a PagerDuty event"),
        }
        (StatusCode::ACCEPTED, json!({ "status": "success", "message": "Event processed", "dedup_key": key }))
    }
}

/// ServiceNow's default priority lookup: impact x urgency, 1..3 each.
fn sn_priority(impact: &str, urgency: &str) -> Option<&'static str> {
    Some(match (impact, urgency) {
        ("1", "1") => "1",
        ("1", "2") | ("2", "1") => "2",
        ("1", "3") | ("2", "2") | ("3", "1") => "3",
        ("2", "3") | ("3", "2") => "4",
        ("3", "3") => "5",
        _ => return None,
    })
}

/// Writes a ServiceNow request body into `record`: work notes are appended
/// to the journal, every other field replaces what was there, and a new
/// impact or urgency sets the priority as ServiceNow's default lookup does.
fn sn_write(record: &mut SnRecord, body: Map<String, Value>) {
    let sets_priority = body.contains_key("impact") || body.contains_key("urgency");
    for (field, value) in body {
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match field.as_str() {
            "sys_id" | "number" => {}
            "correlation_id" => record.correlation_id = text,
            "short_description" => record.short_description = text,
            "state" => record.state = text,
            "close_code" => record.close_code = Some(text),
            "close_notes" => record.close_notes = Some(text),
            "work_notes" if !text.is_empty() => record.work_notes.push(text),
            "work_notes" => {}
            _ => {
                record.fields.insert(field, value);
            }
        }
    }
    if sets_priority {
        let text = |f: &str| record.fields.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(p) = sn_priority(&text("impact"), &text("urgency")) {
            record.fields.insert("priority".into(), p.into());
        }
    }
}

type Predicate = Box<dyn Fn(&Exchange) -> bool + Send + Sync>;

/// What becomes of a held request.
enum Fate {
    Release,
    Abandon,
}

struct Inner {
    itsm: Itsm,
    started: Instant,
    log: Vec<Exchange>,
    books: Books,
    /// The armed hold: the next request it matches is held.
    hold: Option<Predicate>,
    /// The request being held, and how to let it go.
    held: Option<(u64, oneshot::Sender<Fate>)>,
    /// The `Authorization` header every request must carry, when set.
    authorization: Option<String>,
    /// PagerDuty: the only routing key accepted, when set.
    routing_key: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every change of the log; waiters watch it.
    version: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("mimic state")
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let req = Req {
        method,
        path: uri.path().to_owned(),
        query: Query::<HashMap<String, String>>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default(),
        authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
        body: serde_json::from_slice(&body).ok(),
    };
    let (seq, parsed, fate) = {
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let parsed = inner.books.classify(inner.itsm, &req);
        let seq = inner.log.len() as u64 + 1;
        let mut exchange = Exchange {
            seq,
            method: req.method.to_string(),
            path: req.path.clone(),
            meaning: parsed.meaning,
            key: parsed.key.clone(),
            title: parsed.title.clone(),
            at: inner.started.elapsed(),
            answered_at: None,
            outcome: Outcome::Received,
        };
        let hold = inner.held.is_none() && inner.hold.as_ref().is_some_and(|p| p(&exchange));
        let fate = hold.then(|| {
            inner.hold = None;
            exchange.outcome = Outcome::Held;
            let (tx, rx) = oneshot::channel();
            inner.held = Some((seq, tx));
            rx
        });
        inner.log.push(exchange);
        (seq, parsed, fate)
    };
    shared.changed();
    if let Some(fate) = fate {
        if !matches!(fate.await, Ok(Fate::Release)) {
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "abandoned" }))).into_response();
        }
    }
    let (status, answer) = {
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let (status, answer) = match &inner.authorization {
            Some(want) if req.authorization.as_deref() != Some(want.as_str()) => {
                (StatusCode::UNAUTHORIZED, json!({ "error": { "message": "User Not Authenticated" }, "status": "failure" }))
            }
            _ => inner.books.apply(inner.itsm, &req, &parsed, inner.routing_key.as_deref()),
        };
        let at = inner.started.elapsed();
        let exchange = &mut inner.log[seq as usize - 1];
        exchange.outcome = Outcome::Answered(status.as_u16());
        exchange.answered_at = Some(at);
        (status, answer)
    };
    shared.changed();
    (status, Json(answer)).into_response()
}

/// A running ITSM double on 127.0.0.1; stops when dropped.
pub struct Mimic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Mimic {
    /// Plays `itsm` on a free port of 127.0.0.1, with no records.
    pub async fn start(itsm: Itsm) -> std::io::Result<Mimic> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                itsm,
                started: Instant::now(),
                log: Vec::new(),
                books: Books::default(),
                hold: None,
                held: None,
                authorization: None,
                routing_key: None,
            }),
            version: watch::channel(0).0,
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Mimic { addr, shared, stop: Some(stop) })
    }

    /// The ITSM it plays.
    pub fn itsm(&self) -> Itsm {
        self.shared.lock().itsm
    }

    /// Base URL for the sink's `endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answers 401 to a request without exactly this
    /// `Authorization` header (`Bearer ...`).
    pub fn expect_authorization(&self, value: &str) {
        self.shared.lock().authorization = Some(value.to_owned());
    }

    /// PagerDuty: from now on, refuses events with another routing key.
    pub fn expect_routing_key(&self, key: &str) {
        self.shared.lock().routing_key = Some(key.to_owned());
    }

    /// Time since the mimic started, on the clock of [`Exchange::at`].
    pub fn elapsed(&self) -> Duration {
        self.shared.lock().started.elapsed()
    }

    /// Holds the next request `matches` accepts (one request; arming again
    /// replaces the predicate; while one is held, others pass): it is
    /// logged as [`Outcome::Held`] and neither applied nor answered until
    /// [`release`](Mimic::release) or [`abandon`](Mimic::abandon).
    pub fn hold(&self, matches: impl Fn(&Exchange) -> bool + Send + Sync + 'static) {
        self.shared.lock().hold = Some(Box::new(matches));
    }

    /// Waits until a request is held and returns it; after `timeout`,
    /// disarms the hold and returns `None`.
    pub async fn held(&self, timeout: Duration) -> Option<Exchange> {
        let held = self.wait_for(timeout, |m| {
            let inner = m.shared.lock();
            inner.held.as_ref().map(|(seq, _)| inner.log[*seq as usize - 1].clone())
        });
        let held = held.await;
        if held.is_none() {
            self.shared.lock().hold = None;
        }
        held
    }

    /// Lets the held request through: it is applied and answered. `false`
    /// when none is held.
    pub fn release(&self) -> bool {
        let held = self.shared.lock().held.take();
        held.is_some_and(|(_, fate)| fate.send(Fate::Release).is_ok())
    }

    /// Gives the held request up, as its sender is gone: it is logged as
    /// [`Outcome::Abandoned`] and never applied. Returns it, if one was held.
    pub fn abandon(&self) -> Option<Exchange> {
        let abandoned = {
            let mut inner = self.shared.lock();
            let (seq, fate) = inner.held.take()?;
            let exchange = &mut inner.log[seq as usize - 1];
            exchange.outcome = Outcome::Abandoned;
            let _ = fate.send(Fate::Abandon);
            exchange.clone()
        };
        self.shared.changed();
        Some(abandoned)
    }

    /// Re-evaluates `check` on every change of the log until it gives a
    /// value; `None` after `timeout`.
    pub async fn wait_for<T>(&self, timeout: Duration, mut check: impl FnMut(&Mimic) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut version = self.shared.version.subscribe();
        loop {
            version.borrow_and_update();
            if let Some(v) = check(self) {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return check(self),
            }
        }
    }

    /// Waits until a request that `matches` accepts has been answered with
    /// 2xx (the first such in the log); `None` after `timeout`.
    pub async fn answered(&self, timeout: Duration, matches: impl Fn(&Exchange) -> bool) -> Option<Exchange> {
        self.wait_for(timeout, |m| m.shared.lock().log.iter().find(|x| x.succeeded() && matches(x)).cloned()).await
    }

    /// Every request so far, in order of arrival.
    pub fn log(&self) -> Vec<Exchange> {
        self.shared.lock().log.clone()
    }

    /// The requests about incident `key`, one line each.
    pub fn transcript(&self, key: &str) -> String {
        let inner = self.shared.lock();
        inner.log.iter().filter(|x| x.key.as_deref() == Some(key)).map(|x| format!("{x}\n")).collect()
    }

    /// What the ITSM acknowledged for `key`: the meaning of every request
    /// about it answered 2xx, lookups left out, in order of answer.
    pub fn actions(&self, key: &str) -> Vec<Meaning> {
        let inner = self.shared.lock();
        let mut done: Vec<&Exchange> =
            inner.log.iter().filter(|x| x.succeeded() && x.meaning != Meaning::Lookup && x.key.as_deref() == Some(key)).collect();
        done.sort_by_key(|x| x.answered_at);
        done.iter().map(|x| x.meaning).collect()
    }

    /// ServiceNow: records created with `correlation_id` `key`.
    pub fn created(&self, key: &str) -> usize {
        self.shared.lock().books.servicenow.iter().filter(|r| r.correlation_id == key).count()
    }

    /// ServiceNow: the records with `correlation_id` `key`, oldest first.
    pub fn sn_records(&self, key: &str) -> Vec<SnRecord> {
        self.shared.lock().books.servicenow.iter().filter(|r| r.correlation_id == key).cloned().collect()
    }

    /// ServiceNow: a person edits the latest record of `key` in the UI
    /// (`state` "7" closes it, `assigned_to` takes it, `priority` re-rates
    /// it). Not a request: nothing is logged. False when there is no record.
    pub fn sn_operator(&self, key: &str, fields: Value) -> bool {
        let mut inner = self.shared.lock();
        let Some(record) = inner.books.servicenow.iter_mut().rev().find(|r| r.correlation_id == key) else { return false };
        let Value::Object(fields) = fields else { return false };
        for (field, value) in fields {
            match field.as_str() {
                "state" => record.state = value.as_str().unwrap_or_default().to_owned(),
                _ => {
                    record.fields.insert(field, value);
                }
            }
        }
        drop(inner);
        true
    }

    /// PagerDuty: the on-call resolves the open incident of `dedup_key` in
    /// the UI. Not a request: nothing is logged. False when none is open.
    pub fn pd_resolve_by_hand(&self, dedup_key: &str) -> bool {
        let mut inner = self.shared.lock();
        let open = inner.books.pagerduty.iter_mut().rev().find(|i| i.dedup_key == dedup_key && i.status != PdStatus::Resolved);
        open.map(|i| i.status = PdStatus::Resolved).is_some()
    }

    /// PagerDuty: incidents opened (pages) for any key.
    pub fn pages(&self) -> usize {
        self.shared.lock().books.pagerduty.len()
    }

    /// PagerDuty: incidents opened (pages) under `dedup_key`.
    pub fn pages_for(&self, dedup_key: &str) -> usize {
        self.pd_incidents(dedup_key).len()
    }

    /// PagerDuty: the incidents under `dedup_key`, oldest first.
    pub fn pd_incidents(&self, dedup_key: &str) -> Vec<PdIncident> {
        self.shared.lock().books.pagerduty.iter().filter(|i| i.dedup_key == dedup_key).cloned().collect()
    }

    /// Generic: the latest body written under `key`, and its state.
    pub fn generic_record(&self, key: &str) -> Option<GenericRecord> {
        self.shared.lock().books.generic.get(key).cloned()
    }

    /// Whether the ITSM holds `key`'s latest incident as open or resolved;
    /// `None` when it holds nothing under it.
    pub fn state(&self, key: &str) -> Option<RecordState> {
        let inner = self.shared.lock();
        let resolved = |r: bool| if r { RecordState::Resolved } else { RecordState::Open };
        match inner.itsm {
            Itsm::Generic => inner.books.generic.get(key).map(|r| r.state),
            Itsm::ServiceNow => inner.books.servicenow.iter().rev().find(|r| r.correlation_id == key).map(|r| resolved(r.closed())),
            Itsm::PagerDuty => {
                inner.books.pagerduty.iter().rev().find(|i| i.dedup_key == key).map(|i| resolved(i.status == PdStatus::Resolved))
            }
        }
    }
}

impl Drop for Mimic {
    fn drop(&mut self) {
        if let Some((_, fate)) = self.shared.lock().held.take() {
            let _ = fate.send(Fate::Abandon);
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, query: &[(&str, &str)], body: Option<Value>) -> Req {
        Req {
            method,
            path: path.into(),
            query: query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            authorization: None,
            body,
        }
    }

    fn send(books: &mut Books, itsm: Itsm, r: &Req) -> (Meaning, StatusCode, Value) {
        let parsed = books.classify(itsm, r);
        let (status, body) = books.apply(itsm, r, &parsed, Some("rk"));
        (parsed.meaning, status, body)
    }

    fn pd(action: &str, key: &str) -> Req {
        let payload = json!({ "summary": "disk full on db-01", "source": "db-01", "severity": "error" });
        req(
            Method::POST,
            "/v2/enqueue",
            &[],
            Some(json!({ "routing_key": "rk", "event_action": action, "dedup_key": key, "payload": payload })),
        )
    }

    #[test]
    fn pagerduty_pages_again_only_for_a_trigger_after_a_resolve() {
        let mut b = Books::default();
        for action in ["trigger", "trigger", "acknowledge", "trigger"] {
            assert_eq!(send(&mut b, Itsm::PagerDuty, &pd(action, "k")).1, StatusCode::ACCEPTED);
        }
        assert_eq!(b.pagerduty.len(), 1, "repeat triggers fold into the open incident");
        assert_eq!(b.pagerduty[0].alerts, 3);
        assert_eq!(send(&mut b, Itsm::PagerDuty, &pd("resolve", "k")).0, Meaning::Resolve);
        assert_eq!(send(&mut b, Itsm::PagerDuty, &pd("resolve", "k")).1, StatusCode::ACCEPTED, "a repeat resolve is accepted");
        assert_eq!(b.pagerduty.len(), 1);
        send(&mut b, Itsm::PagerDuty, &pd("trigger", "k"));
        assert_eq!(b.pagerduty.len(), 2, "a trigger on a resolved key is a new page");
        assert_eq!(b.pagerduty[1].status, PdStatus::Triggered);
        send(&mut b, Itsm::PagerDuty, &pd("resolve", "unknown"));
        assert_eq!(b.pagerduty.len(), 2, "a resolve for no incident changes nothing");
    }

    #[test]
    fn pagerduty_refuses_what_the_events_api_refuses() {
        let mut b = Books::default();
        let mut wrong_key = pd("trigger", "k");
        wrong_key.body.as_mut().unwrap()["routing_key"] = "other".into();
        assert_eq!(send(&mut b, Itsm::PagerDuty, &wrong_key).1, StatusCode::BAD_REQUEST);
        let no_payload = req(Method::POST, "/v2/enqueue", &[], Some(json!({ "routing_key": "rk", "event_action": "trigger" })));
        assert_eq!(send(&mut b, Itsm::PagerDuty, &no_payload).1, StatusCode::BAD_REQUEST);
        assert!(b.pagerduty.is_empty());
    }

    #[test]
    fn servicenow_keeps_records_by_correlation_id() {
        let mut b = Books::default();
        let lookup = req(
            Method::GET,
            SN_TABLE,
            &[("sysparm_query", "correlation_id=trg-1"), ("sysparm_fields", "sys_id,state"), ("sysparm_limit", "1")],
            None,
        );
        let (meaning, status, body) = send(&mut b, Itsm::ServiceNow, &lookup);
        assert_eq!((meaning, status, body), (Meaning::Lookup, StatusCode::OK, json!({ "result": [] })));
        let create = req(
            Method::POST,
            SN_TABLE,
            &[],
            Some(json!({ "correlation_id": "trg-1", "short_description": "db down", "urgency": "1", "work_notes": "opened" })),
        );
        let (meaning, status, body) = send(&mut b, Itsm::ServiceNow, &create);
        assert_eq!((meaning, status), (Meaning::Create, StatusCode::CREATED));
        let sys_id = body["result"]["sys_id"].as_str().unwrap().to_owned();
        assert_eq!(body["result"]["state"], "1");
        let (_, _, found) = send(&mut b, Itsm::ServiceNow, &lookup);
        assert_eq!(found, json!({ "result": [{ "sys_id": sys_id, "state": "1" }] }));

        let path = format!("{SN_TABLE}/{sys_id}");
        let resolve = req(
            Method::PATCH,
            &path,
            &[],
            Some(json!({ "state": "6", "close_code": "Solved", "close_notes": "cleared", "work_notes": "done" })),
        );
        let parsed = b.classify(Itsm::ServiceNow, &resolve);
        assert_eq!((parsed.meaning, parsed.key.as_deref()), (Meaning::Resolve, Some("trg-1")), "the PATCH is known by its sys_id");
        assert_eq!(send(&mut b, Itsm::ServiceNow, &resolve).1, StatusCode::OK);
        let r = &b.servicenow[0];
        assert_eq!((r.state.as_str(), r.close_notes.as_deref()), ("6", Some("cleared")));
        assert_eq!(r.work_notes, ["opened", "done"], "work notes are a journal");
        assert_eq!(r.fields["urgency"], "1");

        let gone = req(Method::PATCH, &format!("{SN_TABLE}/{:032x}", 7), &[], Some(json!({ "state": "6" })));
        assert_eq!(send(&mut b, Itsm::ServiceNow, &gone).1, StatusCode::NOT_FOUND);
        assert_eq!(correlation_of("correlation_id=a^^b"), Some("a^b".into()));
        assert_eq!(correlation_of("correlation_id=a^active=true"), None);
    }

    #[test]
    fn generic_keeps_the_latest_body_and_state() {
        let mut b = Books::default();
        let put = |action: &str| {
            req(Method::PUT, "/incidents/trg-1", &[], Some(json!({ "action": action, "incident": { "key": "trg-1", "state": "open" } })))
        };
        let get = req(Method::GET, "/incidents/trg-1", &[], None);
        assert_eq!(send(&mut b, Itsm::Generic, &get).1, StatusCode::NOT_FOUND);
        assert_eq!(send(&mut b, Itsm::Generic, &put("open")).0, Meaning::Open);
        assert_eq!(send(&mut b, Itsm::Generic, &put("resolve")).0, Meaning::Resolve);
        let (meaning, status, body) = send(&mut b, Itsm::Generic, &get);
        assert_eq!((meaning, status), (Meaning::Lookup, StatusCode::OK));
        assert_eq!(body["incident"]["state"], "resolved", "the state is the ITSM's, from the last action");
        let wrong = req(Method::PUT, "/incidents/trg-2", &[], Some(json!({ "action": "open", "incident": { "key": "trg-1" } })));
        assert_eq!(send(&mut b, Itsm::Generic, &wrong).1, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_held_request_takes_effect_only_when_released() {
        let mimic = Mimic::start(Itsm::PagerDuty).await.unwrap();
        let url = format!("{}/v2/enqueue", mimic.url());
        let event = |action: &str| pd(action, "k").body.unwrap();
        mimic.hold(|x| x.meaning == Meaning::Trigger);
        let client = reqwest::Client::new();
        let first = tokio::spawn(client.post(&url).json(&event("trigger")).send());
        let held = mimic.held(Duration::from_secs(10)).await.expect("the trigger is held");
        assert_eq!((held.outcome, held.key.as_deref()), (Outcome::Held, Some("k")));
        assert_eq!(mimic.pages(), 0, "not applied while held");
        assert!(mimic.release());
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
        assert!(mimic.answered(Duration::from_secs(10), |x| x.is(Meaning::Trigger, "k")).await.is_some());
        assert_eq!(mimic.pages(), 1);

        mimic.hold(|x| x.meaning == Meaning::Resolve);
        let second = tokio::spawn(client.post(&url).json(&event("resolve")).send());
        mimic.held(Duration::from_secs(10)).await.expect("the resolve is held");
        assert_eq!(mimic.abandon().map(|x| x.outcome), Some(Outcome::Abandoned));
        assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(mimic.state("k"), Some(RecordState::Open), "an abandoned resolve left no trace");
        assert_eq!(mimic.actions("k"), [Meaning::Trigger]);
        let again = client.post(&url).json(&event("resolve")).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED, "a hold catches one request");
        assert_eq!(mimic.state("k"), Some(RecordState::Resolved));
        assert_eq!(mimic.actions("k"), [Meaning::Trigger, Meaning::Resolve]);
    }
}
