//! The shared [`Store`]: PostgreSQL, for several tollgate replicas on one database.
//!
//! Each table holds the same versioned JSON records the sled store writes (the `record`
//! layer: secrets sealed with the record's key as associated data, tickets and states only
//! hashed), plus plain columns for what queries select on (org, app, incarnation,
//! generation, version, expiry). The database never sees a secret in the clear.
//!
//! Every method is one transaction on a pooled connection (deadpool, `Verified` recycling).
//! Writes a cache depends on append a row to `changes` and `NOTIFY` its sequence number in
//! the same transaction, then publish to this process's [`ChangeFeed`] before returning;
//! the `listen` task feeds the same feed with other replicas' changes. Single-use records
//! are consumed with `DELETE … RETURNING`; grant writes are a compare-and-swap on `version`
//! under a per-grant transaction lock.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::changes::{Change, ChangeFeed, Changes};
use super::model::{
    random_u64, App, AuditEvent, Authorization, ConsentTicket, PendingAuthorization, TokenSet,
};
use super::record::KEY_CHECK_NAME;
use super::record::{
    decode, encode, AppRecord, AuditRecord, KeyCheckRecord, TokenKey, TokenRecord,
};
use super::seal::StoreKey;
use super::{AgentRevocation, RefreshLease, Store, StoreError, StoreResult, TokenRevocation};
use crate::clock::Clock;
pub(crate) use rows::pg;
use rows::{app_from_row, from_db, record_text, to_db};

mod apps;
mod audit_query;
mod consent;
mod grant_health;
mod health;
mod import;
mod lease;
mod listen;
mod replicas;
mod reseal;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod token_revocations;
mod tokens;

/// Connections in the pool, per process.
const POOL_SIZE: usize = 16;

/// Longest wait for a pooled connection (all busy, or the server unreachable), so a request
/// that needs the database fails instead of hanging.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `NOTIFY` channel change sequence numbers travel on.
const CHANNEL: &str = "tollgate_changes";

/// The PostgreSQL-backed store. Open it once per process and share it (`Arc<dyn Store>`);
/// any number of processes may open the same database.
pub struct PgStore {
    /// Pooled connections for every method.
    pool: Pool,
    /// Seals and opens secrets.
    key: StoreKey,
    /// Expiry and timestamps; injectable for tests.
    clock: Clock,
    /// Change events for caches: this process's writes, and other replicas' from `listen`.
    changes: Arc<ChangeFeed>,
    /// `changes` sequence numbers already published here (this process's own writes), so
    /// the listener does not publish them twice; bounded by the listener's window.
    own: Arc<Mutex<BTreeSet<i64>>>,
    /// This process's name on the refresh leases it holds (random per open).
    replica: String,
    /// Stops the listener task when the store is dropped.
    _listener: DropGuard,
    /// The last answer of [`Store::ping`], reused briefly (`health`).
    probe: health::Probe,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url`, applies pending migrations, checks the store key
    /// against the one the database was written with, and starts the change listener.
    pub async fn open(url: &str, key: StoreKey) -> StoreResult<PgStore> {
        Self::open_with_clock(url, key, Clock::system()).await
    }

    /// Checks that `url` is a connection URL tollgate can use, without connecting; the
    /// message never repeats the URL.
    pub fn check_url(url: &str) -> Result<(), String> {
        match schema::config(url) {
            Ok(_) => Ok(()),
            Err(StoreError::Io(m)) => Err(m),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Like [`PgStore::open`], with a clock for timestamps and expiry (tests).
    pub async fn open_with_clock(url: &str, key: StoreKey, clock: Clock) -> StoreResult<PgStore> {
        Self::open_config(schema::config(url)?, key, clock).await
    }

    /// Opens with a parsed configuration.
    pub(crate) async fn open_config(
        config: tokio_postgres::Config,
        key: StoreKey,
        clock: Clock,
    ) -> StoreResult<PgStore> {
        let tls = schema::tls()?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Io(format!("postgres pool: {e}")))?;
        let stop = CancellationToken::new();
        let store = PgStore {
            pool,
            key,
            clock,
            changes: Arc::default(),
            own: Arc::default(),
            replica: super::model::random_id()?,
            _listener: stop.clone().drop_guard(),
            probe: health::Probe::default(),
        };
        store.migrate().await?;
        store.check_key().await?;
        let start = store
            .client()
            .await?
            .query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])
            .await
            .map_err(pg)?
            .get::<_, i64>(0);
        let listener = listen::Listener {
            config,
            tls,
            feed: store.changes.clone(),
            own: store.own.clone(),
            last: start,
        };
        tokio::spawn(listener.run(stop));
        Ok(store)
    }

    /// A pooled connection.
    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(health::pool_error)
    }

    /// Verifies the key-check record, writing it on first open.
    async fn check_key(&self) -> StoreResult<()> {
        let fresh = String::from_utf8(encode(&KeyCheckRecord::seal(&self.key)?)?)
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO meta (k, rec) VALUES ('key-check', $1) ON CONFLICT DO NOTHING",
                &[&fresh],
            )
            .await
            .map_err(pg)?;
        let stored: String = client
            .query_one("SELECT rec FROM meta WHERE k = 'key-check'", &[])
            .await
            .map_err(pg)?
            .get(0);
        KeyCheckRecord::verify(stored.as_bytes(), &self.key).map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt {
                record: KEY_CHECK_NAME.into(),
                reason,
            },
            e => e,
        })
    }

    /// Appends `change` to the `changes` table and notifies listeners, inside `tx`; returns
    /// its sequence number, already marked as this process's own.
    async fn record_change(&self, tx: &Transaction<'_>, change: &Change) -> StoreResult<i64> {
        let (kind, org, app, user, agent): (&str, _, _, _, _) = match change {
            Change::AppChanged { org, app } => ("app_changed", Some(org), Some(app), None, None),
            Change::AppDeleted { org, app } => ("app_deleted", Some(org), Some(app), None, None),
            Change::GrantChanged { org, app, user } => {
                ("grant_changed", Some(org), Some(app), Some(user), None)
            }
            Change::GrantDeleted { org, app, user } => {
                ("grant_deleted", Some(org), Some(app), Some(user), None)
            }
            Change::AgentRevoked { agent } => ("agent_revoked", None, None, None, Some(agent)),
            Change::TokensRevoked => ("tokens_revoked", None, None, None, None),
        };
        let seq: i64 = tx
            .query_one(
                "INSERT INTO changes (kind, org, app, usr, agent) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING seq",
                &[&kind, &org, &app, &user, &agent],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])
            .await
            .map_err(pg)?;
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq);
        Ok(seq)
    }

    /// Commits `tx` and then publishes `change` here.
    async fn commit_publishing(&self, tx: Transaction<'_>, change: Change) -> StoreResult<()> {
        tx.commit().await.map_err(pg)?;
        self.changes.publish(change);
        Ok(())
    }

    /// The current (incarnation, generation) of an app, locking its row against a reset for
    /// the rest of `tx` (`FOR SHARE`).
    async fn app_version_locked(
        tx: &Transaction<'_>,
        org: &str,
        app: &str,
    ) -> StoreResult<Option<(u64, u64)>> {
        Ok(tx
            .query_opt(
                "SELECT incarnation, generation FROM apps WHERE org = $1 AND id = $2 FOR SHARE",
                &[&org, &app],
            )
            .await
            .map_err(pg)?
            .map(|r| (from_db(r.get(0)), from_db(r.get(1)))))
    }

    /// The current (incarnation, generation) of an app.
    async fn current_version(&self, org: &str, app: &str) -> StoreResult<Option<(u64, u64)>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT incarnation, generation FROM apps WHERE org = $1 AND id = $2",
                &[&org, &app],
            )
            .await
            .map_err(pg)?
            .map(|r| (from_db(r.get(0)), from_db(r.get(1)))))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_app(&self, app: App) -> StoreResult<App> {
        let now = self.clock.now()?;
        let app = App {
            incarnation: random_u64()?,
            generation: 1,
            enabled: true,
            created_at: now,
            updated_at: now,
            ..app
        };
        let rec = record_text(&AppRecord::seal(&app, &self.key)?)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "INSERT INTO apps (org, id, incarnation, generation, rec) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&app.org, &app.id, &to_db(app.incarnation), &1i64, &rec],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::Conflict);
        }
        let change = Change::AppChanged {
            org: app.org.clone(),
            app: app.id.clone(),
        };
        self.record_change(&tx, &change).await?;
        self.commit_publishing(tx, change).await?;
        Ok(app)
    }

    async fn get_app(&self, org: &str, id: &str) -> StoreResult<Option<App>> {
        self.client()
            .await?
            .query_opt(
                "SELECT rec FROM apps WHERE org = $1 AND id = $2",
                &[&org, &id],
            )
            .await
            .map_err(pg)?
            .map(|r| app_from_row(org, id, r.get(0))?.open(&self.key))
            .transpose()
    }

    async fn list_apps(&self, org: &str) -> StoreResult<Vec<App>> {
        self.select_apps(
            "SELECT org, id, rec FROM apps WHERE org = $1 ORDER BY id",
            &[&org],
        )
        .await
    }

    async fn list_all_apps(&self) -> StoreResult<Vec<App>> {
        self.select_apps("SELECT org, id, rec FROM apps ORDER BY org, id", &[])
            .await
    }

    async fn update_app(&self, app: App) -> StoreResult<App> {
        self.write_config(app, false).await
    }

    async fn set_app_enabled(&self, org: &str, id: &str, enabled: bool) -> StoreResult<App> {
        let now = self.clock.now()?;
        self.modify_app(org, id, false, |rec| {
            rec.enabled = enabled;
            rec.updated_at = now;
        })
        .await
    }

    async fn reset_app(&self, org: &str, id: &str) -> StoreResult<App> {
        let now = self.clock.now()?;
        self.modify_app(org, id, true, |rec| {
            rec.generation += 1;
            rec.updated_at = now;
        })
        .await
    }

    async fn delete_app(&self, org: &str, id: &str) -> StoreResult<()> {
        self.delete_app_now(org, id).await
    }

    async fn get_token(
        &self,
        org: &str,
        app: &str,
        incarnation: u64,
        generation: u64,
        user: &str,
    ) -> StoreResult<Option<TokenSet>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT t.rec FROM tokens t JOIN apps a ON a.org = t.org AND a.id = t.app \
                 AND a.incarnation = t.incarnation AND a.generation = t.generation \
                 WHERE t.org = $1 AND t.app = $2 AND t.incarnation = $3 AND t.generation = $4 \
                 AND t.usr = $5",
                &[&org, &app, &to_db(incarnation), &to_db(generation), &user],
            )
            .await
            .map_err(pg)?;
        let tk = TokenKey {
            org: org.to_owned(),
            app: app.to_owned(),
            incarnation,
            generation,
            user: user.to_owned(),
        };
        row.map(|r| TokenRecord::decode(&tk, r.get::<_, &str>(0).as_bytes())?.open(&self.key))
            .transpose()
    }

    async fn put_token_if_current(&self, token: TokenSet, incarnation: u64) -> StoreResult<bool> {
        Ok(self.write_token(token, incarnation, false).await?.is_some())
    }

    async fn replace_token_if_current(
        &self,
        token: TokenSet,
        incarnation: u64,
    ) -> StoreResult<Option<TokenSet>> {
        self.write_token(token, incarnation, true).await
    }

    async fn delete_token(&self, org: &str, app: &str, user: &str) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let (inc, generation) = Self::app_version_locked(&tx, org, app)
            .await?
            .ok_or(StoreError::NotFound)?;
        let n = tx
            .execute(
                "DELETE FROM tokens WHERE org = $1 AND app = $2 AND incarnation = $3 \
                 AND generation = $4 AND usr = $5",
                &[&org, &app, &to_db(inc), &to_db(generation), &user],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Ok(false);
        }
        let change = Change::GrantDeleted {
            org: org.to_owned(),
            app: app.to_owned(),
            user: user.to_owned(),
        };
        self.record_change(&tx, &change).await?;
        self.commit_publishing(tx, change).await?;
        Ok(true)
    }

    async fn list_tokens(&self, org: &str, app: &str) -> StoreResult<Vec<TokenSet>> {
        self.current_token_records(org, app)
            .await?
            .into_iter()
            .map(|r| r.open(&self.key))
            .collect()
    }

    async fn list_authorizations(&self, org: &str, app: &str) -> StoreResult<Vec<Authorization>> {
        Ok(self
            .current_token_records(org, app)
            .await?
            .into_iter()
            .filter(TokenRecord::is_live)
            .map(TokenRecord::authorization)
            .collect())
    }

    async fn count_authorizations(&self, org: &str, app: &str) -> StoreResult<usize> {
        Ok(self.list_authorizations(org, app).await?.len())
    }

    async fn issue_ticket(&self, ticket: ConsentTicket) -> StoreResult<ConsentTicket> {
        self.issue_ticket_now(ticket).await
    }

    async fn get_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        self.get_ticket_now(id).await
    }

    async fn take_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        self.take_ticket_now(id).await
    }

    async fn put_pending(&self, pending: PendingAuthorization) -> StoreResult<()> {
        self.put_pending_now(pending).await
    }

    async fn take_pending(&self, state: &str) -> StoreResult<Option<PendingAuthorization>> {
        self.take_pending_now(state).await
    }

    async fn append_audit(&self, event: AuditEvent) -> StoreResult<AuditEvent> {
        let client = self.client().await?;
        let seq: i64 = client
            .query_one("SELECT nextval('audit_seq')", &[])
            .await
            .map_err(pg)?
            .get(0);
        let event = AuditEvent {
            at: self.clock.now()?,
            seq: from_db(seq),
            ..event
        };
        let rec = record_text(&AuditRecord::new(&event))?;
        client
            .execute(
                "INSERT INTO audit (org, seq, rec, at) VALUES ($1, $2, $3, $4)",
                &[&event.org, &seq, &rec, &to_db(event.at)],
            )
            .await
            .map_err(pg)?;
        Ok(event)
    }

    async fn list_audit(&self, org: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, rec FROM audit WHERE org = $1 ORDER BY seq DESC LIMIT $2",
                &[&org, &limit],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let name = format!("audit/{org}/{}", r.get::<_, i64>(0));
                let rec: AuditRecord = decode(&name, r.get::<_, &str>(1).as_bytes())?;
                Ok(rec.into_event())
            })
            .collect()
    }

    async fn purge_stale(&self) -> StoreResult<usize> {
        self.purge_now(None).await
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every method commits before it returns; PostgreSQL made the commit durable.
        Ok(())
    }

    fn subscribe(&self) -> Changes {
        self.changes.subscribe()
    }

    async fn update_app_new_generation(&self, app: App) -> StoreResult<App> {
        self.write_config(app, true).await
    }

    async fn revoke_agent(&self, agent: &str) -> StoreResult<AgentRevocation> {
        self.revoke_agent_now(agent).await
    }

    async fn get_agent_revocation(&self, agent: &str) -> StoreResult<Option<AgentRevocation>> {
        self.agent_revocation(agent).await
    }

    async fn list_agent_revocations(&self) -> StoreResult<Vec<AgentRevocation>> {
        self.agent_revocations().await
    }

    async fn revoke_tokens(&self, revocation: TokenRevocation) -> StoreResult<TokenRevocation> {
        self.revoke_tokens_now(revocation).await
    }

    async fn list_token_revocations(&self) -> StoreResult<Vec<TokenRevocation>> {
        self.token_revocations().await
    }

    async fn update_grant_health(
        &self,
        grant: &super::GrantRef,
        update: &super::HealthUpdate,
    ) -> StoreResult<Option<(super::GrantHealth, super::GrantHealth)>> {
        self.update_health(grant, update).await
    }

    async fn query_audit(&self, query: &super::AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.query_audit_now(query).await
    }

    async fn acquire_refresh_lease(
        &self,
        token: &TokenSet,
        incarnation: u64,
        ttl: std::time::Duration,
    ) -> StoreResult<RefreshLease> {
        self.acquire_lease(token, incarnation, ttl).await
    }

    async fn release_refresh_lease(&self, token: &TokenSet, incarnation: u64) -> StoreResult<()> {
        self.release_lease(token, incarnation).await
    }

    async fn release_all_refresh_leases(&self) -> StoreResult<u64> {
        self.release_own_leases().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_now().await
    }

    async fn seal_usage(&self) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        self.seal_usage_rows().await
    }
    async fn reseal_progress(&self) -> StoreResult<Option<super::ResealProgress>> {
        self.reseal_progress_row().await
    }
    async fn start_reseal(&self, target: &str) -> StoreResult<super::ResealProgress> {
        self.start_reseal_row(target).await
    }
    async fn reseal_batch(
        &self,
        limit: usize,
        owner: &str,
    ) -> StoreResult<Option<super::ResealProgress>> {
        self.reseal_batch_rows(limit, owner).await
    }
}
