//! `GET /explain/{id}` and `triaged explain` on a running daemon: why an event
//! was dropped, and why an incident has its members and root cause.

use crate::support::in_process;

use std::process::Command;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use triaged::incident::ActionKind;

async fn send(producer: &FutureProducer, id: &str, host: &str, check: &str, severity: &str) {
    let payload = format!(
        r#"{{"source":"checks","source_id":"{id}","ci":{{"host":"{host}"}},"check":"{check}","severity":"{severity}","status":"firing","summary":"{check}"}}"#
    );
    producer.send(FutureRecord::to("events").key(host).payload(&payload), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
}

/// `triaged explain ID --url URL`: (success, stdout, stderr).
async fn cli(id: &str, url: &str) -> (bool, String, String) {
    let (id, url) = (id.to_owned(), url.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_triaged")).args(["explain", &id, "--url", &url]).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_dropped_events_and_incidents() {
    let d = in_process::start(crate::repo(), 1, |_| {}).await;
    let (producer, receiver, running) = (&d.producer, &d.receiver, &d.running);

    // A switch and a hypervisor behind it fail; an informational event is noise.
    send(producer, "ev-1", "hv-par1-01", "host-down", "critical").await;
    send(producer, "ev-2", "sw-acc-par1-01", "ICMP ping unreachable", "critical").await;
    send(producer, "ev-3", "db-pay-fra1-01", "Backup finished", "info").await;
    let log = receiver
        .wait_for(Duration::from_secs(30), |log| log.iter().any(|r| r.kind == ActionKind::Open))
        .await
        .unwrap_or_else(|log| panic!("no incident opened: {} actions", log.len()));
    let key = log.iter().find(|r| r.kind == ActionKind::Open).unwrap().incident.key.clone();
    let url = format!("http://{}", running.http_addr);
    // /incidents (and /explain) show the open incidents as of the last refresh (every 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("{url}/incidents")).await.unwrap().text().await.unwrap().contains(&key) {
        assert!(std::time::Instant::now() < deadline, "{key} never listed on /incidents");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The dropped event, by its source event id.
    let (ok, out, err) = cli("ev-3", &url).await;
    assert!(ok, "{err}");
    assert!(out.contains("decision:    dropped") && out.contains("drop-informational"), "{out}");

    // The incident, by key: the hypervisor joined because its upstream switch fails.
    let (ok, out, err) = cli(&key, &url).await;
    assert!(ok, "{err}");
    assert!(out.contains("root cause:  sw-acc-par1-01"), "{out}");
    assert!(out.contains("members (2, 2 events)"), "{out}");
    assert!(out.contains("depends on failing sw-acc-par1-01") || out.contains("absorbed"), "the topology reason is given: {out}");

    // A member event, by its event id: its decision and the incident it is in.
    let (ok, out, err) = cli("ev-1", &url).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("incident {key}")), "{out}");

    // Unknown ids are a clear error.
    let (ok, _, err) = cli("no-such-thing", &url).await;
    assert!(!ok && err.contains("404") && err.contains("no-such-thing"), "{err}");

    assert!(d.stop().await.clean_shutdown);
}
