//! The Jira Service Management Operations profile (the Opsgenie alert API):
//! alerts addressed by `alias`, the incident key, with
//! `identifierType=alias`.
//!
//! - open and reopen: `POST /v2/alerts`. JSM de-duplicates a create whose
//!   alias has an open alert (a resend changes nothing), and a create whose
//!   alias has only closed alerts opens a new alert: that is the reopen.
//! - update: `PUT /v2/alerts/{alias}/priority` when the priority differs
//!   from the one last sent (or none is known, after a restart), then
//!   `POST /v2/alerts/{alias}/notes` with the action's notes.
//! - resolve: `POST /v2/alerts/{alias}/close`.
//! - look-up and read-back: `GET /v2/alerts/{alias}`: `data.status` open or
//!   closed, `data.acknowledged`, `data.owner`, `data.priority` `P1`..`P5`.
//!
//! A priority a person owns at this sink (`Incident::owned_at`) is not
//! changed by an update; a create sends it.
//!
//! JSM answers writes with 202 Accepted and processes them later; the 202
//! is taken as delivered and its `requestId` is logged at debug level.
//! API: <https://docs.opsgenie.com/docs/alert-api>.

use reqwest::{Method, Url};
use serde_json::{json, Map, Value};
use tracing::debug;

use super::{description, parse_priority, truncate};
use crate::incident::{Action, ActionKind, Incident, SinkError};
use crate::sink::{Remote, RemoteRecord, RestSink};

/// JSM alert `message` limit.
const JSM_MESSAGE_MAX: usize = 130;
/// JSM alert `description` limit.
const JSM_DESCRIPTION_MAX: usize = 15_000;
/// JSM `note` limit.
const JSM_NOTE_MAX: usize = 25_000;
/// `source` and `user` of every request.
const JSM_SOURCE: &str = "triaged";

impl RestSink {
    pub(in crate::sink) async fn jsm(&self, action: &Action) -> Result<(), SinkError> {
        let inc = &action.incident;
        let key = &inc.key;
        let notes = action.notes.join("\n");
        match action.kind {
            ActionKind::Open | ActionKind::Reopen => {
                let url = self.url(&["v2", "alerts"]);
                self.jsm_call("create", Method::POST, url, key, &jsm_alert(action)).await?;
                self.inner.priorities.insert(key.clone(), jsm_priority(inc.priority).to_owned());
            }
            ActionKind::Update => {
                // The priority first: it is idempotent, a note is not, so a
                // retry after a failed note does not add the note twice.
                let priority = jsm_priority(inc.priority);
                let owned = inc.owned_at(self.name()).priority;
                if !owned && self.inner.priorities.get(key).as_deref() != Some(priority) {
                    let body = json!({ "priority": priority });
                    self.jsm_call("priority", Method::PUT, self.alias_url(key, Some("priority")), key, &body).await?;
                    self.inner.priorities.insert(key.clone(), priority.to_owned());
                }
                if !notes.is_empty() {
                    self.jsm_call("note", Method::POST, self.alias_url(key, Some("notes")), key, &jsm_note(&notes)).await?;
                }
            }
            ActionKind::Resolve => {
                let note = if notes.is_empty() { "All member events cleared; closed by triaged.".to_owned() } else { notes };
                self.jsm_call("close", Method::POST, self.alias_url(key, Some("close")), key, &jsm_note(&note)).await?;
                self.inner.priorities.invalidate(key);
            }
        }
        Ok(())
    }

    /// What JSM holds under alias `key`: `data.status` of its latest alert.
    pub(in crate::sink) async fn jsm_look_up(&self, key: &str) -> Result<Remote, SinkError> {
        self.jsm_read_back(key).await.map(|r| r.state)
    }

    /// The latest alert of alias `key`; a status other than open or closed
    /// is an unusable answer.
    pub(in crate::sink) async fn jsm_read_back(&self, key: &str) -> Result<RemoteRecord, SinkError> {
        let Some(body) = self.get_or_missing(self.alias_url(key, None)).await? else {
            return Ok(RemoteRecord { state: Remote::Missing, ..RemoteRecord::default() });
        };
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let state = match value.pointer("/data/status").and_then(Value::as_str) {
            Some("open") => Remote::Open,
            Some("closed") => Remote::Closed,
            _ => return Err(self.unusable("lookup", &body)),
        };
        let data = &value["data"];
        Ok(RemoteRecord {
            state,
            acknowledged: data.get("acknowledged").and_then(Value::as_bool).unwrap_or(false),
            assignee: data.get("owner").and_then(Value::as_str).filter(|o| !o.is_empty()).map(str::to_owned),
            priority: data.get("priority").and_then(parse_priority),
            group: None,
            // An alert tells when it last changed, not when it closed.
            closed_at: None,
        })
    }

    /// `/v2/alerts/{alias}[/{op}]?identifierType=alias`.
    fn alias_url(&self, key: &str, op: Option<&str>) -> Url {
        let mut url = match op {
            Some(op) => self.url(&["v2", "alerts", key, op]),
            None => self.url(&["v2", "alerts", key]),
        };
        url.query_pairs_mut().append_pair("identifierType", "alias");
        url
    }

    /// One write; a 2xx (JSM's 202 Accepted) is delivered, its `requestId`
    /// logged for tracing the asynchronous processing at JSM.
    async fn jsm_call(&self, op: &'static str, method: Method, url: Url, key: &str, body: &Value) -> Result<(), SinkError> {
        let reply = self.call(op, method, url, Some(body)).await?;
        let value: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        let request_id = value.get("requestId").and_then(Value::as_str).unwrap_or("none");
        debug!(key = %key, operation = op, request_id = %request_id, "JSM accepted the request");
        Ok(())
    }
}

/// The body of a note or a close: the text, cut to JSM's limit, by triaged.
fn jsm_note(text: &str) -> Value {
    json!({ "note": truncate(text, JSM_NOTE_MAX), "source": JSM_SOURCE, "user": JSM_SOURCE })
}

/// `P1`..`P5` from the incident priority (1 highest).
fn jsm_priority(priority: u8) -> &'static str {
    match priority {
        0 | 1 => "P1",
        2 => "P2",
        3 => "P3",
        4 => "P4",
        _ => "P5",
    }
}

/// The create request for `action`'s incident.
fn jsm_alert(action: &Action) -> Value {
    let inc = &action.incident;
    let mut text = description(inc);
    if !action.notes.is_empty() {
        text.push_str("\n\nNotes:\n");
        text.push_str(&action.notes.join("\n"));
    }
    let mut tags = vec![JSM_SOURCE.to_owned(), format!("severity:{}", inc.severity.as_str())];
    tags.extend(inc.impacted_services.iter().map(|s| format!("service:{s}")));
    let mut alert = Map::new();
    alert.insert("message".into(), truncate(&inc.title, JSM_MESSAGE_MAX).into());
    alert.insert("alias".into(), inc.key.clone().into());
    alert.insert("description".into(), truncate(&text, JSM_DESCRIPTION_MAX).into());
    alert.insert("priority".into(), jsm_priority(inc.priority).into());
    alert.insert("tags".into(), json!(tags));
    alert.insert("details".into(), jsm_details(inc));
    if let Some(ci) = &inc.ci {
        alert.insert("entity".into(), ci.name.clone().into());
    }
    alert.insert("source".into(), JSM_SOURCE.into());
    alert.insert("user".into(), JSM_SOURCE.into());
    Value::Object(alert)
}

/// JSM `details`: a map of strings.
fn jsm_details(inc: &Incident) -> Value {
    let mut d = Map::new();
    let mut put = |k: &str, v: String| {
        d.insert(k.into(), v.into());
    };
    put("triaged_key", inc.key.clone());
    put("scope", inc.scope.clone());
    put("priority", format!("P{}", inc.priority));
    put("impact", inc.impact.to_string());
    put("urgency", inc.urgency.to_string());
    put("members", inc.members.len().to_string());
    put("events", inc.event_count.to_string());
    if let Some(root) = &inc.root_cause {
        put("root_cause", root.name.clone());
    }
    if !inc.impacted_services.is_empty() {
        put("impacted_services", inc.impacted_services.join(", "));
    }
    for (k, v) in [("assignment_group", &inc.assignment_group), ("oncall", &inc.oncall), ("runbook", &inc.runbook), ("parent", &inc.parent)]
    {
        if let Some(v) = v {
            put(k, v.clone());
        }
    }
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_mapping() {
        let mapped: Vec<_> = (0..=7).map(jsm_priority).collect();
        assert_eq!(mapped, ["P1", "P1", "P2", "P3", "P4", "P5", "P5", "P5"]);
    }
}
