//! Property tests of [`decode`]: no input, however malformed, makes a
//! decoder panic, and whatever decodes has a check and a source.

use chrono::DateTime;
use proptest::prelude::*;

use super::decode;
use crate::config::Format;

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
