//! The changelog topic (`state.changelog_topic`): a compacted topic holding
//! the correlation state, one record per correlation key (see
//! `core/checkpoint.rs`). Without `[rekey]` the one core's state is in
//! partition 0; with `[rekey]` each repartition partition's state is in the
//! changelog partition of the same number.
//!
//! Every action is in a checkpoint before it is sent, and every checkpoint
//! ends with the input offsets it reflects: the records that changed are
//! produced (a closed incident's key gets a tombstone), and once the broker
//! acknowledged them the actions go out and the input offsets move to the
//! last message handled, however old the live incidents are. A core first
//! reads its changelog partition up to the high watermark, so processing
//! resumes with the state last checkpointed, and only the messages after
//! that are read again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;

use crate::kafka::log::{KafkaLog, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::{KafkaConfig, RekeyConfig, StateConfig};
use crate::kafka::{describe_topic, producer_config, Described};

/// Changelog failures.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("changelog client: {0}")]
    Client(#[source] KafkaError),
    #[error("changelog `{topic}` partition {partition}: {source}")]
    Io { topic: String, partition: i32, source: KafkaError },
    #[error("changelog `{topic}` partition {partition}: not read to its high watermark {high} within {within:?} (at {at})")]
    Incomplete { topic: String, partition: i32, high: i64, at: i64, within: Duration },
}

/// A changelog topic that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("state.changelog_topic: topic `{topic}` does not exist; create it, compacted, with {partitions} partition(s): kafka-topics.sh --bootstrap-server {brokers} --create --topic {topic} --partitions {partitions} --config cleanup.policy=compact")]
    Missing { topic: String, partitions: usize, brokers: String },
    #[error("state.changelog_topic: `{changelog}` has {changelog_partitions} partitions and rekey.topic `{repartition}` {repartition_partitions}: they must be equal, partition n of one holding the state of partition n of the other")]
    PartitionCount { changelog: String, changelog_partitions: usize, repartition: String, repartition_partitions: usize },
}

/// The changelog topic is fit for the config: it exists, and with `[rekey]`
/// has as many partitions as the repartition topic. `Ok(false)`: the broker
/// did not describe the topics within `within`, so they were not checked.
/// Blocking.
pub fn check_topic(kafka: &KafkaConfig, state: &StateConfig, rekey: Option<&RekeyConfig>, within: Duration) -> Result<bool, TopicError> {
    let cc = producer_config(kafka);
    let repartition = rekey.map(|r| (r.topic.as_str(), describe_topic(&cc, &r.topic, within)));
    let topic = state.changelog_topic.clone();
    match (describe_topic(&cc, &topic, within), repartition) {
        (Described::Missing, r) => {
            let partitions = match r {
                Some((_, Described::Partitions(n))) => n,
                _ => 1,
            };
            Err(TopicError::Missing { topic, partitions, brokers: kafka.brokers.clone() })
        }
        (Described::Partitions(c), Some((rt, Described::Partitions(r)))) if c != r => Err(TopicError::PartitionCount {
            changelog: topic,
            changelog_partitions: c,
            repartition: rt.to_owned(),
            repartition_partitions: r,
        }),
        (Described::Partitions(_), None | Some((_, Described::Partitions(_)))) => Ok(true),
        _ => Ok(false),
    }
}

/// Writes and reads one changelog topic.
pub struct Changelog {
    topic: String,
    producer: Producer,
    reader: ClientConfig,
}

/// How long the partition must stay quiet past its high watermark before a
/// read back ends.
const QUIET: Duration = Duration::from_millis(300);

/// How long reading a partition back may take.
const RESTORE_WITHIN: Duration = Duration::from_secs(60);

impl Changelog {
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Changelog, ChangelogError> {
        let mut cc = producer_config(kafka);
        cc.set("enable.idempotence", "true");
        let producer: Producer = cc.create_with_context(KafkaLog).map_err(ChangelogError::Client)?;
        let mut reader = producer_config(kafka);
        reader
            .set("group.id", format!("{}.changelog-reader", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        Ok(Changelog { topic: topic.to_owned(), producer, reader })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `records` (a `None` value is a tombstone) to `partition` and
    /// waits until the broker acknowledged every one.
    pub async fn write(&self, partition: i32, records: &[(String, Option<Vec<u8>>)]) -> Result<(), ChangelogError> {
        let io = |source| ChangelogError::Io { topic: self.topic.clone(), partition, source };
        let mut pending = Vec::with_capacity(records.len());
        for (key, value) in records {
            let mut record = FutureRecord::<String, Vec<u8>>::to(&self.topic).partition(partition).key(key);
            if let Some(v) = value {
                record = record.payload(v);
            }
            pending.push(self.producer.send_result(record).map_err(|(e, _)| io(e))?);
        }
        for p in pending {
            match p.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(io(e)),
                Err(_) => return Err(io(KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// The latest value of every key of `partition`, read up to the high
    /// watermark (tombstoned keys left out), sorted by key.
    pub async fn read(&self, partition: i32) -> Result<Vec<(String, Vec<u8>)>, ChangelogError> {
        let (topic, reader) = (self.topic.clone(), self.reader.clone());
        tokio::task::spawn_blocking(move || read_partition(&reader, &topic, partition))
            .await
            .map_err(|_| ChangelogError::Client(KafkaError::Canceled))?
    }
}

fn read_partition(reader: &ClientConfig, topic: &str, partition: i32) -> Result<Vec<(String, Vec<u8>)>, ChangelogError> {
    let io = |source| ChangelogError::Io { topic: topic.to_owned(), partition, source };
    let consumer: BaseConsumer<KafkaLog> = reader.create_with_context(KafkaLog).map_err(ChangelogError::Client)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).map_err(io)?;
    let mut latest: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low)).map_err(io)?;
        consumer.assign(&tpl).map_err(io)?;
        let started = Instant::now();
        let mut at = low;
        // Up to the high watermark, then on until the partition is quiet: a
        // broker may report the watermark short of its last record (Tansu
        // 0.6.0 does after a batched produce), and a record left unread, a
        // tombstone say, would bring back an incident that is gone.
        loop {
            if started.elapsed() > RESTORE_WITHIN {
                return Err(ChangelogError::Incomplete { topic: topic.to_owned(), partition, high, at, within: RESTORE_WITHIN });
            }
            let wait = if at < high { Duration::from_millis(200) } else { QUIET };
            match consumer.poll(wait) {
                None if at >= high => break,
                None => {}
                Some(Err(e)) => return Err(io(e)),
                Some(Ok(m)) => {
                    at = m.offset() + 1;
                    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
                    latest.insert(key.to_owned(), m.payload().map(<[u8]>::to_vec));
                }
            }
        }
    }
    let mut out: Vec<(String, Vec<u8>)> = latest.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
