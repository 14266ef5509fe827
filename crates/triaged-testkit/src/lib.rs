//! The test kit of triaged: what its integration tests and its benchmark
//! drive the daemon with. Nothing here ships in the daemon.
//!
//! - [`itsm`]: the demo's in-process ITSM, able to play an ITSM in trouble
//!   (error answers with `Retry-After`, late answers, lost records);
//! - [`mimic`]: the generic endpoint, ServiceNow or PagerDuty as each keeps
//!   its records, logging every request, able to hold one unanswered;
//! - [`cmdb`]: synthetic estates of any size, and the shipped example CMDB;
//! - [`storm`]: a deterministic alert storm over an estate, rendered for
//!   triaged, Alertmanager and SEC alike;
//! - [`scenario`]: storms with their ground truth and the difficulties of
//!   real ones (late roots, noise, out-of-order delivery, ...);
//! - [`score`]: a replay's incident actions scored against that truth;
//! - [`quality`]: scenarios of three sizes replayed and scored;
//! - [`rss`]: resident memory of a process, as the kernel reports it.

pub mod cmdb;
pub mod itsm;
pub mod mimic;
pub mod quality;
pub mod rss;
pub mod scenario;
pub mod score;
pub mod storm;
