//! The operator's tools that run the real decoder and correlation core
//! without the daemon: rule tests on a virtual clock (`triaged test`), and
//! replays of recorded streams (`triaged replay`, as text or JSON), with
//! their line diff.

pub mod diff;
pub mod replay;
pub mod replay_json;
pub mod ruletest;
