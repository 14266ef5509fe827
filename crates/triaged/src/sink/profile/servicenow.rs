//! The ServiceNow profile: Table API incidents found by `correlation_id`
//! (looked up before every create), created by POST and changed by PATCH.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use tracing::debug;

use super::{description, truncate};
use crate::incident::{Action, ActionKind, SinkError};
use crate::sink::{Remote, RestSink};

/// ServiceNow `short_description` limit applied by the sink.
const SN_SHORT_DESCRIPTION_MAX: usize = 160;

/// Outcome of a ServiceNow PATCH that tolerates a stale cached sys_id.
enum Patched {
    Done,
    /// 404: the record behind the cached sys_id is gone.
    Gone,
}

impl RestSink {
    /// ServiceNow incident states 6 (Resolved), 7 (Closed) and 8 (Canceled) are closed.
    pub(in crate::sink) async fn sn_state(&self, key: &str) -> Result<Remote, SinkError> {
        let (row, _) = self.sn_find(key).await?;
        Ok(match row {
            None => Remote::Missing,
            Some(r) => match r.get("state") {
                Some(Value::String(st)) if matches!(st.as_str(), "6" | "7" | "8") => Remote::Closed,
                _ => Remote::Open,
            },
        })
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

    /// The first incident row (`sys_id`, `state`) whose `correlation_id` is
    /// `key`, if any, and the response body (for error excerpts).
    async fn sn_find(&self, key: &str) -> Result<(Option<Value>, Vec<u8>), SinkError> {
        let mut url = self.url(&["api", "now", "table", "incident"]);
        url.query_pairs_mut()
            // `^` separates encoded-query terms; a literal one is written `^^`.
            .append_pair("sysparm_query", &format!("correlation_id={}", key.replace('^', "^^")))
            .append_pair("sysparm_fields", "sys_id,state")
            .append_pair("sysparm_limit", "1");
        let body = self.call("lookup", Method::GET, url, None).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable("lookup", &body))?;
        let rows = value.get("result").and_then(Value::as_array).ok_or_else(|| self.unusable("lookup", &body))?;
        Ok((rows.first().cloned(), body))
    }

    /// `sys_id` of the incident whose `correlation_id` is `key`, if any.
    async fn sn_lookup(&self, key: &str) -> Result<Option<String>, SinkError> {
        let (row, body) = self.sn_find(key).await?;
        match row {
            None => Ok(None),
            Some(row) => match row.get("sys_id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
                _ => Err(self.unusable("lookup", &body)),
            },
        }
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
        if let Some(ci) = &inc.ci {
            body.insert("cmdb_ci".into(), ci.name.clone().into());
        }
        if let Some(group) = &inc.assignment_group {
            body.insert("assignment_group".into(), group.clone().into());
        }
        body.insert("urgency".into(), inc.urgency.to_string().into());
        body.insert("impact".into(), inc.impact.to_string().into());
        if !work_notes.is_empty() {
            body.insert("work_notes".into(), work_notes.into());
        }
        let url = self.url(&["api", "now", "table", "incident"]);
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
                body.insert("urgency".into(), inc.urgency.to_string().into());
                body.insert("impact".into(), inc.impact.to_string().into());
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
                body.insert("close_code".into(), "Solved (Permanently)".into());
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
        let url = self.url(&["api", "now", "table", "incident", sys_id]);
        let reply = self.send("update", Method::PATCH, url, Some(&Value::Object(body))).await?;
        if tolerate_gone && reply.status == StatusCode::NOT_FOUND {
            return Ok(Patched::Gone);
        }
        self.check("update", reply).map(|_| Patched::Done)
    }
}
