//! Prometheus metrics. Names follow `triaged_<name>_<unit>[_total]`, base
//! units, small fixed label sets. One `Metrics` is created at start and shared.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// All metrics of the daemon, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `process_*` (CPU, memory, file descriptors), without the `triaged_` prefix.
    process: Registry,
    /// The `source` label values besides `other` ([`Metrics::source_label`]).
    sources: std::sync::Arc<rustc_hash::FxHashSet<String>>,
    /// Kafka messages received, by topic.
    pub messages_received: IntCounterVec,
    /// Events decoded, by source system.
    pub events_decoded: IntCounterVec,
    /// Messages that failed to decode, by topic.
    pub events_failed: IntCounterVec,
    /// Events folded into an existing fingerprint, by source.
    pub events_deduplicated: IntCounterVec,
    /// Events suppressed (maintenance, change, rule), by source and reason.
    pub events_suppressed: IntCounterVec,
    /// Events dropped by a rule, by source.
    pub events_dropped: IntCounterVec,
    /// Messages written to the dead-letter topic, by kind (decode, sink).
    pub dead_letters: IntCounterVec,
    /// Actions a sink rejected permanently and dead-lettered, by sink.
    pub sink_dead_letters: IntCounterVec,
    /// Incident lifecycle transitions sent to a sink, by sink and action.
    pub incident_actions: IntCounterVec,
    /// Actions no route matched: acknowledged without being sent.
    pub actions_unrouted: IntCounter,
    /// Open incidents by priority.
    pub open_incidents: IntGaugeVec,
    /// Open incidents by impacted business service.
    pub open_incidents_by_service: IntGaugeVec,
    /// Sink request duration, by sink, profile and operation.
    pub sink_request_duration: HistogramVec,
    /// Sink request failures, by sink and class (retryable, permanent, cancelled).
    pub sink_errors: IntCounterVec,
    /// Consumer lag in messages, by topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Live fingerprints held by the dedup state.
    pub fingerprints: IntGauge,
    /// CIs in the loaded CMDB snapshot.
    pub cmdb_cis: IntGauge,
    /// Unix time of the last successful CMDB load.
    pub cmdb_last_load: Gauge,
    /// Rule / CMDB reloads, by kind and result.
    pub reloads: IntCounterVec,
    /// Time spent evaluating rules and correlating one event.
    pub rule_evaluation: HistogramVec,
    /// Decisions taken by the core, by decision.
    pub decisions: IntCounterVec,
    /// Partitions paused for backpressure.
    pub paused_partitions: IntGauge,
    /// Build info (version label), always 1.
    pub build_info: GaugeVec,
    /// Kafka messages the correlation core has handled.
    pub messages_handled: IntCounter,
    /// `POST /api/v2/alerts` requests, by HTTP status code.
    pub ingest_requests: IntCounterVec,
    /// Alerts accepted by the ingest and produced into Kafka.
    pub ingest_alerts: IntCounter,
    /// The HTTP listener's connections and the broker state behind `/readyz`.
    pub listener: crate::server::metrics::ServerMetrics,
    /// Problem candidates raised (one CI causing repeated incidents).
    pub problem_candidates: IntCounter,
    /// Time from a Kafka message's timestamp to the core's decision on it.
    pub event_lag: Histogram,
    /// Sink circuit breaker state by sink: 0 closed, 1 open, 2 half open.
    pub sink_circuit_state: IntGaugeVec,
    /// Times a sink's circuit breaker opened, by sink.
    pub sink_circuit_opened: IntCounterVec,
    /// Events produced to the repartition topic and acknowledged.
    pub rekeyed: IntCounter,
    /// Partitions with a correlation core of their own here.
    pub correlation_partitions: IntGauge,
    /// Sink actions dropped because their partition moved to another owner, by sink.
    pub actions_disowned: IntCounterVec,
    /// Restored open incidents checked at the ITSM, by what it holds.
    pub reconciled: IntCounterVec,
    /// Records read back from an ITSM (polled), by sink and result.
    pub itsm_reads: IntCounterVec,
    /// What read-backs and webhooks changed, by sink and outcome.
    pub itsm_readback: IntCounterVec,
    /// Time from an incident's open to its first acknowledgement at an ITSM.
    pub time_to_acknowledge: HistogramVec,
    /// Webhook requests from ITSMs, by sink and result.
    pub webhooks: IntCounterVec,
    /// Actions not sent to a record a person closed and left closed.
    pub sink_left_closed: IntCounter,
    /// Checkpoints of the correlation state, by outcome (written, failed).
    pub state_checkpoints: IntCounterVec,
    /// Actions decided and waiting for their checkpoint before they are sent.
    pub state_actions_waiting: IntGauge,
    /// The input offset a restart would read from, by topic and partition.
    pub state_depended_offset: IntGaugeVec,
    /// Age of the oldest message a restart would read again (0: none).
    pub state_depended_age: GaugeVec,
    /// Firings read after their own resolve (out of order across partitions).
    pub events_out_of_order: IntCounter,
    /// Event fields cut to their size cap (check, summary, labels, annotations).
    pub fields_truncated: IntCounter,
    /// Time a sink request waited for a token of the sink's rate limit, by sink.
    pub sink_rate_limited: HistogramVec,
    /// Updates dropped while rate-limited, by sink: a later action of the
    /// same incident, queued behind them, carries the latest state.
    pub sink_updates_coalesced: IntCounterVec,
}

/// Buckets of `triaged_event_lag_seconds`: fine below 10 ms, since the
/// decision latency target is a p99 under 5 ms.
pub const LAG_BUCKETS: [f64; 21] =
    [0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(reg: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    reg.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// The `source` label values every daemon has: the decoder kinds.
pub const DECODER_SOURCES: &[&str] = &["native", "alertmanager", "zabbix", "nagios"];

/// The label every other source gets.
pub const OTHER_SOURCE: &str = "other";

/// Priorities of `open_incidents`, present at zero from the start.
const PRIORITIES: &[&str] = &["P1", "P2", "P3", "P4", "P5"];

impl Metrics {
    /// Metrics whose `source` label is one of the decoder kinds, one of
    /// `sources` (`[metrics] source_labels`), or else `other`.
    pub fn with_sources(sources: &[String]) -> Metrics {
        let mut m = Metrics::build();
        let mut names: rustc_hash::FxHashSet<String> = DECODER_SOURCES.iter().map(|s| s.to_string()).collect();
        names.extend(sources.iter().cloned());
        for s in &names {
            m.source_families_at_zero(s);
        }
        m.sources = std::sync::Arc::new(names);
        m
    }

    /// The `source` label value of an event from `source`: never event
    /// content beyond the fixed set, one hash lookup.
    pub fn source_label<'a>(&self, source: &'a str) -> &'a str {
        if self.sources.contains(source) {
            source
        } else {
            OTHER_SOURCE
        }
    }

    fn source_families_at_zero(&self, s: &str) {
        self.events_decoded.with_label_values(&[s]);
        self.events_deduplicated.with_label_values(&[s]);
        self.events_dropped.with_label_values(&[s]);
        self.events_suppressed.with_label_values(&[s, "rule"]);
    }

    pub fn new() -> Metrics {
        Metrics::with_sources(&[])
    }

    fn build() -> Metrics {
        let reg = Registry::new_custom(Some("triaged".into()), None).expect("valid registry");
        let fingerprints = IntGauge::new("fingerprints", "Live fingerprints held by the dedup state.").unwrap();
        reg.register(Box::new(fingerprints.clone())).unwrap();
        let cmdb_cis = IntGauge::new("cmdb_cis", "Configuration items in the loaded CMDB snapshot.").unwrap();
        reg.register(Box::new(cmdb_cis.clone())).unwrap();
        let cmdb_last_load = Gauge::new("cmdb_last_load_timestamp_seconds", "Unix time of the last successful CMDB load.").unwrap();
        reg.register(Box::new(cmdb_last_load.clone())).unwrap();
        let paused_partitions = IntGauge::new("kafka_paused_partitions", "Partitions paused because the pipeline is full.").unwrap();
        reg.register(Box::new(paused_partitions.clone())).unwrap();
        let build_info =
            GaugeVec::new(Opts::new("build_info", "Build information, always 1."), &["version", "commit", "features"]).unwrap();
        reg.register(Box::new(build_info.clone())).unwrap();
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("TRIAGED_COMMIT"), &kafka_features()]).set(1.0);
        let messages_handled = IntCounter::new("core_messages_handled_total", "Kafka messages handled by the correlation core.").unwrap();
        reg.register(Box::new(messages_handled.clone())).unwrap();
        let ingest_alerts = IntCounter::new("ingest_alerts_total", "Alerts accepted on /api/v2/alerts and produced into Kafka.").unwrap();
        reg.register(Box::new(ingest_alerts.clone())).unwrap();
        let problem_candidates =
            IntCounter::new("problem_candidates_total", "Problem candidates raised: one CI causing repeated incidents.").unwrap();
        reg.register(Box::new(problem_candidates.clone())).unwrap();
        let sink_circuit_state = gauge_vec(
            &reg,
            "sink_circuit_state",
            "Sink circuit breaker: 0 closed, 1 open (no requests, events wait in Kafka), 2 half open.",
            &["sink"],
        );
        let sink_circuit_opened = counter(&reg, "sink_circuit_opened_total", "Times the sink circuit breaker opened.", &["sink"]);
        let rekeyed =
            IntCounter::new("rekeyed_events_total", "Events produced to the repartition topic, keyed by correlation scope.").unwrap();
        reg.register(Box::new(rekeyed.clone())).unwrap();
        let correlation_partitions =
            IntGauge::new("correlation_partitions", "Repartition topic partitions correlated by this instance.").unwrap();
        reg.register(Box::new(correlation_partitions.clone())).unwrap();
        let actions_disowned = counter(
            &reg,
            "sink_actions_disowned_total",
            "Sink actions not sent because their partition was revoked; its new owner rebuilds them.",
            &["sink"],
        );
        let actions_unrouted =
            IntCounter::new("actions_unrouted_total", "Incident actions no route matched: acknowledged without being sent.").unwrap();
        reg.register(Box::new(actions_unrouted.clone())).unwrap();
        let state_checkpoints =
            counter(&reg, "state_checkpoints_total", "Checkpoints of the correlation state to the changelog, by outcome.", &["outcome"]);
        for outcome in ["written", "failed"] {
            state_checkpoints.with_label_values(&[outcome]);
        }
        let state_actions_waiting =
            IntGauge::new("state_actions_waiting", "Actions decided and waiting for their checkpoint before they are sent.").unwrap();
        reg.register(Box::new(state_actions_waiting.clone())).unwrap();
        let state_depended_offset = IntGaugeVec::new(
            Opts::new("state_depended_offset", "Input offset a restart would read from: the last checkpoint reflects everything below it."),
            &["topic", "partition"],
        )
        .unwrap();
        reg.register(Box::new(state_depended_offset.clone())).unwrap();
        let state_depended_age = GaugeVec::new(
            Opts::new("state_depended_age_seconds", "Age of the oldest message a restart would read again (0 when there is none)."),
            &["topic", "partition"],
        )
        .unwrap();
        reg.register(Box::new(state_depended_age.clone())).unwrap();
        let events_out_of_order = IntCounter::new(
            "events_out_of_order_total",
            "Firings read after their own resolve (out of order, another partition): cleared by it, nothing opened.",
        )
        .unwrap();
        reg.register(Box::new(events_out_of_order.clone())).unwrap();
        let fields_truncated =
            IntCounter::new("event_fields_truncated_total", "Event fields cut to their size cap, marked in the field.").unwrap();
        reg.register(Box::new(fields_truncated.clone())).unwrap();
        let sink_rate_limited = histogram(
            &reg,
            "sink_rate_limited_seconds",
            "Time a sink request (an action's first request, a look-up or a retry) waited for a token of the sink's rate limit.",
            &["sink"],
            vec![0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0],
        );
        let sink_updates_coalesced = counter(
            &reg,
            "sink_updates_coalesced_total",
            "Incident updates not sent while the sink was rate-limited: a later action of the same incident carried the latest state.",
            &["sink"],
        );
        let sink_dead_letters =
            counter(&reg, "sink_dead_letters_total", "Actions a sink rejected permanently, dead-lettered and acknowledged.", &["sink"]);
        let lag_buckets = LAG_BUCKETS.to_vec();
        let event_lag = Histogram::with_opts(
            HistogramOpts::new(
                "event_lag_seconds",
                "Time from the Kafka message timestamp (its producer's create time) to the correlation core's decision.",
            )
            .buckets(lag_buckets),
        )
        .unwrap();
        reg.register(Box::new(event_lag.clone())).unwrap();
        let latency_buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let eval_buckets = vec![1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2];
        let process = Registry::new();
        process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("process collector");
        let m = Metrics {
            registry: reg.clone(),
            process,
            sources: Default::default(),
            messages_received: counter(&reg, "kafka_messages_received_total", "Kafka messages received.", &["topic"]),
            events_decoded: counter(&reg, "events_decoded_total", "Events decoded.", &["source"]),
            events_failed: counter(&reg, "events_failed_total", "Messages that failed to decode.", &["topic"]),
            events_deduplicated: counter(&reg, "events_deduplicated_total", "Events folded into an existing fingerprint.", &["source"]),
            events_suppressed: counter(
                &reg,
                "events_suppressed_total",
                "Events suppressed by maintenance, change or rule.",
                &["source", "reason"],
            ),
            events_dropped: counter(&reg, "events_dropped_total", "Events dropped by a rule.", &["source"]),
            dead_letters: counter(&reg, "dead_letters_total", "Records sent to the dead-letter path.", &["kind"]),
            incident_actions: counter(
                &reg,
                "incident_actions_total",
                "Incident actions acknowledged by a sink (open, update, resolve, reopen).",
                &["sink", "action"],
            ),
            open_incidents: gauge_vec(&reg, "open_incidents", "Open incidents by priority.", &["priority"]),
            open_incidents_by_service: gauge_vec(
                &reg,
                "open_incidents_by_service",
                "Open incidents by impacted business service.",
                &["service"],
            ),
            sink_request_duration: histogram(
                &reg,
                "sink_request_duration_seconds",
                "Duration of sink HTTP requests.",
                &["sink", "profile", "operation"],
                latency_buckets,
            ),
            sink_errors: counter(&reg, "sink_errors_total", "Failed sink requests by class.", &["sink", "class"]),
            consumer_lag: gauge_vec(
                &reg,
                "kafka_consumer_lag_messages",
                "Messages between the high watermark and the consumer position.",
                &["topic", "partition"],
            ),
            fingerprints,
            cmdb_cis,
            cmdb_last_load,
            reloads: counter(&reg, "reloads_total", "Rule and CMDB reloads.", &["kind", "result"]),
            rule_evaluation: histogram(
                &reg,
                "rule_evaluation_duration_seconds",
                "Time to evaluate rules and correlate one event.",
                &["stage"],
                eval_buckets,
            ),
            decisions: counter(&reg, "decisions_total", "Decisions taken by the correlation core.", &["decision"]),
            paused_partitions,
            build_info,
            messages_handled,
            ingest_requests: counter(&reg, "ingest_requests_total", "Requests to /api/v2/alerts by status code.", &["code"]),
            ingest_alerts,
            listener: crate::server::metrics::ServerMetrics::register(&reg),
            problem_candidates,
            event_lag,
            sink_circuit_state,
            sink_circuit_opened,
            rekeyed,
            correlation_partitions,
            actions_disowned,
            actions_unrouted,
            sink_dead_letters,
            reconciled: counter(
                &reg,
                "reconciled_incidents_total",
                "Open incidents restored from the changelog and looked up at the ITSM, by what it holds (open, closed, missing: opened again, failed).",
                &["outcome"],
            ),
            itsm_reads: counter(
                &reg,
                "itsm_reads_total",
                "Incident records read back from an ITSM by key (polling), by sink and result (ok, error).",
                &["sink", "result"],
            ),
            itsm_readback: counter(
                &reg,
                "itsm_readback_total",
                "What people did at the ITSM, as read back or pushed by webhook, by sink and outcome (acknowledged, reopened, new_record, left_closed, priority_owned, assignment_owned, opened_again).",
                &["sink", "outcome"],
            ),
            time_to_acknowledge: histogram(
                &reg,
                "incident_time_to_acknowledge_seconds",
                "Time from an incident's open to its first acknowledgement read back from an ITSM, by sink.",
                &["sink"],
                vec![30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0],
            ),
            sink_left_closed: {
                let c = IntCounter::new(
                    "sink_left_closed_total",
                    "Actions not sent because a person closed the incident's record at the ITSM while its alerts fired and it is left closed.",
                )
                .unwrap();
                reg.register(Box::new(c.clone())).unwrap();
                c
            },
            webhooks: counter(
                &reg,
                "webhook_requests_total",
                "Webhook requests from ITSMs, by sink and result (ok, ignored, bad_signature, bad_request).",
                &["sink", "result"],
            ),
            state_checkpoints,
            state_actions_waiting,
            state_depended_offset,
            state_depended_age,
            events_out_of_order,
            fields_truncated,
            sink_rate_limited,
            sink_updates_coalesced,
        };
        for p in PRIORITIES {
            m.open_incidents.with_label_values(&[p]);
        }
        m.source_families_at_zero(OTHER_SOURCE);
        m
    }

    /// The series of sink `name` at zero, so each configured sink shows in
    /// every sink family from the start (called when the sink is built).
    pub fn sink_families_at_zero(&self, name: &str) {
        for action in ["open", "update", "resolve", "reopen"] {
            self.incident_actions.with_label_values(&[name, action]);
        }
        for class in ["retryable", "permanent", "cancelled"] {
            self.sink_errors.with_label_values(&[name, class]);
        }
        self.sink_circuit_state.with_label_values(&[name]);
        self.sink_circuit_opened.with_label_values(&[name]);
        self.actions_disowned.with_label_values(&[name]);
        self.sink_rate_limited.with_label_values(&[name]);
        self.sink_updates_coalesced.with_label_values(&[name]);
        self.sink_dead_letters.with_label_values(&[name]);
    }

    /// Exposed name of every metric (`triaged_…`), whether or not it has samples yet.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let all: [&dyn Collector; 47] = [
            &self.messages_received,
            &self.events_decoded,
            &self.events_failed,
            &self.events_deduplicated,
            &self.events_suppressed,
            &self.events_dropped,
            &self.dead_letters,
            &self.incident_actions,
            &self.open_incidents,
            &self.open_incidents_by_service,
            &self.sink_request_duration,
            &self.sink_errors,
            &self.consumer_lag,
            &self.fingerprints,
            &self.cmdb_cis,
            &self.cmdb_last_load,
            &self.reloads,
            &self.rule_evaluation,
            &self.decisions,
            &self.paused_partitions,
            &self.build_info,
            &self.messages_handled,
            &self.ingest_requests,
            &self.ingest_alerts,
            &self.problem_candidates,
            &self.event_lag,
            &self.sink_circuit_state,
            &self.sink_circuit_opened,
            &self.rekeyed,
            &self.correlation_partitions,
            &self.actions_disowned,
            &self.reconciled,
            &self.itsm_reads,
            &self.itsm_readback,
            &self.time_to_acknowledge,
            &self.webhooks,
            &self.sink_left_closed,
            &self.state_checkpoints,
            &self.state_actions_waiting,
            &self.state_depended_offset,
            &self.state_depended_age,
            &self.events_out_of_order,
            &self.fields_truncated,
            &self.sink_rate_limited,
            &self.sink_updates_coalesced,
            &self.actions_unrouted,
            &self.sink_dead_letters,
        ];
        let listener = self.listener.names().into_iter();
        let own = all.iter().flat_map(|c| c.desc()).map(|d| d.fq_name.clone()).chain(listener).map(|n| format!("triaged_{n}"));
        own.chain(self.process.gather().iter().map(|f| f.name().to_owned())).collect()
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new().encode(&families, &mut buf).expect("encode metrics");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

/// librdkafka's `builtin.features` (ssl, sasl_scram, zstd, ...), `+`-joined.
fn kafka_features() -> String {
    rdkafka::ClientConfig::new()
        .create_native_config()
        .ok()
        .and_then(|c| c.get("builtin.features").ok())
        .map(|f| f.replace(',', "+"))
        .unwrap_or_else(|| "unknown".into())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_exported_family() {
        let m = Metrics::new();
        m.messages_handled.inc();
        m.decisions.with_label_values(&["new"]).inc();
        let names = m.names();
        let text = m.render();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(names.contains(name), "{name} missing from names()");
        }
        assert!(names.contains("triaged_sink_errors_total"), "families without samples are named too");
    }

    #[test]
    fn source_labels_are_decoder_kinds_or_configured_names_never_event_content() {
        let m = Metrics::with_sources(&["checks".to_string()]);
        for i in 0..500 {
            m.events_decoded.with_label_values(&[m.source_label(&format!("tenant-{i}"))]).inc();
        }
        m.events_decoded.with_label_values(&[m.source_label("checks")]).inc();
        m.events_decoded.with_label_values(&[m.source_label("zabbix")]).inc();
        let text = m.render();
        let series: Vec<_> = text.lines().filter(|l| l.starts_with("triaged_events_decoded_total{")).collect();
        assert_eq!(series.len(), 1 + DECODER_SOURCES.len() + 1, "{series:?}");
        assert!(text.contains("triaged_events_decoded_total{source=\"other\"} 500"), "{text}");
        assert!(text.contains("triaged_events_decoded_total{source=\"checks\"} 1"), "{text}");
        assert!(!text.contains("tenant-"), "no label value from event content");
    }

    #[test]
    fn families_exist_at_zero_from_the_start() {
        let m = Metrics::new();
        m.sink_families_at_zero("default");
        let text = m.render();
        for p in ["P1", "P2", "P3", "P4", "P5"] {
            assert!(text.contains(&format!("triaged_open_incidents{{priority=\"{p}\"}} 0")), "{p}: {text}");
        }
        for line in ["triaged_events_decoded_total{source=\"other\"} 0", "triaged_events_dropped_total{source=\"native\"} 0"] {
            assert!(text.contains(line), "{line}: {text}");
        }
        for line in [
            "triaged_sink_rate_limited_seconds_count{sink=\"default\"} 0",
            "triaged_sink_updates_coalesced_total{sink=\"default\"} 0",
            "triaged_incident_actions_total{action=\"resolve\",sink=\"default\"} 0",
            "triaged_actions_unrouted_total 0",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(text.contains("process_resident_memory_bytes"), "process metrics");
        let info = text.lines().find(|l| l.starts_with("triaged_build_info{")).expect("build info");
        for label in ["commit=\"", "features=\"", "version=\""] {
            assert!(info.contains(label), "{info}");
        }
        assert!(info.contains("ssl"), "librdkafka's TLS is in the features: {info}");
    }
}
