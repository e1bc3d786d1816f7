//! The replicas table on PostgreSQL: heartbeats, expiry and the live list, all judged by
//! the database clock so replicas with skewed clocks agree on who is alive; and retention:
//! the audit log by its `at` column (this store's clock, as it was stamped), the change log
//! by the database clock, each deleted in bounded batches.

use std::time::Duration;

use async_trait::async_trait;

use super::{pg, PgStore};
use crate::store::replicas::{check, Replica, ReplicaStore, MAX_REPLICAS};
use crate::store::{StoreError, StoreResult};

/// Rows deleted per statement when pruning, so no statement runs long or locks much.
const PRUNE_BATCH: i64 = 5_000;

/// Advisory lock key taken (without waiting) by the replica pruning the change log.
const PRUNE_CHANGES_LOCK: i64 = 0x746f_6c6c_6368_6731;

#[async_trait]
impl ReplicaStore for PgStore {
    async fn heartbeat_replica(
        &self,
        id: &str,
        relay: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.heartbeat_replica_now(id, relay, ttl).await
    }

    async fn list_replicas(&self) -> StoreResult<Vec<Replica>> {
        self.list_replicas_now().await
    }

    async fn remove_replica(&self, id: &str) -> StoreResult<bool> {
        self.remove_replica_now(id).await
    }

    async fn prune_audit(&self, keep: Duration) -> StoreResult<usize> {
        let cutoff =
            i64::try_from(self.clock.now()?.saturating_sub(keep.as_secs())).unwrap_or(i64::MAX);
        // A row an older build wrote has no `at`: its record has.
        self.prune_batches(
            "DELETE FROM audit WHERE ctid IN (SELECT ctid FROM audit \
             WHERE coalesce(at, (rec::jsonb ->> 'at')::bigint) < $1 LIMIT $2)",
            cutoff,
        )
        .await
    }

    async fn prune_changes(&self, keep: Duration) -> StoreResult<usize> {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mine: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&PRUNE_CHANGES_LOCK],
            )
            .await
            .map_err(pg)?
            .get(0);
        if !mine {
            return Ok(0);
        }
        let n = tx
            .execute(
                "DELETE FROM changes \
                 WHERE at < now() - $1::bigint::float8 * interval '1 millisecond'",
                &[&keep_ms],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Seconds since the Unix epoch of a `timestamptz` column, as SQL.
macro_rules! epoch {
    ($col:literal) => {
        concat!("extract(epoch FROM ", $col, ")::bigint")
    };
}

impl PgStore {
    /// `ReplicaStore::heartbeat_replica`: upsert the row, moving its lease end, and delete expired
    /// rows, in one transaction.
    pub(super) async fn heartbeat_replica_now(
        &self,
        id: &str,
        relay: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<()> {
        check(id, relay)?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("DELETE FROM replicas WHERE expires_at < now()", &[])
            .await
            .map_err(pg)?;
        let live: i64 = tx
            .query_one("SELECT count(*) FROM replicas WHERE id <> $1", &[&id])
            .await
            .map_err(pg)?
            .get(0);
        if usize::try_from(live).unwrap_or(usize::MAX) >= MAX_REPLICAS {
            return Err(StoreError::Io(format!(
                "more than {MAX_REPLICAS} live replicas"
            )));
        }
        tx.execute(
            "INSERT INTO replicas (id, relay, expires_at) \
             VALUES ($1, $2, now() + $3::bigint::float8 * interval '1 millisecond') \
             ON CONFLICT (id) DO UPDATE SET relay = EXCLUDED.relay, last_seen = now(), \
             expires_at = EXCLUDED.expires_at",
            &[&id, &relay, &ttl_ms],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    /// `ReplicaStore::list_replicas`: rows whose lease has not ended, by id.
    pub(super) async fn list_replicas_now(&self) -> StoreResult<Vec<Replica>> {
        let rows = self
            .client()
            .await?
            .query(
                concat!(
                    "SELECT id, relay, ",
                    epoch!("started_at"),
                    ", ",
                    epoch!("last_seen"),
                    " FROM replicas WHERE expires_at > now() ORDER BY id"
                ),
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Replica {
                id: r.get(0),
                relay: r.get(1),
                started_at: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                last_seen: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            })
            .collect())
    }

    /// Runs `sql` (a `DELETE` of at most `$2` rows matching `$1`) until it deletes fewer
    /// than a batch; returns the total.
    async fn prune_batches(&self, sql: &str, arg: i64) -> StoreResult<usize> {
        let client = self.client().await?;
        let mut total = 0usize;
        loop {
            let n = client
                .execute(sql, &[&arg, &PRUNE_BATCH])
                .await
                .map_err(pg)?;
            total = total.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// `ReplicaStore::remove_replica`.
    pub(super) async fn remove_replica_now(&self, id: &str) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM replicas WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }
}
