//! The generic profile: the incident PUT by key as JSON, looked up by GET.

use reqwest::Method;
use serde_json::{json, Value};

use crate::incident::{Action, SinkError};
use crate::sink::{Remote, RestSink};

impl RestSink {
    pub(in crate::sink) async fn generic_look_up(&self, key: &str) -> Result<Remote, SinkError> {
        let Some(body) = self.get_or_missing(self.url(&["incidents", key])).await? else { return Ok(Remote::Missing) };
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let state = value.pointer("/incident/state").or_else(|| value.get("state")).and_then(Value::as_str).unwrap_or("open");
        Ok(if matches!(state.to_ascii_lowercase().as_str(), "resolved" | "closed") { Remote::Closed } else { Remote::Open })
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
