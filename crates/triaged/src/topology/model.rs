//! The CMDB file model (serde) and the small value types shared with the snapshot.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How much the business cares about a CI. `Ord`: `Critical` is the smallest,
/// so `a.min(b)` is the more critical of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Critical,
    High,
    #[default]
    Medium,
    Low,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Critical => "critical",
            Criticality::High => "high",
            Criticality::Medium => "medium",
            Criticality::Low => "low",
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relation kinds. All point from the dependent CI to the CI it needs (upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RelKind {
    DependsOn,
    RunsOn,
    ConnectsTo,
}

impl RelKind {
    pub const ALL: [RelKind; 3] = [RelKind::DependsOn, RelKind::RunsOn, RelKind::ConnectsTo];

    /// The field name in the CMDB file (`depends_on`, `runs_on`, `connects_to`).
    pub fn as_str(self) -> &'static str {
        match self {
            RelKind::DependsOn => "depends_on",
            RelKind::RunsOn => "runs_on",
            RelKind::ConnectsTo => "connects_to",
        }
    }
}

impl fmt::Display for RelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CI types the CMDB file accepts (`type:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiType {
    Site,
    Switch,
    Router,
    Firewall,
    LoadBalancer,
    Hypervisor,
    Vm,
    Host,
    Database,
    Application,
    BusinessService,
    Storage,
    Other,
}

impl CiType {
    pub const ALL: [CiType; 13] = [
        CiType::Site,
        CiType::Switch,
        CiType::Router,
        CiType::Firewall,
        CiType::LoadBalancer,
        CiType::Hypervisor,
        CiType::Vm,
        CiType::Host,
        CiType::Database,
        CiType::Application,
        CiType::BusinessService,
        CiType::Storage,
        CiType::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CiType::Site => "site",
            CiType::Switch => "switch",
            CiType::Router => "router",
            CiType::Firewall => "firewall",
            CiType::LoadBalancer => "load_balancer",
            CiType::Hypervisor => "hypervisor",
            CiType::Vm => "vm",
            CiType::Host => "host",
            CiType::Database => "database",
            CiType::Application => "application",
            CiType::BusinessService => "business_service",
            CiType::Storage => "storage",
            CiType::Other => "other",
        }
    }
}

impl fmt::Display for CiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A planned maintenance window on a CI: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Annotate events on the CI with the change instead of suppressing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub annotate: bool,
}

impl MaintenanceWindow {
    /// `start <= now < end`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }
}

/// The whole CMDB file: `cis: [...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdbFile {
    pub cis: Vec<CiSpec>,
    /// Sets of peers of which a number must be up (`redundancy_groups:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redundancy_groups: Vec<GroupSpec>,
}

/// A redundancy group as written in the CMDB file: the service its members
/// give stays up while at least `min_up` of them are up (two core switches,
/// a primary and a standby database). Icinga's `redundancy_group` and
/// Zabbix's service rules ("at least N children") are the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub id: String,
    /// CI ids, at least two.
    pub members: Vec<String>,
    /// Members that must be up for the group to work (default 1, fewer than the members).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub min_up: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// One CI as written in the CMDB file. Relations name target CI ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiSpec {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: CiType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oncall: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// Defaults to `medium` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<Criticality>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connects_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<MaintenanceWindow>,
}

impl CiSpec {
    /// A CI with only the required fields set.
    pub fn new(id: impl Into<String>, name: impl Into<String>, kind: CiType) -> CiSpec {
        CiSpec {
            id: id.into(),
            name: name.into(),
            kind,
            aliases: Vec::new(),
            ips: Vec::new(),
            site: None,
            owner_group: None,
            oncall: None,
            runbook: None,
            criticality: None,
            depends_on: Vec::new(),
            runs_on: Vec::new(),
            connects_to: Vec::new(),
            maintenance: Vec::new(),
        }
    }

    /// The targets of one relation kind.
    pub fn relations(&self, kind: RelKind) -> &[String] {
        match kind {
            RelKind::DependsOn => &self.depends_on,
            RelKind::RunsOn => &self.runs_on,
            RelKind::ConnectsTo => &self.connects_to,
        }
    }
}
