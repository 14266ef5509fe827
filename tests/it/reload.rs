//! Reloading rules (what SIGHUP triggers) on a running daemon: a reload that
//! fails validation keeps the current rules and is counted as an error; a
//! valid one takes effect for the next event.

use crate::support::in_process;

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use triaged::metrics::Metrics;

/// Copies the files (not subdirectories) of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Waits until `done` holds for the daemon's metrics, or fails after 30 s.
async fn wait_until(what: &str, metrics: &Metrics, done: impl Fn(&Metrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(metrics) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_info_event(producer: &FutureProducer, n: u32) {
    let payload = format!(
        r#"{{"source":"batch-monitor","ci":{{"host":"etl-01"}},"check":"ETL job {n} slow","severity":"info","status":"firing","summary":"run {n}"}}"#
    );
    producer.send(FutureRecord::to("events").key("etl-01").payload(&payload), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_keeps_the_rules_and_good_reload_applies() {
    let repo = crate::repo();
    let root = tempfile::tempdir().unwrap();
    copy_dir(&repo.join("rules"), &root.path().join("rules"));
    copy_dir(&repo.join("config"), &root.path().join("config"));

    let d = in_process::start(root.path(), 1, |_| {}).await;
    let (running, producer) = (&d.running, &d.producer);
    let m = running.metrics.clone();
    let dropped = |m: &Metrics| m.decisions.with_label_values(&["dropped"]).get();
    let reloads = |m: &Metrics, result: &str| m.reloads.with_label_values(&["rules", result]).get();

    // The shipped rules drop informational events.
    send_info_event(producer, 1).await;
    wait_until("the first event", &m, |m| m.messages_handled.get() >= 1).await;
    assert_eq!(dropped(&m), 1);

    // A broken rule file: the reload is rejected, the old rules stay.
    let broken = root.path().join("rules/99-broken.yaml");
    std::fs::write(&broken, "rules:\n  - name: broken\n    match: { check: { regex: \"([\" } }\n").unwrap();
    running.reload.send(()).await.unwrap();
    wait_until("the rejected reload", &m, |m| reloads(m, "error") == 1).await;
    send_info_event(producer, 2).await;
    wait_until("the second event", &m, |m| m.messages_handled.get() >= 2).await;
    assert_eq!(dropped(&m), 2, "the old rules still drop informational events");

    // A valid change without the informational drop: it applies.
    std::fs::remove_file(&broken).unwrap();
    let filter = root.path().join("rules/00-filter.yaml");
    let text = std::fs::read_to_string(&filter).unwrap();
    let cut = text.find("  - name: drop-informational").unwrap();
    let end = cut + text[cut..].find("\n\n").unwrap() + 2;
    std::fs::write(&filter, format!("{}{}", &text[..cut], &text[end..])).unwrap();
    running.reload.send(()).await.unwrap();
    wait_until("the accepted reload", &m, |m| reloads(m, "ok") == 1).await;
    send_info_event(producer, 3).await;
    wait_until("the third event", &m, |m| m.messages_handled.get() >= 3).await;
    assert_eq!(dropped(&m), 2, "the new rules no longer drop informational events");
    assert_eq!(m.decisions.with_label_values(&["new"]).get(), 1);

    assert!(d.stop().await.clean_shutdown);
}
