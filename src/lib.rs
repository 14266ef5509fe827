//! triaged: monitoring events from Kafka -> dedup -> CMDB topology correlation
//! -> incidents in an ITSM tool. See README.md for the architecture.

pub mod config;
pub mod event;
pub mod incident;
pub mod metrics;
pub mod source;
pub mod template;
pub mod topology;
pub mod offsets;
pub mod rules;
