//! The integration tests, one binary: each module is one area, `common`
//! runs the daemon in this process on the librdkafka mock cluster, `daemon`
//! runs the `triaged` binary as a child process.

mod common;
mod daemon;

mod broker_faults;
mod changelog;
mod cli;
mod core_fuzz;
mod dashboard;
mod decode_fixtures;
mod demo;
mod e2e_tansu;
mod explain;
mod fuzz_parsers;
mod ingest;
mod kafka_mock;
mod kill_storm;
mod problems;
mod reload;
mod replay;
mod scale_out;
mod scenarios;
mod sink;
mod sink_outage;
mod stall;
mod topology;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root: `config/`, `rules/`, `docs/` and `tests/fixtures/`.
pub fn repo() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.join("../..").canonicalize().expect("the repository root exists")
    })
}
