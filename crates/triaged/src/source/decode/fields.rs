//! Typed access to the fields of a JSON object (required and optional
//! strings, string maps, times) with errors naming the field, and the value
//! parsers and CI hint helpers the format decoders share.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::path::{missing, schema, wrong_type, Path};
use super::value::{Fields, V};
use super::DecodeError;
use crate::event::{CiHint, Status};

pub(super) fn as_obj<'v, 'a>(v: &'v V<'a>, path: &Path<'_>) -> Result<&'v Fields<'a>, DecodeError> {
    match v {
        V::Obj(fields) => Ok(fields),
        other => Err(wrong_type(path, "object", other)),
    }
}

/// The value of `key` (the last one if repeated), `None` if absent.
pub(super) fn get_raw<'v, 'a>(o: &'v Fields<'a>, key: &str) -> Option<&'v V<'a>> {
    o.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Like [`get_raw`], with `null` counting as absent.
pub(super) fn get<'v, 'a>(o: &'v Fields<'a>, key: &str) -> Option<&'v V<'a>> {
    get_raw(o, key).filter(|v| !matches!(v, V::Null))
}

pub(super) fn has(o: &Fields<'_>, key: &str) -> bool {
    get(o, key).is_some()
}

/// An optional string field.
pub(super) fn opt_str<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<&'v str>, DecodeError> {
    match get(o, key) {
        None => Ok(None),
        Some(V::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(&path.key(key), "string", other)),
    }
}

/// An optional string field, blank counting as absent.
pub(super) fn opt_text<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<&'v str>, DecodeError> {
    Ok(opt_str(o, key, path)?.filter(|s| !s.trim().is_empty()))
}

/// The first of `keys` holding a non-blank string, with the key it came from.
pub(super) fn first_text<'v>(
    o: &'v Fields<'_>,
    keys: &[&'static str],
    path: &Path<'_>,
) -> Result<Option<(&'static str, &'v str)>, DecodeError> {
    for &k in keys {
        if let Some(s) = opt_text(o, k, path)? {
            return Ok(Some((k, s)));
        }
    }
    Ok(None)
}

/// A required string field (`null` is a type error, not "missing").
pub(super) fn req_str<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<&'v str, DecodeError> {
    match get_raw(o, key) {
        None => Err(missing(&path.key(key))),
        Some(V::Str(s)) => Ok(s),
        Some(other) => Err(wrong_type(&path.key(key), "string", other)),
    }
}

/// A required, non-blank string field.
pub(super) fn req_text<'v>(o: &'v Fields<'_>, key: &str, path: &Path<'_>) -> Result<&'v str, DecodeError> {
    let s = req_str(o, key, path)?;
    if s.trim().is_empty() {
        return Err(schema(&path.key(key), "must not be empty"));
    }
    Ok(s)
}

/// An object of string values (labels, annotations); `null` is empty.
pub(super) fn str_map(v: &V<'_>, path: &Path<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
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

pub(super) fn opt_map(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
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
pub(super) fn opt_time(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<DateTime<Utc>>, DecodeError> {
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
pub(super) fn opt_unix_time(o: &Fields<'_>, key: &str, path: &Path<'_>) -> Result<Option<DateTime<Utc>>, DecodeError> {
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
pub(super) fn is_macro(s: &str) -> bool {
    let s = s.trim();
    (s.len() > 2 && s.starts_with('{') && s.ends_with('}') && !s[1..s.len() - 1].contains(['{', '}', '"', ':']))
        || (s.len() > 2 && s.starts_with('$') && s.ends_with('$'))
}

pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Sets `ci.ip` if `value` is an IP address (and none is set yet), else
/// `ci.host` (if none is set yet).
pub(super) fn hint_host_or_ip(ci: &mut CiHint, value: &str) {
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

/// A `firing`/`resolved` status (any case).
pub(super) fn parse_status(s: &str) -> Option<Status> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("firing") {
        Some(Status::Firing)
    } else if s.eq_ignore_ascii_case("resolved") {
        Some(Status::Resolved)
    } else {
        None
    }
}
