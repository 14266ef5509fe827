//! Correlation decisions are taken at the events' own time, on a running
//! daemon, however late the daemon reads them:
//!
//! 1. A maintenance window that ends while its events wait behind an open
//!    circuit keeps them suppressed. The ITSM answers 503, so the sink's
//!    circuit opens and the core stops reading. The CMDB then gets a window
//!    on one CI ending 4 s later (reloaded once the circuit is open, so the
//!    daemon's start-up time does not move the window), and two firings on
//!    that CI with event times inside it are produced, with a control
//!    firing on another CI. The window's end passes in wall time while they
//!    wait in Kafka, unread; one more firing on the maintained CI, after
//!    the window, joins the backlog. Once the ITSM heals, the backlog is
//!    read after the window's end: the two firings of the window are
//!    decided `suppressed` (`/explain`, `triaged_events_suppressed_total`),
//!    decided after the end and naming the change, and the ITSM never hears
//!    of them, while the control and the firing after the window are opened.
//!    A daemon that judged maintenance at the time it reads an event, or
//!    opened nothing, fails it.
//! 2. The daemon and `triaged replay --config` with the daemon's config take
//!    the same actions on the same log (DESIGN.md: "The daemon, `replay`
//!    and `test` give the same actions on the same log and config"). One
//!    partition holds, produced at once, an hour of event time ending 5 min
//!    ago: a fault that clears after 10 min, one that flaps and clears, a
//!    switch and two hypervisors behind it that fail within the group wait
//!    and clear one by one, and one that never clears. The daemon, with the
//!    generic ITSM double, runs until it is settled (every message handled,
//!    only the alert that never clears left in its state, every request
//!    answered); then `replay` reads the same partition. Per incident key,
//!    the incident actions (open, update, resolve, reopen) the ITSM
//!    acknowledged must be those replay prints. Replay runs its timers
//!    (group wait, update interval, hold-down, reopen window) on the
//!    events' clock; a daemon that runs them on its own clock reads the
//!    whole hour within a group wait and decides otherwise. The last event
//!    is 5 min old, so a daemon whose clock follows the events, and the
//!    wall clock once the partition is idle, has run out every timer of the
//!    log (the longest, a flapping alert's 10 min hold-down, ends 30 min
//!    before the last event) by the time it is settled.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureRecord;
use serde_json::json;

use triaged::config::{Config, HumanDuration};
use triaged::incident::ActionKind;
use triaged::server::explain::{Explained, Explanation};
use triaged_testkit::itsm::Received;
use triaged_testkit::mimic::{Itsm, Meaning, Mimic, Outcome};

use crate::support::process::{free_port, log_tails, produce_to, write_config_with, Daemon, Extra, LogDir};
use crate::support::{self, in_process};

/// The `source` of every event these tests produce.
const SOURCE: &str = "event-time";

/// A native-format message with its own event time `time`, keyed by `host`.
fn message(id: &str, host: &str, check: &str, firing: bool, time: DateTime<Utc>) -> (String, Vec<u8>) {
    let status = if firing { "firing" } else { "resolved" };
    let event = json!({
        "source": SOURCE,
        "source_id": id,
        "ci": { "host": host },
        "check": check,
        "severity": "major",
        "status": status,
        "summary": format!("{check} is {status}"),
        "time": time.to_rfc3339(),
    });
    (host.to_owned(), serde_json::to_vec(&event).unwrap())
}

// ---------------------------------------------------------------------------
// 1. Maintenance behind an open circuit

/// The CI whose maintenance window ends while its events wait.
const MAINTAINED: &str = "et-maint-db-01";
/// Another CI, never in maintenance: its firing must open.
const CONTROL: &str = "et-control-app-01";
/// The CI whose incident the failing ITSM refuses, which opens the circuit.
const TRIGGER: &str = "et-trigger-app-01";
const CHANGE: &str = "CHG-ET-1";
/// Checks of the firings on `MAINTAINED` inside the window (suppressed),
/// and of the one after it (opened).
const IN_WINDOW: [(&str, &str); 2] = [("et-maint-1", "Disk full"), ("et-maint-2", "Replication lag")];
const AFTER_WINDOW: &str = "Memory low";

/// The test's CMDB: three unrelated CIs; `MAINTAINED` has `window` if given.
fn cmdb(window: Option<(DateTime<Utc>, DateTime<Utc>)>) -> String {
    let maintenance = window
        .map(|(start, end)| {
            format!(
                "    maintenance:\n      - {{ start: \"{}\", end: \"{}\", change_id: {CHANGE}, reason: \"patching\" }}\n",
                start.to_rfc3339(),
                end.to_rfc3339()
            )
        })
        .unwrap_or_default();
    format!(
        "cis:\n  - {{ id: {TRIGGER}, name: {TRIGGER}, type: application }}\n  - {{ id: {CONTROL}, name: {CONTROL}, type: application }}\n  \
         - id: {MAINTAINED}\n    name: {MAINTAINED}\n    type: database\n{maintenance}"
    )
}

/// Whether `r` is an open of an incident that has a member of `ci` with `check`.
fn opens(r: &Received, ci: &str, check: &str) -> bool {
    r.kind == ActionKind::Open && r.incident.members.iter().any(|m| m.check == check && m.ci.as_ref().is_some_and(|c| c.id == ci))
}

/// The decision `/explain/{id}` remembers for event id `id`; `None` until it has one.
async fn explained(addr: std::net::SocketAddr, id: &str) -> Option<Explained> {
    let resp = reqwest::get(format!("http://{addr}/explain/{id}")).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    match resp.json::<Explanation>().await.ok()? {
        Explanation::Event { decision, .. } => Some(decision),
        Explanation::Incident { .. } => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_that_ends_while_its_events_wait_behind_an_open_circuit_keeps_them_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let cmdb_path = dir.path().join("cmdb.yaml");
    std::fs::write(&cmdb_path, cmdb(None)).unwrap();
    let path = cmdb_path.clone();
    let d = in_process::start(crate::repo(), 1, move |cfg: &mut Config| {
        cfg.cmdb.path = path;
        cfg.sink.as_mut().unwrap().circuit.failure_threshold = 3;
        cfg.sink.as_mut().unwrap().circuit.open_for = HumanDuration(Duration::from_millis(500));
        cfg.sink.as_mut().unwrap().retry.initial_backoff = HumanDuration(Duration::from_millis(20));
        cfg.sink.as_mut().unwrap().retry.max_backoff = HumanDuration(Duration::from_millis(100));
    })
    .await;
    let (producer, receiver, m, addr) = (&d.producer, &d.receiver, &d.running.metrics, d.running.http_addr);
    let minute = Duration::from_secs(60);
    let produce = async |messages: &[(String, Vec<u8>)]| {
        for (key, payload) in messages {
            producer.send(FutureRecord::to("events").key(key).payload(payload), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
        }
    };

    // The ITSM refuses the trigger's incident until the circuit opens.
    receiver.fail_with(StatusCode::SERVICE_UNAVAILABLE, None);
    produce(&[message("et-trigger", TRIGGER, "Health check failed", true, Utc::now())]).await;
    support::wait_until("circuit opened", minute, || m.sink_circuit_opened.with_label_values(&["default"]).get() >= 1).await;

    // The CMDB now says MAINTAINED is under CHG-ET-1 until 4 s from now.
    let (start, end) = (Utc::now() - chrono::Duration::minutes(30), Utc::now() + chrono::Duration::seconds(4));
    std::fs::write(&cmdb_path, cmdb(Some((start, end)))).unwrap();
    d.running.reload.send(()).await.unwrap();
    let reloaded = || m.reloads.with_label_values(&["cmdb", "ok"]).get() >= 1;
    support::wait_until("the CMDB with the window swapped in", minute, reloaded).await;

    // While the circuit is open: two firings inside the window (one from
    // 5 min ago, one of now) and the control.
    let handled = m.messages_handled.get();
    let produced_at = Utc::now();
    assert!(produced_at < end, "the setup took past the window's end ({end}); nothing would wait through it");
    let (a, b) = (IN_WINDOW[0], IN_WINDOW[1]);
    produce(&[
        message(a.0, MAINTAINED, a.1, true, produced_at - chrono::Duration::minutes(5)),
        message(b.0, MAINTAINED, b.1, true, produced_at),
        message("et-control", CONTROL, "Service down", true, produced_at),
    ])
    .await;
    // The window's end passes in wall time; none of them has been read.
    support::wait_until("the window's end passed", minute, || Utc::now() >= end).await;
    assert_eq!(m.messages_handled.get(), handled, "the backlog waits behind the open circuit, unread, past the window's end");
    assert_ne!(m.sink_circuit_state.with_label_values(&["default"]).get(), 0, "the circuit is still not closed");
    // One more firing on the maintained CI, after the window, joins the backlog.
    produce(&[message("et-maint-after", MAINTAINED, AFTER_WINDOW, true, Utc::now())]).await;

    receiver.heal();
    let log = receiver
        .wait_for(minute, |log| {
            [(TRIGGER, "Health check failed"), (CONTROL, "Service down"), (MAINTAINED, AFTER_WINDOW)]
                .iter()
                .all(|(ci, check)| log.iter().any(|r| opens(r, ci, check)))
        })
        .await
        .unwrap_or_else(|log| {
            let got: Vec<String> = log.iter().map(|r| format!("{} {} {}", r.kind.as_str(), r.incident.key, r.incident.title)).collect();
            panic!("after healing, the trigger, the control and the firing after the window were not all opened: {got:#?}")
        });
    assert_eq!(m.messages_handled.get(), handled + 4, "the whole backlog was read");
    assert_eq!(m.sink_circuit_state.with_label_values(&["default"]).get(), 0, "the circuit closed");

    // The two firings of the window: suppressed, decided after its end, the
    // change named; the ITSM heard nothing of them.
    for (id, check) in IN_WINDOW {
        let deadline = Instant::now() + Duration::from_secs(10);
        let x = loop {
            if let Some(x) = explained(addr, id).await {
                break x;
            }
            assert!(Instant::now() < deadline, "/explain/{id}: no decision within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(x.decision, "suppressed", "{id} ({check}): {x:?}");
        assert!(x.reason.contains("in maintenance until") && x.reason.contains(CHANGE), "{id}: the reason names the window: {}", x.reason);
        assert!(x.at >= end, "{id} was decided at {}, before the window's end {end}: the test did not test", x.at);
        let told: Vec<String> = log
            .iter()
            .filter(|r| r.incident.members.iter().any(|mb| mb.check == check))
            .map(|r| format!("{} {}", r.kind.as_str(), r.incident.key))
            .collect();
        assert!(told.is_empty(), "{id} ({check}) reached the ITSM: {told:?}");
    }
    let control = explained(addr, "et-control").await.expect("the control's decision");
    assert_ne!(control.decision, "suppressed", "{control:?}");
    assert_eq!(m.decisions.with_label_values(&["suppressed"]).get(), 2);
    // An event source outside the decoder kinds and [metrics] source_labels is labelled `other`.
    assert_eq!(m.events_suppressed.with_label_values(&["other", "rule"]).get(), 2);
    let opens_of = |ci: &str, check: &str| log.iter().filter(|r| opens(r, ci, check)).count();
    assert_eq!(opens_of(CONTROL, "Service down"), 1);
    assert_eq!(opens_of(MAINTAINED, AFTER_WINDOW), 1);

    eprintln!(
        "maintenance behind an open circuit: window ended {end}, backlog read from {} on; {} suppressed, {} opened ({} circuit openings)",
        explained(addr, IN_WINDOW[1].0).await.map_or_else(|| "?".into(), |x| x.at.to_rfc3339()),
        m.decisions.with_label_values(&["suppressed"]).get(),
        log.iter().filter(|r| r.kind == ActionKind::Open).count(),
        m.sink_circuit_opened.with_label_values(&["default"]).get()
    );
    assert!(d.stop().await.clean_shutdown);
}

// ---------------------------------------------------------------------------
// 2. The daemon and replay on the same log

/// `correlation.group_wait` and `resolve_hold_down` of the test's config
/// (`update_interval` is 1s and `reopen_window` 2s there; flapping is the
/// default, 4 changes within 10 min).
const GROUP_WAIT: &str = "4s";
const HOLD_DOWN: &str = "3s";

/// The log, in event-time order, starting an hour before `now`: (event id,
/// host, check, firing, seconds after the start).
fn timeline() -> Vec<(&'static str, &'static str, &'static str, bool, i64)> {
    vec![
        // A fault that lasts 10 minutes.
        ("fault-1", "et-replay-fault", "Disk full", true, 0),
        ("fault-2", "et-replay-fault", "Disk full", false, 600),
        // One that fires, flaps (each firing 1 s into the hold-down of the
        // clear before it; flapping from the 4th change) and clears.
        ("flap-1", "et-replay-flap", "Link down", true, 900),
        ("flap-2", "et-replay-flap", "Link down", false, 910),
        ("flap-3", "et-replay-flap", "Link down", true, 911),
        ("flap-4", "et-replay-flap", "Link down", false, 920),
        ("flap-5", "et-replay-flap", "Link down", true, 921),
        ("flap-6", "et-replay-flap", "Link down", false, 930),
        // Two hypervisors, then the access switch they connect to, within
        // the group wait: one incident rooted at the switch. They clear
        // one by one, 5 min later.
        ("group-1", "hv-par1-01", "Host unreachable", true, 1800),
        ("group-2", "hv-par1-02", "Host unreachable", true, 1801),
        ("group-3", "sw-acc-par1-01", "ICMP ping unreachable", true, 1802),
        ("group-4", "hv-par1-01", "Host unreachable", false, 2100),
        ("group-5", "hv-par1-02", "Host unreachable", false, 2110),
        ("group-6", "sw-acc-par1-01", "ICMP ping unreachable", false, 2120),
        // One that never clears: the last event, 5 min ago.
        ("stuck-1", "et-replay-stuck", "Service down", true, 3300),
    ]
}

/// Per incident key: its title and the incident actions, in order.
type Actions = BTreeMap<String, (String, Vec<String>)>;

fn render(actions: &Actions) -> String {
    actions.iter().map(|(key, (title, kinds))| format!("  {key} [{title}]: {}\n", kinds.join(", "))).collect()
}

/// What the ITSM acknowledged, per incident key (lookups left out).
fn acknowledged(mimic: &Mimic) -> Actions {
    let mut out = Actions::new();
    for x in mimic.log() {
        if let Some(key) = &x.key {
            out.entry(key.clone()).or_insert_with(|| (x.title.clone().unwrap_or_default(), Vec::new()));
        }
    }
    for (key, (_, kinds)) in out.iter_mut() {
        *kinds = mimic.actions(key).iter().map(|m| m.as_str().to_owned()).collect();
    }
    out
}

/// `replay`'s action lines (`<time> <kind> <key> P<n> <scope> root=… members=<n> <title>`),
/// per incident key.
fn replayed(lines: &[&str]) -> Actions {
    let mut out = Actions::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let title = line.split_once(" members=").and_then(|(_, rest)| rest.split_once(' ')).map_or("", |(_, t)| t);
        let entry = out.entry(words[2].to_owned()).or_insert_with(|| (title.to_owned(), Vec::new()));
        entry.1.push(words[1].to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_and_replay_with_its_config_take_the_same_actions_on_the_same_log() {
    let log_dir = LogDir::new();
    let logs = log_dir.path().to_owned();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    cluster.create_topic("triaged-state", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mimic = Mimic::start(Itsm::Generic).await.unwrap();
    let port = free_port();
    let extra = Extra { group_wait: Some(GROUP_WAIT), resolve_hold_down: Some(HOLD_DOWN), ..Extra::default() };
    let config = write_config_with(&logs, &brokers, "triaged-event-time", 3000, &mimic.url(), port, &extra);

    // The whole log at once, on one partition, before the daemon starts.
    let start = Utc::now() - chrono::Duration::minutes(60);
    let messages: Vec<(String, Vec<u8>)> = timeline()
        .into_iter()
        .map(|(id, host, check, firing, at)| message(id, host, check, firing, start + chrono::Duration::seconds(at)))
        .collect();
    let mut ends = BTreeMap::new();
    produce_to(&brokers, 0, &messages, &mut ends).await;
    let daemon = Daemon::start(&config, &logs, 1, port);

    // Settled: every message handled, the alert that never clears is the
    // only fingerprint left (every other incident resolved and closed) and
    // its open acknowledged, no request unanswered.
    let n = messages.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut state;
    let settled = loop {
        let handled = daemon.metric("triaged_core_messages_handled_total").await;
        let fingerprints = daemon.metric("triaged_fingerprints").await;
        let log = mimic.log();
        let unanswered = log.iter().filter(|x| matches!(x.outcome, Outcome::Received | Outcome::Held)).count();
        let stuck_open = log
            .iter()
            .any(|x| x.succeeded() && x.meaning == Meaning::Open && x.title.as_deref().is_some_and(|t| t.starts_with("Service down on ")));
        state = format!(
            "handled {handled:?} of {n}, fingerprints {fingerprints:?}, {unanswered} requests unanswered, stuck alert opened {stuck_open}"
        );
        if handled == Some(n) && fingerprints == Some(1.0) && unanswered == 0 && stuck_open {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tails = log_tails(&logs);
    daemon.sigterm(Duration::from_secs(15));
    let by_daemon = acknowledged(&mimic);

    // The same partition through `replay` with the same config.
    let args = ["replay", "--config", config.to_str().unwrap(), "--topic", "events", "--brokers", &brokers, "--partition", "0"];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_triaged")).args(&args).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "replay failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    // The action lines come first, up to the blank line before the summary.
    let lines: Vec<&str> = stdout.lines().take_while(|l| !l.is_empty()).collect();
    let by_replay = replayed(&lines);

    let report = format!(
        "daemon (what the ITSM acknowledged), per incident:\n{}replay --config, per incident:\n{}replay's action lines:\n{}",
        render(&by_daemon),
        render(&by_replay),
        lines.iter().map(|l| format!("  {l}\n")).collect::<String>()
    );
    eprintln!("daemon and replay on the same log:\n{report}");
    // Not vacuous: replay opened each of the four faults.
    assert_eq!(by_replay.len(), 4, "replay should open the four faults once each\n{report}");
    assert!(by_replay.values().all(|(_, kinds)| kinds.first().map(String::as_str) == Some("open")), "{report}");
    assert!(settled, "the daemon did not settle within 45 s ({state})\n{report}{tails}");
    assert!(
        by_daemon == by_replay,
        "the daemon and `replay --config` disagree on the same log (replay runs group wait, update interval and hold-down \
         on the events' clock; a daemon on its own clock reads the whole hour within one group wait)\n{report}"
    );
    drop(cluster);
}
