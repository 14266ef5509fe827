//! The demo's alerts: one message per CI in its monitoring tool's own format
//! (Zabbix for network and databases, Nagios for hosts, Alertmanager for VMs,
//! applications and the rest), and the storm the demo tells: a core switch
//! fails and everything below it alerts, plus an unrelated database fault.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::topology::{CiIdx, Snapshot};

/// One monitoring message in its source's own format.
pub fn message(cmdb: &Snapshot, ci: CiIdx, firing: bool, at: DateTime<Utc>, seq: u64) -> serde_json::Value {
    let c = cmdb.ci(ci);
    let ts = at.timestamp();
    let name = c.name.as_str();
    match c.kind.as_str() {
        "switch" | "router" | "firewall" | "load_balancer" | "database" | "storage" => {
            let (trigger, sev) = match c.kind.as_str() {
                "database" => ("Database connection failed", "Disaster"),
                _ => ("ICMP ping unreachable", "High"),
            };
            json!({
                "event_id": format!("{}", 100000 + seq), "event_value": if firing { "1" } else { "0" },
                "host": name, "host_ip": c.ips.first(), "trigger_name": trigger, "severity": sev,
                "message": format!("{trigger} on {name}"), "timestamp": ts,
                "tags": [{"tag": "site", "value": c.site.clone().unwrap_or_default()}]
            })
        }
        "hypervisor" | "host" => json!({
            "source": "nagios", "notification_type": if firing { "PROBLEM" } else { "RECOVERY" },
            "host_name": name, "host_address": c.ips.first(), "host_state": if firing { "DOWN" } else { "UP" },
            "output": if firing { "CRITICAL - Host Unreachable" } else { "PING OK - Packet loss = 0%" }, "timestamp": ts
        }),
        "vm" => alertmanager("InstanceDown", "critical", &format!("{name}:9100"), "node", firing, at, "Target is down"),
        "application" => alertmanager("HighErrorRate", "major", &format!("{name}:8080"), "http", firing, at, "5xx ratio above 5%"),
        _ => alertmanager("ProbeFailure", "major", &format!("{name}:443"), "blackbox", firing, at, "synthetic probe fails"),
    }
}

fn alertmanager(alert: &str, sev: &str, instance: &str, job: &str, firing: bool, at: DateTime<Utc>, summary: &str) -> serde_json::Value {
    let status = if firing { "firing" } else { "resolved" };
    let ends = if firing { "0001-01-01T00:00:00Z".to_string() } else { at.to_rfc3339() };
    json!({
        "version": "4", "status": status, "receiver": "triaged", "groupKey": format!("{{}}:{{alertname=\"{alert}\"}}"),
        "groupLabels": {"alertname": alert}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager.example.net",
        "alerts": [{
            "status": status, "labels": {"alertname": alert, "severity": sev, "instance": instance, "job": job},
            "annotations": {"summary": summary}, "startsAt": at.to_rfc3339(), "endsAt": ends,
            "generatorURL": "http://prometheus.example.net/graph", "fingerprint": format!("{:x}", instance.len() * 7919 + alert.len())
        }]
    })
}

/// CIs downstream of `root` (everything that depends on it), breadth first.
pub fn downstream(cmdb: &Snapshot, root: CiIdx) -> Vec<CiIdx> {
    let mut seen = vec![false; cmdb.len()];
    seen[root as usize] = true;
    let mut out = Vec::new();
    let mut queue: VecDeque<CiIdx> = VecDeque::from([root]);
    while let Some(c) = queue.pop_front() {
        for &(d, _) in cmdb.downstream(c) {
            if !seen[d as usize] {
                seen[d as usize] = true;
                out.push(d);
                queue.push_back(d);
            }
        }
    }
    out
}

/// The storm: (key, payload) pairs for the firing phase and the recovery phase.
pub struct Storm {
    pub firing: Vec<(String, Vec<u8>)>,
    pub recovery: Vec<(String, Vec<u8>)>,
    pub root: String,
    pub unrelated: String,
    pub downstream: usize,
}

/// Builds the storm from the example CMDB.
pub fn storm(cmdb: &Snapshot, repeats: u32, now: DateTime<Utc>) -> Option<Storm> {
    let find =
        |kind: &str, name_part: &str| (0..cmdb.len() as CiIdx).find(|&i| cmdb.ci(i).kind == kind && cmdb.ci(i).name.contains(name_part));
    let root = find("switch", "core")?;
    let site = cmdb.ci(root).site.clone();
    let down = downstream(cmdb, root);
    // A database away from the storm, and so are its redundancy peers: its
    // fault is its own, not its group's.
    let in_storm: std::collections::HashSet<CiIdx> = down.iter().copied().collect();
    let peers_clear = |i: CiIdx| cmdb.group_of(i).is_none_or(|g| g.members.iter().all(|m| !in_storm.contains(m)));
    let unrelated = (0..cmdb.len() as CiIdx)
        .find(|&i| cmdb.ci(i).kind == "database" && cmdb.ci(i).site != site && !in_storm.contains(&i) && peers_clear(i))?;
    let mut seq = 0u64;
    let mut enc = |ci: CiIdx, firing: bool, at: DateTime<Utc>| {
        seq += 1;
        (cmdb.ci(ci).name.clone(), serde_json::to_vec(&message(cmdb, ci, firing, at, seq)).expect("json"))
    };
    let mut firing = Vec::new();
    // Downstream symptoms arrive first, the root's own alert part-way through.
    for r in 0..repeats.max(1) {
        let at = now + chrono::Duration::milliseconds(i64::from(r) * 500);
        for (i, &c) in down.iter().enumerate() {
            if r == 0 && i == down.len() / 3 {
                firing.push(enc(root, true, at));
            }
            firing.push(enc(c, true, at));
        }
        if r > 0 {
            firing.push(enc(root, true, at));
        }
        firing.push(enc(unrelated, true, at));
    }
    // Noise the rules must drop, and a message no decoder accepts.
    firing.push((
        "alertmanager".into(),
        serde_json::to_vec(&alertmanager("Watchdog", "none", "prometheus:9090", "prometheus", true, now, "heartbeat")).unwrap(),
    ));
    firing.push(("garbage".into(), b"{\"host\": \"sw-acc\", truncated".to_vec()));
    let later = now + chrono::Duration::seconds(5);
    let mut recovery: Vec<(String, Vec<u8>)> = down.iter().map(|&c| enc(c, false, later)).collect();
    recovery.push(enc(root, false, later));
    recovery.push(enc(unrelated, false, later));
    Some(Storm { firing, recovery, root: cmdb.ci(root).id.clone(), unrelated: cmdb.ci(unrelated).id.clone(), downstream: down.len() })
}
