//! App writes on PostgreSQL (configuration, enable, reset, delete) with the clean-up a reset
//! or delete needs in the same transaction, the purge of stale and expired records, and
//! agent revocations.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::super::changes::Change;
use super::super::record::agent::AgentRevocationRecord;
use super::super::record::AppRecord;
use super::{app_from_row, pg, record_text, to_db, PgStore};
use crate::store::{AgentRevocation, App, StoreError, StoreResult};

impl PgStore {
    /// Apps selected by `sql` (columns org, id, rec).
    pub(super) async fn select_apps(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<App>> {
        let rows = self.client().await?.query(sql, params).await.map_err(pg)?;
        rows.iter()
            .map(|r| app_from_row(r.get(0), r.get(1), r.get(2))?.open(&self.key))
            .collect()
    }

    /// The app's row, locked for update, decoded; [`StoreError::NotFound`] if absent.
    async fn lock_app(tx: &Transaction<'_>, org: &str, id: &str) -> StoreResult<AppRecord> {
        let row = tx
            .query_opt(
                "SELECT rec FROM apps WHERE org = $1 AND id = $2 FOR UPDATE",
                &[&org, &id],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        app_from_row(org, id, row.get(0))
    }

    /// Writes `rec` over the app's row, and with `sweep` removes what its new generation
    /// made stale, then records the change and commits. Returns the app opened.
    async fn store_app(
        &self,
        tx: Transaction<'_>,
        rec: AppRecord,
        sweep: bool,
    ) -> StoreResult<App> {
        let (org, id) = (rec.org.clone(), rec.id.clone());
        tx.execute(
            "UPDATE apps SET incarnation = $3, generation = $4, rec = $5 \
             WHERE org = $1 AND id = $2",
            &[
                &org,
                &id,
                &to_db(rec.incarnation),
                &to_db(rec.generation),
                &record_text(&rec)?,
            ],
        )
        .await
        .map_err(pg)?;
        if sweep {
            let removed = sweep_app(&tx, &org, &id).await?;
            tracing::debug!(org, app = id, removed, "store: app generation moved");
        }
        let change = Change::AppChanged {
            org: org.clone(),
            app: id.clone(),
        };
        self.record_change(&tx, &change).await?;
        self.commit_publishing(tx, change).await?;
        rec.open(&self.key)
    }

    /// Reads the app record, modifies it, and writes it back in one transaction (`sweep`
    /// when the change moves the generation).
    pub(super) async fn modify_app(
        &self,
        org: &str,
        id: &str,
        sweep: bool,
        change: impl FnOnce(&mut AppRecord),
    ) -> StoreResult<App> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut rec = Self::lock_app(&tx, org, id).await?;
        change(&mut rec);
        self.store_app(tx, rec, sweep).await
    }

    /// `update_app`, and with `new_generation` the generation bump of an endpoint move, in
    /// one transaction with the clean-up.
    pub(super) async fn write_config(&self, app: App, new_generation: bool) -> StoreResult<App> {
        let now = self.clock.now()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let cur = Self::lock_app(&tx, &app.org, &app.id).await?;
        let mut rec = AppRecord::seal(
            &App {
                incarnation: cur.incarnation,
                ..app
            },
            &self.key,
        )?;
        rec.enabled = cur.enabled;
        rec.generation = cur.generation + u64::from(new_generation);
        rec.created_at = cur.created_at;
        rec.updated_at = now;
        self.store_app(tx, rec, new_generation).await
    }

    /// `delete_app`: the app, its grants and its consent records, in one transaction.
    pub(super) async fn delete_app_now(&self, org: &str, id: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = tx
            .execute("DELETE FROM apps WHERE org = $1 AND id = $2", &[&org, &id])
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let removed = sweep_app(&tx, org, id).await?;
        tracing::debug!(org, app = id, removed, "store: app deleted");
        let change = Change::AppDeleted {
            org: org.to_owned(),
            app: id.to_owned(),
        };
        self.record_change(&tx, &change).await?;
        self.commit_publishing(tx, change).await
    }

    /// `purge_stale`: expired consent records, and every record whose app no longer has its
    /// incarnation and generation. Runs on the server.
    pub(super) async fn purge_now(&self, _only: Option<()>) -> StoreResult<usize> {
        let now = i64::try_from(self.clock.now()?).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let mut removed = 0;
        for table in ["consent_tickets", "consent_pending"] {
            removed += client
                .execute(
                    &format!(
                        "DELETE FROM {table} c WHERE c.expires_at <= $1 OR NOT EXISTS \
                         (SELECT 1 FROM apps a WHERE a.org = c.org AND a.id = c.app \
                          AND a.incarnation = c.incarnation AND a.generation = c.generation)"
                    ),
                    &[&now],
                )
                .await
                .map_err(pg)?;
        }
        removed += client
            .execute(
                "DELETE FROM tokens t WHERE NOT EXISTS \
                 (SELECT 1 FROM apps a WHERE a.org = t.org AND a.id = t.app \
                  AND a.incarnation = t.incarnation AND a.generation = t.generation)",
                &[],
            )
            .await
            .map_err(pg)?;
        removed += client
            .execute(
                "DELETE FROM token_revocations WHERE expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(pg)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// `revoke_agent`: never moves an agent's revocation time backwards.
    pub(super) async fn revoke_agent_now(&self, agent: &str) -> StoreResult<AgentRevocation> {
        let now = self.clock.now_nanos()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("agent/{agent}")],
        )
        .await
        .map_err(pg)?;
        let previous = read_revocation(&*tx, agent).await?;
        let revocation = AgentRevocation {
            agent: agent.to_owned(),
            revoked_at_ns: previous.map_or(now, |p| p.revoked_at_ns.max(now)),
        };
        tx.execute(
            "INSERT INTO agent_revocations (agent, rec) VALUES ($1, $2) \
             ON CONFLICT (agent) DO UPDATE SET rec = EXCLUDED.rec",
            &[
                &agent,
                &record_text(&AgentRevocationRecord::new(&revocation))?,
            ],
        )
        .await
        .map_err(pg)?;
        let change = Change::AgentRevoked {
            agent: agent.to_owned(),
        };
        self.record_change(&tx, &change).await?;
        self.commit_publishing(tx, change).await?;
        Ok(revocation)
    }

    /// `get_agent_revocation`.
    pub(super) async fn agent_revocation(
        &self,
        agent: &str,
    ) -> StoreResult<Option<AgentRevocation>> {
        read_revocation(&**self.client().await?, agent).await
    }

    /// `list_agent_revocations`, by agent ID.
    pub(super) async fn agent_revocations(&self) -> StoreResult<Vec<AgentRevocation>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT agent, rec FROM agent_revocations ORDER BY agent",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| AgentRevocationRecord::decode(r.get(0), r.get::<_, &str>(1).as_bytes()))
            .collect()
    }
}

/// Removes the grants and consent records of app `(org, id)` that its current incarnation
/// and generation (none, after a delete) no longer reach, inside `tx`.
async fn sweep_app(tx: &Transaction<'_>, org: &str, id: &str) -> StoreResult<u64> {
    let current = PgStore::app_version_locked(tx, org, id).await?;
    // A deleted app keeps nothing: (0, 0) with no match is as good as any pair.
    let (inc, generation) = current.map_or((0, 0), |(i, g)| (to_db(i), to_db(g)));
    let mut removed = 0;
    for table in ["tokens", "consent_tickets", "consent_pending"] {
        removed += tx
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE org = $1 AND app = $2 \
                     AND (incarnation, generation) <> ($3, $4)"
                ),
                &[&org, &id, &inc, &generation],
            )
            .await
            .map_err(pg)?;
    }
    Ok(removed)
}

/// The stored revocation of `agent`, read through `db`: a pooled client, or a transaction
/// that locked the agent first.
async fn read_revocation(
    db: &impl tokio_postgres::GenericClient,
    agent: &str,
) -> StoreResult<Option<AgentRevocation>> {
    db.query_opt(
        "SELECT rec FROM agent_revocations WHERE agent = $1",
        &[&agent],
    )
    .await
    .map_err(pg)?
    .map(|r| AgentRevocationRecord::decode(agent, r.get::<_, &str>(0).as_bytes()))
    .transpose()
}
