//! Prometheus metrics (`GET /metrics`): decisions by endpoint, result and reason; latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `challenge` or `attest`.
    pub endpoint: String,
    /// `ok` or `refused`.
    pub result: String,
    /// Reason code when refused, else empty.
    pub reason: String,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    latency: Family<EndpointLabel, Histogram>,
}

/// Label of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// `challenge` or `attest`.
    pub endpoint: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ovsa_license");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Requests by endpoint, result and reason",
            decisions.clone(),
        );
        let latency = Family::<EndpointLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "request_seconds",
            "Request handling time in seconds",
            latency.clone(),
        );
        Metrics {
            registry,
            decisions,
            latency,
        }
    }
}

impl Metrics {
    /// Counts one decision and its latency.
    pub fn observe(&self, endpoint: &str, reason: Option<&str>, seconds: f64) {
        self.decisions
            .get_or_create(&DecisionLabels {
                endpoint: endpoint.into(),
                result: if reason.is_some() { "refused" } else { "ok" }.into(),
                reason: reason.unwrap_or_default().into(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.into(),
            })
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
