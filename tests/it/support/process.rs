//! A `triaged run` child process and what the kill tests do with it:
//! config, produce with delivery offsets, metrics, log tails for failures.
//! Shared by `e2e_tansu.rs` (Tansu broker) and `kill_storm.rs` (mock cluster).
// Each test binary uses its own subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use triaged::demo::Storm;
use triaged::incident::{ActionKind, IncidentState};
use triaged_testkit::itsm::{latest, opened_keys, Received};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `triaged run` process.
pub struct Daemon {
    child: Child,
    metrics_port: u16,
    log_dir: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log_dir: &Path, n: u32, metrics_port: u16) -> Daemon {
        Daemon::start_with_env(config, log_dir, n, metrics_port, &[])
    }

    /// [`Daemon::start`] with `env` set for the process only (secrets the
    /// config names by environment variable).
    pub fn start_with_env(config: &Path, log_dir: &Path, n: u32, metrics_port: u16, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(log_dir.join(format!("triaged-{n}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_triaged"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("TRIAGED_LOG", "info,triaged::source=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child, metrics_port, log_dir: log_dir.to_owned() }
    }

    /// `running`, or how the process ended.
    pub fn status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".into(),
            Ok(Some(status)) => format!("exited with {status}"),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Peak resident set (VmHWM) so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        triaged_testkit::rss::rss_mib_of(self.child.id()).1
    }

    /// Sends `signal` (SIGSTOP, SIGCONT...) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed: {}", std::io::Error::last_os_error());
    }

    pub fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn sigterm(mut self, within: Duration) {
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

    /// Sum of the samples of metric `name`, or `None` while the daemon does
    /// not answer. `name{label="value",...}` sums only the samples carrying
    /// those labels.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let (name, wanted) = match name.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect()),
            None => (name, Vec::new()),
        };
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#') && l.split([' ', '{']).next() == Some(name))
                .filter(|l| {
                    let labels: Vec<&str> =
                        l.split_once('{').and_then(|(_, r)| r.split_once('}')).map_or("", |(ls, _)| ls).split(',').collect();
                    wanted.iter().all(|w| labels.contains(w))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    pub async fn wait_metric(&self, name: &str, done: impl Fn(f64) -> bool, timeout: Duration) {
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

/// Where the daemons' and broker's logs go: `$TRIAGED_E2E_LOGS` to keep
/// them, else a temporary directory removed with this value.
pub struct LogDir {
    path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl LogDir {
    pub fn new() -> LogDir {
        match std::env::var_os("TRIAGED_E2E_LOGS").map(PathBuf::from) {
            Some(path) => {
                std::fs::create_dir_all(&path).unwrap();
                LogDir { path, _tmp: None }
            }
            None => {
                let tmp = tempfile::tempdir().unwrap();
                LogDir { path: tmp.path().to_owned(), _tmp: Some(tmp) }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The last lines of every log in `dir` (daemons and broker), for failure messages.
pub fn log_tails(dir: &Path) -> String {
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

pub fn strip_ansi(line: &str) -> String {
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

/// The daemon's config for the kill tests: short group wait, hold-down and
/// reopen window, so incidents open, resolve and close within seconds; the
/// state changelog on `triaged-state`, a topic each test creates.
pub fn write_config(dir: &Path, brokers: &str, group: &str, session_timeout_ms: u32, sink: &str, metrics_port: u16) -> PathBuf {
    write_config_with(dir, brokers, group, session_timeout_ms, sink, metrics_port, &Extra::default())
}

/// A `[sink]` other than the generic profile; the endpoint stays
/// [`write_config_with`]'s `sink`.
pub struct Sink {
    /// `generic`, `servicenow`, `pagerduty` or `rt`.
    pub profile: &'static str,
    /// `routing_key = { env = "..." }` (the pagerduty profile).
    pub routing_key_env: Option<&'static str>,
    /// `auth`, as a TOML inline table: `{ kind = "bearer", token = { env = "..." } }`.
    pub auth: Option<String>,
}

/// What some tests change in [`write_config`]'s file.
#[derive(Default)]
pub struct Extra {
    /// File name in the directory (default `triaged.toml`).
    pub file: Option<String>,
    /// More `[kafka.options]`.
    pub options: Vec<(&'static str, &'static str)>,
    /// `correlation.group_wait` (default 2s).
    pub group_wait: Option<&'static str>,
    /// `kafka.commit_interval`, also the checkpoint interval (default 200ms).
    pub commit_interval: Option<&'static str>,
    /// `correlation.resolve_hold_down` (default 2s).
    pub resolve_hold_down: Option<&'static str>,
    /// `correlation.reopen_window` (default 2s).
    pub reopen_window: Option<&'static str>,
    /// The `[sink]` profile and its secrets (default: generic, no auth).
    pub sink: Option<Sink>,
    /// Whole sections appended (`[rekey]` ...).
    pub sections: String,
}

pub fn write_config_with(
    dir: &Path,
    brokers: &str,
    group: &str,
    session_timeout_ms: u32,
    sink: &str,
    metrics_port: u16,
    extra: &Extra,
) -> PathBuf {
    let root = crate::repo();
    let options: String = extra.options.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"\n")).collect();
    let group_wait = extra.group_wait.unwrap_or("2s");
    let commit_interval = extra.commit_interval.unwrap_or("200ms");
    let hold_down = extra.resolve_hold_down.unwrap_or("2s");
    let reopen_window = extra.reopen_window.unwrap_or("2s");
    let (profile, sink_secrets) = match &extra.sink {
        None => ("generic", String::new()),
        Some(s) => (
            s.profile,
            s.routing_key_env.map(|v| format!("routing_key = {{ env = \"{v}\" }}\n")).unwrap_or_default()
                + &s.auth.as_ref().map(|a| format!("auth = {a}\n")).unwrap_or_default(),
        ),
    };
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = [{{ name = "events", format = "auto" }}]
dead_letter_topic = "triaged-dead-letter"
commit_interval = "{commit_interval}"
[kafka.options]
"session.timeout.ms" = "{session_timeout_ms}"
"heartbeat.interval.ms" = "500"
{options}[cmdb]
path = "{cmdb}"
[rules]
dir = "{rules}"
[sink]
profile = "{profile}"
endpoint = "{sink}"
timeout = "5s"
{sink_secrets}[sink.retry]
initial_backoff = "50ms"
max_backoff = "1s"
[http]
listen = "127.0.0.1:{metrics_port}"
[correlation]
group_wait = "{group_wait}"
topology_wait = "{group_wait}"
update_interval = "1s"
resolve_hold_down = "{hold_down}"
reopen_window = "{reopen_window}"
[shutdown]
deadline = "5s"
[state]
changelog_topic = "triaged-state"
{sections}
"#,
        sections = extra.sections,
        cmdb = root.join("config/cmdb.yaml").display(),
        rules = root.join("rules").display(),
    );
    let path = dir.join(extra.file.as_deref().unwrap_or("triaged.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Produces `messages` and records, per partition, the offset after the last
/// one delivered (the end a fully settled consumer group must commit).
pub async fn produce(brokers: &str, messages: &[(String, Vec<u8>)], ends: &mut BTreeMap<i32, i64>) {
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

/// Produces `messages` to partition `partition` of `events` (rather than
/// where their key would go) and records, for that partition, the offset
/// after the last one delivered.
pub async fn produce_to(brokers: &str, partition: i32, messages: &[(String, Vec<u8>)], ends: &mut BTreeMap<i32, i64>) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().unwrap();
    let mut pending = Vec::new();
    for (key, payload) in messages {
        let record = FutureRecord::to("events").partition(partition).key(key).payload(payload);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        let delivered = p.await.unwrap().map_err(|(e, _)| e).unwrap();
        assert_eq!(delivered.partition, partition, "delivered to the partition asked for");
        let end = ends.entry(delivered.partition).or_default();
        *end = (*end).max(delivered.offset + 1);
    }
}

pub fn all_resolved(log: &[Received], keys: &[String]) -> bool {
    keys.iter().all(|k| latest(log).iter().any(|r| &r.incident.key == k && r.kind == ActionKind::Resolve))
}

/// The demo storm came out exactly: two incidents (the storm and the
/// unrelated fault), each resolved with every member, and the group's
/// committed offsets at `ends` (per partition, from the delivery reports).
pub fn assert_settled(log: &[Received], storm: &Storm, brokers: &str, group: &str, partitions: i32, ends: &BTreeMap<i32, i64>) {
    let keys = opened_keys(log);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let last = latest(log);
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

    // Every message's effect is settled, so the committed offsets reach the
    // end of each partition.
    assert_eq!(ends.len(), partitions as usize, "the storm spans every partition: {ends:?}");
    let committed = committed(brokers, group, "events", partitions);
    for (&p, &end) in ends {
        assert_eq!(committed[&p], Offset::Offset(end), "partition {p}: committed {:?}, produced up to {end}", committed[&p]);
    }
}

/// Whether `group`'s committed offsets reached the end of every partition of `topic`.
pub fn committed_to_end(brokers: &str, group: &str, topic: &str, partitions: i32) -> bool {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let committed = committed(brokers, group, topic, partitions);
    (0..partitions).all(|p| {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        high == 0 || committed[&p] == Offset::Offset(high)
    })
}

/// Waits, up to a minute, until both stages of a re-keying deployment have
/// committed to the end: `group` on `events` (`partitions`) and
/// `<group>.correlate` on `rekeyed` (`rekeyed_partitions`).
pub async fn wait_rekeyed_to_end(
    brokers: &str,
    group: &str,
    partitions: i32,
    rekeyed: &str,
    rekeyed_partitions: i32,
    logs: &Path,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let correlate = format!("{group}.correlate");
    while !(committed_to_end(brokers, group, "events", partitions) && committed_to_end(brokers, &correlate, rekeyed, rekeyed_partitions)) {
        assert!(Instant::now() < deadline, "{what}: offsets not committed to the end\n{}", log_tails(logs));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Committed offsets of `group` on `topic` partitions `0..partitions`.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Offset> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions).map(|p| (p, committed.find_partition(topic, p).unwrap().offset())).collect()
}
