//! Event sources: decoding message payloads into events, and the Kafka consumer.

pub mod decode;
pub mod kafka;
