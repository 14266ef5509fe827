//! The native format: the JSON form of [`Event`] as serde writes it.

use chrono::{DateTime, Utc};

use super::fields::{as_obj, get, opt_map, opt_str, opt_time, parse_status, req_str, req_text};
use super::path::{schema, wrong_type, Path};
use super::value::V;
use super::DecodeError;
use crate::event::{CiHint, Event, Severity};

pub(super) fn native(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Event, DecodeError> {
    let o = as_obj(root, path)?;
    let source = req_text(o, "source", path)?;
    let source_id = opt_str(o, "source_id", path)?;
    let mut ci = CiHint::default();
    if let Some(v) = get(o, "ci") {
        let cp = path.key("ci");
        for (k, v) in as_obj(v, &cp)? {
            let slot = match k.as_ref() {
                "host" => &mut ci.host,
                "service" => &mut ci.service,
                "ip" => &mut ci.ip,
                _ => return Err(schema(&cp.key(k), "unknown field (expected host, service or ip)")),
            };
            *slot = match v {
                V::Null => None,
                V::Str(s) => Some(s.to_string()),
                other => return Err(wrong_type(&cp.key(k), "string", other)),
            };
        }
    }
    let check = req_text(o, "check", path)?;
    let sev = req_str(o, "severity", path)?;
    let severity = Severity::parse(sev).ok_or_else(|| {
        schema(&path.key("severity"), format!("unknown severity {sev:?} (expected info, warning, minor, major or critical)"))
    })?;
    let st = req_str(o, "status", path)?;
    let status =
        parse_status(st).ok_or_else(|| schema(&path.key("status"), format!("unknown status {st:?} (expected firing or resolved)")))?;
    Ok(Event {
        source: source.to_owned(),
        source_id: source_id.map(str::to_owned),
        ci,
        check: check.to_owned(),
        severity,
        status,
        summary: opt_str(o, "summary", path)?.unwrap_or_default().to_owned(),
        labels: opt_map(o, "labels", path)?,
        annotations: opt_map(o, "annotations", path)?,
        time: opt_time(o, "time", path)?.unwrap_or(received),
        origin: None,
        ends_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use crate::event::Status;
    use crate::source::decode::decode;
    use crate::source::decode::test_support::{at, labels, one, received, schema_err};
    use serde_json::json;

    fn native_event() -> Event {
        Event {
            source: "batch".into(),
            source_id: Some("run-42".into()),
            ci: CiHint { host: Some("db-01".into()), service: Some("backup".into()), ip: Some("10.0.0.5".into()) },
            check: "Nightly backup".into(),
            severity: Severity::Major,
            status: Status::Firing,
            summary: "backup failed".into(),
            labels: labels(&[("team", "dba")]),
            annotations: labels(&[("runbook", "https://wiki/backup")]),
            time: at("2024-05-01T12:00:00.250Z"),
            origin: None,
            ends_at: None,
        }
    }

    #[test]
    fn native_round_trips_serde_form() {
        let ev = native_event();
        let bytes = serde_json::to_vec(&ev).unwrap();
        for format in [Format::Native, Format::Auto] {
            assert_eq!(decode(format, &bytes, received()).unwrap(), vec![ev.clone()]);
        }
    }

    #[test]
    fn native_defaults_and_ignored_fields() {
        let ev = one(
            Format::Native,
            json!({"source": "x", "check": "c", "severity": "CRIT", "status": "resolved", "summary": null,
                   "origin": {"topic": "t", "partition": 0, "offset": 1}, "extra": [1, 2]}),
        );
        assert_eq!(ev.time, received());
        assert_eq!(ev.severity, Severity::Critical);
        assert_eq!(ev.status, Status::Resolved);
        assert_eq!(ev.summary, "");
        assert_eq!(ev.origin, None);
        assert_eq!(ev.ci, CiHint::default());
    }

    #[test]
    fn native_errors_name_the_field() {
        let base = json!({"source": "x", "check": "c", "severity": "major", "status": "firing"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        let without = |k: &str| {
            let mut b = base.clone();
            b.as_object_mut().unwrap().remove(k);
            b
        };
        schema_err(Format::Native, with("check", json!("  ")), "check: must not be empty");
        schema_err(Format::Native, without("check"), "check: missing");
        schema_err(Format::Native, with("check", json!(null)), "check: expected string, got null");
        schema_err(Format::Native, without("source"), "source: missing");
        schema_err(Format::Native, with("severity", json!(3)), "severity: expected string, got number");
        schema_err(
            Format::Native,
            with("severity", json!("bad")),
            "severity: unknown severity \"bad\" (expected info, warning, minor, major or critical)",
        );
        schema_err(Format::Native, without("status"), "status: missing");
        schema_err(Format::Native, with("status", json!("open")), "status: unknown status \"open\" (expected firing or resolved)");
        schema_err(Format::Native, with("labels", json!({"team": 5})), "labels.team: expected string, got number");
        schema_err(Format::Native, with("annotations", json!([])), "annotations: expected object, got array");
        schema_err(Format::Native, with("ci", json!({"hostname": "a"})), "ci.hostname: unknown field (expected host, service or ip)");
        schema_err(Format::Native, with("ci", json!({"host": true})), "ci.host: expected string, got boolean");
        schema_err(Format::Native, with("time", json!("yesterday")), "time: invalid RFC 3339 time \"yesterday\"");
        schema_err(Format::Native, with("source_id", json!(7)), "source_id: expected string, got number");
        schema_err(Format::Native, json!([base]), "payload: expected object, got array");
    }
}
