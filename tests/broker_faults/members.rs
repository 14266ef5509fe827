//! What only the broker-fault tests do with an in-process daemon: reach its
//! mock cluster, add a second member, wait for it to stop by itself, time
//! its stop.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};
use tokio_util::sync::CancellationToken;
use triaged::app::{Running, Summary};
use triaged_testkit::itsm::IncidentReceiver;

use crate::support::in_process::InProcess;

impl InProcess {
    /// The mock cluster, to inject broker faults.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// The daemon's bootstrap servers.
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
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
