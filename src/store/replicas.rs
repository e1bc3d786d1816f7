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

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{StoreError, StoreResult};

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
