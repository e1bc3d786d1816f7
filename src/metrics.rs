//! Prometheus metrics (prometheus-client), served as text on the web listener's `/metrics`.
//! Labels are low-cardinality by construction: decisions and status codes, never hosts or users.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `tollgate_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `allowed`, `denied` or `error`.
    pub decision: &'static str,
    /// Status code tollgate answered with (for tunnels: the CONNECT answer).
    pub status: u16,
}

/// Labels of `tollgate_token_refreshes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    /// `success`, `invalid_grant`, `invalid_client`, `error`, `superseded` (a reset won the
    /// race) or `no_refresh_token`.
    pub outcome: &'static str,
}

/// Labels of `tollgate_policy_would_deny_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WouldDenyLabels {
    /// The report-mode policy that let the request through (policies are few and named by
    /// admins, so the label stays low-cardinality).
    pub policy: String,
    /// What it would have denied the request for (`no_matching_rule`, `method_not_allowed`...).
    pub reason: &'static str,
}

/// Labels of `tollgate_rate_limited_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    /// The `[[limit]]` that refused (limits are few and named by admins: low cardinality).
    pub limit: String,
}

/// Every metric tollgate exports.
pub struct Metrics {
    registry: Registry,
    /// Requests (and CONNECTs) by decision and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from dial start to response head (forward) or to the tunnel being up (CONNECT).
    pub upstream_latency: Histogram,
    /// Tunnels currently open.
    pub open_tunnels: Gauge,
    /// Client connections currently open on the proxy listener.
    pub client_connections: Gauge,
    /// Connections refused with `503 overloaded`.
    pub overloaded: Counter,
    /// Token refreshes by outcome.
    pub token_refreshes: Family<RefreshLabels, Counter>,
    /// Agent relay: connections, tunnels, bytes, failures per agent.
    pub agents: crate::relay::metrics::AgentMetrics,
    /// Requests a report-mode policy allowed that its rules would deny, by policy and reason:
    /// what enforcing it would break.
    pub would_deny: Family<WouldDenyLabels, Counter>,
    /// Requests refused with `429 rate_limited`, by limit.
    pub rate_limited: Family<RateLimitedLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied requests by decision and status",
            requests.clone(),
        );
        // 1 ms .. ~33 s.
        let upstream_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "upstream_latency_seconds",
            "Time to upstream response head (forward) or tunnel establishment (CONNECT)",
            upstream_latency.clone(),
        );
        let open_tunnels = Gauge::default();
        registry.register(
            "open_tunnels",
            "Open CONNECT tunnels and WebSockets",
            open_tunnels.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Open client connections on the proxy listener",
            client_connections.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "overloaded_connections",
            "Client connections refused with 503 overloaded",
            overloaded.clone(),
        );
        let token_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "Access token refreshes by outcome",
            token_refreshes.clone(),
        );
        let agents = crate::relay::metrics::AgentMetrics::register(&mut registry);
        let would_deny = Family::<WouldDenyLabels, Counter>::default();
        registry.register(
            "policy_would_deny",
            "Requests allowed by a report-mode policy that would deny them, by policy and reason",
            would_deny.clone(),
        );
        let rate_limited = Family::<RateLimitedLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a [[limit]] of the policy files, by limit",
            rate_limited.clone(),
        );
        Metrics {
            rate_limited,
            registry,
            requests,
            upstream_latency,
            open_tunnels,
            client_connections,
            overloaded,
            token_refreshes,
            agents,
            would_deny,
        }
    }

    /// Counts one refresh attempt's outcome.
    pub fn count_refresh(&self, outcome: &'static str) {
        self.token_refreshes
            .get_or_create(&RefreshLabels { outcome })
            .inc();
    }

    /// Counts one finished request.
    pub fn count_request(&self, decision: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { decision, status })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
