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
//! spellings of [`Severity::parse`](crate::event::Severity::parse).
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
//! (required); `severity` = `labels.severity` through [`Severity::parse`](crate::event::Severity::parse)
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

mod alertmanager;
mod detect;
mod fields;
#[cfg(test)]
mod fuzz;
mod nagios;
mod native;
mod path;
#[cfg(test)]
mod test_support;
mod value;
mod zabbix;

use chrono::{DateTime, Utc};

use crate::config::Format;
use crate::event::Event;
use alertmanager::alertmanager;
use detect::{detect, Detected};
use nagios::nagios;
use native::native;
use path::Path;
use value::Root;
use zabbix::zabbix;

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

#[cfg(test)]
mod tests {
    use super::test_support::{one, received, schema_err};
    use super::*;
    use serde_json::json;

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
}
