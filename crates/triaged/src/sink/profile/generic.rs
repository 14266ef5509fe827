//! The generic profile: the incident PUT by key as JSON, looked up and read
//! back by GET.
//!
//! The PUT always carries the whole snapshot, `human_owned` included: the
//! receiver decides what a person's fields mean there. The GET answers 404
//! for no record, or 200 with `{ "state", "acknowledged", "assignee",
//! "priority", "assignment_group" }`, each optional, at the top level or
//! under `incident` (what this profile PUT, as a receiver that stores it
//! returns it): `state` `resolved` or `closed` is closed, anything else
//! (or none) open.

use reqwest::Method;
use serde_json::{json, Value};

use super::parse_priority;
use crate::incident::{Action, SinkError};
use crate::sink::{Remote, RemoteRecord, RestSink};

/// Field `name` of a read-back body: under `incident`, else at the top.
fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get("incident").and_then(|i| i.get(name)).or_else(|| body.get(name))
}

/// The record's state: closed when `state` says resolved or closed.
fn state(body: &Value) -> Remote {
    let state = field(body, "state").and_then(Value::as_str).unwrap_or("open");
    if matches!(state.to_ascii_lowercase().as_str(), "resolved" | "closed") {
        Remote::Closed
    } else {
        Remote::Open
    }
}

/// A non-empty string field.
fn text(body: &Value, name: &str) -> Option<String> {
    field(body, name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl RestSink {
    pub(in crate::sink) async fn generic_look_up(&self, key: &str) -> Result<Remote, SinkError> {
        let Some(body) = self.get_or_missing(self.url(&["incidents", key])).await? else { return Ok(Remote::Missing) };
        Ok(state(&serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// The record of `key`; a 200 whose body is not a JSON object is an
    /// unusable answer.
    pub(in crate::sink) async fn generic_read_back(&self, key: &str) -> Result<RemoteRecord, SinkError> {
        let Some(body) = self.get_or_missing(self.url(&["incidents", key])).await? else {
            return Ok(RemoteRecord { state: Remote::Missing, ..RemoteRecord::default() });
        };
        let value = match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => v,
            _ => return Err(self.unusable("lookup", &body)),
        };
        Ok(RemoteRecord {
            state: state(&value),
            acknowledged: field(&value, "acknowledged").and_then(Value::as_bool).unwrap_or(false),
            assignee: text(&value, "assignee"),
            priority: field(&value, "priority").and_then(parse_priority),
            group: text(&value, "assignment_group"),
            closed_at: text(&value, "closed_at")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        })
    }

    pub(in crate::sink) async fn generic(&self, action: &Action) -> Result<(), SinkError> {
        let url = self.url(&["incidents", &action.incident.key]);
        let body = json!({
            "action": action.kind,
            "incident": action.incident,
            "notes": action.notes,
        });
        self.call("put", Method::PUT, url, Some(&body)).await.map(drop)
    }
}
