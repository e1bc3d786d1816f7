//! The replicas table on PostgreSQL: heartbeats, expiry and the live list, all judged by
//! the database clock so replicas with skewed clocks agree on who is alive.

use std::time::Duration;

use super::{pg, PgStore};
use crate::store::replicas::{check, Replica, MAX_REPLICAS};
use crate::store::{StoreError, StoreResult};

/// Seconds since the Unix epoch of a `timestamptz` column, as SQL.
macro_rules! epoch {
    ($col:literal) => {
        concat!("extract(epoch FROM ", $col, ")::bigint")
    };
}

impl PgStore {
    /// `Store::heartbeat_replica`: upsert the row, moving its lease end, and delete expired
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

    /// `Store::list_replicas`: rows whose lease has not ended, by id.
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

    /// `Store::remove_replica`.
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
