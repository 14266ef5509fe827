//! triaged: monitoring events from Kafka -> dedup -> CMDB topology correlation
//! -> incidents in an ITSM tool. See README.md for the architecture.

pub mod app;
pub mod config;
pub mod core;
pub mod demo;
mod duration;
pub mod event;
pub mod incident;
pub mod kafka;
pub mod logs;
pub mod metrics;
pub mod route;
pub mod rules;
pub mod scale;
pub mod server;
pub mod sink;
pub mod source;
pub mod tools;
pub mod topology;
