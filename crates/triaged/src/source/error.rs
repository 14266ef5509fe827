//! The error type of the Kafka layer: the source, its offset handle and the
//! dead-letter producer, and which of its errors are worth a retry.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Errors of the Kafka source, the offset handle and the dead-letter producer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    #[error("cannot create the Kafka {what}: {source}")]
    Client { what: &'static str, source: KafkaError },
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("cannot store offsets: {0}")]
    Store(KafkaError),
    #[error("cannot commit offsets: {0}")]
    Commit(KafkaError),
    #[error("offset commit not answered within {0:?}")]
    CommitTimedOut(std::time::Duration),
    #[error("cannot {action} partitions: {source}")]
    Partitions { action: &'static str, source: KafkaError },
    #[error("fatal Kafka consumer error {code:?}: {reason}")]
    Fatal { code: RDKafkaErrorCode, reason: String },
    #[error("dead-letter write to `{topic}` failed: {source}")]
    DeadLetter { topic: String, source: KafkaError },
}

impl SourceError {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Config(_) | SourceError::Client { .. } | SourceError::Subscribe { .. } => false,
            SourceError::Fatal { .. } => false,
            SourceError::DeadLetter { source, .. } => !is_too_large(source),
            SourceError::Store(_) | SourceError::Commit(_) | SourceError::CommitTimedOut(_) | SourceError::Partitions { .. } => true,
        }
    }
}

pub(crate) fn is_too_large(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_size_errors_are_permanent_for_dead_letters() {
        let too_large =
            SourceError::DeadLetter { topic: "dlq".into(), source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) };
        let timed_out =
            SourceError::DeadLetter { topic: "dlq".into(), source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) };
        assert!(!too_large.is_retryable());
        assert!(timed_out.is_retryable());
        assert!(timed_out.to_string().contains("`dlq`"), "{timed_out}");
    }
}
