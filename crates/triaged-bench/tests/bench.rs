//! `triaged-bench` end to end at a small scale: every phase but the peers
//! (their drivers are tested in `peers`), checked through the
//! results it writes.

use std::process::Command;

#[test]
fn bench_writes_every_figure_of_a_small_run() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_triaged-bench"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(["--events", "20000", "--cis", "2000", "--rounds", "1", "--latency-rate", "5000", "--latency-seconds", "1"])
        .args(["--fingerprints", "20000", "--cmdb-sizes", "2000", "--skip", "alertmanager,sec", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let storm = &r["storm"];
    let events = storm["events"].as_u64().unwrap();
    assert!((19_000..=20_000).contains(&events), "{storm}");
    assert!(storm["partitions"].as_i64().unwrap() >= 4, "{storm}");

    // Raw and triaged read the whole storm; triaged opened one incident per
    // fault or fewer, and its sink calls follow incidents, not events.
    assert_eq!(r["raw"][0]["messages"].as_u64(), Some(events));
    let t = &r["triaged"][0];
    assert_eq!(t["events"].as_u64(), Some(events), "{t}");
    let (incidents, calls) = (t["incidents"].as_u64().unwrap(), t["sink_calls"].as_u64().unwrap());
    let faults = storm["faults"].as_u64().unwrap();
    assert!(incidents >= 1 && incidents <= storm["streams"].as_u64().unwrap(), "{t}");
    assert!(calls <= 4 * incidents && calls * 100 < events, "{calls} sink calls for {incidents} incidents, {faults} faults");

    assert!(r["core"]["messages"].as_u64().unwrap() >= events);
    assert_eq!(r["latency"]["messages"].as_u64(), Some(5_000));
    assert!(r["latency"]["p99_ms"].as_f64().unwrap() >= r["latency"]["p50_ms"].as_f64().unwrap());
    // The consume loop's baseline on the same schedule.
    assert_eq!(r["raw_latency"]["messages"].as_u64(), Some(5_000));
    assert!(r["raw_latency"]["p99_ms"].as_f64().unwrap() >= r["raw_latency"]["p50_ms"].as_f64().unwrap());

    let memory = r["memory"].as_array().unwrap();
    assert_eq!(memory.len(), 4, "{memory:?}");
    assert_eq!(memory[0]["what"], "live fingerprints");
    assert_eq!(memory[0]["items"].as_u64(), Some(20_000));
    assert!(memory[1]["what"].as_str().unwrap().contains("expiring"), "{}", memory[1]);
    assert_eq!(memory[1]["items"].as_u64(), Some(20_000));
    assert_eq!(memory[2]["what"], "events with 900 KB fields");
    assert_eq!(memory[2]["items"].as_u64(), Some(400));
    assert_eq!(memory[3]["what"], "CMDB load");
    assert!(memory[3]["items"].as_u64().unwrap() > 1_500);

    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    for row in [
        "| triaged |",
        "| raw consume |",
        "| triaged core |",
        "## Decision latency",
        "plain rdkafka consume loop",
        "| live fingerprints |",
        "| CMDB load |",
    ] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }
}

#[test]
fn bench_rejects_an_unknown_phase_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged-bench")).args(["--skip", "kafka,nonsense"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonsense") && err.contains("alertmanager"), "{err}");
}
