//! The Request Tracker 5 profile (REST2 under `{endpoint}/REST/2.0/`):
//! tickets carry the incident key in a ticket custom field
//! (`sink.rt.key_field`) and are found by it with a TicketSQL search.
//!
//! - open: search by key (a create whose response was lost is found, not
//!   made twice), else `POST /ticket` in `sink.rt.queue` with the subject,
//!   the priority, the key field and the long description as content.
//! - update: `PUT /ticket/{id}` with the priority when it differs from the
//!   one last sent (never when a person owns it there), then
//!   `POST /ticket/{id}/comment` with the notes.
//! - resolve: a comment, then `PUT /ticket/{id}` `{"Status":"resolved"}`;
//!   reopen: `{"Status":"open"}`, then a comment. The status is read back
//!   (`GET /ticket/{id}`): RT refuses a transition with a 200.
//! - an update, resolve or reopen for a key with no ticket creates it first.
//!
//! Priorities: P1..P5 are written as RT priorities 100, 80, 60, 40 and 20,
//! and read back to the nearest P (>= 90 P1, >= 70 P2, >= 50 P3, >= 30 P4,
//! else P5). Statuses new, open and stalled are open; resolved, rejected
//! and deleted closed (RT's search does not return deleted tickets, so a
//! key whose only ticket was deleted reads as missing).
//! API: <https://docs.bestpractical.com/rt/5.0.3/RT/REST2.html>.

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use tracing::debug;

use super::{description, truncate};
use crate::config::RtConfig;
use crate::incident::{Action, ActionKind, SinkError};
use crate::sink::{Remote, RemoteRecord, RestSink};

/// RT's `Subject` column holds 200 characters.
const RT_SUBJECT_MAX: usize = 200;
/// Longest comment or ticket content the sink writes.
const RT_CONTENT_MAX: usize = 60_000;
/// The owner RT shows for a ticket nobody took.
const RT_NOBODY: &str = "Nobody";

/// The `[sink.rt]` options, and whether the key field was seen on the queue.
pub(in crate::sink) struct RtSettings {
    queue: String,
    key_field: String,
    /// Set once the queue is known to carry the key field: before that, no
    /// ticket is created (RT drops an unknown custom field silently, and a
    /// ticket without its key would be created again and again).
    field_checked: AtomicBool,
}

impl RtSettings {
    pub(in crate::sink) fn new(cfg: &RtConfig) -> RtSettings {
        RtSettings { queue: cfg.queue.clone(), key_field: cfg.key_field.clone(), field_checked: AtomicBool::new(false) }
    }
}

/// A ticket found by key: what a search returns of it.
struct Ticket {
    id: String,
    status: String,
    owner: Option<String>,
    priority: Option<i64>,
    queue: Option<String>,
    /// When it was resolved, if it was.
    resolved: Option<chrono::DateTime<chrono::Utc>>,
}

impl RestSink {
    pub(in crate::sink) async fn rt(&self, action: &Action) -> Result<(), SinkError> {
        let notes = truncate(&action.notes.join("\n"), RT_CONTENT_MAX);
        let id = match self.rt_id(&action.incident.key).await? {
            Some(id) => id,
            None => {
                let id = self.rt_create(action).await?;
                match action.kind {
                    // The create carried the whole snapshot and the notes.
                    ActionKind::Open | ActionKind::Update => return Ok(()),
                    // Created first, then the transition, so no effect is lost.
                    ActionKind::Resolve | ActionKind::Reopen => id,
                }
            }
        };
        match action.kind {
            // Found: created before (a lost response, a resend after a restart).
            ActionKind::Open => self.rt_priority(action, &id).await,
            ActionKind::Update => {
                // The priority first: it is idempotent, a comment is not.
                self.rt_priority(action, &id).await?;
                if notes.is_empty() {
                    return Ok(());
                }
                self.rt_comment(&id, &notes).await
            }
            ActionKind::Resolve => {
                let text =
                    if notes.is_empty() { "All member events cleared; resolved automatically by triaged.".to_owned() } else { notes };
                self.rt_comment(&id, &text).await?;
                self.rt_set_status(&id, "resolved").await
            }
            ActionKind::Reopen => {
                self.rt_set_status(&id, "open").await?;
                let text = if notes.is_empty() { "Reopened by triaged: the problem recurred.".to_owned() } else { notes };
                self.rt_comment(&id, &text).await
            }
        }
    }

    /// What RT holds under `key`, by the ticket's status.
    pub(in crate::sink) async fn rt_look_up(&self, key: &str) -> Result<Remote, SinkError> {
        Ok(self.rt_find(key).await?.map_or(Remote::Missing, |t| rt_state(&t.status)))
    }

    /// The ticket of `key` read back: its state, its owner (someone took it
    /// when the owner is not `Nobody`), its priority mapped back to P1..P5
    /// and its queue. Public so the integration tests against a real RT
    /// reach it until the sink's read-back dispatches here.
    pub(in crate::sink) async fn rt_read_back(&self, key: &str) -> Result<RemoteRecord, SinkError> {
        let Some(t) = self.rt_find(key).await? else { return Ok(RemoteRecord { state: Remote::Missing, ..RemoteRecord::default() }) };
        let assignee = t.owner.filter(|o| o != RT_NOBODY && !o.is_empty());
        Ok(RemoteRecord {
            state: rt_state(&t.status),
            acknowledged: assignee.is_some(),
            assignee,
            priority: t.priority.map(p_from_rt),
            group: t.queue,
            closed_at: t.resolved.filter(|_| rt_state(&t.status) == Remote::Closed),
        })
    }

    /// `{endpoint}/REST/2.0/{tail}`.
    fn rt_url(&self, tail: &[&str]) -> Url {
        let mut segments = vec!["REST", "2.0"];
        segments.extend_from_slice(tail);
        self.url(&segments)
    }

    /// The ticket id of `key`: cached, else searched for (and cached).
    async fn rt_id(&self, key: &str) -> Result<Option<String>, SinkError> {
        if let Some(id) = self.inner.sys_ids.get(key) {
            return Ok(Some(id));
        }
        let found = self.rt_find(key).await?.map(|t| t.id);
        if let Some(id) = &found {
            self.inner.sys_ids.insert(key.to_owned(), id.clone());
        }
        Ok(found)
    }

    /// The oldest ticket whose key field is `key`, by TicketSQL search.
    async fn rt_find(&self, key: &str) -> Result<Option<Ticket>, SinkError> {
        let mut url = self.rt_url(&["tickets"]);
        url.query_pairs_mut()
            .append_pair("query", &ticket_sql(&self.inner.rt.key_field, key))
            .append_pair("orderby", "id")
            .append_pair("order", "ASC")
            .append_pair("per_page", "1")
            .append_pair("fields", "Status,Owner,Priority,Queue,Resolved")
            .append_pair("fields[Owner]", "Name")
            .append_pair("fields[Queue]", "Name");
        let body = self.call("lookup", Method::GET, url, None).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable("lookup", &body))?;
        let items = value.get("items").and_then(Value::as_array).ok_or_else(|| self.unusable("lookup", &body))?;
        let Some(item) = items.first() else { return Ok(None) };
        let (Some(id), Some(status)) = (id_of(item.get("id")), item.get("Status").and_then(Value::as_str)) else {
            return Err(self.unusable("lookup", &body));
        };
        let name = |field: &str| item.get(field).and_then(|v| v.get("Name").or(v.get("id"))).and_then(Value::as_str).map(str::to_owned);
        let priority = match item.get("Priority") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        // RT writes an unset date as the epoch.
        let resolved = item
            .get("Resolved")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .filter(|t| t.timestamp() > 0);
        Ok(Some(Ticket { id, status: status.to_owned(), owner: name("Owner"), priority, queue: name("Queue"), resolved }))
    }

    /// Refuses to create tickets in a queue that does not carry the key
    /// field (checked once per sink).
    async fn rt_check_queue(&self, op: &'static str) -> Result<(), SinkError> {
        let rt = &self.inner.rt;
        if rt.field_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let reply = self.send(op, Method::GET, self.rt_url(&["queue", &rt.queue]), None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(SinkError::Permanent(format!(
                "rt {op}: queue `{}` (sink.rt.queue) does not exist or this user cannot see it",
                rt.queue
            )));
        }
        let body = self.check(op, reply)?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable(op, &body))?;
        let fields = value.get("TicketCustomFields").and_then(Value::as_array).ok_or_else(|| self.unusable(op, &body))?;
        if !fields.iter().any(|f| f.get("name").and_then(Value::as_str) == Some(rt.key_field.as_str())) {
            return Err(SinkError::Permanent(format!(
                "rt {op}: the ticket custom field `{}` (sink.rt.key_field) is not applied to queue `{}`: tickets could not be found by key, so none is created",
                rt.key_field, rt.queue
            )));
        }
        rt.field_checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Creates the ticket of `action`'s incident; returns its id (cached).
    async fn rt_create(&self, action: &Action) -> Result<String, SinkError> {
        self.rt_check_queue("create").await?;
        let inc = &action.incident;
        let mut content = String::new();
        match action.kind {
            ActionKind::Open | ActionKind::Update => {}
            ActionKind::Resolve | ActionKind::Reopen => content
                .push_str(&format!("Created by triaged while delivering a {} for an incident not found in RT.\n\n", action.kind.as_str())),
        }
        content.push_str(&description(inc));
        if matches!(action.kind, ActionKind::Open | ActionKind::Update) && !action.notes.is_empty() {
            content.push_str("\n\nNotes:\n");
            content.push_str(&action.notes.join("\n"));
        }
        let rt = &self.inner.rt;
        let priority = rt_priority(inc.priority);
        let body = json!({
            "Queue": rt.queue,
            "Subject": truncate(&inc.title, RT_SUBJECT_MAX),
            "Priority": priority,
            "CustomFields": { rt.key_field.as_str(): inc.key },
            "Content": truncate(&content, RT_CONTENT_MAX),
            "ContentType": "text/plain",
        });
        let reply = self.call("create", Method::POST, self.rt_url(&["ticket"]), Some(&body)).await?;
        let value: Value = serde_json::from_slice(&reply).map_err(|_| self.unusable("create", &reply))?;
        let id = id_of(value.get("id")).ok_or_else(|| self.unusable("create", &reply))?;
        debug!(key = %inc.key, ticket = %id, "RT ticket created");
        self.inner.sys_ids.insert(inc.key.clone(), id.clone());
        self.inner.priorities.insert(inc.key.clone(), priority.to_string());
        Ok(id)
    }

    /// Writes the incident's priority unless a person owns it there or it
    /// is the one last sent.
    async fn rt_priority(&self, action: &Action, id: &str) -> Result<(), SinkError> {
        let inc = &action.incident;
        if inc.owned_at(self.name()).priority {
            return Ok(());
        }
        let priority = rt_priority(inc.priority);
        if self.inner.priorities.get(&inc.key).as_deref() == Some(priority.to_string().as_str()) {
            return Ok(());
        }
        self.rt_put(id, "priority", &json!({ "Priority": priority })).await?;
        self.inner.priorities.insert(inc.key.clone(), priority.to_string());
        Ok(())
    }

    /// Sets the status and reads it back: RT answers a transition it
    /// refuses (lifecycle rules) with 200 and its reason in the messages,
    /// which is a permanent error here, quoting them.
    async fn rt_set_status(&self, id: &str, status: &str) -> Result<(), SinkError> {
        let messages = self.rt_put(id, "status", &json!({ "Status": status })).await?;
        let body = self.call("status", Method::GET, self.rt_url(&["ticket", id]), None).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable("status", &body))?;
        let now = value.get("Status").and_then(Value::as_str).ok_or_else(|| self.unusable("status", &body))?;
        if now != status {
            let said: Vec<&str> = messages.iter().filter_map(Value::as_str).collect();
            return Err(SinkError::Permanent(format!("rt status: ticket {id} is `{now}` after setting `{status}`: {}", said.join("; "))));
        }
        Ok(())
    }

    /// `PUT /ticket/{id}`; RT answers 200 with a list of messages.
    async fn rt_put(&self, id: &str, op: &'static str, body: &Value) -> Result<Vec<Value>, SinkError> {
        let reply = self.call(op, Method::PUT, self.rt_url(&["ticket", id]), Some(body)).await?;
        self.rt_messages(op, id, &reply)
    }

    /// A comment (not sent to requestors) on ticket `id`.
    async fn rt_comment(&self, id: &str, text: &str) -> Result<(), SinkError> {
        let body = json!({ "Content": text, "ContentType": "text/plain" });
        let reply = self.call("comment", Method::POST, self.rt_url(&["ticket", id, "comment"]), Some(&body)).await?;
        self.rt_messages("comment", id, &reply).map(drop)
    }

    /// RT's answer to a write: a JSON list of messages, logged at debug.
    fn rt_messages(&self, op: &'static str, id: &str, body: &[u8]) -> Result<Vec<Value>, SinkError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(messages)) => {
                debug!(ticket = %id, operation = op, messages = ?messages, "RT answered");
                Ok(messages)
            }
            _ => Err(self.unusable(op, body)),
        }
    }
}

/// `CF.{field} = 'key'` with the key quoted for TicketSQL: a backslash and
/// a single quote are escaped with a backslash, so no key leaves the string.
fn ticket_sql(field: &str, key: &str) -> String {
    let quoted = key.replace('\\', "\\\\").replace('\'', "\\'");
    format!("CF.{{{field}}} = '{quoted}'")
}

/// A ticket id as RT writes it (a string, or a number).
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// Open or closed by RT status; a status of a custom lifecycle cannot be told.
fn rt_state(status: &str) -> Remote {
    match status {
        "new" | "open" | "stalled" => Remote::Open,
        "resolved" | "rejected" | "deleted" => Remote::Closed,
        _ => Remote::Unknown,
    }
}

/// The RT priority written for P1..P5 (1 highest).
fn rt_priority(priority: u8) -> u8 {
    match priority {
        0 | 1 => 100,
        2 => 80,
        3 => 60,
        4 => 40,
        _ => 20,
    }
}

/// The nearest P1..P5 of an RT priority.
fn p_from_rt(priority: i64) -> u8 {
    match priority {
        90.. => 1,
        70..=89 => 2,
        50..=69 => 3,
        30..=49 => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_both_ways() {
        let written: Vec<_> = (0..=6).map(rt_priority).collect();
        assert_eq!(written, [100, 100, 80, 60, 40, 20, 20]);
        for p in 1..=5 {
            assert_eq!(p_from_rt(rt_priority(p).into()), p, "P{p} reads back as itself");
        }
        let read: Vec<_> = [255, 90, 89, 70, 69, 50, 49, 30, 29, 0, -5].into_iter().map(p_from_rt).collect();
        assert_eq!(read, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]);
    }

    #[test]
    fn statuses_map_to_remote_states() {
        for s in ["new", "open", "stalled"] {
            assert_eq!(rt_state(s), Remote::Open, "{s}");
        }
        for s in ["resolved", "rejected", "deleted"] {
            assert_eq!(rt_state(s), Remote::Closed, "{s}");
        }
        assert_eq!(rt_state("triage"), Remote::Unknown);
    }

    #[test]
    fn keys_stay_inside_the_ticketsql_string() {
        assert_eq!(ticket_sql("TriagedKey", "trg-00ff"), "CF.{TriagedKey} = 'trg-00ff'");
        assert_eq!(ticket_sql("K", "a' OR id > 0 OR 'b"), "CF.{K} = 'a\\' OR id > 0 OR \\'b'");
        assert_eq!(ticket_sql("K", "a\\' OR 1"), "CF.{K} = 'a\\\\\\' OR 1'");
    }

    #[test]
    fn ticket_ids_are_digits() {
        assert_eq!(id_of(Some(&json!("12"))), Some("12".into()));
        assert_eq!(id_of(Some(&json!(7))), Some("7".into()));
        for bad in [json!(""), json!("1/../2"), json!(-1), json!(null)] {
            assert_eq!(id_of(Some(&bad)), None, "{bad}");
        }
        assert_eq!(id_of(None), None);
    }
}
