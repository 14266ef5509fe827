//! triaged: monitoring events from Kafka -> dedup -> CMDB topology correlation
//! -> incidents in an ITSM tool. See README.md for the architecture.

pub mod app;
pub mod changelog;
pub mod changes;
pub mod config;
pub mod cores;
pub mod correlate;
pub mod demo;
pub mod duration;
pub mod event;
pub mod explain;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod offsets;
pub mod ownership;
pub mod problems;
pub mod rekey;
pub mod replay;
pub mod rules;
pub mod ruletest;
pub mod server;
pub mod sink;
pub mod source;
pub mod template;
pub mod topology;
