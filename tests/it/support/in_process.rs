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
    /// The configuration it runs with: a second member joins with it (in
    /// the broker-fault tests, which are their own binary).
    #[allow(dead_code)]
    pub(crate) config: Config,
    pub running: Running,
    /// The ITSM the daemon delivers to; it must live as long as the daemon,
    /// though not every test reads what it received.
    pub receiver: IncidentReceiver,
    /// Produces into the mock cluster.
    pub producer: FutureProducer,
    pub(crate) shutdown: CancellationToken,
    pub(crate) cluster: MockCluster<'static, DefaultProducerContext>,
}

/// Starts the daemon on the demo configuration with `root`'s `config/` and
/// `rules/`, an `events` topic of `partitions` partitions, and `tweak` applied.
pub async fn start(root: &Path, partitions: i32, tweak: impl FnOnce(&mut Config)) -> InProcess {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", partitions, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    cluster.create_topic("triaged-state", 1, 1).unwrap();
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
}
