//! Relay-side metrics, registered into tollgate's Prometheus registry. The `agent` label is
//! an agent ID, which only an admin creates (by enrolling an agent or naming it in a policy
//! route), so its cardinality is bounded by configuration, never by traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set with only the agent ID.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    /// Agent ID.
    pub agent: String,
}

/// Bytes moved through an agent, by direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// Agent ID.
    pub agent: String,
    /// `up` (towards the destination) or `down`.
    pub direction: &'static str,
}

/// Dial failures by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Agent ID.
    pub agent: String,
    /// The error code: `agent_unavailable`, `destination_denied`, `dns_error`, ...
    pub reason: &'static str,
}

/// Relay authentication refusals by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `invalid_credential`, `revoked`, `expired`, `bad_hello`, `tls`.
    pub reason: &'static str,
}

/// Every relay metric.
#[derive(Clone, Default)]
pub struct AgentMetrics {
    /// Authenticated relay connections, per agent ID.
    pub connections: Family<AgentLabel, Gauge>,
    /// Tunnels currently open through an agent (CONNECT tunnels and pooled connections of
    /// forwarded requests).
    pub open_tunnels: Family<AgentLabel, Gauge>,
    /// Tunnels opened through an agent.
    pub tunnels: Family<AgentLabel, Counter>,
    /// Bytes through agent tunnels.
    pub bytes: Family<BytesLabels, Counter>,
    /// Tunnels that could not be opened.
    pub dial_failures: Family<FailureLabels, Counter>,
    /// Relay connections refused at authentication.
    pub auth_failures: Family<AuthLabels, Counter>,
}

impl AgentMetrics {
    /// Creates the metrics and registers them in `registry` (prefix `tollgate_agent_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = AgentMetrics::default();
        let r = registry.sub_registry_with_prefix("agent");
        r.register(
            "connections",
            "Authenticated relay connections by agent",
            m.connections.clone(),
        );
        r.register(
            "open_tunnels",
            "Tunnels currently open through an agent",
            m.open_tunnels.clone(),
        );
        r.register(
            "tunnels",
            "Tunnels opened through an agent",
            m.tunnels.clone(),
        );
        r.register(
            "bytes",
            "Bytes through agent tunnels by direction",
            m.bytes.clone(),
        );
        r.register(
            "dial_failures",
            "Agent tunnels that could not be opened, by reason",
            m.dial_failures.clone(),
        );
        r.register(
            "auth_failures",
            "Relay connections refused at authentication, by reason",
            m.auth_failures.clone(),
        );
        m
    }

    /// Counts a dial failure.
    pub fn dial_failed(&self, agent: &str, reason: &'static str) {
        self.dial_failures
            .get_or_create(&FailureLabels {
                agent: agent.to_string(),
                reason,
            })
            .inc();
    }
}
