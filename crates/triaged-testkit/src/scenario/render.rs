//! A scenario's alerts as Kafka message payloads, in each CI's monitoring
//! tool's format: fault alerts as the demo renders them (Zabbix for network,
//! storage and databases, Nagios for hosts, Alertmanager for the rest), and
//! warnings in the same tools' formats with a warning severity.

use chrono::{DateTime, Utc};
use serde_json::json;

use triaged::topology::{CiIdx, Snapshot};

/// Whether the tool watching a CI of `kind` sends a firing alert again
/// while it lasts (Alertmanager re-notifies; Zabbix and Nagios send a
/// problem once).
pub(super) fn resends(kind: &str) -> bool {
    !matches!(kind, "switch" | "router" | "firewall" | "load_balancer" | "database" | "storage" | "hypervisor" | "host")
}

/// A fault alert on `ci`, timed `at` (an Alertmanager alert's `startsAt`, or its end when resolved).
pub(super) fn fault(cmdb: &Snapshot, ci: CiIdx, firing: bool, at: DateTime<Utc>, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&triaged::demo::message(cmdb, ci, firing, at, seq)).expect("JSON values serialize")
}

/// A warning on `ci`, timed `at` as [`fault`] is.
pub(super) fn warning(cmdb: &Snapshot, ci: CiIdx, firing: bool, at: DateTime<Utc>, seq: u64) -> Vec<u8> {
    let c = cmdb.ci(ci);
    let name = c.name.as_str();
    let v = match c.kind.as_str() {
        "switch" | "router" | "firewall" | "load_balancer" | "database" | "storage" => {
            let trigger = match c.kind.as_str() {
                "database" => "Slow queries above threshold",
                "storage" => "Array latency high",
                _ => "High interface utilization",
            };
            json!({
                "event_id": format!("{}", 500000 + seq), "event_value": if firing { "1" } else { "0" },
                "host": name, "host_ip": c.ips.first(), "trigger_name": trigger, "severity": "Warning",
                "message": format!("{trigger} on {name}"), "timestamp": at.timestamp(),
                "tags": [{"tag": "site", "value": c.site.clone().unwrap_or_default()}]
            })
        }
        "hypervisor" | "host" => json!({
            "source": "nagios", "notification_type": if firing { "PROBLEM" } else { "RECOVERY" },
            "host_name": name, "host_address": c.ips.first(), "service_description": "Memory usage",
            "service_state": if firing { "WARNING" } else { "OK" },
            "output": if firing { "WARNING - memory usage 91%" } else { "OK - memory usage 40%" }, "timestamp": at.timestamp()
        }),
        "vm" => alertmanager("DiskSpaceLow", &format!("{name}:9100"), "node", firing, at, "filesystem above 85%"),
        "application" => alertmanager("HighLatency", &format!("{name}:8080"), "http", firing, at, "p99 latency above 2 s"),
        _ => alertmanager("ProbeSlow", &format!("{name}:443"), "blackbox", firing, at, "synthetic probe slow"),
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

fn alertmanager(alert: &str, instance: &str, job: &str, firing: bool, at: DateTime<Utc>, summary: &str) -> serde_json::Value {
    let status = if firing { "firing" } else { "resolved" };
    let ends = if firing { "0001-01-01T00:00:00Z".to_string() } else { at.to_rfc3339() };
    json!({
        "version": "4", "status": status, "receiver": "triaged", "groupKey": format!("{{}}:{{alertname=\"{alert}\"}}"),
        "groupLabels": {"alertname": alert}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager.example.net",
        "alerts": [{
            "status": status, "labels": {"alertname": alert, "severity": "warning", "instance": instance, "job": job},
            "annotations": {"summary": summary}, "startsAt": at.to_rfc3339(), "endsAt": ends,
            "generatorURL": "http://prometheus.example.net/graph", "fingerprint": format!("{:016x}", instance.len() * 7919 + alert.len())
        }]
    })
}
