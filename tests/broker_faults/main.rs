//! Broker faults on a daemon running in this process, in a test binary of
//! their own. Two of these tests assert that SIGTERM's path ends within the
//! shutdown deadline; in the `it` binary, while other tests spawned `triaged`
//! child processes, the broker-down shutdown took 2.03 s where it takes
//! 1.03 s alone, so they do not share a process with those tests.

mod broker_faults;
mod members;
// The child-process helpers belong to the `it` binary's tests.
#[allow(dead_code)]
#[path = "../it/support/mod.rs"]
mod support;

pub use support::repo;
