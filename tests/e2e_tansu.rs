//! End to end on a real Kafka-compatible broker: Tansu (`cargo install tansu
//! --locked --features dynostore,libsql`, done by `scripts/install-test-deps`).
//!
//! A storm is produced, the `triaged` binary runs against it and is SIGKILLed
//! twice (after the incidents opened, and during the recovery); the exact
//! incident set must come out at the sink, each incident once, every member's
//! resolve delivered, and the final offsets committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use triaged::incident::{ActionKind, IncidentState};
use triaged::receiver::{latest, opened_keys, IncidentReceiver, Received};
use triaged::topology::Snapshot;

const GROUP: &str = "triaged-e2e";
const PARTITIONS: i32 = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tansu_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = Path::new(&home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    PathBuf::from("tansu")
}

/// A Tansu broker on a free loopback port, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(log_dir: &Path) -> Broker {
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

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&self, name: &str, partitions: i32) {
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

/// A `triaged run` process.
struct Daemon {
    child: Child,
    metrics_port: u16,
    log_dir: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log_dir: &Path, n: u32, metrics_port: u16) -> Daemon {
        let log = std::fs::File::create(log_dir.join(format!("triaged-{n}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_triaged"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("TRIAGED_LOG", "info,triaged::source=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child, metrics_port, log_dir: log_dir.to_owned() }
    }

    /// `running`, or how the process ended.
    fn status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".into(),
            Ok(Some(status)) => format!("exited with {status}"),
            Err(e) => format!("unknown ({e})"),
        }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    fn sigterm(mut self, within: Duration) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "triaged exited with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "triaged did not stop within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sum of the samples of metric `name`, or `None` while the daemon does not answer.
    async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#') && l.split([' ', '{']).next() == Some(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    async fn wait_metric(&self, name: &str, done: impl Fn(f64) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name).await;
            if v.is_some_and(&done) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} = {v:?} did not reach the expected value within {timeout:?}\n{}",
                log_tails(&self.log_dir)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of every log in `dir` (daemons and broker), for failure messages.
fn log_tails(dir: &Path) -> String {
    const LINES: usize = 60;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
        .unwrap_or_default();
    names.sort();
    let mut out = String::new();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- last {LINES} lines of {}\n", path.display()));
        for line in &lines[lines.len().saturating_sub(LINES)..] {
            out.push_str(&strip_ansi(line));
            out.push('\n');
        }
    }
    out
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn write_config(dir: &Path, brokers: &str, sink: &str, metrics_port: u16) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{GROUP}"
topics = [{{ name = "events", format = "auto" }}]
dead_letter_topic = "triaged-dead-letter"
commit_interval = "200ms"
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[cmdb]
path = "{cmdb}"
[rules]
dir = "{rules}"
[sink]
profile = "generic"
endpoint = "{sink}"
timeout = "5s"
[sink.retry]
initial_backoff = "50ms"
max_backoff = "1s"
[http]
listen = "127.0.0.1:{metrics_port}"
[correlation]
group_wait = "2s"
update_interval = "1s"
resolve_hold_down = "2s"
reopen_window = "2s"
[shutdown]
deadline = "5s"
"#,
        cmdb = root.join("config/cmdb.yaml").display(),
        rules = root.join("rules").display(),
    );
    let path = dir.join("triaged.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Produces `messages` and records, per partition, the offset after the last
/// one delivered (the end a fully settled consumer group must commit).
async fn produce(brokers: &str, messages: &[(String, Vec<u8>)], ends: &mut BTreeMap<i32, i64>) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().unwrap();
    let mut pending = Vec::new();
    for (key, payload) in messages {
        pending.push(producer.send_result(FutureRecord::to("events").key(key).payload(payload)).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        let delivered = p.await.unwrap().map_err(|(e, _)| e).unwrap();
        let end = ends.entry(delivered.partition).or_default();
        *end = (*end).max(delivered.offset + 1);
    }
}

fn all_resolved(log: &[Received], keys: &[String]) -> bool {
    keys.iter().all(|k| latest(log).iter().any(|r| &r.incident.key == k && r.kind == ActionKind::Resolve))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_with_crashes_yields_exact_incidents_once() {
    // Logs go to a temporary directory, or to $TRIAGED_E2E_LOGS to keep them.
    let tmp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("TRIAGED_E2E_LOGS").map(PathBuf::from);
    if let Some(dir) = &kept {
        std::fs::create_dir_all(dir).unwrap();
    }
    let logs = kept.as_deref().unwrap_or(tmp.path());
    let broker = Broker::start(logs);
    broker.create_topic("events", PARTITIONS);
    broker.create_topic("triaged-dead-letter", 1);
    let receiver = IncidentReceiver::start().await.unwrap();
    let metrics_port = free_port();
    let config = write_config(logs, &broker.bootstrap(), &receiver.url(), metrics_port);

    let cmdb = Snapshot::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cmdb.yaml")).unwrap();
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
    let opens_before = log.iter().filter(|r| r.kind == ActionKind::Open).count();
    d1.sigkill();

    // Run 2: replays from the committed offsets, rebuilds the same incidents under
    // the same keys, then the faults recover and it is killed mid-recovery.
    let d2 = Daemon::start(&config, logs, 2, metrics_port);
    d2.wait_metric("triaged_core_messages_handled_total", |v| v >= firing, minute).await;
    receiver
        .wait_for(minute, |log| log.iter().filter(|r| r.kind == ActionKind::Open).count() >= opens_before + keys.len())
        .await
        .unwrap_or_else(|log| panic!("run 2 did not rebuild the incidents: {} actions\n{}", log.len(), log_tails(logs)));
    produce(&broker.bootstrap(), &storm.recovery, &mut ends).await;
    let half_recovered = firing + storm.recovery.len() as f64 / 2.0;
    d2.wait_metric("triaged_core_messages_handled_total", |v| v >= half_recovered, minute).await;
    d2.sigkill();

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

    // Exactly two incidents, whatever the crashes: the storm and the unrelated fault.
    assert_eq!(opened_keys(&log), keys, "no incident key other than the first run's");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let last = latest(&log);
    let storm_inc = last
        .iter()
        .find(|r| r.incident.root_cause.as_ref().is_some_and(|c| c.id == storm.root))
        .expect("an incident rooted at the failed core switch");
    assert_eq!(storm_inc.incident.members.len(), storm.downstream + 1, "every downstream CI's alert is in the storm incident");
    assert_eq!(storm_inc.incident.state, IncidentState::Resolved);
    assert!(storm_inc.incident.members.iter().all(|m| m.status == triaged::event::Status::Resolved));
    let other = last.iter().find(|r| r.incident.key != storm_inc.incident.key).unwrap();
    assert_eq!(other.incident.ci.as_ref().map(|c| c.id.as_str()), Some(storm.unrelated.as_str()));
    assert_eq!(other.incident.state, IncidentState::Resolved);

    // Every message's effect is settled, so the committed offsets reach the end
    // of each partition. The ends come from the delivery reports: Tansu 0.6.0
    // reports a wrong high watermark (ListOffsets latest) after batched produce.
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).set("group.id", GROUP).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("events", p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(ends.len(), PARTITIONS as usize, "the storm spans every partition: {ends:?}");
    for (&p, &end) in &ends {
        let got = committed.find_partition("events", p).unwrap().offset();
        assert_eq!(got, Offset::Offset(end), "partition {p}: committed {got:?}, produced up to {end}");
    }
}
