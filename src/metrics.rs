//! Prometheus metrics (prometheus-client), served as text on the web listener's `/metrics`.
//! Labels are low-cardinality by construction: decisions and status codes, never hosts or users.
//! Names bounded by configuration (policies, agents, an org's apps) may be labels; traffic
//! never creates a series. The reference is docs/metrics.md.
//!
//! The policy set's series are read from its load status at each scrape
//! ([`Metrics::follow_policies`]), so the reload path stays free of metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use crate::policy::watch::Policies;

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

/// Labels of `tollgate_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: &'static str,
}

/// A single `outcome` label (policy reloads).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// Labels of `tollgate_injections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InjectionLabels {
    /// The app's org (app ids are unique per org only).
    pub org: String,
    /// The app id: apps are created by admins, so the label is bounded by configuration.
    pub app: String,
    /// `injected`, `authorization_required`, `app_disabled`, `refresh_failed` or `error`.
    pub outcome: &'static str,
}

/// Labels of `tollgate_consent_tickets_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TicketLabels {
    /// `issued` (a new consent link), `used` (Authorize clicked: the link is consumed) or
    /// `unusable` (a link opened after it expired, was used, or its app was reset).
    pub event: &'static str,
}

/// Labels of `tollgate_open_connections`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `proxy`, `web` or `metrics`.
    pub listener: &'static str,
}

/// Labels of `tollgate_store_operation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    /// The `Store` method (`get_app`, `issue_ticket`...).
    pub operation: &'static str,
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
    /// Log lines that waited for the log writer (`crate::logging::stalls`, set on render).
    log_writer_stalls: Counter,
    /// Token refreshes by outcome.
    pub token_refreshes: Family<RefreshLabels, Counter>,
    /// Agent relay: connections, tunnels, bytes, failures per agent.
    pub agents: crate::relay::metrics::AgentMetrics,
    /// Requests a report-mode policy allowed that its rules would deny, by policy and reason:
    /// what enforcing it would break.
    pub would_deny: Family<WouldDenyLabels, Counter>,
    /// Policy reload attempts by outcome (synced from the load status at each scrape).
    pub policy_reloads: Family<OutcomeLabels, Counter>,
    /// When the last reload succeeded, Unix seconds (0: never).
    pub policy_last_reload: Gauge,
    /// Generation of the policy set in force (successful loads so far).
    pub policy_generation: Gauge,
    /// Token injections by org, app and outcome.
    pub injections: Family<InjectionLabels, Counter>,
    /// The consent funnel: links issued, used, found unusable.
    pub consent_tickets: Family<TicketLabels, Counter>,
    /// Open connections per listener.
    pub open_connections: Family<ListenerLabels, Gauge>,
    /// Latency of store operations, by operation (measured in `store::timed`).
    pub store_latency: Family<StoreOpLabels, Histogram>,
    /// Requests refused with `429 rate_limited`, by limit.
    pub rate_limited: Family<RateLimitedLabels, Counter>,
    /// The policy set whose status the scrape reads.
    policies: OnceLock<Arc<Policies>>,
    /// Serializes the scrape-time sync of the policy series (two scrapes at once).
    sync: Mutex<()>,
    /// Records the store key re-seal wrote again (`store::reseal`).
    pub reseal_records: Counter,
    /// Records the store key re-seal has still to look at (0 when none is under way).
    pub reseal_remaining: Gauge,
    /// Grant health: grants by state, the background refresher, "last used".
    pub grants: crate::oauth::health_metrics::GrantMetrics,
    /// The last denied requests, for the console's deny log: the proxy's access line feeds
    /// it and the web pages read it, and both already share these metrics.
    pub denials: crate::denials::DenyLog,
}

/// Buckets of store latency: 50 µs .. ~1.6 s.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
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
        let log_writer_stalls = Counter::default();
        registry.register(
            "log_writer_stalls",
            "Log lines that waited because stderr fell 16 MiB behind (lines are never dropped)",
            log_writer_stalls.clone(),
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
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build of this tollgate (value 1)", build);
        let policy_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reload attempts by outcome",
            policy_reloads.clone(),
        );
        let policy_last_reload = Gauge::default();
        registry.register(
            "policy_last_reload_success_timestamp_seconds",
            "When the policy set was last loaded successfully (Unix seconds; 0 = never)",
            policy_last_reload.clone(),
        );
        let policy_generation = Gauge::default();
        registry.register(
            "policy_generation",
            "Generation of the policy set in force (successful loads so far)",
            policy_generation.clone(),
        );
        let injections = Family::<InjectionLabels, Counter>::default();
        registry.register(
            "injections",
            "Token injections by org, app and outcome",
            injections.clone(),
        );
        let consent_tickets = Family::<TicketLabels, Counter>::default();
        registry.register(
            "consent_tickets",
            "Consent links issued, used, and found unusable (expired, used, or app reset)",
            consent_tickets.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Open connections per listener",
            open_connections.clone(),
        );
        let store_latency =
            Family::<StoreOpLabels, Histogram>::new_with_constructor(store_buckets as fn() -> _);
        registry.register(
            "store_operation_duration_seconds",
            "Latency of store operations by operation",
            store_latency.clone(),
        );
        let rate_limited = Family::<RateLimitedLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a [[limit]] of the policy files, by limit",
            rate_limited.clone(),
        );
        let reseal_records = Counter::default();
        registry.register(
            "store_reseal_records",
            "Records the store key re-seal sealed again with the new key",
            reseal_records.clone(),
        );
        let reseal_remaining = Gauge::default();
        registry.register(
            "store_reseal_remaining",
            "Records the store key re-seal has still to look at (0 when none is under way)",
            reseal_remaining.clone(),
        );
        let grants = crate::oauth::health_metrics::GrantMetrics::register(&mut registry);
        Metrics {
            reseal_records,
            reseal_remaining,
            grants,
            policy_reloads,
            policy_last_reload,
            policy_generation,
            injections,
            consent_tickets,
            open_connections,
            store_latency,
            policies: OnceLock::new(),
            sync: Mutex::new(()),
            rate_limited,
            registry,
            requests,
            upstream_latency,
            open_tunnels,
            client_connections,
            overloaded,
            log_writer_stalls,
            token_refreshes,
            agents,
            would_deny,
            denials: crate::denials::DenyLog::default(),
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

    /// Reads the policy series from `policies`' load status at each scrape.
    pub fn follow_policies(&self, policies: Arc<Policies>) {
        let _ = self.policies.set(policies);
    }

    /// Counts one injection attempt's outcome for `org`'s app `app`.
    pub fn count_injection(&self, org: &str, app: &str, outcome: &'static str) {
        self.injections
            .get_or_create(&InjectionLabels {
                org: org.to_owned(),
                app: app.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts one step of the consent funnel (`issued`, `used`, `unusable`).
    pub fn count_ticket(&self, event: &'static str) {
        self.consent_tickets
            .get_or_create(&TicketLabels { event })
            .inc();
    }

    /// The open-connection gauge of `listener` (`proxy`, `web`, `metrics`).
    pub fn connections(&self, listener: &'static str) -> Gauge {
        self.open_connections
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }

    /// Records one store operation's duration.
    pub fn observe_store(&self, operation: &'static str, took: Duration) {
        self.store_latency
            .get_or_create(&StoreOpLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// Brings the policy series up to the load status.
    fn sync_policies(&self) {
        let Some(policies) = self.policies.get() else {
            return;
        };
        let _one = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        let status = policies.status();
        let to = |outcome, target: u64| {
            let c = self
                .policy_reloads
                .get_or_create(&OutcomeLabels { outcome });
            c.inc_by(target.saturating_sub(c.get()));
        };
        to("success", status.generation);
        to("failure", status.failed_reloads);
        let at = status
            .last_success
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.policy_last_reload.set(at);
        self.policy_generation
            .set(i64::try_from(status.generation).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.sync_policies();
        (self.log_writer_stalls.inner()).store(crate::logging::stalls(), Ordering::Relaxed);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
