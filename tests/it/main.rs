//! The integration tests, one binary: each module is one area; `support`
//! runs the daemon in this process on the librdkafka mock cluster
//! (`in_process`) or the `triaged` binary as a child process (`process`).

mod support;

mod changelog;
mod cli;
mod core_fuzz;
mod correlation_quality;
mod dashboard;
mod decode_fixtures;
mod demo;
mod durable_state;
mod e2e_tansu;
mod event_time;
mod explain;
mod fuzz_parsers;
mod ingest;
mod ingest_limits;
mod itsm_readback;
mod kafka_mock;
mod kafka_tls;
mod kill_storm;
mod listener;
mod logs;
mod problems;
mod readiness;
mod reload;
mod replay;
mod restart_matrix;
mod rt_e2e;
mod scale_out;
mod scenarios;
mod sink;
mod sink_outage;
mod stall;
mod topology;

pub use support::repo;
