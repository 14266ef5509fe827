//! The benchmark storm: one deterministic alert sequence over a synthetic
//! estate, rendered for each system under test (Kafka messages in the
//! monitoring tools' own formats for `triaged`, Alertmanager v2 alerts, SEC
//! input lines), so every system sees the same events in the same order.
//!
//! Shape: `fault_ratio` of the CIs fail (spread over hosts, hypervisors, VMs,
//! databases, applications and access switches); each failure also raises
//! alerts on up to `MAX_SYMPTOMS` CIs downstream of it. Every alert stream
//! repeats (monitoring tools re-send while a fault lasts) until the storm holds
//! about `events` events, then every stream recovers.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use triaged::topology::{CiIdx, Snapshot};

use crate::cmdb::{synthetic, GenParams};

/// Downstream symptoms raised per failing CI, nearest first.
pub const MAX_SYMPTOMS: usize = 20;

/// Storm knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StormParams {
    /// Events in the storm, recoveries included (rounded to whole repeat rounds).
    pub events: usize,
    /// CIs in the synthetic estate.
    pub cis: usize,
    /// Share of the CIs that fail.
    pub fault_ratio: f64,
    /// Event time the firing phase spreads over.
    pub span: std::time::Duration,
}

impl Default for StormParams {
    fn default() -> StormParams {
        StormParams { events: 1_000_000, cis: 10_000, fault_ratio: 0.01, span: std::time::Duration::from_secs(60) }
    }
}

/// One alert occurrence, whatever the format it is rendered in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    pub ci: CiIdx,
    pub firing: bool,
    pub at: DateTime<Utc>,
}

/// The generated storm.
pub struct Storm {
    pub cmdb: Snapshot,
    /// The failing CIs (root causes).
    pub faults: Vec<CiIdx>,
    /// Distinct alert streams (failing CIs and their symptoms).
    pub streams: usize,
    /// Firing occurrences per stream.
    pub repeats: usize,
    pub alerts: Vec<Alert>,
}

/// Alert name and severity of a CI kind, the same check the Kafka rendering
/// reports in its source's own format (see `triaged::demo::message`).
pub fn check_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "switch" | "router" | "firewall" | "load_balancer" | "storage" => ("IcmpUnreachable", "critical"),
        "database" => ("DatabaseDown", "critical"),
        "hypervisor" | "host" => ("HostDown", "critical"),
        "vm" => ("InstanceDown", "critical"),
        "application" => ("HighErrorRate", "major"),
        _ => ("ProbeFailure", "major"),
    }
}

/// The synthetic estate of about `cis` CIs the benchmark runs over.
pub fn estate(cis: usize) -> Result<Snapshot, String> {
    Snapshot::from_file_model(synthetic(&GenParams::scaled(cis)))
        .map_err(|e| format!("synthetic CMDB of {cis} CIs: {}", triaged::app::join(&e)))
}

const FAULT_KINDS: [&str; 6] = ["host", "hypervisor", "vm", "database", "application", "switch"];

impl Storm {
    /// Builds the estate and the storm; `start` is the first event's time.
    pub fn generate(p: &StormParams, start: DateTime<Utc>) -> Result<Storm, String> {
        Storm::over(estate(p.cis)?, p, start)
    }

    /// The storm over an existing estate.
    pub fn over(cmdb: Snapshot, p: &StormParams, start: DateTime<Utc>) -> Result<Storm, String> {
        let candidates: Vec<CiIdx> = (0..cmdb.len() as CiIdx)
            .filter(|&i| {
                let c = cmdb.ci(i);
                // Core switches take a whole site down: one such fault would be
                // most of the storm. Access switches are in.
                FAULT_KINDS.contains(&c.kind.as_str()) && !(c.kind == "switch" && c.name.contains("core"))
            })
            .collect();
        let wanted = ((cmdb.len() as f64 * p.fault_ratio).round() as usize).clamp(1, candidates.len().max(1));
        if candidates.is_empty() {
            return Err("the estate has no CI that can fail".into());
        }
        let step = candidates.len() as f64 / wanted as f64;
        // Streams per fault: the failing CI, then its nearest downstream CIs.
        // A CI alerts for one fault only: a candidate already alerting (a
        // symptom of an earlier fault) gives way to the next free one.
        let mut alerting = vec![false; cmdb.len()];
        let mut faults = Vec::with_capacity(wanted);
        let mut per_fault: Vec<Vec<CiIdx>> = Vec::with_capacity(wanted);
        for k in 0..wanted {
            let from = (k as f64 * step) as usize;
            let Some(&f) = candidates[from..].iter().chain(&candidates[..from]).find(|&&c| !alerting[c as usize]) else {
                break;
            };
            alerting[f as usize] = true;
            let mut s = vec![f];
            for c in triaged::demo::downstream(&cmdb, f).into_iter().take(MAX_SYMPTOMS) {
                if !alerting[c as usize] {
                    alerting[c as usize] = true;
                    s.push(c);
                }
            }
            faults.push(f);
            per_fault.push(s);
        }
        let streams: usize = per_fault.iter().map(Vec::len).sum();
        let repeats = (p.events.saturating_sub(streams) / streams.max(1)).max(1);
        let gap = Duration::from_std(p.span / repeats as u32).unwrap_or(Duration::milliseconds(1));
        let mut alerts = Vec::with_capacity(streams * (repeats + 1));
        for r in 0..repeats {
            let at = start + gap * r as i32;
            for s in &per_fault {
                // Symptoms are usually seen before their cause: in the first
                // round the failing CI reports last.
                let (root, symptoms) = s.split_first().expect("a fault has its own stream");
                if r > 0 {
                    alerts.push(Alert { ci: *root, firing: true, at });
                }
                alerts.extend(symptoms.iter().map(|&ci| Alert { ci, firing: true, at }));
                if r == 0 {
                    alerts.push(Alert { ci: *root, firing: true, at });
                }
            }
        }
        let recovered = start + Duration::from_std(p.span).unwrap_or_default() + Duration::seconds(5);
        alerts.extend(per_fault.iter().flatten().map(|&ci| Alert { ci, firing: false, at: recovered }));
        Ok(Storm { cmdb, faults, streams, repeats, alerts })
    }

    /// Kafka messages (key, payload) in the source tools' own formats.
    pub fn kafka_messages(&self) -> Vec<(String, Vec<u8>)> {
        self.alerts
            .iter()
            .enumerate()
            .map(|(seq, a)| {
                let v = triaged::demo::message(&self.cmdb, a.ci, a.firing, a.at, seq as u64);
                (self.cmdb.ci(a.ci).name.clone(), serde_json::to_vec(&v).expect("JSON values serialize"))
            })
            .collect()
    }

    /// The labels an Alertmanager or SEC rule sees for an alert.
    pub fn labels(&self, a: &Alert) -> Labels<'_> {
        let c = self.cmdb.ci(a.ci);
        let (alertname, severity) = check_of(&c.kind);
        Labels { alertname, severity, ci: &c.name, kind: &c.kind, site: c.site.as_deref().unwrap_or("none") }
    }

    /// One alert as an element of an Alertmanager `POST /api/v2/alerts` body,
    /// timed at `now` (Alertmanager judges start and end against its own clock).
    pub fn alertmanager_alert(&self, a: &Alert, now: DateTime<Utc>) -> serde_json::Value {
        let l = self.labels(a);
        let mut v = json!({
            "labels": {"alertname": l.alertname, "severity": l.severity, "ci": l.ci, "kind": l.kind, "site": l.site},
            "annotations": {"summary": format!("{} on {}", l.alertname, l.ci)},
            "startsAt": now.to_rfc3339(),
        });
        if !a.firing {
            v["endsAt"] = json!(now.to_rfc3339());
        }
        v
    }

    /// One alert as a SEC input line.
    pub fn sec_line(&self, a: &Alert) -> String {
        let l = self.labels(a);
        format!(
            "{} {} ci={} alert={} severity={} site={} kind={}",
            a.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            if a.firing { "FIRING" } else { "RESOLVED" },
            l.ci,
            l.alertname,
            l.severity,
            l.site,
            l.kind
        )
    }
}

/// Labels of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels<'a> {
    pub alertname: &'static str,
    pub severity: &'static str,
    pub ci: &'a str,
    pub kind: &'a str,
    pub site: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Storm {
        let p = StormParams { events: 5_000, cis: 1_000, fault_ratio: 0.01, span: std::time::Duration::from_secs(10) };
        Storm::generate(&p, DateTime::from_timestamp(1_800_000_000, 0).unwrap()).unwrap()
    }

    #[test]
    fn storm_has_the_requested_shape() {
        let s = small();
        assert_eq!(s.faults.len(), (s.cmdb.len() as f64 * 0.01).round() as usize);
        assert!(s.streams > s.faults.len(), "faults raise downstream symptoms too");
        assert_eq!(s.alerts.len(), s.streams * (s.repeats + 1));
        assert!(s.alerts.len() <= 5_000 + s.streams, "{} alerts", s.alerts.len());
        // Every stream fires `repeats` times and recovers once, last.
        let last = s.alerts.iter().rposition(|a| a.firing).unwrap();
        assert!(s.alerts[last + 1..].iter().all(|a| !a.firing));
        assert_eq!(s.alerts.iter().filter(|a| !a.firing).count(), s.streams);
    }

    #[test]
    fn renderings_agree_on_the_alert() {
        let s = small();
        let a = s.alerts[0];
        let name = &s.cmdb.ci(a.ci).name;
        let (alertname, _) = check_of(&s.cmdb.ci(a.ci).kind);
        let am = s.alertmanager_alert(&a, Utc::now());
        assert_eq!(am["labels"]["ci"], name.as_str());
        assert_eq!(am["labels"]["alertname"], alertname);
        assert!(am.get("endsAt").is_none(), "a firing alert has no end");
        let line = s.sec_line(&a);
        assert!(line.contains(&format!(" FIRING ci={name} alert={alertname} ")), "{line}");
        let (key, payload) = &s.kafka_messages()[0];
        assert_eq!(key, name);
        let events = triaged::source::decode::decode(triaged::config::Format::Auto, payload, Utc::now()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].status, triaged::event::Status::Firing);
    }
}
