//! The listener's and readiness's metric families, registered in the
//! daemon's registry (`crate::metrics::Metrics::listener`).

use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct ServerMetrics {
    /// Connections closed at accept: the cap and its reserve were full.
    pub connections_refused: IntCounter,
    /// Connections being served.
    pub connections_open: IntGauge,
    /// 1 while the consumer reaches a broker, 0 otherwise.
    pub kafka_broker_up: IntGauge,
}

impl ServerMetrics {
    pub fn register(reg: &Registry) -> ServerMetrics {
        let m = ServerMetrics {
            connections_refused: IntCounter::new(
                "http_connections_refused_total",
                "HTTP connections closed at accept because http.max_connections and the reserve were in use.",
            )
            .unwrap(),
            connections_open: IntGauge::new("http_connections_open", "HTTP connections being served.").unwrap(),
            kafka_broker_up: IntGauge::new("kafka_broker_up", "1 while the Kafka consumer reaches a broker, 0 otherwise.").unwrap(),
        };
        reg.register(Box::new(m.connections_refused.clone())).unwrap();
        reg.register(Box::new(m.connections_open.clone())).unwrap();
        reg.register(Box::new(m.kafka_broker_up.clone())).unwrap();
        m
    }

    /// Exposed names, without the namespace.
    pub fn names(&self) -> Vec<String> {
        let all: [&dyn Collector; 3] = [&self.connections_refused, &self.connections_open, &self.kafka_broker_up];
        all.iter().flat_map(|c| c.desc()).map(|d| d.fq_name.clone()).collect()
    }
}
