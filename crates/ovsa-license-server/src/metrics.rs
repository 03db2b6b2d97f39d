//! Prometheus metrics (`GET /metrics`): decisions by endpoint, result and reason; latency;
//! connections closed before a request slot, by reason; TLS handshakes in progress; client
//! certificates refused at the handshake, by reason (unauthenticated refusals are counted here,
//! never written to the audit log).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    refused_connections: Family<RefusedLabel, Counter>,
    handshakes: Gauge<i64, AtomicI64>,
    refused_handshakes: Family<RefusedLabel, Counter>,
}

/// Why a client was refused at (or right after) its TLS handshake, before any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedHandshake {
    /// Its certificate is no registered license's customer certificate and no operator's.
    UnregisteredClientCertificate,
}

impl RefusedHandshake {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RefusedHandshake::UnregisteredClientCertificate => "unregistered_client_certificate",
        }
    }
}

/// Why a connection was closed before it got a request slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedConnection {
    /// Its source already had `--max-handshakes-per-source` connections in their handshake.
    PerSource,
    /// `--max-handshakes` connections were already in their handshake.
    HandshakeBudget,
    /// The TLS handshake did not finish within `--handshake-timeout`.
    HandshakeTimeout,
    /// No request slot (`--max-connections`) became free within `--handshake-timeout`.
    RequestSlots,
}

impl RefusedConnection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RefusedConnection::PerSource => "per_source",
            RefusedConnection::HandshakeBudget => "handshake_budget",
            RefusedConnection::HandshakeTimeout => "handshake_timeout",
            RefusedConnection::RequestSlots => "request_slots",
        }
    }

    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            RefusedConnection::PerSource => {
                "its source has --max-handshakes-per-source connections in their TLS handshake"
            }
            RefusedConnection::HandshakeBudget => {
                "--max-handshakes connections are in their TLS handshake"
            }
            RefusedConnection::HandshakeTimeout => "the TLS handshake took too long",
            RefusedConnection::RequestSlots => "no request slot became free",
        }
    }
}

/// Label of the refused-connections counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    /// `per_source`, `handshake_budget`, `handshake_timeout` or `request_slots`.
    pub reason: String,
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
        let refused_connections = Family::<RefusedLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed before they got a request slot, by reason",
            refused_connections.clone(),
        );
        let handshakes = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "handshakes_in_progress",
            "Connections accepted and not yet past their TLS handshake",
            handshakes.clone(),
        );
        let refused_handshakes = Family::<RefusedLabel, Counter>::default();
        registry.register(
            "handshakes_refused",
            "Clients refused at their TLS handshake (not audited), by reason",
            refused_handshakes.clone(),
        );
        Metrics {
            registry,
            refused_handshakes,
            decisions,
            latency,
            refused_connections,
            handshakes,
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

    /// Counts one connection closed before it got a request slot.
    pub fn connection_refused(&self, why: RefusedConnection) {
        self.refused_connections
            .get_or_create(&RefusedLabel {
                reason: why.label().into(),
            })
            .inc();
    }

    /// Counts one client refused at its handshake.
    pub fn handshake_refused(&self, why: RefusedHandshake) {
        self.refused_handshakes
            .get_or_create(&RefusedLabel {
                reason: why.label().into(),
            })
            .inc();
    }

    /// Clients refused at their handshake for `why` so far.
    pub fn handshakes_refused(&self, why: RefusedHandshake) -> u64 {
        self.refused_handshakes
            .get_or_create(&RefusedLabel {
                reason: why.label().into(),
            })
            .get()
    }

    /// Sets the number of connections in their TLS handshake.
    pub fn set_handshakes_in_progress(&self, n: usize) {
        self.handshakes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The number of connections in their TLS handshake.
    pub fn handshakes_in_progress(&self) -> i64 {
        self.handshakes.get()
    }

    /// Connections closed for `why` so far.
    pub fn connections_refused(&self, why: RefusedConnection) -> u64 {
        self.refused_connections
            .get_or_create(&RefusedLabel {
                reason: why.label().into(),
            })
            .get()
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
