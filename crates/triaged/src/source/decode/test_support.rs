//! Helpers shared by the decoders' unit tests: a fixed receive time, decoding
//! from `serde_json` values, and checks of schema error messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{decode, DecodeError};
use crate::config::Format;
use crate::event::Event;

pub(super) fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub(super) fn received() -> DateTime<Utc> {
    at("2024-05-01T12:30:00Z")
}

pub(super) fn dec(format: Format, v: &serde_json::Value) -> Result<Vec<Event>, DecodeError> {
    decode(format, v.to_string().as_bytes(), received())
}

pub(super) fn one(format: Format, v: serde_json::Value) -> Event {
    let mut events = dec(format, &v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1, "{events:?}");
    events.pop().unwrap()
}

/// Decodes, expects a schema error and checks its full message.
pub(super) fn schema_err(format: Format, v: serde_json::Value, want: &str) {
    let e = dec(format, &v).expect_err(want);
    assert_eq!(e.kind(), "schema", "{e}");
    assert_eq!(e.to_string(), want);
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub(super) fn webhook(alerts: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "triaged",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
           "externalURL": "http://alertmanager:9093", "alerts": alerts})
}
