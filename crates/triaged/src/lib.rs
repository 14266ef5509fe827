//! triaged: monitoring events from Kafka -> dedup -> CMDB topology correlation
//! -> incidents in an ITSM tool. See README.md for the architecture.

pub mod app;
pub mod changelog;
pub mod changes;
pub mod config;
pub mod core;
pub mod demo;
pub mod duration;
pub mod event;
pub mod explain;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod ownership;
pub mod rekey;
pub mod replay;
pub mod rules;
pub mod ruletest;
pub mod server;
pub mod source;
pub mod template;
pub mod topology;
