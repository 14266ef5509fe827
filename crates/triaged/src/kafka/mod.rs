//! Kafka clients and their configuration, beside the consumer of
//! [`crate::source`]: client configuration, producing with awaited
//! deliveries, and the dead-letter producer.

mod client;
mod dead_letter;
pub mod log;
mod produce;

pub use client::consumer_config;
pub(crate) use client::{build_clients, check_config, check_options, describe_topic, producer_config, refused_by_brokers, Described};
pub use dead_letter::{
    DeadLetter, HEADER_ERROR, HEADER_KIND, HEADER_ORIGIN_OFFSET, HEADER_ORIGIN_PARTITION, HEADER_ORIGIN_TOPIC, HEADER_TRUNCATED_FROM,
};
pub use produce::produce_all;
