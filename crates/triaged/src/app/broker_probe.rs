//! `triaged_kafka_broker_up` and the broker part of `/readyz`: a metadata
//! request every `EVERY`, on a client of its own, answered or not within
//! `WITHIN`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::kafka::log::KafkaLog;
use crate::server::ready::Readiness;

const EVERY: Duration = Duration::from_secs(2);
const WITHIN: Duration = Duration::from_secs(2);

/// Probes until `stop`; a client that cannot be created leaves the broker down.
pub(super) async fn run(cfg: KafkaConfig, readiness: Readiness, stop: CancellationToken) {
    let client: Option<Arc<crate::kafka::log::Consumer>> =
        crate::kafka::consumer_config(&cfg).create_with_context(KafkaLog).ok().map(Arc::new);
    loop {
        let up = match &client {
            None => false,
            Some(c) => {
                let c = c.clone();
                tokio::task::spawn_blocking(move || c.fetch_metadata(None, WITHIN).is_ok_and(|m| !m.brokers().is_empty()))
                    .await
                    .unwrap_or(false)
            }
        };
        readiness.set_broker_up(up);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
