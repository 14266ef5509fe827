//! Signed webhooks from ITSMs, `POST /webhooks/{sink}`: what people did
//! there, pushed as it happens instead of waiting for the next poll.
//!
//! - A `pagerduty` sink takes PagerDuty v3 webhooks (`incident.acknowledged`,
//!   `.resolved`, `.reopened`, `.priority_updated`, `.reassigned`, ...),
//!   signed `X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the body>` with the
//!   subscription's secret (several signatures, comma-separated, during a
//!   rotation). The incident key is `data.incident_key`, else the
//!   `trg-<16 hex>` in `data.title` (the summary triaged sent).
//! - Every other sink takes one JSON object per request, signed
//!   `X-Triaged-Signature: sha256=<hex or base64 HMAC-SHA256 of the body>`:
//!   `key` (or ServiceNow's `correlation_id`), `state` (`open`,
//!   `acknowledged`, `closed`, `missing`, or a ServiceNow incident state
//!   number), and optionally `assignee` (`assigned_to`), `priority`,
//!   `group` (`assignment_group`) and `closed_at` (RFC 3339). A ServiceNow
//!   business rule with an outbound REST message sends it.
//!
//! Signatures are checked in constant time before the body is parsed.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use regex::Regex;
use ring::hmac;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::config::{SinkConfig, SinkProfile};
use crate::core::partitions::Observed;
use crate::core::{Observation, SeenState};
use crate::metrics::Metrics;
use crate::sink::{parse_priority, read_secret, SinkBuildError};

/// Largest webhook body read.
pub const MAX_BODY: usize = 256 << 10;

/// The webhook endpoints of the sinks that have a `[sink.webhook]`.
pub struct Webhooks {
    hooks: HashMap<String, Hook>,
    tx: mpsc::UnboundedSender<Observed>,
    metrics: Metrics,
}

struct Hook {
    profile: SinkProfile,
    key: hmac::Key,
}

impl Webhooks {
    /// Reads each sink's webhook secret; `None` when no sink has a webhook.
    pub fn new<'a>(
        sinks: impl IntoIterator<Item = &'a SinkConfig>,
        tx: mpsc::UnboundedSender<Observed>,
        metrics: Metrics,
    ) -> Result<Option<Arc<Webhooks>>, SinkBuildError> {
        let mut hooks = HashMap::new();
        for s in sinks {
            if let Some(w) = &s.webhook {
                let secret = read_secret("sink.webhook.secret", &w.secret)?;
                hooks.insert(
                    s.name.clone(),
                    Hook { profile: s.profile, key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()) },
                );
            }
        }
        Ok((!hooks.is_empty()).then(|| Arc::new(Webhooks { hooks, tx, metrics })))
    }

    /// Handles one request for sink `sink`: the status and a line of text.
    pub fn handle(&self, sink: &str, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
        let Some(hook) = self.hooks.get(sink) else {
            return (StatusCode::NOT_FOUND, format!("no sink `{sink}` takes webhooks\n"));
        };
        let count = |result: &str| self.metrics.webhooks.with_label_values(&[sink, result]).inc();
        if !signed(hook, headers, body) {
            count("bad_signature");
            return (StatusCode::UNAUTHORIZED, "missing or wrong signature\n".into());
        }
        let parsed = serde_json::from_slice::<Value>(body).map_err(|e| e.to_string()).and_then(|v| match hook.profile {
            SinkProfile::Pagerduty => pagerduty(sink, &v),
            profile => signed_json(sink, profile, &v),
        });
        match parsed {
            Err(why) => {
                count("bad_request");
                (StatusCode::BAD_REQUEST, format!("{why}\n"))
            }
            Ok(None) => {
                count("ignored");
                (StatusCode::ACCEPTED, "nothing triaged acts on\n".into())
            }
            Ok(Some(observation)) => {
                count("ok");
                let _ = self.tx.send(Observed { at: None, observation });
                (StatusCode::ACCEPTED, "accepted\n".into())
            }
        }
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex HMAC-SHA256 of `body` under `secret`: what a sender signs with
/// (`v1=` for PagerDuty, `sha256=` for the others).
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body).as_ref())
}

/// Whether the body carries a valid signature for `hook`.
fn signed(hook: &Hook, headers: &HeaderMap, body: &[u8]) -> bool {
    let tag = hmac::sign(&hook.key, body);
    let hex = hex(tag.as_ref());
    let eq = |a: &str, b: &str| a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()));
    match hook.profile {
        SinkProfile::Pagerduty => {
            let Some(v) = headers.get("x-pagerduty-signature").and_then(|v| v.to_str().ok()) else { return false };
            v.split(',').filter_map(|s| s.trim().strip_prefix("v1=")).any(|s| eq(&s.to_ascii_lowercase(), &hex))
        }
        _ => {
            let Some(v) = headers.get("x-triaged-signature").and_then(|v| v.to_str().ok()) else { return false };
            let Some(sig) = v.trim().strip_prefix("sha256=") else { return false };
            let b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
            eq(&sig.to_ascii_lowercase(), &hex) || eq(sig, &b64)
        }
    }
}

fn key_in(text: &str) -> Option<String> {
    static KEY: OnceLock<Regex> = OnceLock::new();
    KEY.get_or_init(|| Regex::new(r"trg-[0-9a-f]{16}").expect("valid regex")).find(text).map(|m| m.as_str().to_owned())
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A PagerDuty v3 webhook, as an observation of `sink`'s record.
fn pagerduty(sink: &str, v: &Value) -> Result<Option<Observation>, String> {
    let event = v.get("event").ok_or("no `event` object: not a PagerDuty v3 webhook")?;
    let kind = text(event, "/event_type").ok_or("no `event.event_type`")?;
    if !kind.starts_with("incident.") || text(event, "/data/type") != Some("incident") {
        return Ok(None);
    }
    let key = text(event, "/data/incident_key").and_then(key_in).or_else(|| text(event, "/data/title").and_then(key_in));
    let Some(key) = key else { return Ok(None) };
    let occurred = text(event, "/occurred_at").and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    let state = match text(event, "/data/status") {
        Some("triggered") => SeenState::Open,
        Some("acknowledged") => SeenState::Acknowledged,
        Some("resolved") => SeenState::Closed,
        _ => return Ok(None),
    };
    let person = text(event, "/agent/summary").or_else(|| text(event, "/data/assignees/0/summary")).map(str::to_owned);
    Ok(Some(Observation {
        sink: sink.to_owned(),
        key,
        state,
        assignee: person,
        priority: event.pointer("/data/priority/summary").and_then(parse_priority),
        group: text(event, "/data/escalation_policy/summary").map(str::to_owned),
        closed_at: (state == SeenState::Closed).then_some(occurred).flatten(),
        via: "webhook",
    }))
}

/// The documented JSON body of the other profiles' webhooks.
fn signed_json(sink: &str, profile: SinkProfile, v: &Value) -> Result<Option<Observation>, String> {
    let key = text(v, "/key").or_else(|| text(v, "/correlation_id")).ok_or("no `key` (or `correlation_id`)")?;
    let key = key_in(key).filter(|k| k == key).ok_or_else(|| format!("`{key}` is not a triaged incident key"))?;
    let raw = v.get("state").map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| s.to_string())).ok_or("no `state`")?;
    let assignee = text(v, "/assignee").or_else(|| text(v, "/assigned_to")).map(str::to_owned);
    let state = match raw.as_str() {
        "open" => SeenState::Open,
        "acknowledged" => SeenState::Acknowledged,
        "closed" | "resolved" => SeenState::Closed,
        "missing" => SeenState::Missing,
        // ServiceNow incident states: 6 resolved, 7 closed, 8 canceled;
        // 2 in progress and 3 on hold are someone's.
        "6" | "7" | "8" if profile == SinkProfile::Servicenow => SeenState::Closed,
        "2" | "3" if profile == SinkProfile::Servicenow => SeenState::Acknowledged,
        "1" if profile == SinkProfile::Servicenow && assignee.is_some() => SeenState::Acknowledged,
        "1" if profile == SinkProfile::Servicenow => SeenState::Open,
        other => return Err(format!("`state` `{other}` is none of open, acknowledged, closed, missing")),
    };
    let closed_at = match text(v, "/closed_at") {
        None => None,
        Some(t) => Some(DateTime::parse_from_rfc3339(t).map_err(|e| format!("`closed_at`: {e}"))?.with_timezone(&Utc)),
    };
    Ok(Some(Observation {
        sink: sink.to_owned(),
        key,
        state,
        assignee,
        priority: v.get("priority").and_then(parse_priority),
        group: text(v, "/group").or_else(|| text(v, "/assignment_group")).map(str::to_owned),
        closed_at,
        via: "webhook",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretSource, WebhookConfig};
    use serde_json::json;

    const KEY: &str = "trg-00112233445566ff";

    fn hooks(profile: SinkProfile) -> (Webhooks, mpsc::UnboundedReceiver<Observed>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let mut cfg = crate::demo::demo_config(std::path::Path::new("."), "127.0.0.1:9", "http://127.0.0.1:9", "127.0.0.1:0").sink.unwrap();
        cfg.profile = profile;
        cfg.name = "itsm".into();
        cfg.webhook = Some(WebhookConfig { secret: SecretSource { env: None, file: Some(secret) } });
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Webhooks::new([&cfg], tx, Metrics::new()).unwrap().unwrap();
        (Arc::into_inner(w).unwrap(), rx, dir)
    }

    fn hex_sig(body: &[u8]) -> String {
        hmac_sha256_hex(b"s3cret", body)
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    fn pd(status: &str, kind: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({ "event": {
            "id": "5ac64822", "event_type": kind, "resource_type": "incident", "occurred_at": "2026-12-08T01:00:00Z",
            "agent": { "summary": "Jo Doe", "type": "user_reference" },
            "data": { "id": "PGR0VU2", "type": "incident", "status": status,
                      "title": format!("switch sw-core-01 failure: 12 alerts on 3 CIs [{KEY}]"),
                      "priority": { "summary": "P2" }, "escalation_policy": { "summary": "Network" } } } }))
        .unwrap()
    }

    #[test]
    fn a_pagerduty_acknowledgement_with_a_valid_signature_is_observed() {
        let (w, mut rx, _d) = hooks(SinkProfile::Pagerduty);
        let body = pd("acknowledged", "incident.acknowledged");
        // A rotation: the old secret's signature first, then the current one.
        let sig = format!("v1={},v1={}", "0".repeat(64), hex_sig(&body));
        let (code, _) = w.handle("itsm", &headers("x-pagerduty-signature", &sig), &body);
        assert_eq!(code, StatusCode::ACCEPTED);
        let o = rx.try_recv().unwrap().observation;
        assert_eq!(
            (o.key.as_str(), o.state, o.assignee.as_deref(), o.priority, o.group.as_deref()),
            (KEY, SeenState::Acknowledged, Some("Jo Doe"), Some(2), Some("Network"))
        );
        assert_eq!(o.via, "webhook");
    }

    #[test]
    fn a_pagerduty_resolve_is_a_close_at_its_time() {
        let (w, mut rx, _d) = hooks(SinkProfile::Pagerduty);
        let body = pd("resolved", "incident.resolved");
        w.handle("itsm", &headers("x-pagerduty-signature", &format!("v1={}", hex_sig(&body))), &body);
        let o = rx.try_recv().unwrap().observation;
        assert_eq!(o.state, SeenState::Closed);
        assert_eq!(o.closed_at.map(|t| t.to_rfc3339()), Some("2026-12-08T01:00:00+00:00".into()));
    }

    #[test]
    fn a_wrong_or_missing_signature_is_refused_before_parsing() {
        let (w, mut rx, _d) = hooks(SinkProfile::Pagerduty);
        let body = pd("resolved", "incident.resolved");
        let mut forged = body.clone();
        forged.extend_from_slice(b" ");
        let sig = format!("v1={}", hex_sig(&body));
        assert_eq!(w.handle("itsm", &headers("x-pagerduty-signature", &sig), &forged).0, StatusCode::UNAUTHORIZED);
        assert_eq!(w.handle("itsm", &HeaderMap::new(), &body).0, StatusCode::UNAUTHORIZED);
        assert_eq!(w.handle("itsm", &headers("x-pagerduty-signature", "v0=abc"), b"not json").0, StatusCode::UNAUTHORIZED);
        assert!(rx.try_recv().is_err());
        assert_eq!(w.metrics.webhooks.with_label_values(&["itsm", "bad_signature"]).get(), 3);
        assert_eq!(w.handle("other", &HeaderMap::new(), &body).0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn pagerduty_events_without_a_triaged_key_are_ignored() {
        let (w, mut rx, _d) = hooks(SinkProfile::Pagerduty);
        let body = serde_json::to_vec(&json!({ "event": { "event_type": "incident.acknowledged",
            "data": { "type": "incident", "status": "acknowledged", "title": "created by hand" } } }))
        .unwrap();
        let (code, _) = w.handle("itsm", &headers("x-pagerduty-signature", &format!("v1={}", hex_sig(&body))), &body);
        assert_eq!(code, StatusCode::ACCEPTED);
        assert!(rx.try_recv().is_err());
        assert_eq!(w.metrics.webhooks.with_label_values(&["itsm", "ignored"]).get(), 1);
    }

    #[test]
    fn a_servicenow_business_rule_call_with_a_base64_signature_is_observed() {
        let (w, mut rx, _d) = hooks(SinkProfile::Servicenow);
        let body = serde_json::to_vec(&json!({ "correlation_id": KEY, "state": "7", "assigned_to": "jdoe",
            "priority": "1", "assignment_group": "Network", "closed_at": "2026-12-08T01:02:03Z" }))
        .unwrap();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"s3cret"), &body);
        let sig = format!("sha256={}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
        let (code, text) = w.handle("itsm", &headers("x-triaged-signature", &sig), &body);
        assert_eq!(code, StatusCode::ACCEPTED, "{text}");
        let o = rx.try_recv().unwrap().observation;
        assert_eq!(
            (o.state, o.priority, o.group.as_deref(), o.assignee.as_deref()),
            (SeenState::Closed, Some(1), Some("Network"), Some("jdoe"))
        );
        assert!(o.closed_at.is_some());
    }

    #[test]
    fn a_signed_body_that_is_not_an_observation_is_a_400_naming_the_field() {
        let (w, mut rx, _d) = hooks(SinkProfile::Generic);
        for (body, says) in [
            (json!({ "state": "open" }), "no `key`"),
            (json!({ "key": "INC0010001", "state": "open" }), "not a triaged incident key"),
            (json!({ "key": KEY, "state": "7" }), "`state` `7`"),
            (json!({ "key": KEY, "state": "closed", "closed_at": "yesterday" }), "`closed_at`"),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            let (code, text) = w.handle("itsm", &headers("x-triaged-signature", &format!("sha256={}", hex_sig(&body))), &body);
            assert_eq!(code, StatusCode::BAD_REQUEST);
            assert!(text.contains(says), "{text}");
        }
        assert!(rx.try_recv().is_err());
    }
}
