//! Storm scenarios with their ground truth, to measure correlation quality.
//!
//! A scenario is deterministic from its parameters (seed, size, which
//! difficulties are on). It holds a synthetic estate ([`crate::cmdb`]), the
//! faults placed on it, a timeline of monitoring messages in the tools' own
//! formats (Zabbix, Nagios, Alertmanager, as the demo renders them) in the
//! order a consumer reads them, each with its event time and partition, and
//! the truth: which CIs alert for which fault, which fault recovers, which
//! alerts are unrelated warnings. [`crate::score`] compares a replay's
//! actions with the truth.
//!
//! **Every alerting CI has one alert stream**, so a stream is named by its
//! CI id: a CI alerts for at most one fault, and a warning is never on a CI
//! that alerts for a fault or sits below one.
//!
//! **The truth is unambiguous given the CMDB**: no alerting CI of one fault
//! is upstream (within [`DEPTH`] hops) of an alerting CI of another, so the
//! topology alone always tells the faults apart. Only warnings and redundant
//! pairs (declared as CMDB redundancy groups) are traps.
//!
//! The difficulties, each on by default ([`Difficulties`]):
//! - out-of-order delivery: a producer delay and a lag per partition, each up
//!   to a minute, so a message is read up to [`MAX_DELIVERY_DELAY`] after its
//!   event time and before messages of earlier events;
//! - missing symptoms: some CIs below a fault do not alert;
//! - late roots: the failing CI itself alerts up to 2 minutes after its first
//!   symptoms;
//! - overlapping faults: a second, independent fault at the same site starts
//!   within a minute of the first (without it, faults at one site never
//!   overlap in time);
//! - warning noise: warnings on random CIs and on CIs upstream of faults,
//!   some of which never clear;
//! - unkeyed partitions: each message goes to a random partition, so one
//!   fault, even one alert's firing and resolve, is spread over partitions
//!   (without it, messages are keyed by CI);
//! - redundant pairs: a fault on one member of a redundancy group (a core
//!   switch, a database of a primary/standby pair) alerts alone while its
//!   peers stay up (no other fault makes them alert); the truth
//!   marks it as one that should be a low-priority incident without business
//!   impact;
//! - slow symptoms: some symptoms of a long fault start minutes after it,
//!   when a root that alerts once has been silent for longer than the
//!   topology window.

mod faults;
mod render;
mod timeline;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use triaged::topology::Snapshot;

use crate::cmdb::{synthetic, GenParams};

/// Upstream hops within which faults must not touch (the shipped
/// `correlation.max_upstream_depth`).
pub const DEPTH: usize = 8;

/// The latest a message is read after its event time with out-of-order delivery on.
pub const MAX_DELIVERY_DELAY: Duration = Duration::minutes(2);

/// Which difficulties a scenario has. [`Default`]: all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difficulties {
    pub out_of_order: bool,
    pub missing_symptoms: bool,
    pub late_roots: bool,
    pub overlapping_faults: bool,
    pub warning_noise: bool,
    pub unkeyed_partitions: bool,
    pub redundant_pairs: bool,
    pub slow_symptoms: bool,
}

impl Default for Difficulties {
    fn default() -> Difficulties {
        Difficulties {
            out_of_order: true,
            missing_symptoms: true,
            late_roots: true,
            overlapping_faults: true,
            warning_noise: true,
            unkeyed_partitions: true,
            redundant_pairs: true,
            slow_symptoms: true,
        }
    }
}

impl Difficulties {
    /// Their names, as [`Difficulties::set`] takes them.
    pub const NAMES: [&'static str; 8] = [
        "out_of_order",
        "missing_symptoms",
        "late_roots",
        "overlapping_faults",
        "warning_noise",
        "unkeyed_partitions",
        "redundant_pairs",
        "slow_symptoms",
    ];

    /// Turns the difficulty called `name` on or off.
    pub fn set(&mut self, name: &str, on: bool) -> Result<(), String> {
        let flag = match name {
            "out_of_order" => &mut self.out_of_order,
            "missing_symptoms" => &mut self.missing_symptoms,
            "late_roots" => &mut self.late_roots,
            "overlapping_faults" => &mut self.overlapping_faults,
            "warning_noise" => &mut self.warning_noise,
            "unkeyed_partitions" => &mut self.unkeyed_partitions,
            "redundant_pairs" => &mut self.redundant_pairs,
            "slow_symptoms" => &mut self.slow_symptoms,
            _ => return Err(format!("unknown difficulty `{name}` (one of {})", Difficulties::NAMES.join(", "))),
        };
        *flag = on;
        Ok(())
    }

    /// The names of those that are on.
    pub fn on(&self) -> Vec<&'static str> {
        let flags = [
            self.out_of_order,
            self.missing_symptoms,
            self.late_roots,
            self.overlapping_faults,
            self.warning_noise,
            self.unkeyed_partitions,
            self.redundant_pairs,
            self.slow_symptoms,
        ];
        Difficulties::NAMES.into_iter().zip(flags).filter(|(_, on)| *on).map(|(n, _)| n).collect()
    }

    /// None of them: clean storms, in order.
    pub fn none() -> Difficulties {
        Difficulties {
            out_of_order: false,
            missing_symptoms: false,
            late_roots: false,
            overlapping_faults: false,
            warning_noise: false,
            unkeyed_partitions: false,
            redundant_pairs: false,
            slow_symptoms: false,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioParams {
    pub seed: u64,
    /// Faults wanted (fewer when the estate has no room for more; see [`Scenario::truth`]).
    pub faults: usize,
    /// CIs of the synthetic estate (about).
    pub cis: usize,
    /// Fault onsets spread over this much event time from `start`.
    pub span: Duration,
    pub partitions: u32,
    pub start: DateTime<Utc>,
    pub difficulties: Difficulties,
}

impl ScenarioParams {
    /// `faults` faults over about `cis` CIs, a minute of onsets per fault
    /// (10 to 60 minutes), four partitions, every difficulty.
    pub fn new(seed: u64, faults: usize, cis: usize) -> ScenarioParams {
        ScenarioParams {
            seed,
            faults,
            cis,
            span: Duration::minutes((faults as i64).clamp(10, 60)),
            partitions: 4,
            start: Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).single().expect("a valid time"),
            difficulties: Difficulties::default(),
        }
    }
}

/// One fault as it really happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The failing CI: the root cause an incident should name.
    pub root: String,
    pub site: Option<String>,
    /// The CIs below it that alert, nearest first.
    pub symptoms: Vec<String>,
    /// The CIs below it that would alert but stay silent.
    pub missing: Vec<String>,
    pub onset: DateTime<Utc>,
    /// When it recovers; `None`: still failing at the end.
    pub recovery: Option<DateTime<Utc>>,
    /// Its CI alerts after its first symptoms.
    pub late_root: bool,
    /// Symptoms that start minutes after the onset.
    pub slow: Vec<String>,
    /// A fault on one member of a redundant pair: nothing fails below it, and
    /// its incident should be of low priority, without business impact.
    pub redundant: bool,
    /// The earlier fault at the same site it overlaps on purpose.
    pub overlaps: Option<usize>,
    /// How long after its first symptom the consumer reads its root's first
    /// alert (out-of-order delivery on top of a late root); `None` when the
    /// root is read first.
    pub root_read_lag: Option<Duration>,
}

impl Fault {
    pub fn recovers(&self) -> bool {
        self.recovery.is_some()
    }

    /// The alerting CIs: the root, then the symptoms.
    pub fn cis(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.root.as_str()).chain(self.symptoms.iter().map(String::as_str))
    }
}

/// A warning unrelated to any fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    pub ci: String,
    /// The fault it sits upstream of, when chosen there.
    pub upstream_of: Option<usize>,
    pub onset: DateTime<Utc>,
    /// When it clears; `None`: never.
    pub clears: Option<DateTime<Utc>>,
}

/// The ground truth of a scenario.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Truth {
    pub faults: Vec<Fault>,
    pub noise: Vec<Noise>,
}

/// What a CI's stream is, in the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Fault(usize),
    Noise(usize),
}

impl Truth {
    /// The label of the stream on CI `ci`, if it has one.
    pub fn label(&self, ci: &str) -> Option<Label> {
        self.labels().find(|(c, _)| *c == ci).map(|(_, l)| l)
    }

    /// Every stream: its CI and label.
    pub fn labels(&self) -> impl Iterator<Item = (&str, Label)> {
        let faults = self.faults.iter().enumerate().flat_map(|(i, f)| f.cis().map(move |c| (c, Label::Fault(i))));
        faults.chain(self.noise.iter().enumerate().map(|(j, n)| (n.ci.as_str(), Label::Noise(j))))
    }
}

/// One message of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// When the monitoring tool sent it (an Alertmanager repeat carries its
    /// alert's `startsAt` in the payload, as Alertmanager does).
    pub at: DateTime<Utc>,
    /// When the consumer reads it.
    pub delivered: DateTime<Utc>,
    pub partition: u32,
    /// The CI id of its stream.
    pub ci: String,
    pub firing: bool,
    /// The Kafka message payload, in its tool's format.
    pub payload: Vec<u8>,
}

/// A generated scenario.
pub struct Scenario {
    pub params: ScenarioParams,
    pub cmdb: Arc<Snapshot>,
    /// In delivery order.
    pub messages: Vec<Message>,
    pub truth: Truth,
}

impl Scenario {
    /// Builds the estate, places the faults and the noise, and renders the timeline.
    pub fn generate(p: &ScenarioParams) -> Result<Scenario, String> {
        let model = synthetic(&GenParams { maintenance: false, ..GenParams::scaled(p.cis) });
        let cmdb = Snapshot::from_file_model(model).map_err(|e| format!("synthetic CMDB of {} CIs: {}", p.cis, triaged::app::join(&e)))?;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let truth = faults::place(&cmdb, p, &mut rng);
        let messages = timeline::render(&cmdb, &truth, p, &mut rng);
        let mut truth = truth;
        timeline::note_read_lags(&mut truth, &messages);
        Ok(Scenario { params: p.clone(), cmdb: Arc::new(cmdb), messages, truth })
    }

    /// The timeline as `triaged replay` reads it: origin `scenario/<partition>@<n>`.
    pub fn recorded(&self) -> Vec<(String, Vec<u8>)> {
        self.messages.iter().enumerate().map(|(n, m)| (format!("scenario/{}@{n}", m.partition), m.payload.clone())).collect()
    }
}

#[cfg(test)]
mod tests;
