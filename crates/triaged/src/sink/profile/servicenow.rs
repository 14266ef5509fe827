//! The ServiceNow profile: Table API incidents found by `correlation_id`
//! (looked up before every create, and read back by the same query),
//! created by POST and changed by PATCH. A field a person owns at this sink
//! (`Incident::owned_at`) is left out of every PATCH; a create sends all.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value};
use tracing::debug;

use super::servicenow_refs::SnRef;
use super::{description, parse_priority, truncate};
use crate::config::ReferenceBy;
use crate::incident::{Action, ActionKind, SinkError};
use crate::sink::{Remote, RemoteRecord, RestSink};

/// ServiceNow `short_description` limit applied by the sink.
const SN_SHORT_DESCRIPTION_MAX: usize = 160;
/// What the one incident query reads: enough to find the record and to read it back.
const SN_FIELDS: &str = "sys_id,state,urgency,impact,priority,assigned_to,assignment_group,sys_updated_on,closed_at,resolved_at";

/// Outcome of a ServiceNow PATCH that tolerates a stale cached sys_id.
enum Patched {
    Done,
    /// 404: the record behind the cached sys_id is gone.
    Gone,
}

/// The incident row of a correlation key, as the one query reads it.
struct SnRow {
    sys_id: String,
    state: String,
    priority: String,
    /// `assigned_to`'s display name (its value when only that came).
    assigned_to: String,
    /// `assignment_group`'s display name, likewise.
    group: String,
    /// `closed_at`, else `resolved_at`.
    closed_at: Option<DateTime<Utc>>,
}

impl SnRow {
    /// States 6 (Resolved), 7 (Closed) and 8 (Canceled) are closed; 2 (In
    /// Progress), 3 (On Hold) or an assignee mean someone took it.
    fn record(&self) -> RemoteRecord {
        let closed = matches!(self.state.as_str(), "6" | "7" | "8");
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        RemoteRecord {
            state: if closed { Remote::Closed } else { Remote::Open },
            acknowledged: matches!(self.state.as_str(), "2" | "3") || !self.assigned_to.is_empty(),
            assignee: non_empty(&self.assigned_to),
            priority: parse_priority(&Value::String(self.priority.clone())),
            group: non_empty(&self.group),
            closed_at: self.closed_at.filter(|_| closed),
        }
    }
}

/// A Table API date-time value (`2026-12-08 01:02:03`, in UTC).
fn sn_time(value: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(value.trim(), "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc())
}

/// A field of a Table API row: `(value, display value)`. With
/// `sysparm_display_value=all` a field is `{value, display_value}`; without
/// it a plain string (both halves then). Absent or null is empty.
pub(super) fn sn_field(row: &Value, name: &str) -> (String, String) {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    match row.get(name) {
        Some(Value::Object(o)) => (text(o.get("value")), text(o.get("display_value"))),
        v => (text(v), text(v)),
    }
}

/// The display name of a field, else its value.
fn sn_display(row: &Value, name: &str) -> String {
    let (value, display) = sn_field(row, name);
    if display.is_empty() {
        value
    } else {
        display
    }
}

/// `s` as a literal in an encoded query: `^` separates terms, a literal one is `^^`.
pub(super) fn sn_escape(s: &str) -> String {
    s.replace('^', "^^")
}

impl RestSink {
    /// What the record of `key` is in: [`SnRow::record`]'s state.
    pub(in crate::sink) async fn sn_state(&self, key: &str) -> Result<Remote, SinkError> {
        Ok(self.sn_find(key).await?.map_or(Remote::Missing, |r| r.record().state))
    }

    /// The record of `key` read back (its sys_id cached for the PATCHes).
    pub(in crate::sink) async fn sn_read_back(&self, key: &str) -> Result<RemoteRecord, SinkError> {
        let Some(row) = self.sn_find(key).await? else { return Ok(RemoteRecord { state: Remote::Missing, ..RemoteRecord::default() }) };
        self.inner.sys_ids.insert(key.to_owned(), row.sys_id.clone());
        Ok(row.record())
    }

    pub(in crate::sink) async fn servicenow(&self, action: &Action) -> Result<(), SinkError> {
        let key = &action.incident.key;
        if let Some(sys_id) = self.inner.sys_ids.get(key) {
            match self.sn_patch(action, &sys_id, true).await? {
                Patched::Done => return Ok(()),
                Patched::Gone => {
                    debug!(key = %key, sys_id = %sys_id, "cached ServiceNow record is gone; looking the key up again");
                    self.inner.sys_ids.invalidate(key);
                }
            }
        }
        // Not cached (or stale): always look up before creating, so a create
        // whose response was lost (timeout) is found, not duplicated.
        if let Some(sys_id) = self.sn_lookup(key).await? {
            self.inner.sys_ids.insert(key.clone(), sys_id.clone());
            self.sn_patch(action, &sys_id, false).await?;
            return Ok(());
        }
        let created = self.sn_create(action).await?;
        match action.kind {
            // The create carried the whole snapshot and the notes.
            ActionKind::Open | ActionKind::Update => Ok(()),
            // Create first, then the transition, so no effect is lost.
            ActionKind::Resolve | ActionKind::Reopen => {
                let sys_id = match created {
                    Some(id) => id,
                    None => self.sn_lookup(key).await?.ok_or_else(|| {
                        SinkError::Permanent(format!(
                            "servicenow: created incident {key} but the response had no sys_id and a lookup does not find it"
                        ))
                    })?,
                };
                self.sn_patch(action, &sys_id, false).await?;
                Ok(())
            }
        }
    }

    /// The first incident row whose `correlation_id` is `key`, if any: the
    /// one query behind the look-up before a create, `look_up` and
    /// `read_back`. A row without a sys_id is an unusable answer.
    async fn sn_find(&self, key: &str) -> Result<Option<SnRow>, SinkError> {
        let mut url = self.url(&["api", "now", "table", "incident"]);
        url.query_pairs_mut()
            .append_pair("sysparm_query", &format!("correlation_id={}", sn_escape(key)))
            .append_pair("sysparm_fields", SN_FIELDS)
            .append_pair("sysparm_display_value", "all")
            .append_pair("sysparm_limit", "1");
        let body = self.call("lookup", Method::GET, url, None).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable("lookup", &body))?;
        let rows = value.get("result").and_then(Value::as_array).ok_or_else(|| self.unusable("lookup", &body))?;
        let Some(row) = rows.first() else { return Ok(None) };
        let (sys_id, _) = sn_field(row, "sys_id");
        if sys_id.is_empty() {
            return Err(self.unusable("lookup", &body));
        }
        Ok(Some(SnRow {
            sys_id,
            state: sn_field(row, "state").0,
            priority: sn_field(row, "priority").0,
            assigned_to: sn_display(row, "assigned_to"),
            group: sn_display(row, "assignment_group"),
            closed_at: sn_time(&sn_field(row, "closed_at").0).or_else(|| sn_time(&sn_field(row, "resolved_at").0)),
        }))
    }

    /// `sys_id` of the incident whose `correlation_id` is `key`, if any.
    async fn sn_lookup(&self, key: &str) -> Result<Option<String>, SinkError> {
        Ok(self.sn_find(key).await?.map(|r| r.sys_id))
    }

    /// A Table API URL for a create or PATCH: with references by name,
    /// `sysparm_input_display_value=true` has ServiceNow resolve them.
    fn sn_write_url(&self, segments: &[&str]) -> Url {
        let mut url = self.url(segments);
        if self.inner.servicenow.reference_by == ReferenceBy::DisplayValue {
            url.query_pairs_mut().append_pair("sysparm_input_display_value", "true");
        }
        url
    }

    /// `sys_id` of the record of `key`: cached, else looked up (and cached).
    async fn sn_sys_id(&self, key: &str) -> Result<Option<String>, SinkError> {
        if let Some(id) = self.inner.sys_ids.get(key) {
            return Ok(Some(id));
        }
        let found = self.sn_lookup(key).await?;
        if let Some(id) = &found {
            self.inner.sys_ids.insert(key.to_owned(), id.clone());
        }
        Ok(found)
    }

    /// Creates the incident from the snapshot; returns its sys_id (cached).
    async fn sn_create(&self, action: &Action) -> Result<Option<String>, SinkError> {
        let inc = &action.incident;
        let work_notes = match action.kind {
            ActionKind::Open | ActionKind::Update => action.notes.join("\n"),
            ActionKind::Resolve | ActionKind::Reopen => {
                format!("Created by triaged while delivering a {} for an incident not found in ServiceNow.", action.kind.as_str())
            }
        };
        let mut body = Map::new();
        body.insert("correlation_id".into(), inc.key.clone().into());
        body.insert("correlation_display".into(), "triaged".into());
        body.insert("short_description".into(), truncate(&inc.title, SN_SHORT_DESCRIPTION_MAX).into());
        body.insert("description".into(), description(inc).into());
        for (r, name) in [(SnRef::Ci, inc.ci.as_ref().map(|c| &c.name)), (SnRef::Group, inc.assignment_group.as_ref())] {
            let Some(name) = name else { continue };
            if let Some(reference) = self.sn_reference(r, name).await? {
                body.insert(r.field().into(), reference.into());
            }
        }
        body.insert("urgency".into(), inc.urgency.to_string().into());
        body.insert("impact".into(), inc.impact.to_string().into());
        if !work_notes.is_empty() {
            body.insert("work_notes".into(), work_notes.into());
        }
        let url = self.sn_write_url(&["api", "now", "table", "incident"]);
        let reply = self.call("create", Method::POST, url, Some(&Value::Object(body))).await?;
        let sys_id = serde_json::from_slice::<Value>(&reply)
            .ok()
            .and_then(|v| v.pointer("/result/sys_id").and_then(Value::as_str).map(str::to_owned))
            .filter(|id| !id.is_empty());
        match &sys_id {
            Some(id) => self.inner.sys_ids.insert(inc.key.clone(), id.clone()),
            None => debug!(key = %inc.key, "ServiceNow create response carries no result.sys_id"),
        }
        Ok(sys_id)
    }

    /// PATCHes the record with what `action` changes. With `tolerate_gone`, a
    /// 404 is reported as [`Patched::Gone`] instead of a permanent error.
    async fn sn_patch(&self, action: &Action, sys_id: &str, tolerate_gone: bool) -> Result<Patched, SinkError> {
        let inc = &action.incident;
        let notes = action.notes.join("\n");
        let mut body = Map::new();
        match action.kind {
            ActionKind::Open | ActionKind::Update => {
                body.insert("short_description".into(), truncate(&inc.title, SN_SHORT_DESCRIPTION_MAX).into());
                // A priority a person set there is theirs; and an unchanged one
                // is not written again, since ServiceNow re-rates the record
                // from urgency and impact (a restart's resend writes it, in
                // case the change it carried was lost). The assignment group
                // is only ever sent on create.
                let changed = action.priority_changed || action.resent;
                if changed && !inc.owned_at(self.name()).priority {
                    body.insert("urgency".into(), inc.urgency.to_string().into());
                    body.insert("impact".into(), inc.impact.to_string().into());
                }
                if !notes.is_empty() {
                    body.insert("work_notes".into(), notes.into());
                }
            }
            ActionKind::Resolve => {
                let close_notes = if notes.is_empty() {
                    "All member events cleared; resolved automatically by triaged.".to_owned()
                } else {
                    notes.clone()
                };
                body.insert("state".into(), "6".into());
                body.insert("close_code".into(), self.inner.servicenow.close_code.clone().into());
                body.insert("close_notes".into(), close_notes.into());
                let work_notes = if notes.is_empty() { "Resolved by triaged.".to_owned() } else { notes };
                body.insert("work_notes".into(), work_notes.into());
            }
            ActionKind::Reopen => {
                let work_notes = if notes.is_empty() { "Reopened by triaged: the problem recurred.".to_owned() } else { notes };
                body.insert("state".into(), "2".into());
                body.insert("work_notes".into(), work_notes.into());
            }
        }
        if let Some(parent) = &inc.parent {
            // A record merged into another becomes its child.
            if let Some(parent_id) = self.sn_sys_id(parent).await? {
                body.insert("parent_incident".into(), parent_id.into());
            }
        }
        let url = self.sn_write_url(&["api", "now", "table", "incident", sys_id]);
        let reply = self.send("update", Method::PATCH, url, Some(&Value::Object(body))).await?;
        if tolerate_gone && reply.status == StatusCode::NOT_FOUND {
            return Ok(Patched::Gone);
        }
        self.check("update", reply).map(|_| Patched::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_api_times_are_utc_and_blanks_are_none() {
        assert_eq!(sn_time("2026-12-08 01:02:03").map(|t| t.to_rfc3339()), Some("2026-12-08T01:02:03+00:00".into()));
        assert_eq!(sn_time(""), None);
        assert_eq!(sn_time("yesterday"), None);
    }
}
