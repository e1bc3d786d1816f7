//! Replicas sharing one store: each `tollgate serve` heartbeats a row naming itself and the
//! relay address it advertises to agents, so that an agent can keep a session to every live
//! replica ([`crate::relay::replicas`]).
//!
//! A row lives until its lease ends: every heartbeat moves the end to "now + ttl" by the
//! store's clock (the database's on PostgreSQL, never a replica's), and rows past their end
//! are neither listed nor kept. A replica that stops cleanly deletes its row; one killed
//! with SIGKILL drops out of the list when its lease ends.
//!
//! The embedded store is one process's: its table lives in memory ([`LocalReplicas`]) and
//! holds this process alone.
//!
//! Retention lives here too: the audit log kept for `--audit-retention`, and on a shared
//! store the change log (which caches of other replicas read) kept for an hour.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{StoreError, StoreResult};

/// What replicas sharing a store need of it beyond the records: the replicas table and
/// retention. Part of every [`super::Store`] (a supertrait), implemented next to each
/// backend (`sled_store/replicas.rs`, `postgres/replicas.rs`); the contract suite covers it.
#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Records that replica `id` (1 to 64 letters, digits, `-`, `_`) is alive, advertising
    /// `relay` to agents, until `ttl` from now by the store's clock: creates its row
    /// (`started_at` now) or moves its lease end and `last_seen`. Rows whose lease ended are
    /// deleted.
    async fn heartbeat_replica(
        &self,
        id: &str,
        relay: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<()>;

    /// The replicas whose lease has not ended, by id.
    async fn list_replicas(&self) -> StoreResult<Vec<Replica>>;

    /// Deletes replica `id`'s row (a clean shutdown). Returns whether there was one.
    async fn remove_replica(&self, id: &str) -> StoreResult<bool>;

    /// Deletes the audit events stamped more than `keep` ago (the store's clock), in every
    /// org. Returns how many. It walks the log, so a backend runs it off the async runtime.
    async fn prune_audit(&self, keep: Duration) -> StoreResult<usize>;

    /// Deletes the change-log rows older than `keep` (by the store's clock); a store whose
    /// change events live only in memory (sled) has none. Safe from several replicas at once
    /// (one does the work, the others find it taken). Returns how many.
    async fn prune_changes(&self, keep: Duration) -> StoreResult<usize>;
}

/// How often a replica heartbeats its row.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How long a row outlives its last heartbeat: three heartbeats.
pub const REPLICA_TTL: Duration = Duration::from_secs(15);

/// Rows a store keeps at most; beyond, a new replica's heartbeat is refused. A deployment
/// runs a handful of replicas; the bound only stops a runaway from filling the table.
pub const MAX_REPLICAS: usize = 256;

/// Longest advertised relay address kept (an `https://host:port` URL).
pub const MAX_RELAY_URL: usize = 512;

/// One live replica.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    /// Random per process start.
    pub id: String,
    /// The relay URL it advertises to agents (`https://host:port`), if it runs a relay.
    pub relay: Option<String>,
    /// When its row was created, Unix seconds (store clock).
    pub started_at: u64,
    /// Its last heartbeat, Unix seconds (store clock).
    pub last_seen: u64,
}

/// Checks a heartbeat's arguments (the same for every backend).
pub(crate) fn check(id: &str, relay: Option<&str>) -> StoreResult<()> {
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        return Err(StoreError::Io(
            "a replica id is 1 to 64 letters, digits, '-' or '_'".into(),
        ));
    }
    if relay.is_some_and(|r| r.len() > MAX_RELAY_URL) {
        return Err(StoreError::Io(format!(
            "a relay address is at most {MAX_RELAY_URL} bytes"
        )));
    }
    Ok(())
}

/// The replicas table of a store one process owns, in memory: (row, lease end in seconds).
#[derive(Debug, Default)]
pub(crate) struct LocalReplicas(Mutex<BTreeMap<String, (Replica, u64)>>);

impl LocalReplicas {
    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Replica, u64)>> {
        // Every change is one map operation: a panic elsewhere leaves the map consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Store::heartbeat_replica` at `now` (seconds).
    pub(crate) fn heartbeat(
        &self,
        now: u64,
        id: &str,
        relay: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<()> {
        check(id, relay)?;
        let until = now.saturating_add(ttl.as_secs_f64().ceil() as u64);
        let mut rows = self.rows();
        rows.retain(|_, (_, end)| *end > now);
        if !rows.contains_key(id) && rows.len() >= MAX_REPLICAS {
            return Err(StoreError::Io(format!(
                "more than {MAX_REPLICAS} live replicas"
            )));
        }
        let row = rows.entry(id.to_owned()).or_insert_with(|| {
            let r = Replica {
                id: id.to_owned(),
                relay: None,
                started_at: now,
                last_seen: now,
            };
            (r, until)
        });
        row.0.relay = relay.map(str::to_owned);
        row.0.last_seen = now;
        row.1 = until;
        Ok(())
    }

    /// `Store::list_replicas` at `now`.
    pub(crate) fn live(&self, now: u64) -> Vec<Replica> {
        self.rows()
            .values()
            .filter(|(_, end)| *end > now)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// `Store::remove_replica`.
    pub(crate) fn remove(&self, id: &str) -> bool {
        self.rows().remove(id).is_some()
    }
}

/// How long the change log keeps a row: far beyond any listener's catch-up window (a
/// listener that was away longer flushes its caches anyway).
pub const CHANGES_KEPT: Duration = Duration::from_secs(3600);

/// How often the change log is pruned.
pub const PRUNE_CHANGES_EVERY: Duration = Duration::from_secs(5 * 60);

/// How often the audit log is pruned.
pub const PRUNE_AUDIT_EVERY: Duration = Duration::from_secs(3600);

/// Default of `--audit-retention`: 90 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// Prunes the change log every [`PRUNE_CHANGES_EVERY`] and the audit log every
/// [`PRUNE_AUDIT_EVERY`] (both at start too) until `stop`. Every replica runs it; the store
/// makes concurrent runs harmless.
pub async fn prune_periodically(
    store: std::sync::Arc<dyn super::Store>,
    audit_retention: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut changes = tokio::time::interval(PRUNE_CHANGES_EVERY);
    let mut audit = tokio::time::interval(PRUNE_AUDIT_EVERY);
    changes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = changes.tick() => match store.prune_changes(CHANGES_KEPT).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "pruned the change log"),
                Err(e) => tracing::warn!(error = %e, "pruning the change log failed"),
            },
            _ = audit.tick() => match store.prune_audit(audit_retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "pruned audit events past their retention"),
                Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
            },
        }
    }
}
