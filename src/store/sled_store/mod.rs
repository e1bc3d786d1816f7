//! The embedded [`Store`]: sled 0.34, one tree per record kind (see `record` for the key
//! layout), opened once per process.
//!
//! Atomicity comes from sled transactions, which in 0.34 run under a global lock and are
//! serializable across trees: `put_token_if_current` checks the app and writes the token in
//! one transaction over the `apps` and `tokens` trees, so a reset that commits first makes the
//! write fail, and one that commits later sweeps the token away.
//!
//! Clean-up after a reset or delete is a separate pass after the app's transaction. It is
//! safe without a transaction because staleness only grows: a record whose (incarnation,
//! generation) is not the app's current one, read *after* the record was seen, can never
//! become current again (generations only go up; incarnations are random per creation; and
//! nothing writes a record for a non-current pair).
//!
//! sled calls on one record are memory-speed and are made directly from the async methods;
//! flushes (which write to disk) go through sled's own thread pool with `flush_async`, and
//! sweeps (which walk whole trees) run on a blocking thread (`sweep`), never on a runtime
//! worker.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, Transactional,
};
use sled::{IVec, Tree};

use super::changes::{Change, ChangeFeed, Changes};
use super::model::{
    random_u64, App, AuditEvent, Authorization, ConsentTicket, PendingAuthorization, TokenSet,
};
use super::record::{
    app_key, app_org_prefix, audit_key, audit_name, audit_org_prefix, decode, encode, lookup_hash,
    parse_app_key, token_gen_prefix, token_key, AppRecord, AuditRecord, Kind, PendingRecord,
    TokenKey, TokenRecord,
};
use super::seal::StoreKey;
use super::{AgentRevocation, Store, StoreError, StoreResult, TokenRevocation};
use crate::clock::Clock;

mod consent;
mod export;
mod migrate;
mod open;
mod replicas;
mod reseal;
mod sweep;
use sweep::off_runtime;
mod agents;
mod audit_query;
mod grant_health;
#[cfg(test)]
mod tests;
mod token_revocations;

/// Tree names. Changing one orphans existing data, so they are fixed here.
const TREE_APPS: &str = "apps";
const TREE_TOKENS: &str = "tokens";
const TREE_TICKETS: &str = "consent_tickets";
const TREE_TICKET_OWNERS: &str = "consent_owners";
const TREE_PENDING: &str = "consent_pending";
const TREE_AUDIT: &str = "audit";
const TREE_META: &str = "meta";

/// The sled-backed store. Open it once per process and share it (`Arc<dyn Store>`): sled
/// locks the directory, so a second open, in this process or another, fails.
pub struct SledStore {
    /// The database, for flushes and id generation.
    db: sled::Db,
    /// `org ‖ id` → app.
    apps: Tree,
    /// `org ‖ app ‖ incarnation ‖ generation ‖ user` → token set.
    tokens: Tree,
    /// SHA-256 of a ticket id → consent ticket (its id sealed).
    tickets: Tree,
    /// `org ‖ app ‖ user` → the hash of its one live ticket, so a repeated `401` repeats it.
    ticket_owners: Tree,
    /// SHA-256 of a state → pending authorization.
    pending: Tree,
    /// `org ‖ seq` → audit event.
    audit: Tree,
    /// Seals and opens secrets.
    key: StoreKey,
    /// Expiry and timestamps; injectable for tests.
    clock: Clock,
    /// Where the database lives, for messages.
    path: PathBuf,
    /// Change events for caches, published after each write commits.
    changes: ChangeFeed,
    /// The replicas table: this process alone, in memory (`replicas.rs`).
    replicas: crate::store::replicas::LocalReplicas,
}

impl fmt::Debug for SledStore {
    // sled's own `Debug` for trees walks their contents; print only where the store is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(format!("sled: {e}"))
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => io(e),
    }
}

/// The (incarnation, generation) of the app stored as `bytes` under `(org, id)`.
fn app_version(org: &str, id: &str, bytes: Option<IVec>) -> StoreResult<Option<(u64, u64)>> {
    bytes
        .map(|b| AppRecord::decode(org, id, &b).map(|r| (r.incarnation, r.generation)))
        .transpose()
}

impl SledStore {
    /// Writes `token` if the app still has `incarnation` and the token's generation, in one
    /// transaction, and sets its version: with `replace_only` (a refresh), only over the
    /// user's stored token set of version `token.version`, which it moves one up; otherwise
    /// (a consent) over whatever is stored, one past its version (1 if none). Returns the
    /// token set as stored, or `None` if the write was refused.
    async fn write_token(
        &self,
        mut token: TokenSet,
        incarnation: u64,
        replace_only: bool,
    ) -> StoreResult<Option<TokenSet>> {
        let sealed = TokenRecord::seal(&token, incarnation, &self.key)?;
        let tk = TokenRecord::key_of(&token, incarnation);
        let tkey = token_key(
            &token.org,
            &token.app,
            incarnation,
            token.generation,
            &token.user,
        );
        let akey = app_key(&token.org, &token.app);
        let written = (&self.apps, &self.tokens)
            .transaction(|(apps, tokens)| {
                let current = match app_version(&token.org, &token.app, apps.get(&akey)?) {
                    Ok(current) => current,
                    Err(e) => return abort(e),
                };
                if current != Some((incarnation, token.generation)) {
                    return Ok(None);
                }
                let mut rec = sealed.clone();
                let stored = match tokens.get(tkey.as_slice())? {
                    None => None,
                    Some(bytes) => match TokenRecord::decode(&tk, &bytes) {
                        Ok(stored) => {
                            rec.keep_last_used(&stored);
                            Some(stored.version())
                        }
                        Err(e) if replace_only => return abort(e),
                        // A consent replaces an unreadable grant.
                        Err(_) => Some(0),
                    },
                };
                let version = match (replace_only, stored) {
                    (true, Some(v)) if v == token.version => v + 1,
                    (true, _) => return Ok(None),
                    (false, v) => v.map_or(1, |v| v + 1),
                };
                rec.set_version(version);
                let bytes = match encode(&rec) {
                    Ok(b) => b,
                    Err(e) => return abort(e),
                };
                tokens.insert(tkey.as_slice(), bytes)?;
                Ok(Some(version))
            })
            .map_err(tx_error)?;
        let Some(version) = written else {
            return Ok(None);
        };
        self.durable().await?;
        self.changes.publish(Change::GrantChanged {
            org: token.org.clone(),
            app: token.app.clone(),
            user: token.user.clone(),
        });
        token.version = version;
        Ok(Some(token))
    }

    async fn durable(&self) -> StoreResult<()> {
        self.db.flush_async().await.map(|_| ()).map_err(io)
    }

    /// Publishes that the app was created or changed.
    fn app_changed(&self, org: &str, id: &str) {
        self.changes.publish(Change::AppChanged {
            org: org.to_owned(),
            app: id.to_owned(),
        });
    }

    /// The current (incarnation, generation) of an app.
    fn current_version(&self, org: &str, id: &str) -> StoreResult<Option<(u64, u64)>> {
        app_version(org, id, self.apps.get(app_key(org, id)).map_err(io)?)
    }

    /// Reads an app record, modifies it, and writes it back, in one transaction. Returns the
    /// record as written, secrets still sealed: callers open it last, so an unreadable secret
    /// cannot stop the clean-up that follows a reset.
    fn modify_app(
        &self,
        org: &str,
        id: &str,
        change: impl Fn(&mut AppRecord),
    ) -> StoreResult<AppRecord> {
        let key = app_key(org, id);
        self.apps
            .transaction(|apps| {
                let Some(bytes) = apps.get(&key)? else {
                    return abort(StoreError::NotFound);
                };
                let mut rec = match AppRecord::decode(org, id, &bytes) {
                    Ok(rec) => rec,
                    Err(e) => return abort(e),
                };
                change(&mut rec);
                let bytes = match encode(&rec) {
                    Ok(b) => b,
                    Err(e) => return abort(e),
                };
                apps.insert(key.as_slice(), bytes)?;
                Ok(rec)
            })
            .map_err(tx_error)
    }

    fn decode_apps(&self, iter: sled::Iter) -> StoreResult<Vec<App>> {
        let mut apps = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(io)?;
            let (org, id) = parse_app_key(&k).ok_or_else(|| unparsable_key(TREE_APPS))?;
            apps.push(AppRecord::decode(&org, &id, &v)?.open(&self.key)?);
        }
        apps.sort_by(|a, b| (&a.org, &a.id).cmp(&(&b.org, &b.id)));
        Ok(apps)
    }

    /// Decoded token records of the app's current incarnation and generation.
    fn current_token_records(&self, org: &str, app: &str) -> StoreResult<Vec<TokenRecord>> {
        let (inc, generation) = self
            .current_version(org, app)?
            .ok_or(StoreError::NotFound)?;
        let mut out = Vec::new();
        for item in self
            .tokens
            .scan_prefix(token_gen_prefix(org, app, inc, generation))
        {
            let (k, v) = item.map_err(io)?;
            let tk = TokenKey::parse(&k).ok_or_else(|| unparsable_key(TREE_TOKENS))?;
            out.push((tk.user.clone(), TokenRecord::decode(&tk, &v)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    /// `update_app`, and with `new_generation` also the generation bump of an endpoint move
    /// in the same transaction, then the clean-up a reset does.
    async fn write_config(&self, app: App, new_generation: bool) -> StoreResult<App> {
        let (org, id) = (app.org.clone(), app.id.clone());
        let current = self.apps.get(app_key(&org, &id)).map_err(io)?;
        let Some((incarnation, _)) = app_version(&org, &id, current)? else {
            return Err(StoreError::NotFound);
        };
        // The secrets are sealed for this incarnation; the transaction below refuses the write
        // if the app was deleted and re-created meanwhile.
        let sealed = AppRecord::seal(&App { incarnation, ..app }, &self.key)?;
        let now = self.clock.now()?;
        let rec = self
            .apps
            .transaction(|apps| {
                let key = app_key(&org, &id);
                let Some(bytes) = apps.get(&key)? else {
                    return abort(StoreError::NotFound);
                };
                let cur = match AppRecord::decode(&org, &id, &bytes) {
                    Ok(cur) => cur,
                    Err(e) => return abort(e),
                };
                if cur.incarnation != incarnation {
                    return abort(StoreError::NotFound);
                }
                let mut rec = sealed.clone();
                rec.enabled = cur.enabled;
                rec.generation = cur.generation + u64::from(new_generation);
                rec.created_at = cur.created_at;
                rec.updated_at = now;
                let bytes = match encode(&rec) {
                    Ok(b) => b,
                    Err(e) => return abort(e),
                };
                apps.insert(key, bytes)?;
                Ok(rec)
            })
            .map_err(tx_error)?;
        self.durable().await?;
        self.app_changed(&org, &id);
        if new_generation {
            let removed = self.sweep_app(&org, &id).await?;
            tracing::debug!(org, app = id, removed, "store: app endpoint moved");
            self.durable().await?;
        }
        rec.open(&self.key)
    }
}

fn unparsable_key(tree: &str) -> StoreError {
    StoreError::Corrupt {
        record: format!("{tree}/<unparsable key>"),
        reason: "key not written by this build".into(),
    }
}

#[async_trait]
impl Store for SledStore {
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
        let bytes = encode(&AppRecord::seal(&app, &self.key)?)?;
        let key = app_key(&app.org, &app.id);
        self.apps
            .transaction(|apps| {
                if apps.get(&key)?.is_some() {
                    return abort(StoreError::Conflict);
                }
                apps.insert(key.as_slice(), bytes.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await?;
        self.app_changed(&app.org, &app.id);
        Ok(app)
    }

    async fn get_app(&self, org: &str, id: &str) -> StoreResult<Option<App>> {
        self.apps
            .get(app_key(org, id))
            .map_err(io)?
            .map(|b| AppRecord::decode(org, id, &b)?.open(&self.key))
            .transpose()
    }

    async fn list_apps(&self, org: &str) -> StoreResult<Vec<App>> {
        self.decode_apps(self.apps.scan_prefix(app_org_prefix(org)))
    }

    async fn list_all_apps(&self) -> StoreResult<Vec<App>> {
        self.decode_apps(self.apps.iter())
    }

    async fn update_app(&self, app: App) -> StoreResult<App> {
        self.write_config(app, false).await
    }

    async fn set_app_enabled(&self, org: &str, id: &str, enabled: bool) -> StoreResult<App> {
        let now = self.clock.now()?;
        let rec = self.modify_app(org, id, |rec| {
            rec.enabled = enabled;
            rec.updated_at = now;
        })?;
        self.durable().await?;
        self.app_changed(org, id);
        rec.open(&self.key)
    }

    async fn reset_app(&self, org: &str, id: &str) -> StoreResult<App> {
        let now = self.clock.now()?;
        let rec = self.modify_app(org, id, |rec| {
            rec.generation += 1;
            rec.updated_at = now;
        })?;
        // The old generation is already unreachable; make the reset durable before the
        // clean-up so a crash in between leaves only garbage that `purge_stale` removes.
        self.durable().await?;
        self.app_changed(org, id);
        let removed = self.sweep_app(org, id).await?;
        tracing::debug!(org, app = id, removed, "store: app reset");
        self.durable().await?;
        rec.open(&self.key)
    }

    async fn delete_app(&self, org: &str, id: &str) -> StoreResult<()> {
        let key = app_key(org, id);
        self.apps
            .transaction(|apps| match apps.remove(key.as_slice())? {
                Some(_) => Ok(()),
                None => abort(StoreError::NotFound),
            })
            .map_err(tx_error)?;
        self.durable().await?;
        self.changes.publish(Change::AppDeleted {
            org: org.to_owned(),
            app: id.to_owned(),
        });
        let removed = self.sweep_app(org, id).await?;
        tracing::debug!(org, app = id, removed, "store: app deleted");
        self.durable().await?;
        Ok(())
    }

    async fn get_token(
        &self,
        org: &str,
        app: &str,
        incarnation: u64,
        generation: u64,
        user: &str,
    ) -> StoreResult<Option<TokenSet>> {
        if self.current_version(org, app)? != Some((incarnation, generation)) {
            return Ok(None);
        }
        let tk = TokenKey {
            org: org.to_owned(),
            app: app.to_owned(),
            incarnation,
            generation,
            user: user.to_owned(),
        };
        self.tokens
            .get(token_key(org, app, incarnation, generation, user))
            .map_err(io)?
            .map(|b| TokenRecord::decode(&tk, &b)?.open(&self.key))
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
        let akey = app_key(org, app);
        let removed = (&self.apps, &self.tokens)
            .transaction(|(apps, tokens)| {
                let (inc, generation) = match app_version(org, app, apps.get(&akey)?) {
                    Ok(Some(v)) => v,
                    Ok(None) => return abort(StoreError::NotFound),
                    Err(e) => return abort(e),
                };
                Ok(tokens
                    .remove(token_key(org, app, inc, generation, user))?
                    .is_some())
            })
            .map_err(tx_error)?;
        if removed {
            self.durable().await?;
            self.changes.publish(Change::GrantDeleted {
                org: org.to_owned(),
                app: app.to_owned(),
                user: user.to_owned(),
            });
        }
        Ok(removed)
    }

    async fn list_tokens(&self, org: &str, app: &str) -> StoreResult<Vec<TokenSet>> {
        self.current_token_records(org, app)?
            .into_iter()
            .map(|r| r.open(&self.key))
            .collect()
    }

    async fn list_authorizations(&self, org: &str, app: &str) -> StoreResult<Vec<Authorization>> {
        Ok(self
            .current_token_records(org, app)?
            .into_iter()
            .filter(TokenRecord::is_live)
            .map(TokenRecord::authorization)
            .collect())
    }

    async fn count_authorizations(&self, org: &str, app: &str) -> StoreResult<usize> {
        Ok(self.list_authorizations(org, app).await?.len())
    }

    async fn issue_ticket(&self, ticket: ConsentTicket) -> StoreResult<ConsentTicket> {
        self.issue_ticket_now(ticket)
    }

    async fn get_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        self.get_ticket_now(id)
    }

    async fn take_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        self.take_ticket_now(id)
    }

    async fn put_pending(&self, pending: PendingAuthorization) -> StoreResult<()> {
        let hash = lookup_hash(Kind::Pending, &pending.state);
        let bytes = encode(&PendingRecord::seal(&pending, &hash, &self.key)?)?;
        self.pending.insert(hash, bytes).map_err(io)?;
        Ok(())
    }

    async fn take_pending(&self, state: &str) -> StoreResult<Option<PendingAuthorization>> {
        let hash = lookup_hash(Kind::Pending, state);
        let taken = self.take_consent(&self.pending, &hash, |b| PendingRecord::decode(&hash, b))?;
        taken.map(|r| r.open(state, &hash, &self.key)).transpose()
    }

    async fn append_audit(&self, event: AuditEvent) -> StoreResult<AuditEvent> {
        let event = AuditEvent {
            at: self.clock.now()?,
            seq: self.db.generate_id().map_err(io)?,
            ..event
        };
        let bytes = encode(&AuditRecord::new(&event))?;
        self.audit
            .insert(audit_key(&event.org, event.seq), bytes)
            .map_err(io)?;
        // Admin actions are rare and their trail should survive a crash with them.
        self.durable().await?;
        Ok(event)
    }

    async fn list_audit(&self, org: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        let mut out = Vec::new();
        for item in self
            .audit
            .scan_prefix(audit_org_prefix(org))
            .rev()
            .take(limit)
        {
            let (k, v) = item.map_err(io)?;
            let rec: AuditRecord = decode(&audit_name(&k), &v)?;
            out.push(rec.into_event());
        }
        Ok(out)
    }

    async fn purge_stale(&self) -> StoreResult<usize> {
        let sweeper = self.sweeper();
        let removed =
            off_runtime(move || sweeper.purge()).await? + self.purge_token_revocations().await?;
        if removed > 0 {
            self.durable().await?;
        }
        Ok(removed)
    }

    async fn flush(&self) -> StoreResult<()> {
        self.durable().await
    }

    fn subscribe(&self) -> Changes {
        self.changes.subscribe()
    }

    // ----- endpoint moves and agent revocations (agents.rs) -----

    async fn update_app_new_generation(&self, app: App) -> StoreResult<App> {
        self.write_config(app, true).await
    }

    async fn revoke_agent(&self, agent: &str) -> StoreResult<AgentRevocation> {
        self.revoke_agent_now(agent).await
    }

    async fn get_agent_revocation(&self, agent: &str) -> StoreResult<Option<AgentRevocation>> {
        self.agent_revocation(agent)
    }

    async fn list_agent_revocations(&self) -> StoreResult<Vec<AgentRevocation>> {
        self.agent_revocations()
    }

    // ----- caller-token revocations (token_revocations.rs) -----

    async fn revoke_tokens(&self, revocation: TokenRevocation) -> StoreResult<TokenRevocation> {
        self.revoke_tokens_now(revocation).await
    }

    async fn list_token_revocations(&self) -> StoreResult<Vec<TokenRevocation>> {
        self.token_revocations()
    }

    async fn seal_usage(&self) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        self.seal_usage_off_runtime().await
    }

    async fn reseal_progress(&self) -> StoreResult<Option<super::ResealProgress>> {
        self.reseal_progress_now()
    }

    async fn start_reseal(&self, target: &str) -> StoreResult<super::ResealProgress> {
        self.start_reseal_off_runtime(target).await
    }

    async fn reseal_batch(
        &self,
        limit: usize,
        owner: &str,
    ) -> StoreResult<Option<super::ResealProgress>> {
        self.reseal_batch_off_runtime(limit, owner).await
    }

    async fn update_grant_health(
        &self,
        grant: &super::GrantRef,
        update: &super::HealthUpdate,
    ) -> StoreResult<Option<(super::GrantHealth, super::GrantHealth)>> {
        self.update_health(grant, update).await
    }

    async fn query_audit(&self, query: &crate::store::AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.query_audit_now(query)
    }
}
