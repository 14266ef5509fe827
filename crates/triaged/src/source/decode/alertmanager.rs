//! The Alertmanager formats: the webhook payload (version 4) and the v2 API
//! alert list, one event per alert.

use chrono::{DateTime, Datelike, Utc};

use super::fields::{as_obj, get, get_raw, hint_host_or_ip, opt_map, opt_str, opt_text, opt_time, parse_status, str_map};
use super::path::{missing, schema, wrong_type, Path};
use super::value::{Fields, V};
use super::DecodeError;
use crate::event::{CiHint, Event, Severity, Status};

pub(super) fn alertmanager(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Vec<Event>, DecodeError> {
    match root {
        V::Arr(alerts) => {
            let mut events = Vec::with_capacity(alerts.len());
            for (i, a) in alerts.iter().enumerate() {
                events.push(am_alert(a, &path.index(i), AlertShape::List, received)?);
            }
            Ok(events)
        }
        V::Obj(o) => {
            let group_status = match opt_str(o, "status", path)? {
                None => None,
                Some(s) => Some(
                    parse_status(s)
                        .ok_or_else(|| schema(&path.key("status"), format!("unknown status {s:?} (expected firing or resolved)")))?,
                ),
            };
            let ap = path.key("alerts");
            let alerts = match get_raw(o, "alerts") {
                None => return Err(missing(&ap)),
                Some(V::Arr(a)) => a,
                Some(other) => return Err(wrong_type(&ap, "array", other)),
            };
            let mut events = Vec::with_capacity(alerts.len());
            for (i, a) in alerts.iter().enumerate() {
                events.push(am_alert(a, &ap.index(i), AlertShape::Webhook(group_status), received)?);
            }
            Ok(events)
        }
        other => Err(wrong_type(path, "object (Alertmanager webhook) or array (v2 alert list)", other)),
    }
}

#[derive(Clone, Copy)]
enum AlertShape {
    /// Webhook alert, with the webhook's top-level status.
    Webhook(Option<Status>),
    /// v2 API alert: the status comes from `endsAt`.
    List,
}

/// `startsAt`/`endsAt`, with the zero time counting as absent.
fn am_time(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<DateTime<Utc>>, DecodeError> {
    Ok(opt_time(o, key, path)?.filter(|t| t.year() > 1))
}

fn am_alert(v: &V<'_>, path: &Path<'_>, shape: AlertShape, received: DateTime<Utc>) -> Result<Event, DecodeError> {
    let o = as_obj(v, path)?;
    let lp = path.key("labels");
    let labels = match get(o, "labels") {
        None => return Err(missing(&lp)),
        Some(v) => str_map(v, &lp)?,
    };
    let check = match labels.get("alertname") {
        None => return Err(missing(&lp.key("alertname"))),
        Some(s) if s.trim().is_empty() => return Err(schema(&lp.key("alertname"), "must not be empty")),
        Some(s) => s.clone(),
    };
    let annotations = opt_map(o, "annotations", path)?;
    let starts = am_time(o, "startsAt", path)?;
    let ends = am_time(o, "endsAt", path)?;
    let by_end = || match ends {
        Some(e) if e <= received => Status::Resolved,
        _ => Status::Firing,
    };
    let status = match shape {
        AlertShape::List => by_end(),
        AlertShape::Webhook(group) => match opt_str(o, "status", path)? {
            Some(s) => {
                parse_status(s).ok_or_else(|| schema(&path.key("status"), format!("unknown status {s:?} (expected firing or resolved)")))?
            }
            None => group.unwrap_or_else(by_end),
        },
    };
    let time = match status {
        Status::Firing => starts.unwrap_or(received),
        Status::Resolved => ends.or(starts).unwrap_or(received),
    };
    let source_id = opt_text(o, "fingerprint", path)?.map(str::to_owned);
    let severity = labels.get("severity").and_then(|s| Severity::parse(s)).unwrap_or(Severity::Warning);
    let mut ci = CiHint::default();
    for key in ["host", "hostname", "node", "instance"] {
        if let Some(value) = labels.get(key) {
            let value = if key == "instance" { instance_host(value) } else { value.trim() };
            hint_host_or_ip(&mut ci, value);
        }
    }
    ci.service = ["service", "job"].iter().filter_map(|k| labels.get(*k)).find(|s| !s.trim().is_empty()).cloned();
    let summary =
        ["summary", "description"].iter().filter_map(|k| annotations.get(*k)).find(|s| !s.trim().is_empty()).unwrap_or(&check).clone();
    Ok(Event {
        source: "alertmanager".to_owned(),
        source_id,
        ci,
        check,
        severity,
        status,
        summary,
        labels,
        annotations,
        time,
        origin: None,
        // Alertmanager resolves an alert at a future `endsAt` unless it is
        // refreshed; so does triaged.
        ends_at: ends.filter(|e| status == Status::Firing && *e > received),
    })
}

/// Host part of a Prometheus `instance`: drops a URL scheme, path, user
/// info and `:port`; unwraps `[v6]`.
fn instance_host(instance: &str) -> &str {
    let mut s = instance.trim();
    if let Some(i) = s.find("://") {
        s = &s[i + 3..];
    }
    if let Some(i) = s.find(['/', '?', '#']) {
        s = &s[..i];
    }
    if let Some(i) = s.rfind('@') {
        s = &s[i + 1..];
    }
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) {
            return host;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use crate::source::decode::test_support::{at, dec, one, received, schema_err, webhook};
    use serde_json::json;

    fn am_alert_json(name: &str, status: &str, instance: &str, starts: &str, ends: &str) -> serde_json::Value {
        json!({
            "status": status,
            "labels": {"alertname": name, "severity": "critical", "instance": instance, "job": "node"},
            "annotations": {"summary": format!("{name} on {instance}")},
            "startsAt": starts, "endsAt": ends,
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": format!("fp-{name}")
        })
    }

    const ZERO: &str = "0001-01-01T00:00:00Z";

    #[test]
    fn alertmanager_webhook_maps_every_alert() {
        let v = webhook(vec![
            am_alert_json("InstanceDown", "firing", "vm-1:9100", "2024-05-01T12:00:00Z", ZERO),
            am_alert_json("DiskFull", "resolved", "10.0.0.7:9100", "2024-05-01T11:00:00Z", "2024-05-01T12:10:00Z"),
            am_alert_json("Probe", "firing", "https://shop.example.com:443/health", "2024-05-01T12:01:00Z", ZERO),
        ]);
        for format in [Format::Alertmanager, Format::Auto] {
            let events = dec(format, &v).unwrap();
            assert_eq!(events.len(), 3);
            let e = &events[0];
            assert_eq!(e.source, "alertmanager");
            assert_eq!(e.check, "InstanceDown");
            assert_eq!(e.severity, Severity::Critical);
            assert_eq!(e.status, Status::Firing);
            assert_eq!(e.ci, CiHint { host: Some("vm-1".into()), service: Some("node".into()), ip: None });
            assert_eq!(e.summary, "InstanceDown on vm-1:9100");
            assert_eq!(e.source_id.as_deref(), Some("fp-InstanceDown"));
            assert_eq!(e.time, at("2024-05-01T12:00:00Z"));
            assert_eq!(e.labels["instance"], "vm-1:9100");
            assert_eq!(e.labels.len(), 4);
            assert_eq!(e.annotations.len(), 1);
            assert_eq!(e.origin, None);

            let r = &events[1];
            assert_eq!(r.status, Status::Resolved);
            assert_eq!(r.time, at("2024-05-01T12:10:00Z"), "resolved events carry endsAt");
            assert_eq!(r.ci.host, None);
            assert_eq!(r.ci.ip.as_deref(), Some("10.0.0.7"), "an IP instance is an IP hint");

            assert_eq!(events[2].ci.host.as_deref(), Some("shop.example.com"));
        }
    }

    #[test]
    fn instance_host_forms() {
        let cases = [
            ("vm-1:9100", "vm-1"),
            ("vm-1", "vm-1"),
            ("10.0.0.7:9100", "10.0.0.7"),
            ("[2001:db8::1]:9100", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("http://user@web.example.com:8080/metrics?x=1", "web.example.com"),
            ("https://shop.example.com", "shop.example.com"),
            (" db-01:abc ", "db-01:abc"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(instance_host(input), want, "{input}");
        }
    }

    #[test]
    fn alertmanager_host_label_precedence_and_ip_hint() {
        let alert = |labels: serde_json::Value| webhook(vec![json!({"status": "firing", "labels": labels})]);
        let e = one(Format::Alertmanager, alert(json!({"alertname": "A", "node": "n-1", "hostname": "h-1", "instance": "10.1.1.1:9100"})));
        assert_eq!(e.ci.host.as_deref(), Some("h-1"));
        assert_eq!(e.ci.ip.as_deref(), Some("10.1.1.1"));
        let e = one(Format::Alertmanager, alert(json!({"alertname": "A", "host": "192.168.0.9", "service": "pay"})));
        assert_eq!(e.ci, CiHint { host: None, service: Some("pay".into()), ip: Some("192.168.0.9".into()) });
        let e = one(Format::Alertmanager, alert(json!({"alertname": "A", "instance": "[fe80::1]:9100"})));
        assert_eq!(e.ci.ip.as_deref(), Some("fe80::1"));
        assert_eq!(e.ci.host, None);
    }

    #[test]
    fn alertmanager_severity_summary_and_time_fallbacks() {
        let e = one(
            Format::Alertmanager,
            webhook(vec![json!({"status": "firing", "labels": {"alertname": "A", "severity": "bogus"},
                                 "annotations": {"summary": "", "description": "desc"}})]),
        );
        assert_eq!(e.severity, Severity::Warning, "unknown severity is warning");
        assert_eq!(e.summary, "desc");
        assert_eq!(e.time, received(), "no startsAt: received");
        assert_eq!(e.source_id, None);
        let e = one(Format::Alertmanager, webhook(vec![json!({"labels": {"alertname": "A", "severity": "page"}})]));
        assert_eq!(e.severity, Severity::Major);
        assert_eq!(e.summary, "A");
        assert_eq!(e.status, Status::Firing, "alert without status takes the webhook's");
        let e = one(Format::Alertmanager, webhook(vec![json!({"labels": {"alertname": "A"}})]));
        assert_eq!(e.severity, Severity::Warning, "missing severity is warning");
    }

    #[test]
    fn alertmanager_zero_ends_at() {
        let starts = "2024-05-01T11:00:00Z";
        let e = one(Format::Alertmanager, webhook(vec![am_alert_json("A", "resolved", "h:1", starts, ZERO)]));
        assert_eq!((e.status, e.time), (Status::Resolved, at(starts)), "zero endsAt falls back to startsAt");
        let mut a = am_alert_json("A", "resolved", "h:1", ZERO, ZERO);
        a.as_object_mut().unwrap().remove("startsAt");
        let e = one(Format::Alertmanager, webhook(vec![a]));
        assert_eq!(e.time, received(), "then to received");
        let e = one(Format::Alertmanager, webhook(vec![am_alert_json("A", "firing", "h:1", ZERO, ZERO)]));
        assert_eq!(e.time, received());
    }

    #[test]
    fn alertmanager_v2_list_status_from_ends_at() {
        let list = json!([
            {"labels": {"alertname": "Past"}, "startsAt": "2024-05-01T11:00:00Z", "endsAt": "2024-05-01T12:00:00Z"},
            {"labels": {"alertname": "Future"}, "startsAt": "2024-05-01T11:00:00Z", "endsAt": "2024-05-01T13:00:00Z"},
            {"labels": {"alertname": "Open"}, "startsAt": "2024-05-01T11:00:00Z"},
            {"labels": {"alertname": "Zero"}, "startsAt": "2024-05-01T11:00:00Z", "endsAt": ZERO},
            {"labels": {"alertname": "ApiGet"}, "status": {"state": "active"}, "endsAt": "2024-05-01T12:30:00Z"}
        ]);
        for format in [Format::Alertmanager, Format::Auto] {
            let events = dec(format, &list).unwrap();
            let got: Vec<_> = events.iter().map(|e| (e.check.as_str(), e.status, e.time)).collect();
            let t11 = at("2024-05-01T11:00:00Z");
            assert_eq!(
                got,
                [
                    ("Past", Status::Resolved, at("2024-05-01T12:00:00Z")),
                    ("Future", Status::Firing, t11),
                    ("Open", Status::Firing, t11),
                    ("Zero", Status::Firing, t11),
                    ("ApiGet", Status::Resolved, received()),
                ]
            );
        }
        assert_eq!(dec(Format::Auto, &json!([])).unwrap(), vec![]);
        assert_eq!(dec(Format::Auto, &webhook(vec![])).unwrap(), vec![]);
    }

    #[test]
    fn alertmanager_errors_name_the_field() {
        let ok = am_alert_json("A", "firing", "h:1", ZERO, ZERO);
        let mut no_name = ok.clone();
        no_name["labels"].as_object_mut().unwrap().remove("alertname");
        schema_err(Format::Auto, webhook(vec![ok.clone(), ok.clone(), ok.clone(), no_name.clone()]), "alerts[3].labels.alertname: missing");
        schema_err(Format::Auto, json!([ok.clone(), no_name]), "[1].labels.alertname: missing");
        schema_err(Format::Auto, webhook(vec![json!({"status": "firing"})]), "alerts[0].labels: missing");
        schema_err(Format::Auto, webhook(vec![json!({"labels": {"alertname": ""}})]), "alerts[0].labels.alertname: must not be empty");
        schema_err(
            Format::Auto,
            webhook(vec![json!({"labels": {"alertname": "A", "severity": 2}})]),
            "alerts[0].labels.severity: expected string, got number",
        );
        schema_err(Format::Auto, webhook(vec![ok.clone(), json!("x")]), "alerts[1]: expected object, got string");
        schema_err(Format::Auto, json!({"alerts": {"a": 1}}), "alerts: expected array, got object");
        schema_err(Format::Alertmanager, json!({"version": "4"}), "alerts: missing");
        schema_err(
            Format::Alertmanager,
            json!("x"),
            "payload: expected object (Alertmanager webhook) or array (v2 alert list), got string",
        );
        schema_err(
            Format::Auto,
            webhook(vec![json!({"labels": {"alertname": "A"}, "startsAt": "5 past 12"})]),
            "alerts[0].startsAt: invalid RFC 3339 time \"5 past 12\"",
        );
        schema_err(
            Format::Auto,
            webhook(vec![json!({"labels": {"alertname": "A"}, "endsAt": 17})]),
            "alerts[0].endsAt: expected string, got number",
        );
        schema_err(
            Format::Auto,
            webhook(vec![json!({"labels": {"alertname": "A"}, "status": "pending"})]),
            "alerts[0].status: unknown status \"pending\" (expected firing or resolved)",
        );
        schema_err(
            Format::Auto,
            webhook(vec![json!({"labels": {"alertname": "A"}, "annotations": {"summary": ["x"]}})]),
            "alerts[0].annotations.summary: expected string, got array",
        );
        schema_err(
            Format::Auto,
            webhook(vec![json!({"labels": {"alertname": "A"}, "fingerprint": 12})]),
            "alerts[0].fingerprint: expected string, got number",
        );
    }
}
