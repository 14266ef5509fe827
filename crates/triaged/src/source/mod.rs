//! Event sources: decoding message payloads into events, and the Kafka
//! consumer feeding them to the core. Kafka client configuration, producers
//! and dead letters are in [`crate::kafka`].

mod consumer;
mod context;
pub mod decode;
mod error;
mod lag;
mod offsets;
mod runner;
mod tracker;

pub use consumer::{KafkaSource, PartitionChange, RevokeHook, SourceItem};
pub(crate) use error::is_too_large;
pub use error::SourceError;
pub use offsets::OffsetHandle;
