//! End to end on a real Kafka-compatible broker: Tansu (`cargo install tansu
//! --locked --features dynostore,libsql`, done by `scripts/install-test-deps`).
//!
//! A storm is produced, the `triaged` binary runs against it and is SIGKILLed
//! twice (after the incidents opened, and during the recovery); the exact
//! incident set must come out at the sink, each incident opened once and
//! resolved once, every member's resolve delivered, and the final offsets
//! committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use triaged::incident::ActionKind;
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{latest, opened_keys, IncidentReceiver};

use crate::support::process::{all_resolved, assert_settled, free_port, log_tails, produce, write_config, Daemon, LogDir};

const GROUP: &str = "triaged-e2e";
const PARTITIONS: i32 = 4;

pub(crate) fn tansu_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = Path::new(&home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    PathBuf::from("tansu")
}

/// A Tansu broker on a free loopback port, killed on drop.
pub(crate) struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    pub(crate) fn start(log_dir: &Path) -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(log_dir.join("tansu.log")).unwrap();
        let child = Command::new(tansu_bin())
            .args(["broker", "--storage-engine", "memory://tansu/", "--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({e}); run scripts/install-test-deps"));
        let broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: i32) {
        let status = Command::new(tansu_bin())
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic create {name} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_with_crashes_yields_exact_incidents_once() {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let broker = Broker::start(logs);
    broker.create_topic("events", PARTITIONS);
    broker.create_topic("triaged-dead-letter", 1);
    broker.create_topic("triaged-state", 1);
    let receiver = IncidentReceiver::start().await.unwrap();
    let metrics_port = free_port();
    let config = write_config(logs, &broker.bootstrap(), GROUP, 6000, &receiver.url(), metrics_port);

    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let mut ends = BTreeMap::new();
    produce(&broker.bootstrap(), &storm.firing, &mut ends).await;
    let firing = storm.firing.len() as f64;
    let minute = Duration::from_secs(90);

    // Run 1: the incidents open; then SIGKILL before anything is committed past them.
    let d1 = Daemon::start(&config, logs, 1, metrics_port);
    let log = receiver
        .wait_for(minute, |log| opened_keys(log).len() >= 2)
        .await
        .unwrap_or_else(|log| panic!("run 1: incidents did not open: {} actions\n{}", log.len(), log_tails(logs)));
    let keys = opened_keys(&log);
    d1.sigkill();

    // Run 2: restores the incidents from the changelog (the storm is not read
    // again), then the faults recover and it is killed mid-recovery.
    let d2 = Daemon::start(&config, logs, 2, metrics_port);
    d2.wait_metric("triaged_core_messages_handled_total", |_| true, minute).await;
    produce(&broker.bootstrap(), &storm.recovery, &mut ends).await;
    let half_recovered = storm.recovery.len() as f64 / 2.0;
    d2.wait_metric("triaged_core_messages_handled_total", |v| v >= half_recovered, minute).await;
    let handled = d2.metric("triaged_core_messages_handled_total").await.unwrap_or_default();
    d2.sigkill();
    assert!(handled < firing, "run 2 read the storm again: {handled} messages handled");

    // Run 3: finishes the recovery; SIGTERM must drain and commit.
    let mut d3 = Daemon::start(&config, logs, 3, metrics_port);
    let log = match receiver.wait_for(minute, |log| all_resolved(log, &keys)).await {
        Ok(log) => log,
        Err(log) => panic!(
            "run 3 ({}, {:?} messages handled): not every incident resolved: {:?}\n{}",
            d3.status(),
            d3.metric("triaged_core_messages_handled_total").await,
            latest(&log).iter().map(|r| (&r.incident.key, r.kind)).collect::<Vec<_>>(),
            log_tails(logs)
        ),
    };
    // Let the incidents close (reopen window 2 s) so every offset is released and stored.
    d3.wait_metric("triaged_fingerprints", |v| v == 0.0, minute).await;
    d3.sigterm(Duration::from_secs(15));

    assert_eq!(opened_keys(&log), keys, "no incident key other than the first run's");
    for key in &keys {
        let of = |kind| log.iter().filter(|r| &r.incident.key == key && r.kind == kind).count();
        assert_eq!((of(ActionKind::Open), of(ActionKind::Resolve)), (1, 1), "{key}: opened and resolved once");
    }
    // The ends come from the delivery reports: Tansu 0.6.0 reports a wrong
    // high watermark (ListOffsets latest) after batched produce.
    assert_settled(&log, &storm, &broker.bootstrap(), GROUP, PARTITIONS, &ends);
}
