//! The re-key stage: input events, decoded and bound to their CI, produced to
//! a repartition topic keyed by correlation scope, so that related events meet
//! in one partition, and so in one instance of a consumer group.
//!
//! ```text
//! input topics --(group G)--> decode --> route --> repartition topic, key = scope
//! repartition topic --(group G.correlate)--> one core per partition --> sink
//! ```
//!
//! The scope of an event is, in order: the CI it binds to, mapped to its
//! topology component (every CI connected to it by any relation, named by the
//! smallest CI id in it) or to its site (`scope = "site"`, coarser partitions,
//! cheaper; dependencies across sites are then correlated apart); else its
//! `group` rule's key; else its fingerprint. Topology correlation, root-cause
//! choice and absorption only ever look along relations, so with
//! `scope = "component"` the incidents are the same whether one instance reads
//! every partition or many instances share them.
//!
//! An input offset is stored once every event of its message is acknowledged
//! by the repartition topic's leader, in input order, so a crash replays what
//! was not. A replay produces some events twice; the core deduplicates repeats
//! of a fingerprint, and incident keys do not depend on how often an event was
//! seen.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use crate::kafka::log::{KafkaLog, Producer};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{KafkaConfig, RekeyConfig, RekeyScope};
use crate::core::{keys, CoreConfig};
use crate::event::{Event, Origin};
use crate::kafka::producer_config;
use crate::metrics::Metrics;
use crate::rules::template::Template;
use crate::rules::RuleSet;
use crate::source::{OffsetHandle, SourceError, SourceItem};
use crate::topology::{CiIdx, Snapshot};

/// Header naming the input message a re-keyed event came from.
pub const HEADER_ORIGIN: &str = "triaged-origin";

/// Most input messages whose events are produced and not yet acknowledged.
const MAX_IN_FLIGHT: usize = 8192;

/// Computes the repartition key of events, with what routing needs only:
/// the rules, the CMDB and the default dedup key (see [`keys::route`]).
pub struct Router {
    rules: Arc<RuleSet>,
    cmdb: Arc<Snapshot>,
    dedup_key: Template,
    scope: RekeyScope,
    /// Component label of each CI (index into the snapshot's CIs).
    component: Vec<CiIdx>,
}

impl Router {
    /// Of `cfg`, only the default dedup key is used.
    pub fn new(cfg: CoreConfig, rules: Arc<RuleSet>, cmdb: Arc<Snapshot>, scope: RekeyScope) -> Router {
        let component = components(&cmdb);
        Router { rules, cmdb, dedup_key: cfg.dedup_key, scope, component }
    }

    /// The repartition key of `ev`.
    pub fn key(&self, ev: &Event) -> String {
        let route = keys::route(&self.rules, &self.cmdb, &self.dedup_key, ev);
        let cmdb = &self.cmdb;
        match (route.ci, self.scope) {
            (Some(ci), RekeyScope::Site) if cmdb.ci(ci).site.is_some() => {
                format!("site:{}", cmdb.ci(ci).site.as_deref().unwrap_or_default())
            }
            (Some(ci), _) => format!("component:{}", cmdb.ci(self.component[ci as usize]).id),
            (None, _) => match route.group {
                Some(g) => format!("group:{g}"),
                None => format!("fingerprint:{}", route.fingerprint),
            },
        }
    }
}

/// Labels every CI with the CI of smallest id among those connected to it by
/// any relation (union-find over the upstream lists).
fn components(cmdb: &Snapshot) -> Vec<CiIdx> {
    let n = cmdb.len();
    let mut parent: Vec<CiIdx> = (0..n as CiIdx).collect();
    fn find(parent: &mut [CiIdx], mut x: CiIdx) -> CiIdx {
        while parent[x as usize] != x {
            let up = parent[parent[x as usize] as usize];
            parent[x as usize] = up;
            x = up;
        }
        x
    }
    for i in 0..n as CiIdx {
        for &(up, _) in cmdb.upstream(i) {
            let (a, b) = (find(&mut parent, i), find(&mut parent, up));
            if a == b {
                continue;
            }
            // The root is the CI with the smaller id, so labels do not
            // depend on the order of the file.
            if cmdb.ci(a).id < cmdb.ci(b).id {
                parent[b as usize] = a;
            } else {
                parent[a as usize] = b;
            }
        }
    }
    (0..n as CiIdx).map(|i| find(&mut parent, i)).collect()
}

/// The repartition topic does not exist.
#[derive(Debug, thiserror::Error)]
#[error("rekey.topic: topic `{0}` does not exist; create it (the daemon does not)")]
pub struct TopicError(pub String);

/// Checks at start that the repartition topic exists. A topic the broker
/// does not describe within 10 s is not checked.
pub async fn check_topic(kafka: &KafkaConfig, rekey: &RekeyConfig) -> Result<(), TopicError> {
    let (cc, topic) = (producer_config(kafka), rekey.topic.clone());
    let described = tokio::task::spawn_blocking(move || crate::kafka::describe_topic(&cc, &topic, Duration::from_secs(10))).await;
    match described {
        Ok(crate::kafka::Described::Missing) => Err(TopicError(rekey.topic.clone())),
        _ => Ok(()),
    }
}

/// The configuration of the correlating consumer: the repartition topic,
/// native format, its own group, everything else as the input consumer.
pub fn correlating_consumer(kafka: &KafkaConfig, rekey: &RekeyConfig) -> KafkaConfig {
    KafkaConfig {
        topics: vec![crate::config::TopicConfig { name: rekey.topic.clone(), format: crate::config::Format::Native }],
        group_id: rekey.group_id(&kafka.group_id),
        ..kafka.clone()
    }
}

/// Produces re-keyed events and stores input offsets once they are delivered.
pub struct Rekeyer {
    producer: Producer,
    topic: String,
    metrics: Metrics,
}

struct InFlight {
    origin: Origin,
    records: Vec<(String, Vec<u8>)>,
    deliveries: Vec<DeliveryFuture>,
}

impl Rekeyer {
    pub fn new(kafka: &KafkaConfig, rekey: &RekeyConfig, metrics: Metrics) -> Result<Rekeyer, SourceError> {
        let mut cc = producer_config(kafka);
        // Retries keep the order of one key's events, and a retried batch is
        // not written twice.
        cc.set("enable.idempotence", "true");
        let producer: Producer =
            cc.create_with_context(KafkaLog).map_err(|source| SourceError::Client { what: "repartition producer", source })?;
        Ok(Rekeyer { producer, topic: rekey.topic.clone(), metrics })
    }

    /// Re-keys `items` until their channel closes (the input source stopped),
    /// then waits for the deliveries in flight, up to `stop`.
    pub async fn run(
        self,
        mut items: mpsc::Receiver<SourceItem>,
        mut router: watch::Receiver<Arc<Router>>,
        offsets: OffsetHandle,
        stop: CancellationToken,
    ) {
        let (tx, rx) = mpsc::channel::<InFlight>(MAX_IN_FLIGHT);
        let me = Arc::new(self);
        let confirm = tokio::spawn(Arc::clone(&me).confirm(rx, offsets, stop.clone()));
        while let Some(item) = items.recv().await {
            let r = router.borrow_and_update().clone();
            let (origin, records) = match item {
                SourceItem::Skipped { origin, .. } => (origin, Vec::new()),
                SourceItem::Events { origin, events, .. } => {
                    let records = events.into_iter().map(|ev| me.record(&r, ev)).collect();
                    (origin, records)
                }
                SourceItem::Partitions(_) => continue,
            };
            let mut deliveries = Vec::with_capacity(records.len());
            for (key, payload) in &records {
                match me.send(key, payload, &origin, &stop).await {
                    Some(d) => deliveries.push(d),
                    None => return,
                }
            }
            if tx.send(InFlight { origin, records, deliveries }).await.is_err() {
                return;
            }
        }
        drop(tx);
        let _ = confirm.await;
    }

    fn record(&self, router: &Router, mut ev: Event) -> (String, Vec<u8>) {
        ev.origin = None;
        let key = router.key(&ev);
        let payload = serde_json::to_vec(&ev).unwrap_or_default();
        (key, payload)
    }

    /// Enqueues one record, waiting while the producer queue is full.
    /// `None` once `stop` is cancelled.
    async fn send(&self, key: &str, payload: &[u8], origin: &Origin, stop: &CancellationToken) -> Option<DeliveryFuture> {
        let origin = origin.to_string();
        let mut attempt = 0u32;
        loop {
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER_ORIGIN, value: Some(origin.as_str()) });
            let record = FutureRecord::to(&self.topic).key(key).payload(payload).headers(headers);
            let wait = match self.producer.send_result(record) {
                Ok(f) => return Some(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Duration::from_millis(10),
                Err((e, _)) => {
                    warn!(error = %e, topic = %self.topic, "cannot produce to the repartition topic; retrying");
                    attempt = attempt.saturating_add(1);
                    Duration::from_millis(100 * u64::from(attempt.min(50)))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Waits for the deliveries of one message, producing failed ones again.
    /// `false` once `stop` is cancelled (a broker that is down would keep
    /// a delivery pending for librdkafka's whole message timeout).
    async fn delivered(
        &self,
        deliveries: Vec<DeliveryFuture>,
        records: &[(String, Vec<u8>)],
        origin: &Origin,
        stop: &CancellationToken,
    ) -> bool {
        for (i, mut pending) in deliveries.into_iter().enumerate() {
            loop {
                let failed = tokio::select! {
                    r = &mut pending => match r {
                        Ok(Ok(_)) => None,
                        Ok(Err((e, _))) => Some(e),
                        Err(_) => Some(KafkaError::Canceled),
                    },
                    _ = stop.cancelled() => return false,
                };
                let Some(e) = failed else { break };
                warn!(error = %e, %origin, "repartition delivery failed; producing it again");
                let (key, payload) = &records[i];
                match self.send(key, payload, origin, stop).await {
                    Some(d) => pending = d,
                    None => return false,
                }
            }
            self.metrics.rekeyed.inc();
        }
        true
    }

    /// Awaits deliveries in input order, producing failed ones again, and
    /// stores each input offset once its message is fully delivered.
    async fn confirm(self: Arc<Self>, mut rx: mpsc::Receiver<InFlight>, offsets: OffsetHandle, stop: CancellationToken) {
        let mut ready: VecDeque<(String, i32, i64)> = VecDeque::new();
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = stop.cancelled() => None,
            };
            let Some(InFlight { origin, records, deliveries }) = next else { break };
            if !self.delivered(deliveries, &records, &origin, &stop).await {
                // Stopped (at the shutdown deadline): this message and the
                // ones after it are re-keyed again by the next start.
                break;
            }
            ready.push_back((origin.topic, origin.partition, origin.offset + 1));
            // Store in batches: whatever has been confirmed while nothing else waits.
            if rx.is_empty() || ready.len() >= 256 {
                let batch: Vec<_> = ready.drain(..).collect();
                if let Err(e) = offsets.store(&batch) {
                    warn!(error = %e, "storing input offsets failed; they are retried with the next ones");
                    ready.extend(batch);
                }
            }
        }
        if !ready.is_empty() {
            let batch: Vec<_> = ready.drain(..).collect();
            if let Err(e) = offsets.store(&batch) {
                warn!(error = %e, "storing the last input offsets failed; the next start replays them");
            }
        }
        info!("re-key stage stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorrelationConfig;
    use crate::event::Status;
    use std::path::Path;

    const CMDB: &str = r#"
cis:
  - { id: sw-b, name: sw-b, type: switch, site: par1 }
  - { id: sw-a, name: sw-a, type: switch, site: par1 }
  - { id: web-1, name: web-1, type: vm, site: par1, connects_to: [sw-b] }
  - { id: web-2, name: web-2, type: vm, site: par1, connects_to: [sw-a] }
  - { id: db-9, name: db-9, type: vm, site: fra1 }
"#;

    fn router(scope: RekeyScope) -> Router {
        let cmdb = Snapshot::from_str(Path::new("cmdb.yaml"), CMDB, false).expect("cmdb");
        Router::new(CoreConfig::from_config(&CorrelationConfig::default()), Arc::new(RuleSet::default()), Arc::new(cmdb), scope)
    }

    fn ev(host: &str, status: Status) -> Event {
        Event::host_down(host, status, chrono::Utc::now())
    }

    #[test]
    fn connected_cis_share_a_key_named_by_the_smallest_id() {
        let r = router(RekeyScope::Component);
        assert_eq!(r.key(&ev("web-1", Status::Firing)), "component:sw-b");
        assert_eq!(r.key(&ev("sw-b", Status::Firing)), "component:sw-b");
        assert_eq!(r.key(&ev("web-2", Status::Firing)), "component:sw-a");
        assert_eq!(r.key(&ev("db-9", Status::Resolved)), "component:db-9");
        // Unbound: the fingerprint, the same for the alert and its resolve.
        assert_eq!(r.key(&ev("nowhere", Status::Firing)), r.key(&ev("nowhere", Status::Resolved)));
        assert!(r.key(&ev("nowhere", Status::Firing)).starts_with("fingerprint:"));
    }

    #[test]
    fn site_scope_groups_by_the_ci_site() {
        let r = router(RekeyScope::Site);
        assert_eq!(r.key(&ev("web-1", Status::Firing)), "site:par1");
        assert_eq!(r.key(&ev("web-2", Status::Firing)), "site:par1");
        assert_eq!(r.key(&ev("db-9", Status::Firing)), "site:fra1");
    }
}
