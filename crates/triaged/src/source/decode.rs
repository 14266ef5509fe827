//! Decoding Kafka message payloads into normalized [`Event`]s.
//!
//! [`decode`] turns one message payload into one or more events. It is the
//! hottest per-message code of the daemon, so it parses the JSON once into a
//! small borrowed tree (strings without escapes are not copied, objects are
//! plain vectors of key/value pairs) and maps that tree to events by hand,
//! which also lets every error name the offending field path
//! (`alerts[3].labels.alertname: missing`). It never panics, whatever the input.
//!
//! # Limits, checked before parsing
//!
//! * a payload larger than [`MAX_PAYLOAD_BYTES`] (1 MiB) is rejected;
//! * the payload must be UTF-8 (a leading byte order mark is ignored);
//! * JSON nesting deeper than [`MAX_DEPTH`] (64) arrays/objects is rejected.
//!
//! # Conventions shared by all formats
//!
//! * `null` is the same as an absent field.
//! * Strings are required where a string is documented; a number in its place
//!   is an error naming the field (`severity: expected string, got number`).
//! * Label and annotation values must be strings.
//! * Unix timestamps may be JSON numbers (fractions allowed) or strings holding
//!   a number; a string holding an RFC 3339 time is accepted too.
//! * `origin` is always left `None`: the Kafka source sets it.
//! * When a payload carries no event time, `received` (the Kafka message
//!   timestamp) is used.
//!
//! # Formats
//!
//! ## Native ([`Format::Native`])
//!
//! The JSON form of [`Event`] as serde writes it. `source`, `check`,
//! `severity` and `status` are required (`source` and `check` non-empty);
//! `time` defaults to `received`; `ci` accepts only `host`, `service` and `ip`;
//! unknown top-level fields and `origin` are ignored. `severity` accepts the
//! spellings of [`Severity::parse`].
//!
//! ```json
//! {"source": "batch-monitor", "source_id": "run-42", "check": "Nightly backup",
//!  "severity": "major", "status": "firing", "summary": "backup failed",
//!  "ci": {"host": "db-01", "service": "backup", "ip": "10.0.0.5"},
//!  "labels": {"team": "dba"}, "annotations": {"runbook": "https://wiki/backup"},
//!  "time": "2024-05-01T12:00:00Z"}
//! ```
//!
//! ## Alertmanager ([`Format::Alertmanager`])
//!
//! The webhook payload, version 4, one event per element of `alerts`:
//!
//! ```json
//! {"version": "4", "groupKey": "{}:{alertname=\"InstanceDown\"}", "status": "firing",
//!  "receiver": "triaged", "groupLabels": {"alertname": "InstanceDown"},
//!  "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
//!  "alerts": [{"status": "firing",
//!              "labels": {"alertname": "InstanceDown", "severity": "critical",
//!                         "instance": "vm-1:9100", "job": "node"},
//!              "annotations": {"summary": "vm-1 is down"},
//!              "startsAt": "2024-05-01T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
//!              "generatorURL": "http://prometheus:9090/graph", "fingerprint": "1a2b3c"}]}
//! ```
//!
//! and the Alertmanager v2 API alert list (what Prometheus posts to
//! `/api/v2/alerts`), a bare array of alerts without `status`:
//!
//! ```json
//! [{"labels": {"alertname": "DiskFull", "instance": "10.0.0.7:9100"},
//!   "annotations": {"description": "/var is 97% full"},
//!   "startsAt": "2024-05-01T12:00:00Z", "endsAt": "2024-05-01T12:04:00Z",
//!   "generatorURL": "http://prometheus:9090/graph"}]
//! ```
//!
//! Mapping, per alert: `source` = `alertmanager`; `check` = `labels.alertname`
//! (required); `severity` = `labels.severity` through [`Severity::parse`]
//! (missing or unknown: warning); `status` = the alert's `status`
//! (`firing`/`resolved`), else the webhook's top-level `status`; for the v2
//! list (and webhook alerts without any status) resolved if `endsAt` is not
//! after `received`, else firing. Hints: `ci.host` from the first of the labels
//! `host`, `hostname`, `node`, `instance` (for `instance` a URL scheme, path
//! and `:port` are stripped); a value that is an IP address goes to `ci.ip`
//! instead. `ci.service` from label `service`, else `job`. `summary` =
//! `annotations.summary`, else `annotations.description`, else the alert name.
//! `time` = `startsAt` when firing, `endsAt` when resolved; the zero time
//! `0001-01-01T00:00:00Z` counts as absent, falling back to `startsAt`, then
//! `received`. `source_id` = `fingerprint`. Labels and annotations are copied
//! whole. An empty `alerts` array gives no events.
//!
//! ## Zabbix ([`Format::Zabbix`])
//!
//! What a Zabbix webhook media type script posts (one event per message). Its
//! parameters are usually filled from macros: `event_id` = `{EVENT.ID}`,
//! `event_value` = `{EVENT.VALUE}`, `host` = `{HOST.HOST}`, `host_ip` =
//! `{HOST.IP}`, `trigger_name` = `{TRIGGER.NAME}` (or `{EVENT.NAME}`),
//! `severity` = `{EVENT.SEVERITY}`, `message` = `{ALERT.MESSAGE}`,
//! `timestamp` = `{EVENT.TIMESTAMP}` (or `event_date`/`event_time` =
//! `{EVENT.DATE}`/`{EVENT.TIME}`), `tags` = `{EVENT.TAGSJSON}`:
//!
//! ```json
//! {"event_id": "4711", "event_value": "1", "host": "db-01", "host_ip": "10.0.0.5",
//!  "trigger_name": "MySQL is down", "severity": "Disaster",
//!  "message": "MySQL on db-01 stopped responding", "timestamp": 1714564800,
//!  "tags": [{"tag": "service", "value": "payments"}, {"tag": "env", "value": "prod"}]}
//! ```
//!
//! Status: `event_value` `"1"`/`1` is a problem (firing), `"0"`/`0` a
//! recovery (resolved); without `event_value`, `status` `PROBLEM` is firing and
//! `RESOLVED` or `OK` resolved (any case); with neither, firing. `severity`:
//! `Disaster`, `High`, `Average`, `Warning`, `Information`, `Not classified`
//! (or `{EVENT.NSEVERITY}` digits `0`..`5`), missing or unknown: warning.
//! `timestamp`: unix seconds, number or string; else `event_date`
//! (`YYYY.MM.DD`) with optional `event_time` (`HH:MM:SS`), read as UTC (the
//! Zabbix server's time zone is unknown here); else `received`. `tags`: an
//! array of `{"tag", "value"}`, an object `{"k": "v"}`, or either as a JSON
//! string (what `{EVENT.TAGSJSON}` gives when pasted into a string
//! parameter); tags become labels (a repeated tag keeps its last value), tag
//! `service` also becomes `ci.service`. Mapping: `source` = `zabbix`, `check` =
//! `trigger_name` (required), `source_id` = `event_id` (string or integer),
//! `ci.host` = `host`, `ci.ip` = `host_ip`, `summary` = `message`, else the
//! trigger name. Optional string fields that are blank or still hold an
//! unexpanded macro (`{EVENT.RECOVERY.TIME}`) count as absent.
//!
//! ## Nagios / Icinga ([`Format::Nagios`])
//!
//! A notification command posting the notification macros as JSON. Service
//! notification (Nagios keys):
//!
//! ```json
//! {"source": "nagios", "notification_type": "PROBLEM", "host_name": "web-01",
//!  "host_address": "10.0.1.10", "service_description": "HTTP",
//!  "service_state": "CRITICAL", "output": "HTTP CRITICAL - 503", "timestamp": 1714564800}
//! ```
//!
//! Host notification: no `service_description`, `host_state` instead of
//! `service_state`. Icinga 2 style keys are accepted as alternatives:
//! `host` for `host_name`, `service` for `service_description`, `state` for
//! `service_state`/`host_state`, `type` for `notification_type`:
//!
//! ```json
//! {"source": "icinga", "type": "Recovery", "host": "web-01", "service": "HTTP",
//!  "state": "OK", "output": "HTTP OK - 200", "timestamp": "1714565100"}
//! ```
//!
//! Mapping: `source` = `source` lowercased (default `nagios`); `ci.host` =
//! host name (required); `ci.ip` = `host_address`/`address` when it is an IP
//! address; service notification: `check` = `ci.service` = the service
//! description; host notification: `check` = `host-down` whatever the host
//! state, so a host's problem and recovery share a dedup key. `status`:
//! resolved when the type is `RECOVERY` or the state is `OK`/`UP`, else
//! firing (`ACKNOWLEDGEMENT`, `DOWNTIME*`, `FLAPPING*`, `CUSTOM` included:
//! the core decides what to do with them). `severity`: `CRITICAL`, `DOWN`,
//! `UNREACHABLE`: critical; `WARNING`: warning; `UNKNOWN`: minor; `OK`, `UP`:
//! info; without a state: info for a recovery, else warning (other states
//! are an error). Types and states are matched in any case and kept,
//! uppercased, as labels `notification_type` and `state`. `summary` =
//! `output`, else `<check> is <STATE>`. `time` = `timestamp`, else `received`.
//!
//! ## Detection ([`Format::Auto`])
//!
//! Per message, first match wins: a JSON array is an Alertmanager v2 alert
//! list; an object with `alerts` is an Alertmanager webhook; with
//! `trigger_name` or `event_value` a Zabbix webhook; with `notification_type`,
//! `host_name`, `service_state` or `host_state` (or the Icinga 2 trio `host`,
//! `state` and `type`) a Nagios/Icinga notification; with `check` a native
//! event. Anything else is a [`DecodeError::Unrecognized`] naming the keys
//! looked for.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::config::Format;
use crate::event::{CiHint, Event, Severity, Status};

/// Largest payload accepted, in bytes (1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Deepest nesting of JSON arrays/objects accepted.
pub const MAX_DEPTH: usize = 64;

/// Check name of Nagios/Icinga host notifications (whatever the host state).
pub const NAGIOS_HOST_CHECK: &str = "host-down";

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload exceeds [`MAX_PAYLOAD_BYTES`].
    #[error("payload too large: {size} bytes > {max}")]
    TooLarge { size: usize, max: usize },
    /// The payload is not UTF-8; `offset` is the first bad byte.
    #[error("invalid UTF-8 at byte {offset}")]
    Utf8 { offset: usize },
    /// Arrays/objects nest deeper than [`MAX_DEPTH`]; `offset` is the byte
    /// that opened the first level too many.
    #[error("JSON nesting deeper than {max} (at byte {offset})")]
    TooDeep { max: usize, offset: usize },
    /// The payload is not JSON (syntax error, truncation, trailing data).
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    /// Valid JSON that does not fit the format: `path` names the field
    /// (`alerts[3].labels.alertname`, `severity`, or `payload` for the whole).
    #[error("{path}: {message}")]
    Schema { path: String, message: String },
    /// [`Format::Auto`] could not tell the format from the payload's shape.
    #[error("unrecognized payload: {0}")]
    Unrecognized(String),
}

impl DecodeError {
    /// Short, stable name of the error class, for metric labels: `too_large`,
    /// `utf8`, `too_deep`, `json`, `schema` or `unrecognized`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Utf8 { .. } => "utf8",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::Json { .. } => "json",
            DecodeError::Schema { .. } => "schema",
            DecodeError::Unrecognized(_) => "unrecognized",
        }
    }

    /// The offending field path, for schema errors.
    pub fn path(&self) -> Option<&str> {
        match self {
            DecodeError::Schema { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Decodes one message payload of `format` into events.
///
/// `received` is the Kafka message timestamp: the event time when the payload
/// has none, and "now" when deciding whether a v2 API alert has ended.
/// `origin` is left `None`. See the module docs for the accepted shapes.
pub fn decode(format: Format, payload: &[u8], received: DateTime<Utc>) -> Result<Vec<Event>, DecodeError> {
    let text = precheck(payload)?;
    let Root(root) = serde_json::from_str(text).map_err(json_error)?;
    let path = Path::ROOT;
    match format {
        Format::Auto => match detect(&root)? {
            Detected::AlertList | Detected::AlertWebhook => alertmanager(&root, &path, received),
            Detected::Zabbix => zabbix(&root, &path, received).map(|e| vec![e]),
            Detected::Nagios => nagios(&root, &path, received).map(|e| vec![e]),
            Detected::Native => native(&root, &path, received).map(|e| vec![e]),
        },
        Format::Native => native(&root, &path, received).map(|e| vec![e]),
        Format::Alertmanager => alertmanager(&root, &path, received),
        Format::Zabbix => zabbix(&root, &path, received).map(|e| vec![e]),
        Format::Nagios => nagios(&root, &path, received).map(|e| vec![e]),
    }
}

// ---------------------------------------------------------------------------
// Pre-parse checks

/// Size, UTF-8 and depth checks; returns the text without a byte order mark.
fn precheck(payload: &[u8]) -> Result<&str, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge { size: payload.len(), max: MAX_PAYLOAD_BYTES });
    }
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError::Utf8 { offset: e.valid_up_to() })?;
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    check_depth(&payload[bom..]).map_err(|offset| DecodeError::TooDeep { max: MAX_DEPTH, offset: offset + bom })?;
    Ok(&text[bom..])
}

/// Fails with the byte offset of the first `[`/`{` (outside strings) that
/// opens nesting level `MAX_DEPTH + 1`.
fn check_depth(bytes: &[u8]) -> Result<(), usize> {
    // Fast path: with no more opening brackets than the limit anywhere,
    // strings included, nesting cannot be too deep. Counting per chunk in a
    // `u8` lets the loop vectorize; `b | 0x20 == b'{'` holds for `[` and `{` only.
    let mut opening = 0usize;
    for chunk in bytes.chunks(128) {
        opening += usize::from(chunk.iter().map(|&b| u8::from(b | 0x20 == b'{')).sum::<u8>());
        if opening > MAX_DEPTH {
            break;
        }
    }
    if opening <= MAX_DEPTH {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn json_error(e: serde_json::Error) -> DecodeError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    DecodeError::Json { line: e.line(), column: e.column(), message }
}

// ---------------------------------------------------------------------------
// Borrowed JSON tree

/// A parsed JSON value borrowing unescaped strings from the payload.
#[derive(Debug)]
enum V<'a> {
    Null,
    /// Only the type matters to the decoders.
    Bool,
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Arr(Vec<V<'a>>),
    Obj(Vec<(Cow<'a, str>, V<'a>)>),
}

type Fields<'a> = [(Cow<'a, str>, V<'a>)];

impl V<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool => "boolean",
            V::Int(_) | V::UInt(_) | V::Float(_) => "number",
            V::Str(_) => "string",
            V::Arr(_) => "array",
            V::Obj(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for V<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor { skip: &[] })
    }
}

/// Builds a [`V`]; keys in `skip` are passed over without building their value.
struct ValueVisitor {
    skip: &'static [&'static str],
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = V<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<V<'de>, E> {
        Ok(V::Bool)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<V<'de>, E> {
        Ok(V::Int(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<V<'de>, E> {
        Ok(V::UInt(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<V<'de>, E> {
        Ok(V::Float(n))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V<'de>, D::Error> {
        V::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<V<'de>>()? {
            items.push(item);
        }
        Ok(V::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if self.skip.contains(&k.as_ref()) {
                map.next_value::<de::IgnoredAny>()?;
            } else {
                let v = map.next_value::<V<'de>>()?;
                fields.push((k, v));
            }
        }
        Ok(V::Obj(fields))
    }
}

/// Top-level keys no decoder reads: the Alertmanager webhook's group-wide
/// copies of what every alert carries anyway. Skipped without building a tree.
const SKIPPED_TOP_LEVEL_KEYS: [&str; 3] = ["commonLabels", "commonAnnotations", "groupLabels"];

/// The payload's top-level value; like [`V`], minus [`SKIPPED_TOP_LEVEL_KEYS`].
struct Root<'a>(V<'a>);

impl<'de> Deserialize<'de> for Root<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor { skip: &SKIPPED_TOP_LEVEL_KEYS }).map(Root)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

// ---------------------------------------------------------------------------
// Field paths and typed access

/// A field path built on the stack; only rendered when an error needs it.
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    seg: Seg<'p>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> Path<'p> {
    const ROOT: Path<'static> = Path { parent: None, seg: Seg::Root };

    fn key<'q>(&'q self, key: &'q str) -> Path<'q> {
        Path { parent: Some(self), seg: Seg::Key(key) }
    }

    fn index(&self, i: usize) -> Path<'_> {
        Path { parent: Some(self), seg: Seg::Index(i) }
    }

    fn is_root(&self) -> bool {
        matches!(self.seg, Seg::Root)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent_is_root = match self.parent {
            Some(p) => {
                p.write(f)?;
                p.is_root()
            }
            None => true,
        };
        match self.seg {
            Seg::Root => Ok(()),
            Seg::Key(k) if parent_is_root => f.write_str(k),
            Seg::Key(k) => write!(f, ".{k}"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("payload")
        } else {
            self.write(f)
        }
    }
}

fn schema(path: &Path<'_>, message: impl Into<String>) -> DecodeError {
    DecodeError::Schema { path: path.to_string(), message: message.into() }
}

fn missing(path: &Path<'_>) -> DecodeError {
    schema(path, "missing")
}

fn wrong_type(path: &Path<'_>, expected: &str, got: &V<'_>) -> DecodeError {
    schema(path, format!("expected {expected}, got {}", got.type_name()))
}

fn as_obj<'v, 'a>(v: &'v V<'a>, path: &Path<'_>) -> Result<&'v Fields<'a>, DecodeError> {
    match v {
        V::Obj(fields) => Ok(fields),
        other => Err(wrong_type(path, "object", other)),
    }
}

/// The value of `key` (the last one if repeated), `None` if absent.
fn get_raw<'v, 'a>(o: &'v Fields<'a>, key: &str) -> Option<&'v V<'a>> {
    o.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Like [`get_raw`], with `null` counting as absent.
fn get<'v, 'a>(o: &'v Fields<'a>, key: &str) -> Option<&'v V<'a>> {
    get_raw(o, key).filter(|v| !matches!(v, V::Null))
}

fn has(o: &Fields<'_>, key: &str) -> bool {
    get(o, key).is_some()
}

/// An optional string field.
fn opt_str<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<&'v str>, DecodeError> {
    match get(o, key) {
        None => Ok(None),
        Some(V::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(&path.key(key), "string", other)),
    }
}

/// An optional string field, blank counting as absent.
fn opt_text<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<&'v str>, DecodeError> {
    Ok(opt_str(o, key, path)?.filter(|s| !s.trim().is_empty()))
}

/// The first of `keys` holding a non-blank string, with the key it came from.
fn first_text<'v>(o: &'v Fields<'_>, keys: &[&'static str], path: &Path<'_>) -> Result<Option<(&'static str, &'v str)>, DecodeError> {
    for &k in keys {
        if let Some(s) = opt_text(o, k, path)? {
            return Ok(Some((k, s)));
        }
    }
    Ok(None)
}

/// A required string field (`null` is a type error, not "missing").
fn req_str<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<&'v str, DecodeError> {
    match get_raw(o, key) {
        None => Err(missing(&path.key(key))),
        Some(V::Str(s)) => Ok(s),
        Some(other) => Err(wrong_type(&path.key(key), "string", other)),
    }
}

/// A required, non-blank string field.
fn req_text<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<&'v str, DecodeError> {
    let s = req_str(o, key, path)?;
    if s.trim().is_empty() {
        return Err(schema(&path.key(key), "must not be empty"));
    }
    Ok(s)
}

/// An object of string values (labels, annotations); `null` is empty.
fn str_map(v: &V<'_>, path: &Path<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
    let mut map = BTreeMap::new();
    match v {
        V::Null => {}
        V::Obj(fields) => {
            for (k, v) in fields {
                match v {
                    V::Str(s) => {
                        map.insert(k.to_string(), s.to_string());
                    }
                    other => return Err(wrong_type(&path.key(k), "string", other)),
                }
            }
        }
        other => return Err(wrong_type(path, "object", other)),
    }
    Ok(map)
}

fn opt_map(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
    match get(o, key) {
        None => Ok(BTreeMap::new()),
        Some(v) => str_map(v, &path.key(key)),
    }
}

/// Parses an RFC 3339 time (also the looser forms chrono's serde accepts).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).ok().or_else(|| s.trim().parse::<DateTime<Utc>>().ok())
}

/// An optional RFC 3339 time field.
fn opt_time(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<DateTime<Utc>>, DecodeError> {
    match opt_str(o, key, path)? {
        None => Ok(None),
        Some(s) => match parse_time(s) {
            Some(t) => Ok(Some(t)),
            None => Err(schema(&path.key(key), format!("invalid RFC 3339 time {s:?}"))),
        },
    }
}

fn from_unix_f64(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || secs.abs() > 1e14 {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

/// An optional unix-seconds field: number, numeric string or RFC 3339 string.
fn opt_unix_time(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<DateTime<Utc>>, DecodeError> {
    let out_of_range = || schema(&path.key(key), "unix time out of range");
    match get(o, key) {
        None => Ok(None),
        Some(V::Int(n)) => DateTime::from_timestamp(*n, 0).map(Some).ok_or_else(out_of_range),
        Some(V::UInt(n)) => i64::try_from(*n).ok().and_then(|n| DateTime::from_timestamp(n, 0)).map(Some).ok_or_else(out_of_range),
        Some(V::Float(f)) => from_unix_f64(*f).map(Some).ok_or_else(out_of_range),
        Some(V::Str(s)) => {
            let t = s.trim();
            if t.is_empty() || is_macro(t) {
                return Ok(None);
            }
            if let Ok(n) = t.parse::<i64>() {
                return DateTime::from_timestamp(n, 0).map(Some).ok_or_else(out_of_range);
            }
            if let Ok(f) = t.parse::<f64>() {
                return from_unix_f64(f).map(Some).ok_or_else(out_of_range);
            }
            parse_time(t).map(Some).ok_or_else(|| schema(&path.key(key), format!("invalid unix time {s:?} (expected seconds since 1970)")))
        }
        Some(other) => Err(wrong_type(&path.key(key), "number or string", other)),
    }
}

/// An unexpanded Zabbix/Nagios macro such as `{EVENT.RECOVERY.TIME}` or `$HOSTADDRESS$`.
fn is_macro(s: &str) -> bool {
    let s = s.trim();
    (s.len() > 2 && s.starts_with('{') && s.ends_with('}') && !s[1..s.len() - 1].contains(['{', '}', '"', ':']))
        || (s.len() > 2 && s.starts_with('$') && s.ends_with('$'))
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
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

/// Sets `ci.ip` if `value` is an IP address (and none is set yet), else
/// `ci.host` (if none is set yet).
fn hint_host_or_ip(ci: &mut CiHint, value: &str) {
    if value.is_empty() {
        return;
    }
    if is_ip(value) {
        if ci.ip.is_none() {
            ci.ip = Some(value.to_owned());
        }
    } else if ci.host.is_none() {
        ci.host = Some(value.to_owned());
    }
}

// ---------------------------------------------------------------------------
// Detection

enum Detected {
    AlertList,
    AlertWebhook,
    Zabbix,
    Nagios,
    Native,
}

const LOOKED_FOR: &str = "expected a JSON array (Alertmanager v2 alert list) or an object with `alerts` \
     (Alertmanager webhook), `trigger_name`/`event_value` (Zabbix), \
     `notification_type`/`host_name`/`service_state`/`host_state` or `host`+`state`+`type` \
     (Nagios/Icinga), or `check` (native event)";

fn detect(root: &V<'_>) -> Result<Detected, DecodeError> {
    let o = match root {
        V::Arr(_) => return Ok(Detected::AlertList),
        V::Obj(o) => o,
        other => return Err(DecodeError::Unrecognized(format!("got a JSON {}; {LOOKED_FOR}", other.type_name()))),
    };
    if has(o, "alerts") {
        Ok(Detected::AlertWebhook)
    } else if has(o, "trigger_name") || has(o, "event_value") {
        Ok(Detected::Zabbix)
    } else if ["notification_type", "host_name", "service_state", "host_state"].iter().any(|k| has(o, k))
        || (has(o, "host") && has(o, "state") && has(o, "type"))
    {
        Ok(Detected::Nagios)
    } else if has(o, "check") {
        Ok(Detected::Native)
    } else {
        Err(DecodeError::Unrecognized(format!("object has none of the keys looked for; {LOOKED_FOR}")))
    }
}

// ---------------------------------------------------------------------------
// Native

fn native(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Event, DecodeError> {
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
    })
}

fn parse_status(s: &str) -> Option<Status> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("firing") {
        Some(Status::Firing)
    } else if s.eq_ignore_ascii_case("resolved") {
        Some(Status::Resolved)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Alertmanager

fn alertmanager(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Vec<Event>, DecodeError> {
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
    })
}

// ---------------------------------------------------------------------------
// Zabbix

/// An optional Zabbix string parameter: blank or an unexpanded macro is absent.
fn zabbix_text<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<&'v str>, DecodeError> {
    Ok(opt_text(o, key, path)?.filter(|s| !is_macro(s)))
}

fn zabbix(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Event, DecodeError> {
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

// ---------------------------------------------------------------------------
// Nagios / Icinga

fn nagios(root: &V<'_>, path: &Path<'_>, received: DateTime<Utc>) -> Result<Event, DecodeError> {
    let o = as_obj(root, path)?;
    let source = match opt_text(o, "source", path)? {
        Some(s) => s.trim().to_ascii_lowercase(),
        None => "nagios".to_owned(),
    };
    let host = match first_text(o, &["host_name", "host"], path)? {
        Some((_, h)) => h.trim(),
        None => return Err(missing(&path.key("host_name"))),
    };
    let service = first_text(o, &["service_description", "service"], path)?.map(|(_, s)| s.trim());
    let ntype = first_text(o, &["notification_type", "type"], path)?.map(|(_, t)| t.trim().to_ascii_uppercase());
    let state_keys: &[&'static str] = if service.is_some() { &["service_state", "state"] } else { &["host_state", "state"] };
    let state = first_text(o, state_keys, path)?.map(|(k, s)| (k, s.trim().to_ascii_uppercase()));
    let recovery = ntype.as_deref() == Some("RECOVERY");
    let severity = match &state {
        None if recovery => Severity::Info,
        None => Severity::Warning,
        Some((key, s)) => match s.as_str() {
            "CRITICAL" | "DOWN" | "UNREACHABLE" => Severity::Critical,
            "WARNING" => Severity::Warning,
            "UNKNOWN" => Severity::Minor,
            "OK" | "UP" => Severity::Info,
            _ => {
                let expected = if service.is_some() { "OK, WARNING, CRITICAL or UNKNOWN" } else { "UP, DOWN or UNREACHABLE" };
                return Err(schema(&path.key(key), format!("unknown state {s:?} (expected {expected})")));
            }
        },
    };
    let cleared = matches!(state.as_ref().map(|(_, s)| s.as_str()), Some("OK" | "UP"));
    let status = if recovery || cleared { Status::Resolved } else { Status::Firing };
    let check = service.unwrap_or(NAGIOS_HOST_CHECK);
    let mut ci = CiHint { host: Some(host.to_owned()), service: service.map(str::to_owned), ip: None };
    if let Some((_, addr)) = first_text(o, &["host_address", "address"], path)? {
        let addr = addr.trim();
        if is_ip(addr) {
            ci.ip = Some(addr.to_owned());
        }
    }
    let mut labels = BTreeMap::new();
    if let Some(t) = ntype {
        labels.insert("notification_type".to_owned(), t);
    }
    let summary = match opt_text(o, "output", path)? {
        Some(out) => out.to_owned(),
        None => match &state {
            Some((_, s)) => format!("{check} is {s}"),
            None => check.to_owned(),
        },
    };
    if let Some((_, s)) = state {
        labels.insert("state".to_owned(), s);
    }
    Ok(Event {
        source,
        source_id: None,
        ci,
        check: check.to_owned(),
        severity,
        status,
        summary,
        labels,
        annotations: BTreeMap::new(),
        time: opt_unix_time(o, "timestamp", path)?.unwrap_or(received),
        origin: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn received() -> DateTime<Utc> {
        at("2024-05-01T12:30:00Z")
    }

    fn dec(format: Format, v: &serde_json::Value) -> Result<Vec<Event>, DecodeError> {
        decode(format, v.to_string().as_bytes(), received())
    }

    fn one(format: Format, v: serde_json::Value) -> Event {
        let mut events = dec(format, &v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(events.len(), 1, "{events:?}");
        events.pop().unwrap()
    }

    /// Decodes, expects a schema error and checks its full message.
    fn schema_err(format: Format, v: serde_json::Value, want: &str) {
        let e = dec(format, &v).expect_err(want);
        assert_eq!(e.kind(), "schema", "{e}");
        assert_eq!(e.to_string(), want);
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    // ---- native ----------------------------------------------------------

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

    // ---- alertmanager ----------------------------------------------------

    fn am_alert_json(name: &str, status: &str, instance: &str, starts: &str, ends: &str) -> serde_json::Value {
        json!({
            "status": status,
            "labels": {"alertname": name, "severity": "critical", "instance": instance, "job": "node"},
            "annotations": {"summary": format!("{name} on {instance}")},
            "startsAt": starts, "endsAt": ends,
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": format!("fp-{name}")
        })
    }

    fn webhook(alerts: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "triaged",
               "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
               "externalURL": "http://alertmanager:9093", "alerts": alerts})
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

    // ---- zabbix ----------------------------------------------------------

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

    // ---- nagios / icinga -------------------------------------------------

    #[test]
    fn nagios_host_down() {
        let v = json!({"notification_type": "PROBLEM", "host_name": "hv-1", "host_address": "10.0.2.1",
                       "host_state": "DOWN", "output": "CRITICAL - Host Unreachable", "timestamp": 1714564800});
        for format in [Format::Nagios, Format::Auto] {
            let e = one(format, v.clone());
            assert_eq!(e.source, "nagios");
            assert_eq!(e.check, NAGIOS_HOST_CHECK);
            assert_eq!(e.status, Status::Firing);
            assert_eq!(e.severity, Severity::Critical);
            assert_eq!(e.ci, CiHint { host: Some("hv-1".into()), service: None, ip: Some("10.0.2.1".into()) });
            assert_eq!(e.summary, "CRITICAL - Host Unreachable");
            assert_eq!(e.labels, labels(&[("notification_type", "PROBLEM"), ("state", "DOWN")]));
            assert_eq!(e.time, at("2024-05-01T12:00:00Z"));
            assert_eq!(e.source_id, None);
        }
        // The recovery shares the check name, so it resolves the same stream.
        let e = one(Format::Auto, json!({"notification_type": "RECOVERY", "host_name": "hv-1", "host_state": "UP"}));
        assert_eq!((e.check.as_str(), e.status, e.severity), (NAGIOS_HOST_CHECK, Status::Resolved, Severity::Info));
        assert_eq!(e.summary, "host-down is UP");
        assert_eq!(e.time, received());
    }

    #[test]
    fn nagios_service_states() {
        let svc = |ntype: &str, state: &str| {
            one(
                Format::Auto,
                json!({"notification_type": ntype, "host_name": "web-01", "host_address": "web-01.example.com",
                       "service_description": "HTTP", "service_state": state, "output": "x"}),
            )
        };
        let e = svc("PROBLEM", "WARNING");
        assert_eq!((e.check.as_str(), e.severity, e.status), ("HTTP", Severity::Warning, Status::Firing));
        assert_eq!(e.ci, CiHint { host: Some("web-01".into()), service: Some("HTTP".into()), ip: None });
        assert_eq!(svc("PROBLEM", "CRITICAL").severity, Severity::Critical);
        assert_eq!(svc("PROBLEM", "UNKNOWN").severity, Severity::Minor);
        let r = svc("RECOVERY", "OK");
        assert_eq!((r.severity, r.status), (Severity::Info, Status::Resolved));
        let a = svc("ACKNOWLEDGEMENT", "CRITICAL");
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.labels["notification_type"], "ACKNOWLEDGEMENT");
        assert_eq!(svc("DOWNTIMESTART", "CRITICAL").labels["notification_type"], "DOWNTIMESTART");
        assert_eq!(svc("FLAPPINGSTART", "WARNING").status, Status::Firing);
        assert_eq!(svc("FLAPPINGSTOP", "OK").status, Status::Resolved, "an OK state clears");
        // Empty service description (one shared notification command): a host notification.
        let e = one(
            Format::Auto,
            json!({"notification_type": "PROBLEM", "host_name": "h", "service_description": "",
                   "host_state": "UNREACHABLE"}),
        );
        assert_eq!((e.check.as_str(), e.severity), (NAGIOS_HOST_CHECK, Severity::Critical));
    }

    #[test]
    fn icinga_keys() {
        let v = json!({"source": "Icinga", "type": "Recovery", "host": "web-01", "service": "HTTP",
                       "state": "Ok", "output": "HTTP OK - 200", "timestamp": "1714565100", "address": "10.0.1.10"});
        for format in [Format::Nagios, Format::Auto] {
            let e = one(format, v.clone());
            assert_eq!(e.source, "icinga");
            assert_eq!(e.check, "HTTP");
            assert_eq!((e.status, e.severity), (Status::Resolved, Severity::Info));
            assert_eq!(e.ci.ip.as_deref(), Some("10.0.1.10"));
            assert_eq!(e.labels, labels(&[("notification_type", "RECOVERY"), ("state", "OK")]));
            assert_eq!(e.time, at("2024-05-01T12:05:00Z"));
        }
        let e = one(Format::Nagios, json!({"host": "h", "type": "Problem", "state": "Down"}));
        assert_eq!((e.check.as_str(), e.severity, e.status), (NAGIOS_HOST_CHECK, Severity::Critical, Status::Firing));
        let e = one(Format::Nagios, json!({"host": "h", "notification_type": "CUSTOM"}));
        assert_eq!((e.severity, e.status, e.summary.as_str()), (Severity::Warning, Status::Firing, "host-down"));
    }

    #[test]
    fn nagios_errors_name_the_field() {
        schema_err(Format::Nagios, json!({"notification_type": "PROBLEM"}), "host_name: missing");
        schema_err(Format::Auto, json!({"host_name": 5}), "host_name: expected string, got number");
        schema_err(
            Format::Auto,
            json!({"host_name": "h", "service_description": "S", "service_state": "PENDING"}),
            "service_state: unknown state \"PENDING\" (expected OK, WARNING, CRITICAL or UNKNOWN)",
        );
        schema_err(
            Format::Auto,
            json!({"host": "h", "type": "PROBLEM", "state": "sad"}),
            "state: unknown state \"SAD\" (expected UP, DOWN or UNREACHABLE)",
        );
        schema_err(Format::Auto, json!({"host_name": "h", "timestamp": true}), "timestamp: expected number or string, got boolean");
        schema_err(Format::Auto, json!({"host_name": "h", "output": {}}), "output: expected string, got object");
    }

    // ---- detection -------------------------------------------------------

    #[test]
    fn auto_detection() {
        let src = |v: serde_json::Value| dec(Format::Auto, &v).unwrap()[0].source.clone();
        assert_eq!(src(json!([{"labels": {"alertname": "A"}}])), "alertmanager");
        assert_eq!(src(webhook(vec![json!({"labels": {"alertname": "A"}})])), "alertmanager");
        assert_eq!(src(json!({"trigger_name": "T"})), "zabbix");
        assert_eq!(src(json!({"event_value": "1", "trigger_name": "T", "host": "h", "state": "x", "type": "y"})), "zabbix");
        assert_eq!(src(json!({"host_name": "h"})), "nagios");
        assert_eq!(src(json!({"host": "h", "service_state": "OK", "service": "s"})), "nagios");
        assert_eq!(src(json!({"host": "h", "state": "UP", "type": "RECOVERY", "source": "icinga"})), "icinga");
        assert_eq!(src(json!({"source": "n", "check": "c", "severity": "info", "status": "firing", "host": "h", "state": "x"})), "n");
        for v in [json!({"host": "h"}), json!({"check": null, "alerts": null}), json!("event"), json!(5), json!(null)] {
            let e = dec(Format::Auto, &v).unwrap_err();
            assert_eq!(e.kind(), "unrecognized", "{v}");
            assert!(e.to_string().contains("`trigger_name`/`event_value` (Zabbix)"), "{e}");
        }
        let e = dec(Format::Auto, &json!(true)).unwrap_err();
        assert!(e.to_string().starts_with("unrecognized payload: got a JSON boolean;"), "{e}");
    }

    // ---- limits and syntax -----------------------------------------------

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let mut big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        big[0] = b'{';
        let e = decode(Format::Auto, &big, received()).unwrap_err();
        assert_eq!(e, DecodeError::TooLarge { size: MAX_PAYLOAD_BYTES + 1, max: MAX_PAYLOAD_BYTES });
        assert_eq!(e.kind(), "too_large");
        assert_eq!(e.to_string(), "payload too large: 1048577 bytes > 1048576");
        // Exactly the limit is parsed (and here found wanting, for other reasons).
        let e = decode(Format::Auto, &big[..MAX_PAYLOAD_BYTES], received()).unwrap_err();
        assert_eq!(e.kind(), "json");
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let e = decode(Format::Auto, b"{\"check\": \"caf\xe9\"}", received()).unwrap_err();
        assert_eq!(e, DecodeError::Utf8 { offset: 14 });
        assert_eq!(e.kind(), "utf8");
        assert_eq!(e.to_string(), "invalid UTF-8 at byte 14");
    }

    #[test]
    fn nesting_limit() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let e = decode(Format::Auto, nested(MAX_DEPTH + 1).as_bytes(), received()).unwrap_err();
        assert_eq!(e, DecodeError::TooDeep { max: 64, offset: 64 });
        assert_eq!(e.kind(), "too_deep");
        assert!(e.to_string().starts_with("JSON nesting deeper than 64"), "{e}");
        let objects = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
        assert_eq!(decode(Format::Auto, objects.as_bytes(), received()).unwrap_err().kind(), "too_deep");
        // 64 levels are fine (the list's first alert is then not an object).
        let e = decode(Format::Auto, nested(MAX_DEPTH).as_bytes(), received()).unwrap_err();
        assert_eq!(e.to_string(), "[0]: expected object, got array");
        // Brackets inside strings, escaped quotes included, do not count.
        let s = format!(r#"{{"trigger_name": "a\"{}", "tags": "{{}}"}}"#, "[{".repeat(100));
        let e = one(Format::Auto, serde_json::from_str(&s).unwrap());
        assert!(e.check.starts_with("a\"[{[{"));
        assert!(decode(Format::Auto, s.as_bytes(), received()).is_ok());
        let deep_tags = format!("{}{}", "[".repeat(70), "]".repeat(70));
        schema_err(Format::Auto, json!({"trigger_name": "t", "tags": deep_tags}), "tags: JSON in string nests deeper than 64");
    }

    #[test]
    fn json_syntax_errors() {
        for (input, want) in [
            (&b"{\"check\": \"c\", "[..], "invalid JSON at line 1, column 15: EOF while parsing a value"),
            (b"", "invalid JSON at line 1, column 0: EOF while parsing a value"),
            (b"{\"a\":1} x", "invalid JSON at line 1, column 9: trailing characters"),
            (b"{\n  \"a\": tru }", "invalid JSON at line 2, column 11: expected ident"),
        ] {
            let e = decode(Format::Auto, input, received()).unwrap_err();
            assert_eq!(e.kind(), "json");
            assert_eq!(e.to_string(), want);
            assert_eq!(e.path(), None);
        }
    }

    #[test]
    fn byte_order_mark_and_escaped_keys() {
        let mut p = "\u{feff}".as_bytes().to_vec();
        p.extend_from_slice(br#"{"tr\u0069gger_name": "T\n", "host": "h\u00e9"}"#);
        let e = decode(Format::Auto, &p, received()).unwrap();
        assert_eq!(e[0].check, "T\n");
        assert_eq!(e[0].ci.host.as_deref(), Some("hé"));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let e = decode(Format::Auto, br#"{"trigger_name": "a", "trigger_name": "b"}"#, received()).unwrap();
        assert_eq!(e[0].check, "b");
    }

    #[test]
    fn error_kinds_and_paths() {
        let e = schema(&Path::ROOT.key("alerts").index(3).key("labels").key("alertname"), "missing");
        assert_eq!(e.to_string(), "alerts[3].labels.alertname: missing");
        assert_eq!(e.path(), Some("alerts[3].labels.alertname"));
        assert_eq!(e.kind(), "schema");
        assert_eq!(DecodeError::Unrecognized(String::new()).kind(), "unrecognized");
    }

    // ---- never panics ----------------------------------------------------

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const FORMATS: [Format; 5] = [Format::Auto, Format::Native, Format::Alertmanager, Format::Zabbix, Format::Nagios];

        const KEYS: &[&str] = &[
            "alerts",
            "labels",
            "annotations",
            "alertname",
            "severity",
            "status",
            "startsAt",
            "endsAt",
            "fingerprint",
            "instance",
            "host",
            "hostname",
            "node",
            "job",
            "service",
            "summary",
            "description",
            "event_id",
            "event_value",
            "trigger_name",
            "host_ip",
            "message",
            "timestamp",
            "event_date",
            "event_time",
            "tags",
            "tag",
            "value",
            "notification_type",
            "host_name",
            "host_address",
            "service_description",
            "service_state",
            "host_state",
            "state",
            "type",
            "output",
            "source",
            "check",
            "source_id",
            "ci",
            "ip",
            "time",
            "x",
        ];

        const STRINGS: &[&str] = &[
            "",
            "firing",
            "resolved",
            "PROBLEM",
            "RESOLVED",
            "OK",
            "UP",
            "DOWN",
            "CRITICAL",
            "1",
            "0",
            "Disaster",
            "0001-01-01T00:00:00Z",
            "2024-05-01T12:00:00Z",
            "9999-12-31T23:59:59Z",
            "10.0.0.1:9100",
            "[::1]:80",
            "http://a@b:1/c",
            "1714564800",
            "-99999999999999999",
            "1e400",
            "2024.05.01",
            "25:61:61",
            "{EVENT.TAGSJSON}",
            "[{\"tag\":\"service\",\"value\":1}]",
            "{\"a\":",
            "[[[[",
            "\u{feff}",
            "é\u{0}",
        ];

        fn leaf() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                prop::sample::select(STRINGS).prop_map(serde_json::Value::from),
                ".{0,12}".prop_map(serde_json::Value::from),
            ]
        }

        fn value() -> impl Strategy<Value = serde_json::Value> {
            leaf().prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                    prop::collection::vec((prop::sample::select(KEYS), inner), 0..10)
                        .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
                ]
            })
        }

        fn config() -> ProptestConfig {
            ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
        }

        fn all_formats(bytes: &[u8]) {
            let now = DateTime::from_timestamp(1_714_564_800, 0).unwrap();
            for f in FORMATS {
                if let Ok(events) = decode(f, bytes, now) {
                    for e in events {
                        assert!(!e.check.trim().is_empty() && !e.source.is_empty());
                        assert!(e.origin.is_none());
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                all_formats(&bytes);
            }

            #[test]
            fn json_ish_text_never_panics(s in r#"[\[\]{}":,0-9a-z\\ .eE+-]{0,200}"#) {
                all_formats(s.as_bytes());
            }

            #[test]
            fn structured_json_never_panics(v in value(), cut in any::<prop::sample::Index>()) {
                let text = v.to_string();
                all_formats(text.as_bytes());
                // Truncated, possibly mid UTF-8 sequence.
                let bytes = text.as_bytes();
                all_formats(&bytes[..cut.index(bytes.len() + 1)]);
            }
        }
    }
}
