//! Scale-out on Kafka itself: the re-key stage that puts related events on
//! one partition, the ownership of partitions (claims on sink actions, the
//! process-stall watch), and the changelog topic that carries a partition's
//! state to its next owner.

pub mod changelog;
pub mod ownership;
pub mod rekey;
