//! End to end into a real Request Tracker 5: the `triaged` binary on a
//! Tansu broker with `profile = "rt"`, pointed at an RT of the test's own
//! (`support::rt`).
//!
//! The demo storm fires (two incidents); the daemon is SIGKILLed once both
//! tickets exist, while updates are still coming; a second run gets the
//! recovery and is SIGKILLed once both tickets stand resolved; a third gets
//! a recurrence inside the reopen window and must reopen the same tickets.
//! At the end RT holds exactly one ticket per incident key, resolved and
//! reopened, with a comment for each, and no action failed for good.
//! `cargo test --test it rt_e2e -- --nocapture` prints the transcript.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use triaged::topology::Snapshot;

use crate::e2e_tansu::Broker;
use crate::support::process::{free_port, log_tails, produce, write_config_with, Daemon, Extra, LogDir, Sink};
use crate::support::rt::Rt;

const GROUP: &str = "triaged-rt-e2e";
const PARTITIONS: i32 = 4;
const TOKEN_ENV: &str = "RT_E2E_TOKEN";
/// Bound of each step.
const WAIT: Duration = Duration::from_secs(120);

/// Polls RT until `done` holds for its tickets (id, key, status).
async fn wait_tickets(rt: &Rt, what: &str, logs: &std::path::Path, done: impl Fn(&[(String, String, String)]) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let tickets = rt.all_tickets().await;
        if done(&tickets) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; RT holds {tickets:?}\n{}", log_tails(logs));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn all_in(tickets: &[(String, String, String)], status: &str) -> bool {
    tickets.len() >= 2 && tickets.iter().all(|(_, _, s)| s == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rt_e2e_storm_with_kills_leaves_one_ticket_per_incident_resolved_then_reopened() {
    let started = Instant::now();
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let rt = Rt::start().await;
    let broker = Broker::start(logs);
    broker.create_topic("events", PARTITIONS);
    broker.create_topic("triaged-dead-letter", 1);
    broker.create_topic("triaged-state", 1);
    let brokers = broker.bootstrap();
    let metrics_port = free_port();
    let extra = Extra {
        sink: Some(Sink {
            profile: "rt",
            routing_key_env: None,
            auth: Some(format!("{{ kind = \"token\", token = {{ env = \"{TOKEN_ENV}\" }} }}")),
        }),
        // Wide enough that the recurrence, produced after a restart, reopens.
        reopen_window: Some("60s"),
        ..Extra::default()
    };
    let config = write_config_with(logs, &brokers, GROUP, 6000, &rt.url, metrics_port, &extra);
    let env = [(TOKEN_ENV, rt.token.as_str())];

    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let mut ends = BTreeMap::new();
    produce(&brokers, &storm.firing, &mut ends).await;

    // Run 1: both incidents open in RT; SIGKILL while updates still come.
    let d1 = Daemon::start_with_env(&config, logs, 1, metrics_port, &env);
    wait_tickets(&rt, "run 1: both tickets created", logs, |t| t.len() >= 2).await;
    let opened = rt.all_tickets().await;
    d1.sigkill();

    // Run 2: the faults clear; SIGKILL once both tickets stand resolved.
    produce(&brokers, &storm.recovery, &mut ends).await;
    let d2 = Daemon::start_with_env(&config, logs, 2, metrics_port, &env);
    wait_tickets(&rt, "run 2: both tickets resolved", logs, |t| all_in(t, "resolved")).await;
    d2.sigkill();

    // Run 3: the same faults recur inside the reopen window.
    let recurrence = triaged::demo::storm(&cmdb, 1, chrono::Utc::now()).unwrap();
    produce(&brokers, &recurrence.firing, &mut ends).await;
    let d3 = Daemon::start_with_env(&config, logs, 3, metrics_port, &env);
    wait_tickets(&rt, "run 3: both tickets reopened", logs, |t| all_in(t, "open")).await;
    d3.wait_metric("triaged_core_messages_handled_total", |v| v >= recurrence.firing.len() as f64, WAIT).await;
    let permanent = d3.metric("triaged_sink_errors_total{class=\"permanent\"}").await;
    d3.sigterm(Duration::from_secs(15));

    let tickets = rt.all_tickets().await;
    let keys: BTreeSet<&str> = tickets.iter().map(|(_, k, _)| k.as_str()).collect();
    println!("rt e2e: {} tickets after 2 SIGKILLs, in {:.1?}", tickets.len(), started.elapsed());
    for (id, key, status) in &tickets {
        let statuses = rt.statuses(id).await;
        let comments = rt.comments(id).await;
        println!("  ticket {id} {key}: statuses {}, final {status}, {} comments", statuses.join(" -> "), comments.len());
        let tail = &statuses[statuses.len().saturating_sub(2)..];
        assert_eq!(tail, ["resolved", "open"], "ticket {id} was resolved, then reopened: {statuses:?}");
        assert!(comments.len() >= 2, "ticket {id}: a comment with the resolve and with the reopen: {comments:#?}");
    }
    assert_eq!(tickets.len(), 2, "one ticket per incident: {tickets:?}");
    assert_eq!(keys.len(), 2, "distinct keys: {tickets:?}");
    assert!(keys.iter().all(|k| k.starts_with("trg-")), "{keys:?}");
    let first: Vec<&str> = opened.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(tickets.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>(), first, "the tickets of run 1, no others");
    assert_eq!(permanent, Some(0.0), "no action failed for good");
}
