//! Producing a batch of records and awaiting every delivery.

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Produces `messages` (key, payload) to `topic`, each on the partition
/// `partition_of` gives it (or by key), and waits for every delivery. A full
/// producer queue is waited out: half of what is queued is delivered first.
pub async fn produce_all<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    messages: &[(String, Vec<u8>)],
    partition_of: Option<&[i32]>,
) -> Result<(), KafkaError> {
    async fn delivered(f: rdkafka::producer::DeliveryFuture) -> Result<(), KafkaError> {
        match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(KafkaError::Canceled),
        }
    }
    let mut pending = std::collections::VecDeque::new();
    for (i, (key, payload)) in messages.iter().enumerate() {
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(payload);
            if let Some(p) = partition_of.and_then(|p| p.get(i)) {
                record = record.partition(*p);
            }
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push_back(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    for _ in 0..pending.len() / 2 + 1 {
                        if let Some(f) = pending.pop_front() {
                            delivered(f).await?;
                        }
                    }
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    for f in pending {
        delivered(f).await?;
    }
    Ok(())
}
