//! Why: the core's recent decisions, kept so `GET /explain/{id}` and
//! `triaged explain ID` can say why an event was dropped, suppressed, grouped,
//! joined to an incident or chosen as its root cause.
//!
//! Each decision other than a plain repeat (a deduplicated event only raises
//! its fingerprint's count, shown on the incident) is remembered under its
//! fingerprint, its source's event id and its Kafka origin, in caches bounded
//! by bytes (an entry weighs its key and texts) that drop the least recently
//! used entries.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::core::{Decision, DecisionKind};
use crate::event::Event;
use crate::incident::Incident;

/// Bytes of decisions remembered per key kind (an entry's key and texts).
const CAPACITY_BYTES: u64 = 16 << 20;

impl Explained {
    /// About what the entry holds, in bytes.
    fn weight(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Explained>()
            + opt(&self.origin)
            + opt(&self.source_id)
            + self.source.len()
            + self.check.len()
            + self.decision.len()
            + opt(&self.fingerprint)
            + self.reason.len()
    }
}

fn cache() -> Cache<String, Arc<Explained>> {
    Cache::builder()
        .max_capacity(CAPACITY_BYTES)
        .weigher(|k: &String, v: &Arc<Explained>| u32::try_from(k.len() + v.weight()).unwrap_or(u32::MAX))
        .build()
}

/// One remembered decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explained {
    /// When the core decided (its clock).
    pub at: DateTime<Utc>,
    /// `topic/partition@offset` of the message, when it came from Kafka.
    pub origin: Option<String>,
    /// The monitoring system's own event id.
    pub source_id: Option<String>,
    pub source: String,
    pub check: String,
    pub decision: String,
    pub fingerprint: Option<String>,
    pub reason: String,
}

/// What `/explain/{id}` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Explanation {
    /// `id` is an open incident's key.
    Incident { incident: Box<Incident> },
    /// `id` is a fingerprint, an event id or an origin; `incident` is the open
    /// incident its fingerprint belongs to, if any.
    Event { decision: Explained, incident: Option<Box<Incident>> },
}

/// The decision caches, shared by the core loop (writer) and the HTTP server.
#[derive(Clone)]
pub struct DecisionLog {
    by_fingerprint: Cache<String, Arc<Explained>>,
    by_event_id: Cache<String, Arc<Explained>>,
    by_origin: Cache<String, Arc<Explained>>,
}

impl Default for DecisionLog {
    fn default() -> Self {
        DecisionLog { by_fingerprint: cache(), by_event_id: cache(), by_origin: cache() }
    }
}

impl DecisionLog {
    /// Remembers `decision` on `event`; plain repeats are not remembered.
    pub fn record(&self, event: &Event, decision: &Decision, now: DateTime<Utc>) {
        if decision.kind == DecisionKind::Deduplicated {
            return;
        }
        let e = Arc::new(Explained {
            at: now,
            origin: event.origin.as_ref().map(|o| o.to_string()),
            source_id: event.source_id.clone(),
            source: event.source.clone(),
            check: event.check.clone(),
            decision: decision.kind.as_str().to_string(),
            fingerprint: decision.fingerprint.clone(),
            reason: decision.reason.clone(),
        });
        if let Some(fp) = &e.fingerprint {
            self.by_fingerprint.insert(fp.clone(), e.clone());
        }
        if let Some(id) = &e.source_id {
            self.by_event_id.insert(id.clone(), e.clone());
        }
        if let Some(o) = &e.origin {
            self.by_origin.insert(o.clone(), e);
        }
    }

    /// Remembers a message that produced no event (undecodable: dead-lettered).
    pub fn record_skipped(&self, origin: &crate::event::Origin, reason: &str, now: DateTime<Utc>) {
        let e = Explained {
            at: now,
            origin: Some(origin.to_string()),
            source_id: None,
            source: "-".into(),
            check: "-".into(),
            decision: "skipped".into(),
            fingerprint: None,
            reason: reason.to_string(),
        };
        self.by_origin.insert(origin.to_string(), Arc::new(e));
    }

    /// Explains `id`: an open incident's key, a fingerprint, an event id or an origin.
    pub fn explain(&self, id: &str, open: &[Incident]) -> Option<Explanation> {
        if let Some(inc) = open.iter().find(|i| i.key == id) {
            return Some(Explanation::Incident { incident: Box::new(inc.clone()) });
        }
        let e = self.by_fingerprint.get(id).or_else(|| self.by_event_id.get(id)).or_else(|| self.by_origin.get(id))?;
        let incident = e
            .fingerprint
            .as_ref()
            .and_then(|fp| open.iter().find(|i| i.members.iter().any(|m| &m.fingerprint == fp)))
            .map(|i| Box::new(i.clone()));
        Some(Explanation::Event { decision: (*e).clone(), incident })
    }
}

/// Renders an explanation for a terminal.
pub fn render(x: &Explanation) -> String {
    let mut out = String::new();
    match x {
        Explanation::Incident { incident } => out.push_str(&render_incident(incident)),
        Explanation::Event { decision: d, incident } => {
            out.push_str(&format!("event {} from {}: {}\n", d.source_id.as_deref().unwrap_or("-"), d.source, d.check));
            out.push_str(&format!("  decision:    {} at {}\n", d.decision, d.at.to_rfc3339()));
            out.push_str(&format!("  why:         {}\n", d.reason));
            if let Some(fp) = &d.fingerprint {
                out.push_str(&format!("  fingerprint: {fp}\n"));
            }
            if let Some(o) = &d.origin {
                out.push_str(&format!("  origin:      {o}\n"));
            }
            if let Some(i) = incident {
                out.push('\n');
                out.push_str(&render_incident(i));
            }
        }
    }
    out
}

fn render_incident(i: &Incident) -> String {
    let mut out = format!("incident {} P{} (impact {} x urgency {}), {:?}: {}\n", i.key, i.priority, i.impact, i.urgency, i.state, i.title);
    if let Some(r) = &i.root_cause {
        out.push_str(&format!("  root cause:  {} ({})\n", r.id, r.kind));
    }
    out.push_str(&format!(
        "  owner:       {}   on-call: {}   runbook: {}\n",
        i.assignment_group.as_deref().unwrap_or("-"),
        i.oncall.as_deref().unwrap_or("-"),
        i.runbook.as_deref().unwrap_or("-")
    ));
    if !i.impacted_services.is_empty() {
        out.push_str(&format!("  impacts:     {}\n", i.impacted_services.join(", ")));
    }
    out.push_str(&format!("  members ({}, {} events):\n", i.members.len(), i.event_count));
    for m in &i.members {
        out.push_str(&format!("    {:?} x{} {:?} {}\n", m.status, m.count, m.severity, m.fingerprint));
    }
    out.push_str("  why:\n");
    for r in &i.reasons {
        out.push_str(&format!("    {r}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Decision, DecisionKind};
    use crate::event::{CiHint, Event, Origin, Severity, Status};

    fn event(id: &str, offset: i64) -> Event {
        Event {
            source: "zabbix".into(),
            source_id: Some(id.into()),
            ci: CiHint { host: Some("db-1".into()), service: None, ip: None },
            check: "Database down".into(),
            severity: Severity::Critical,
            status: Status::Firing,
            summary: String::new(),
            labels: Default::default(),
            annotations: Default::default(),
            time: Utc::now(),
            origin: Some(Origin { topic: "events".into(), partition: 2, offset }),
            ends_at: None,
        }
    }

    fn decision(kind: DecisionKind, reason: &str) -> Decision {
        Decision { kind, fingerprint: Some("zabbix|db-1|Database down".into()), incident: None, reason: reason.into() }
    }

    #[test]
    fn found_by_fingerprint_event_id_and_origin_but_repeats_are_not_kept() {
        let log = DecisionLog::default();
        log.record(&event("e1", 7), &decision(DecisionKind::New, "topology: no failing upstream"), Utc::now());
        log.record(&event("e2", 8), &decision(DecisionKind::Deduplicated, "repeat"), Utc::now());
        for id in ["zabbix|db-1|Database down", "e1", "events/2@7"] {
            let Some(Explanation::Event { decision, incident }) = log.explain(id, &[]) else { panic!("{id} not explained") };
            assert_eq!((decision.decision.as_str(), decision.reason.as_str()), ("new", "topology: no failing upstream"));
            assert!(incident.is_none());
        }
        assert!(log.explain("e2", &[]).is_none(), "plain repeats are not remembered");
    }

    #[test]
    fn the_caches_hold_at_most_their_bytes() {
        let log = DecisionLog::default();
        let big = "x".repeat(900_000);
        for i in 0..400 {
            let mut e = event(&format!("e{i}"), i);
            e.check = big.clone();
            log.record(&e, &decision(DecisionKind::New, &big), Utc::now());
        }
        for c in [&log.by_fingerprint, &log.by_event_id, &log.by_origin] {
            c.run_pending_tasks();
            assert!(c.weighted_size() <= CAPACITY_BYTES, "{} bytes kept", c.weighted_size());
            assert!(c.entry_count() < 400);
        }
    }

    #[test]
    fn skipped_messages_are_explained_by_origin() {
        let log = DecisionLog::default();
        let origin = Origin { topic: "events".into(), partition: 1, offset: 58 };
        log.record_skipped(&origin, "invalid JSON at line 1, column 20", Utc::now());
        let Some(Explanation::Event { decision, .. }) = log.explain("events/1@58", &[]) else { panic!("not explained") };
        assert_eq!(decision.decision, "skipped");
        assert!(render(&Explanation::Event { decision, incident: None }).contains("invalid JSON"));
    }
}
