//! Data-driven decoder tests.
//!
//! Every `tests/fixtures/decode/NAME.json` is decoded with `Format::Auto` and
//! the fixed received time [`RECEIVED`], and the result compared with
//! `NAME.expected.json`, which holds either the expected `Vec<Event>` as JSON
//! or `{"error": "..."}`, a substring the error message must contain.
//!
//! To (re)write every expected file from the decoder's current output, run
//! `UPDATE_EXPECT=1 cargo test --test it decode_fixtures` and review the diff
//! (error fixtures then hold the whole message).

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use triaged::config::Format;
use triaged::event::Event;
use triaged::source::decode::decode;

/// The Kafka message timestamp every fixture is decoded with.
const RECEIVED: &str = "2024-05-01T12:05:00Z";

fn fixture_dir() -> PathBuf {
    crate::repo().join("tests/fixtures/decode")
}

/// Input fixtures (`*.json` that are not `*.expected.json`), sorted.
fn inputs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    files.sort();
    files
}

fn expected_path(input: &Path) -> PathBuf {
    let name = input.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name");
    input.with_file_name(format!("{}.expected.json", name.trim_end_matches(".json")))
}

/// Checks one fixture; `Err` describes the mismatch.
fn check(input: &Path, update: bool) -> Result<(), String> {
    let payload = fs::read(input).map_err(|e| format!("read: {e}"))?;
    let received: DateTime<Utc> = RECEIVED.parse().expect("RECEIVED is RFC 3339");
    let actual = decode(Format::Auto, &payload, received);
    let expected_file = expected_path(input);
    if update {
        let value = match &actual {
            Ok(events) => serde_json::to_value(events).expect("events serialize"),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let text = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
        fs::write(&expected_file, text).map_err(|e| format!("write {}: {e}", expected_file.display()))?;
        return Ok(());
    }
    let text = fs::read_to_string(&expected_file)
        .map_err(|e| format!("read {}: {e} (run with UPDATE_EXPECT=1 to create it)", expected_file.display()))?;
    let expected: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", expected_file.display()))?;
    match (expected.get("error"), actual) {
        (Some(want), Ok(events)) => {
            Err(format!("expected an error containing {want}, got events:\n{}", serde_json::to_string_pretty(&events).expect("JSON")))
        }
        (Some(want), Err(e)) => {
            let want = want.as_str().ok_or("`error` must be a string")?;
            let msg = e.to_string();
            if msg.contains(want) {
                Ok(())
            } else {
                Err(format!("error {msg:?} ({}) does not contain {want:?}", e.kind()))
            }
        }
        (None, Err(e)) => Err(format!("expected events, got error ({}): {e}", e.kind())),
        (None, Ok(events)) => {
            let want: Vec<Event> =
                serde_json::from_value(expected).map_err(|e| format!("{} is not a list of events: {e}", expected_file.display()))?;
            if events == want {
                Ok(())
            } else {
                Err(format!(
                    "events differ\n--- expected\n{}\n--- actual\n{}",
                    serde_json::to_string_pretty(&want).expect("JSON"),
                    serde_json::to_string_pretty(&events).expect("JSON")
                ))
            }
        }
    }
}

#[test]
fn decode_fixtures_match_expected() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let files = inputs();
    assert!(files.len() >= 10, "expected at least 10 decode fixtures, found {}", files.len());
    let failures: Vec<String> = files.iter().filter_map(|f| check(f, update).err().map(|e| format!("{}: {e}", f.display()))).collect();
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n\n{}", failures.len(), files.len(), failures.join("\n\n"));
}

#[test]
fn every_expected_file_has_an_input() {
    let inputs = inputs();
    for entry in fs::read_dir(fixture_dir()).expect("fixture directory") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if let Some(stem) = name.strip_suffix(".expected.json") {
            let input = path.with_file_name(format!("{stem}.json"));
            assert!(inputs.contains(&input), "{name} has no input {}", input.display());
        }
    }
}
