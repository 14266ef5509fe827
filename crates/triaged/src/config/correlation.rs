//! `[correlation]` and `[problems]`: the correlation core's windows and timers,
//! and when repeated incidents become a problem candidate.

use serde::Deserialize;

use super::{dur, HumanDuration};

/// Timers of the correlation core.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// How long a new incident collects related events before it is opened.
    #[serde(default = "default_group_wait")]
    pub group_wait: HumanDuration,
    /// Minimum interval between two updates of one open incident.
    #[serde(default = "default_update_interval")]
    pub update_interval: HumanDuration,
    /// All members must stay cleared this long before the incident is resolved.
    #[serde(default = "default_hold_down")]
    pub resolve_hold_down: HumanDuration,
    /// A recurrence within this time after resolve reopens the incident.
    #[serde(default = "default_reopen_window")]
    pub reopen_window: HumanDuration,
    /// Default dedup key template when no rule sets one.
    #[serde(default = "default_dedup_key")]
    pub dedup_key: String,
    /// Default topology correlation window when a rule enables topology
    /// correlation without its own window: how long a cleared upstream CI
    /// still explains its dependents (a firing one does until it clears or
    /// expires).
    #[serde(default = "default_topology_window")]
    pub topology_window: HumanDuration,
    /// How long a new topology incident whose root CI has upstream
    /// dependencies waits before it is opened (at least `group_wait`), so
    /// that a root alert arriving after its first symptoms takes them in
    /// before anything is paged. `0s`: `group_wait` only.
    #[serde(default = "default_topology_wait")]
    pub topology_wait: HumanDuration,
    /// How far up the dependency graph root-cause search goes.
    #[serde(default = "default_max_depth")]
    pub max_upstream_depth: usize,
    /// State changes of one alert within `flap_window` that make it flapping
    /// (0: no flap detection). A flapping alert stops adding work notes and
    /// holds its incident's resolve until it has been stable for `flap_window`.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    #[serde(default = "default_flap_window")]
    pub flap_window: HumanDuration,
    /// How late an event may arrive and still be judged in order. A resolve
    /// that arrives before its firing (another partition, an unkeyed
    /// producer) is held this long and clears the late firing.
    #[serde(default = "default_max_lateness")]
    pub max_lateness: HumanDuration,
    /// A firing alert not refreshed for this long (by its event time) is
    /// resolved, with a work note that says so; `0s`: never. Alertmanager
    /// alerts that carry a future `endsAt` resolve at `endsAt` instead.
    #[serde(default = "default_stale_after")]
    pub stale_after: HumanDuration,
    /// `stale_after` per source (`zabbix`, `nagios`, ...), for sources that
    /// send a problem once and stay silent while it lasts.
    #[serde(default)]
    pub stale_after_by_source: std::collections::BTreeMap<String, HumanDuration>,
    /// Most fingerprints the state holds. At the limit a firing alert that
    /// would start a new fingerprint is refused (decision `refused`, logged,
    /// counted in `triaged_decisions_total`); live ones are never shed.
    #[serde(default = "default_max_fingerprints")]
    pub max_fingerprints: usize,
    /// The lowest severity that takes part in topology correlation (a rule's
    /// `correlate.min_severity` overrides it). An alert below it (a warning,
    /// by default) is never the root of, a member of, nor an upstream for a
    /// fault's incident, so it neither re-roots, raises the priority of nor
    /// holds open an incident a real fault started; it stays an incident of
    /// its own, and the fault's incident gets a work note naming it as
    /// context.
    #[serde(default = "default_topology_min_severity")]
    pub topology_min_severity: crate::event::Severity,
}

fn default_topology_min_severity() -> crate::event::Severity {
    crate::event::Severity::Minor
}

fn default_max_fingerprints() -> usize {
    2_000_000
}

fn default_stale_after() -> HumanDuration {
    dur("24h")
}

fn default_max_lateness() -> HumanDuration {
    dur("2m")
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            group_wait: default_group_wait(),
            update_interval: default_update_interval(),
            resolve_hold_down: default_hold_down(),
            reopen_window: default_reopen_window(),
            dedup_key: default_dedup_key(),
            topology_window: default_topology_window(),
            topology_wait: default_topology_wait(),
            max_upstream_depth: default_max_depth(),
            flap_threshold: default_flap_threshold(),
            flap_window: default_flap_window(),
            max_lateness: default_max_lateness(),
            stale_after: default_stale_after(),
            stale_after_by_source: Default::default(),
            max_fingerprints: default_max_fingerprints(),
            topology_min_severity: default_topology_min_severity(),
        }
    }
}

fn default_flap_threshold() -> u32 {
    4
}

fn default_flap_window() -> HumanDuration {
    dur("10m")
}

fn default_group_wait() -> HumanDuration {
    dur("30s")
}

fn default_update_interval() -> HumanDuration {
    dur("60s")
}

fn default_hold_down() -> HumanDuration {
    dur("2m")
}

fn default_reopen_window() -> HumanDuration {
    dur("30m")
}

fn default_dedup_key() -> String {
    "{source}|{ci}|{check}".into()
}

fn default_topology_window() -> HumanDuration {
    dur("5m")
}

fn default_topology_wait() -> HumanDuration {
    dur("3m")
}

fn default_max_depth() -> usize {
    8
}

/// Problem candidates: `threshold` incidents on one root-cause CI within `period`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemsConfig {
    /// Incidents opened or reopened on the same CI that make a problem candidate; 0 turns it off.
    #[serde(default = "default_problem_threshold")]
    pub threshold: u32,
    #[serde(default = "default_problem_period")]
    pub period: HumanDuration,
}

impl Default for ProblemsConfig {
    fn default() -> Self {
        ProblemsConfig { threshold: default_problem_threshold(), period: default_problem_period() }
    }
}

fn default_problem_threshold() -> u32 {
    3
}

fn default_problem_period() -> HumanDuration {
    dur("24h")
}
