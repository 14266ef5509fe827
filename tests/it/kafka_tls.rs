//! Kafka over TLS, for real: Tansu behind `stunnel4` (the TLS terminator,
//! `scripts/install-test-deps`), its advertised listener on the TLS port, and
//! a CA and server certificate made here. `check` passes with the CA and
//! names the failed verification with another one; the daemon consumes,
//! produces (its changelog) and commits through TLS with verification on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{opened_keys, IncidentReceiver};

use crate::e2e_tansu::tansu_bin;
use crate::support::ca::{make_ca, server_cert};
use crate::support::process::{free_port, log_tails, write_config_with, Daemon, Extra, LogDir};

const GROUP: &str = "triaged-tls";

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tansu on a plain loopback port that advertises the TLS port, and stunnel
/// on that port in front of it; both killed on drop.
struct TlsBroker {
    children: Vec<Child>,
    plain: u16,
    tls: u16,
}

impl TlsBroker {
    fn start(dir: &Path, cert: &Path, key: &Path) -> TlsBroker {
        let (plain, tls) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let tansu = Command::new(tansu_bin())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &format!("tcp://127.0.0.1:{plain}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{tls}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({e}); run scripts/install-test-deps"));
        let mut broker = TlsBroker { children: vec![tansu], plain, tls };
        wait_listening(plain, "tansu");
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = 127.0.0.1:{tls}\nconnect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\n",
                dir.join("stunnel.log").display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let stunnel = Command::new("stunnel4")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start stunnel4 ({e}); run scripts/install-test-deps"));
        broker.children.push(stunnel);
        wait_listening(tls, "stunnel");
        broker
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let status = Command::new(tansu_bin())
            .args(["topic", "create", name, "--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.plain)])
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic create {name} failed");
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.tls)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A test client of the TLS listener, verifying with `ca`.
fn tls_client(brokers: &str, ca: &Path) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set("security.protocol", "ssl").set("ssl.ca.location", ca.to_str().unwrap());
    cc
}

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged")).args(["check", "--config", config.to_str().unwrap()]).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_consumes_produces_and_commits_over_verified_tls() {
    let log_dir = LogDir::new();
    let dir = log_dir.path();
    let (ca, ca_key, ca_path) = make_ca(dir, "right");
    let (_other, _other_key, other_ca) = make_ca(dir, "other");
    let (cert, key) = server_cert(dir, &ca, &ca_key);
    let broker = TlsBroker::start(dir, &cert, &key);
    broker.create_topic("events", 2);
    broker.create_topic("triaged-dead-letter", 1);
    broker.create_topic("triaged-state", 1);
    let receiver = IncidentReceiver::start().await.unwrap();
    let metrics_port = free_port();
    let tls_options = |ca: &Path| vec![("security.protocol", "ssl"), ("ssl.ca.location", leak(ca.display().to_string()))];

    // With another CA, `check` names the failed verification.
    let wrong = Extra { file: Some("wrong-ca.toml".into()), options: tls_options(&other_ca), ..Extra::default() };
    let wrong = write_config_with(dir, &broker.bootstrap(), GROUP, 6000, &receiver.url(), metrics_port, &wrong);
    let (code, out) = check(&wrong);
    println!("$ triaged check --config wrong-ca.toml  (exit {code})\n{out}");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the brokers refused this client") && out.contains("certificate verify failed"), "{out}");

    let right = Extra { options: tls_options(&ca_path), ..Extra::default() };
    let config = write_config_with(dir, &broker.bootstrap(), GROUP, 6000, &receiver.url(), metrics_port, &right);
    let (code, out) = check(&config);
    println!("$ triaged check --config triaged.toml  (exit {code})\n{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changelog: topic `triaged-state` OK"), "the changelog topic was described over TLS: {out}");

    // Events produced over TLS; the daemon reads them, opens incidents,
    // checkpoints to its changelog and commits, all over TLS.
    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 1, chrono::Utc::now()).unwrap();
    let producer: FutureProducer = tls_client(&broker.bootstrap(), &ca_path).create().unwrap();
    let mut ends = std::collections::BTreeMap::new();
    for (k, payload) in &storm.firing {
        let delivered = producer.send(FutureRecord::to("events").key(k).payload(payload), Duration::from_secs(10)).await.unwrap();
        let end = ends.entry(delivered.partition).or_insert(0);
        *end = (*end).max(delivered.offset + 1);
    }
    let mut daemon = Daemon::start(&config, dir, 1, metrics_port);
    let minute = Duration::from_secs(60);
    let log = receiver
        .wait_for(minute, |log| !opened_keys(log).is_empty())
        .await
        .unwrap_or_else(|log| panic!("no incident over TLS: {} actions, daemon {}\n{}", log.len(), daemon.status(), log_tails(dir)));
    assert!(!opened_keys(&log).is_empty());

    let reader: BaseConsumer = tls_client(&broker.bootstrap(), &ca_path).set("group.id", GROUP).create().unwrap();
    let deadline = Instant::now() + minute;
    loop {
        let mut tpl = TopicPartitionList::new();
        for &p in ends.keys() {
            tpl.add_partition("events", p);
        }
        let committed = reader.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        let done = ends.iter().all(|(&p, &end)| committed.find_partition("events", p).unwrap().offset() == Offset::Offset(end));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "offsets not committed over TLS: {committed:?} want {ends:?}\n{}", log_tails(dir));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("incidents opened over TLS: {:?}; committed {ends:?}", opened_keys(&log));
    daemon.sigterm(Duration::from_secs(15));
}
