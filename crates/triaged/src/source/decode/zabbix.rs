//! The Zabbix format: what a Zabbix webhook media type script posts, one
//! event per message.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::fields::{as_obj, get, hint_host_or_ip, is_macro, opt_str, opt_text, opt_unix_time, req_text, str_map};
use super::path::{schema, wrong_type, Path};
use super::value::{Fields, V};
use super::{check_depth, json_error, DecodeError, MAX_DEPTH};
use crate::event::{CiHint, Event, Severity, Status};

/// An optional Zabbix string parameter: blank or an unexpanded macro is absent.
fn zabbix_text<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<&'v str>, DecodeError> {
    Ok(opt_text(o, key, path)?.filter(|s| !is_macro(s)))
}

pub(super) fn zabbix(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Event, DecodeError> {
    let o = as_obj(root, path)?;
    let check = req_text(o, "trigger_name", path)?;
    let source_id = match get(o, "event_id") {
        None => None,
        Some(V::Str(s)) => Some(s.trim()).filter(|s| !s.is_empty() && !is_macro(s)).map(str::to_owned),
        Some(V::Int(n)) => Some(n.to_string()),
        Some(V::UInt(n)) => Some(n.to_string()),
        Some(other) => return Err(wrong_type(&path.key("event_id"), "string or integer", other)),
    };
    let bad_value = |shown: &str| schema(&path.key("event_value"), format!("expected \"1\" (problem) or \"0\" (recovery), got {shown}"));
    let event_value = match get(o, "event_value") {
        None => None,
        Some(V::Str(s)) => match s.trim() {
            "1" => Some(Status::Firing),
            "0" => Some(Status::Resolved),
            t if t.is_empty() || is_macro(t) => None,
            _ => return Err(bad_value(&format!("{s:?}"))),
        },
        Some(V::Int(1) | V::UInt(1)) => Some(Status::Firing),
        Some(V::Int(0) | V::UInt(0)) => Some(Status::Resolved),
        Some(V::Int(n)) => return Err(bad_value(&n.to_string())),
        Some(V::UInt(n)) => return Err(bad_value(&n.to_string())),
        Some(other) => return Err(wrong_type(&path.key("event_value"), "string", other)),
    };
    let status = match event_value {
        Some(s) => s,
        None => match zabbix_text(o, "status", path)? {
            None => Status::Firing,
            Some(s) => {
                let t = s.trim();
                if t.eq_ignore_ascii_case("problem") {
                    Status::Firing
                } else if t.eq_ignore_ascii_case("resolved") || t.eq_ignore_ascii_case("ok") {
                    Status::Resolved
                } else {
                    return Err(schema(&path.key("status"), format!("unknown status {s:?} (expected PROBLEM, RESOLVED or OK)")));
                }
            }
        },
    };
    let severity = match zabbix_text(o, "severity", path)? {
        None => Severity::Warning,
        Some(s) => match s.trim() {
            "0" | "1" => Severity::Info,
            "2" => Severity::Warning,
            "3" => Severity::Minor,
            "4" => Severity::Major,
            "5" => Severity::Critical,
            t => Severity::parse(t).unwrap_or(Severity::Warning),
        },
    };
    let mut ci = CiHint::default();
    if let Some(ip) = zabbix_text(o, "host_ip", path)? {
        ci.ip = Some(ip.trim().to_owned());
    }
    if let Some(host) = zabbix_text(o, "host", path)? {
        hint_host_or_ip(&mut ci, host.trim());
    }
    let time = match opt_unix_time(o, "timestamp", path)? {
        Some(t) => t,
        None => zabbix_date_time(o, path)?.unwrap_or(received),
    };
    let labels = zabbix_tags(o, path)?;
    ci.service = labels.get("service").filter(|s| !s.trim().is_empty()).cloned();
    let summary = zabbix_text(o, "message", path)?.unwrap_or(check).to_owned();
    Ok(Event {
        source: "zabbix".to_owned(),
        source_id,
        ci,
        check: check.to_owned(),
        severity,
        status,
        summary,
        labels,
        annotations: BTreeMap::new(),
        time,
        origin: None,
        ends_at: None,
    })
}

/// `event_date` (`YYYY.MM.DD`) and optional `event_time` (`HH:MM:SS`), as UTC.
fn zabbix_date_time(o: &Fields<'_>, path: &Path<'_>) -> Result<Option<DateTime<Utc>>, DecodeError> {
    let Some(date) = zabbix_text(o, "event_date", path)? else {
        return Ok(None);
    };
    let d = NaiveDate::parse_from_str(date.trim(), "%Y.%m.%d")
        .map_err(|_| schema(&path.key("event_date"), format!("invalid date {date:?} (expected YYYY.MM.DD)")))?;
    let t = match zabbix_text(o, "event_time", path)? {
        None => NaiveTime::MIN,
        Some(time) => NaiveTime::parse_from_str(time.trim(), "%H:%M:%S")
            .map_err(|_| schema(&path.key("event_time"), format!("invalid time {time:?} (expected HH:MM:SS)")))?,
    };
    Ok(Some(d.and_time(t).and_utc()))
}

/// `tags` as labels: array of `{tag, value}`, object, or either inside a string.
fn zabbix_tags(o: &Fields<'_>, path: &Path<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
    let tp = path.key("tags");
    match get(o, "tags") {
        None => Ok(BTreeMap::new()),
        Some(V::Str(s)) => {
            let t = s.trim();
            if t.is_empty() || is_macro(t) {
                return Ok(BTreeMap::new());
            }
            if !(t.starts_with('[') || t.starts_with('{')) {
                return Err(schema(&tp, "expected array or object, got string"));
            }
            check_depth(t.as_bytes()).map_err(|_| schema(&tp, format!("JSON in string nests deeper than {MAX_DEPTH}")))?;
            let inner: V<'_> = serde_json::from_str(t).map_err(|e| match json_error(e) {
                DecodeError::Json { line, column, message } => {
                    schema(&tp, format!("invalid JSON in string at line {line}, column {column}: {message}"))
                }
                other => schema(&tp, other.to_string()),
            })?;
            tags_value(&inner, &tp)
        }
        Some(v) => tags_value(v, &tp),
    }
}

fn tags_value(v: &V<'_>, tp: &Path<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
    match v {
        V::Arr(items) => {
            let mut labels = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let ip = tp.index(i);
                let t = as_obj(item, &ip)?;
                let tag = req_text(t, "tag", &ip)?;
                let value = opt_str(t, "value", &ip)?.unwrap_or_default();
                labels.insert(tag.to_owned(), value.to_owned());
            }
            Ok(labels)
        }
        V::Obj(_) => str_map(v, tp),
        other => Err(wrong_type(tp, "array or object", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use crate::source::decode::test_support::{at, dec, labels, one, received, schema_err};
    use serde_json::json;

    fn zabbix_problem() -> serde_json::Value {
        json!({"event_id": "4711", "event_value": "1", "host": "db-01", "host_ip": "10.0.0.5",
               "trigger_name": "MySQL is down", "severity": "Disaster",
               "message": "MySQL on db-01 stopped responding", "timestamp": 1714564800,
               "tags": [{"tag": "service", "value": "payments"}, {"tag": "env", "value": "prod"}, {"tag": "bare"}]})
    }

    #[test]
    fn zabbix_problem_maps_fields() {
        for format in [Format::Zabbix, Format::Auto] {
            let e = one(format, zabbix_problem());
            assert_eq!(e.source, "zabbix");
            assert_eq!(e.source_id.as_deref(), Some("4711"));
            assert_eq!(e.check, "MySQL is down");
            assert_eq!(e.status, Status::Firing);
            assert_eq!(e.severity, Severity::Critical);
            assert_eq!(e.ci, CiHint { host: Some("db-01".into()), service: Some("payments".into()), ip: Some("10.0.0.5".into()) });
            assert_eq!(e.summary, "MySQL on db-01 stopped responding");
            assert_eq!(e.time, at("2024-05-01T12:00:00Z"));
            assert_eq!(e.labels, labels(&[("service", "payments"), ("env", "prod"), ("bare", "")]));
            assert!(e.annotations.is_empty());
        }
    }

    #[test]
    fn zabbix_status_spellings() {
        let with = |pairs: &[(&str, serde_json::Value)]| {
            let mut v = zabbix_problem();
            let o = v.as_object_mut().unwrap();
            o.remove("event_value");
            for (k, val) in pairs {
                o.insert(k.to_string(), val.clone());
            }
            one(Format::Auto, v).status
        };
        assert_eq!(with(&[("event_value", json!("0"))]), Status::Resolved);
        assert_eq!(with(&[("event_value", json!(0))]), Status::Resolved);
        assert_eq!(with(&[("event_value", json!(1))]), Status::Firing);
        assert_eq!(with(&[("status", json!("PROBLEM"))]), Status::Firing);
        assert_eq!(with(&[("status", json!("RESOLVED"))]), Status::Resolved);
        assert_eq!(with(&[("status", json!("OK"))]), Status::Resolved);
        assert_eq!(with(&[("status", json!("Resolved"))]), Status::Resolved);
        assert_eq!(with(&[]), Status::Firing, "neither: a problem");
        assert_eq!(with(&[("event_value", json!("0")), ("status", json!("PROBLEM"))]), Status::Resolved);
        assert_eq!(with(&[("event_value", json!("{EVENT.VALUE}")), ("status", json!("OK"))]), Status::Resolved);
    }

    #[test]
    fn zabbix_times_severities_tags_and_macros() {
        let with = |pairs: &[(&str, serde_json::Value)]| {
            let mut v = zabbix_problem();
            let o = v.as_object_mut().unwrap();
            for (k, val) in pairs {
                if val.is_null() {
                    o.remove(*k);
                } else {
                    o.insert(k.to_string(), val.clone());
                }
            }
            one(Format::Auto, v)
        };
        assert_eq!(with(&[("timestamp", json!("1714564800"))]).time, at("2024-05-01T12:00:00Z"));
        assert_eq!(with(&[("timestamp", json!(1714564800.5))]).time, at("2024-05-01T12:00:00.5Z"));
        let dated = with(&[("timestamp", json!(null)), ("event_date", json!("2024.05.01")), ("event_time", json!("11:22:33"))]);
        assert_eq!(dated.time, at("2024-05-01T11:22:33Z"));
        let date_only = with(&[("timestamp", json!(null)), ("event_date", json!("2024.05.01"))]);
        assert_eq!(date_only.time, at("2024-05-01T00:00:00Z"));
        assert_eq!(with(&[("timestamp", json!(null))]).time, received());
        assert_eq!(with(&[("timestamp", json!("{EVENT.TIMESTAMP}"))]).time, received());

        for (word, want) in [
            ("High", Severity::Major),
            ("Average", Severity::Minor),
            ("Warning", Severity::Warning),
            ("Information", Severity::Info),
            ("Not classified", Severity::Info),
            ("4", Severity::Major),
            ("whatever", Severity::Warning),
        ] {
            assert_eq!(with(&[("severity", json!(word))]).severity, want, "{word}");
        }
        assert_eq!(with(&[("severity", json!(null))]).severity, Severity::Warning);

        let e = with(&[("tags", json!({"service": "web", "env": "dev"}))]);
        assert_eq!(e.labels, labels(&[("service", "web"), ("env", "dev")]));
        assert_eq!(e.ci.service.as_deref(), Some("web"));
        let e = with(&[("tags", json!(r#"[{"tag":"service","value":"pay"}]"#))]);
        assert_eq!(e.labels, labels(&[("service", "pay")]));
        let e = with(&[("tags", json!("{EVENT.TAGSJSON}")), ("host_ip", json!("{HOST.IP}")), ("event_id", json!(9))]);
        assert!(e.labels.is_empty());
        assert_eq!(e.ci.ip, None);
        assert_eq!(e.ci.service, None);
        assert_eq!(e.source_id.as_deref(), Some("9"));
        let e = with(&[("message", json!("")), ("host_ip", json!(null)), ("host", json!("10.9.9.9"))]);
        assert_eq!(e.summary, "MySQL is down");
        assert_eq!((e.ci.host, e.ci.ip), (None, Some("10.9.9.9".to_string())));
    }

    #[test]
    fn zabbix_errors_name_the_field() {
        let with = |k: &str, val: serde_json::Value| {
            let mut v = zabbix_problem();
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val;
            }
            v
        };
        schema_err(Format::Zabbix, with("trigger_name", json!(null)), "trigger_name: missing");
        schema_err(Format::Auto, with("trigger_name", json!(42)), "trigger_name: expected string, got number");
        schema_err(Format::Auto, with("event_value", json!("2")), "event_value: expected \"1\" (problem) or \"0\" (recovery), got \"2\"");
        schema_err(Format::Auto, with("event_value", json!(7)), "event_value: expected \"1\" (problem) or \"0\" (recovery), got 7");
        schema_err(Format::Auto, with("event_value", json!(true)), "event_value: expected string, got boolean");
        schema_err(Format::Auto, with("event_id", json!(1.5)), "event_id: expected string or integer, got number");
        schema_err(Format::Auto, with("severity", json!(5)), "severity: expected string, got number");
        schema_err(Format::Auto, with("host", json!(["a"])), "host: expected string, got array");
        schema_err(Format::Auto, with("timestamp", json!("soon")), "timestamp: invalid unix time \"soon\" (expected seconds since 1970)");
        schema_err(Format::Auto, with("timestamp", json!(1e300)), "timestamp: unix time out of range");
        schema_err(Format::Auto, with("timestamp", json!({})), "timestamp: expected number or string, got object");
        schema_err(Format::Auto, with("tags", json!([{"tag": "a"}, {"value": "b"}])), "tags[1].tag: missing");
        schema_err(Format::Auto, with("tags", json!([{"tag": "a", "value": 3}])), "tags[0].value: expected string, got number");
        schema_err(Format::Auto, with("tags", json!({"a": 1})), "tags.a: expected string, got number");
        schema_err(Format::Auto, with("tags", json!(3)), "tags: expected array or object, got number");
        schema_err(Format::Auto, with("tags", json!("service:pay")), "tags: expected array or object, got string");
        let e = dec(Format::Auto, &with("tags", json!("[{\"tag\":"))).unwrap_err();
        assert!(e.to_string().starts_with("tags: invalid JSON in string at line 1, column 8"), "{e}");
        schema_err(Format::Auto, with("tags", json!(r#"[{"tag": 1}]"#)), "tags[0].tag: expected string, got number");
        let mut v = with("event_value", json!(null));
        v["status"] = json!("UPDATE");
        schema_err(Format::Auto, v, "status: unknown status \"UPDATE\" (expected PROBLEM, RESOLVED or OK)");
        let mut v = with("timestamp", json!(null));
        v["event_date"] = json!("01/05/2024");
        schema_err(Format::Auto, v.clone(), "event_date: invalid date \"01/05/2024\" (expected YYYY.MM.DD)");
        v["event_date"] = json!("2024.05.01");
        v["event_time"] = json!("noon");
        schema_err(Format::Auto, v, "event_time: invalid time \"noon\" (expected HH:MM:SS)");
        schema_err(Format::Zabbix, json!([]), "payload: expected object, got array");
    }
}
