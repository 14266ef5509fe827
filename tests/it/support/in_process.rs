//! Shared by the integration tests that run the daemon in-process on the
//! librdkafka mock cluster, with the in-process incident receiver as the ITSM.

use std::path::Path;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use triaged::app::{Running, Summary};
use triaged::config::Config;
use triaged_testkit::itsm::IncidentReceiver;

/// A daemon running in this process, fed through the mock cluster.
pub struct InProcess {
    /// The configuration it runs with (a second member can join with it).
    pub config: Config,
    pub running: Running,
    /// The ITSM the daemon delivers to; it must live as long as the daemon,
    /// though not every test reads what it received.
    pub receiver: IncidentReceiver,
    /// Produces into the mock cluster.
    pub producer: FutureProducer,
    shutdown: CancellationToken,
    cluster: MockCluster<'static, DefaultProducerContext>,
}

/// Starts the daemon on the demo configuration with `root`'s `config/` and
/// `rules/`, an `events` topic of `partitions` partitions, and `tweak` applied.
pub async fn start(root: &Path, partitions: i32, tweak: impl FnOnce(&mut Config)) -> InProcess {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", partitions, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let receiver = IncidentReceiver::start().await.unwrap();
    let mut cfg = triaged::demo::demo_config(root, &brokers, &receiver.url(), "127.0.0.1:0");
    tweak(&mut cfg);
    let shutdown = CancellationToken::new();
    let running = triaged::app::start(cfg.clone(), shutdown.clone()).await.unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    InProcess { config: cfg, running, receiver, producer, shutdown, cluster }
}

impl InProcess {
    /// The mock cluster, to inject broker faults.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// The daemon's bootstrap servers.
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// SIGTERM's path: drains, commits and returns what the daemon did.
    pub async fn stop(self) -> Summary {
        let InProcess { running, producer, shutdown, cluster, .. } = self;
        shutdown.cancel();
        let summary = running.done.await.unwrap();
        // Clients go before the cluster.
        drop(producer);
        drop(cluster);
        summary
    }

    /// Starts a second daemon with the same configuration (same group, same
    /// ITSM); it stops when the token is cancelled.
    pub async fn second_member(&self) -> (Running, CancellationToken) {
        let shutdown = CancellationToken::new();
        let running = triaged::app::start(self.config.clone(), shutdown.clone()).await.unwrap();
        (running, shutdown)
    }

    /// Waits up to `within` for the daemon to stop on its own (no SIGTERM).
    pub async fn stopped_by_itself(self, within: std::time::Duration) -> Summary {
        let InProcess { running, producer, cluster, .. } = self;
        let summary = tokio::time::timeout(within, running.done).await.expect("the daemon did not stop by itself").unwrap();
        drop(producer);
        drop(cluster);
        summary
    }

    /// `stop`, also returning how long the daemon took to stop (the test's
    /// own clients and the cluster go afterwards, uncounted).
    pub async fn stop_timed(self) -> (Summary, std::time::Duration) {
        let (summary, took, rest) = self.stop_first().await;
        drop(rest);
        (summary, took)
    }

    /// `stop_timed` for the first of two members: the ITSM and the cluster
    /// stay, for the second member, until `Remains` is dropped.
    pub async fn stop_first(self) -> (Summary, std::time::Duration, Remains) {
        let InProcess { running, producer, shutdown, cluster, receiver, .. } = self;
        let started = std::time::Instant::now();
        shutdown.cancel();
        let summary = running.done.await.unwrap();
        let took = started.elapsed();
        (summary, took, Remains { receiver, _producer: producer, _cluster: cluster })
    }
}

/// What a stopped first member leaves to the second one. Fields drop in
/// order: the producer (a client) before the cluster; they are held only to
/// be dropped then.
pub struct Remains {
    pub receiver: IncidentReceiver,
    _producer: FutureProducer,
    _cluster: MockCluster<'static, DefaultProducerContext>,
}
