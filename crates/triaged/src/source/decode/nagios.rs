//! The Nagios / Icinga format: a notification command posting the
//! notification macros as JSON, one event per notification.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::fields::{as_obj, first_text, is_ip, opt_text, opt_unix_time};
use super::path::{missing, schema, Path};
use super::value::V;
use super::{DecodeError, NAGIOS_HOST_CHECK};
use crate::event::{CiHint, Event, Severity, Status};

pub(super) fn nagios(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Event, DecodeError> {
    let o = as_obj(root, path)?;
    let source = match opt_text(o, "source", path)? {
        Some(s) => s.trim().to_ascii_lowercase(),
        None => "nagios".to_owned(),
    };
    let host = match first_text(o, &["host_name", "host"], path)? {
        Some((_, h)) => h.trim(),
        None => return Err(missing(&path.key("host_name"))),
    };
    let service = first_text(o, &["service_description", "service"], path)?.map(|(_, s)| s.trim());
    let ntype = first_text(o, &["notification_type", "type"], path)?.map(|(_, t)| t.trim().to_ascii_uppercase());
    let state_keys: &[&'static str] = if service.is_some() { &["service_state", "state"] } else { &["host_state", "state"] };
    let state = first_text(o, state_keys, path)?.map(|(k, s)| (k, s.trim().to_ascii_uppercase()));
    let recovery = ntype.as_deref() == Some("RECOVERY");
    let severity = match &state {
        None if recovery => Severity::Info,
        None => Severity::Warning,
        Some((key, s)) => match s.as_str() {
            "CRITICAL" | "DOWN" | "UNREACHABLE" => Severity::Critical,
            "WARNING" => Severity::Warning,
            "UNKNOWN" => Severity::Minor,
            "OK" | "UP" => Severity::Info,
            _ => {
                let expected = if service.is_some() { "OK, WARNING, CRITICAL or UNKNOWN" } else { "UP, DOWN or UNREACHABLE" };
                return Err(schema(&path.key(key), format!("unknown state {s:?} (expected {expected})")));
            }
        },
    };
    let cleared = matches!(state.as_ref().map(|(_, s)| s.as_str()), Some("OK" | "UP"));
    let status = if recovery || cleared { Status::Resolved } else { Status::Firing };
    let check = service.unwrap_or(NAGIOS_HOST_CHECK);
    let mut ci = CiHint { host: Some(host.to_owned()), service: service.map(str::to_owned), ip: None };
    if let Some((_, addr)) = first_text(o, &["host_address", "address"], path)? {
        let addr = addr.trim();
        if is_ip(addr) {
            ci.ip = Some(addr.to_owned());
        }
    }
    let mut labels = BTreeMap::new();
    if let Some(t) = ntype {
        labels.insert("notification_type".to_owned(), t);
    }
    let summary = match opt_text(o, "output", path)? {
        Some(out) => out.to_owned(),
        None => match &state {
            Some((_, s)) => format!("{check} is {s}"),
            None => check.to_owned(),
        },
    };
    if let Some((_, s)) = state {
        labels.insert("state".to_owned(), s);
    }
    Ok(Event {
        source,
        source_id: None,
        ci,
        check: check.to_owned(),
        severity,
        status,
        summary,
        labels,
        annotations: BTreeMap::new(),
        time: opt_unix_time(o, "timestamp", path)?.unwrap_or(received),
        origin: None,
        ends_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use crate::source::decode::test_support::{at, labels, one, received, schema_err};
    use serde_json::json;

    #[test]
    fn nagios_host_down() {
        let v = json!({"notification_type": "PROBLEM", "host_name": "hv-1", "host_address": "10.0.2.1",
                       "host_state": "DOWN", "output": "CRITICAL - Host Unreachable", "timestamp": 1714564800});
        for format in [Format::Nagios, Format::Auto] {
            let e = one(format, v.clone());
            assert_eq!(e.source, "nagios");
            assert_eq!(e.check, NAGIOS_HOST_CHECK);
            assert_eq!(e.status, Status::Firing);
            assert_eq!(e.severity, Severity::Critical);
            assert_eq!(e.ci, CiHint { host: Some("hv-1".into()), service: None, ip: Some("10.0.2.1".into()) });
            assert_eq!(e.summary, "CRITICAL - Host Unreachable");
            assert_eq!(e.labels, labels(&[("notification_type", "PROBLEM"), ("state", "DOWN")]));
            assert_eq!(e.time, at("2024-05-01T12:00:00Z"));
            assert_eq!(e.source_id, None);
        }
        // The recovery shares the check name, so it resolves the same stream.
        let e = one(Format::Auto, json!({"notification_type": "RECOVERY", "host_name": "hv-1", "host_state": "UP"}));
        assert_eq!((e.check.as_str(), e.status, e.severity), (NAGIOS_HOST_CHECK, Status::Resolved, Severity::Info));
        assert_eq!(e.summary, "host-down is UP");
        assert_eq!(e.time, received());
    }

    #[test]
    fn nagios_service_states() {
        let svc = |ntype: &str, state: &str| {
            one(
                Format::Auto,
                json!({"notification_type": ntype, "host_name": "web-01", "host_address": "web-01.example.com",
                       "service_description": "HTTP", "service_state": state, "output": "x"}),
            )
        };
        let e = svc("PROBLEM", "WARNING");
        assert_eq!((e.check.as_str(), e.severity, e.status), ("HTTP", Severity::Warning, Status::Firing));
        assert_eq!(e.ci, CiHint { host: Some("web-01".into()), service: Some("HTTP".into()), ip: None });
        assert_eq!(svc("PROBLEM", "CRITICAL").severity, Severity::Critical);
        assert_eq!(svc("PROBLEM", "UNKNOWN").severity, Severity::Minor);
        let r = svc("RECOVERY", "OK");
        assert_eq!((r.severity, r.status), (Severity::Info, Status::Resolved));
        let a = svc("ACKNOWLEDGEMENT", "CRITICAL");
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.labels["notification_type"], "ACKNOWLEDGEMENT");
        assert_eq!(svc("DOWNTIMESTART", "CRITICAL").labels["notification_type"], "DOWNTIMESTART");
        assert_eq!(svc("FLAPPINGSTART", "WARNING").status, Status::Firing);
        assert_eq!(svc("FLAPPINGSTOP", "OK").status, Status::Resolved, "an OK state clears");
        // Empty service description (one shared notification command): a host notification.
        let e = one(
            Format::Auto,
            json!({"notification_type": "PROBLEM", "host_name": "h", "service_description": "",
                   "host_state": "UNREACHABLE"}),
        );
        assert_eq!((e.check.as_str(), e.severity), (NAGIOS_HOST_CHECK, Severity::Critical));
    }

    #[test]
    fn icinga_keys() {
        let v = json!({"source": "Icinga", "type": "Recovery", "host": "web-01", "service": "HTTP",
                       "state": "Ok", "output": "HTTP OK - 200", "timestamp": "1714565100", "address": "10.0.1.10"});
        for format in [Format::Nagios, Format::Auto] {
            let e = one(format, v.clone());
            assert_eq!(e.source, "icinga");
            assert_eq!(e.check, "HTTP");
            assert_eq!((e.status, e.severity), (Status::Resolved, Severity::Info));
            assert_eq!(e.ci.ip.as_deref(), Some("10.0.1.10"));
            assert_eq!(e.labels, labels(&[("notification_type", "RECOVERY"), ("state", "OK")]));
            assert_eq!(e.time, at("2024-05-01T12:05:00Z"));
        }
        let e = one(Format::Nagios, json!({"host": "h", "type": "Problem", "state": "Down"}));
        assert_eq!((e.check.as_str(), e.severity, e.status), (NAGIOS_HOST_CHECK, Severity::Critical, Status::Firing));
        let e = one(Format::Nagios, json!({"host": "h", "notification_type": "CUSTOM"}));
        assert_eq!((e.severity, e.status, e.summary.as_str()), (Severity::Warning, Status::Firing, "host-down"));
    }

    #[test]
    fn nagios_errors_name_the_field() {
        schema_err(Format::Nagios, json!({"notification_type": "PROBLEM"}), "host_name: missing");
        schema_err(Format::Auto, json!({"host_name": 5}), "host_name: expected string, got number");
        schema_err(
            Format::Auto,
            json!({"host_name": "h", "service_description": "S", "service_state": "PENDING"}),
            "service_state: unknown state \"PENDING\" (expected OK, WARNING, CRITICAL or UNKNOWN)",
        );
        schema_err(
            Format::Auto,
            json!({"host": "h", "type": "PROBLEM", "state": "sad"}),
            "state: unknown state \"SAD\" (expected UP, DOWN or UNREACHABLE)",
        );
        schema_err(Format::Auto, json!({"host_name": "h", "timestamp": true}), "timestamp: expected number or string, got boolean");
        schema_err(Format::Auto, json!({"host_name": "h", "output": {}}), "output: expected string, got object");
    }
}
