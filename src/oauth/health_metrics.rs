//! The grant-health series (docs/metrics.md): grants by state per app, the background
//! refresher's outcomes and "last used" writes.
//! Labels are bounded by configuration: an org's apps and a fixed set of states and
//! outcomes, never users.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `tollgate_grants`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// The app's org.
    pub org: String,
    /// The app id (apps are created by admins: bounded by configuration).
    pub app: String,
    /// `ok`, `refresh_failing` or `needs_consent`.
    pub state: &'static str,
}

/// A single `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// A fixed word per series (see docs/metrics.md).
    pub outcome: &'static str,
}

/// Labels of `tollgate_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The event (`connected`, `disconnected`, `refresh_failed`, `needs_consent`,
    /// `recovered`).
    pub event: &'static str,
    /// `delivered`, `dropped` (the queue was full) or `failed` (gave up retrying).
    pub outcome: &'static str,
}

/// The grant-health metrics.
#[derive(Debug, Default)]
pub struct GrantMetrics {
    /// Grants by org, app and state, as the refresher's last scan found them.
    pub grants: Family<GrantLabels, Gauge>,
    /// Background refresher: grants looked at and what became of them.
    pub refresher: Family<Outcome, Counter>,
    /// Background refresher: finished scans of every grant.
    pub refresher_scans: Counter,
    /// "Last used" store writes (coalesced: at most one per grant per minute).
    pub last_used_writes: Counter,
    /// Uses not noted because the coalescing map was full.
    pub last_used_dropped: Counter,
    /// Events webhook: events by outcome.
    pub events: Family<EventLabels, Counter>,
    /// Events webhook: events waiting for delivery.
    pub events_queue: Gauge,
}

impl GrantMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> GrantMetrics {
        let m = GrantMetrics::default();
        registry.register(
            "grants",
            "Users' grants by org, app and state (ok, refresh_failing, needs_consent), from the background refresher's last scan",
            m.grants.clone(),
        );
        registry.register(
            "refresher_grants",
            "Grants the background refresher looked at, by outcome (refreshed, failed, needs_consent, fresh, skipped)",
            m.refresher.clone(),
        );
        registry.register(
            "refresher_scans",
            "Finished background refresher scans of every grant",
            m.refresher_scans.clone(),
        );
        registry.register(
            "grant_last_used_writes",
            "Store writes of grants' last use (coalesced: at most one per grant per minute per replica)",
            m.last_used_writes.clone(),
        );
        registry.register(
            "grant_last_used_dropped",
            "Uses of grants not noted because the coalescing map was full",
            m.last_used_dropped.clone(),
        );
        registry.register(
            "events",
            "Grant events for --events-webhook by event and outcome (delivered, dropped: the queue was full, failed: retries given up)",
            m.events.clone(),
        );
        registry.register(
            "events_queue",
            "Grant events waiting for delivery to --events-webhook",
            m.events_queue.clone(),
        );
        m
    }

    /// Counts one event's outcome.
    pub fn count_event(&self, event: &'static str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels { event, outcome })
            .inc();
    }

    /// Counts one refresher outcome.
    pub fn count_refresher(&self, outcome: &'static str) {
        self.refresher.get_or_create(&Outcome { outcome }).inc();
    }
}
