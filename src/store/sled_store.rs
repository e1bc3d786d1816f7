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
//! sled calls are memory-speed and are made directly from the async methods; only flushes
//! (which write to disk) go through sled's own thread pool with `flush_async`.

use std::fmt;
use std::path::{Path, PathBuf};

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
    app_key, app_org_prefix, audit_key, audit_name, audit_org_prefix, decode, encode,
    parse_app_key, token_app_prefix, token_gen_prefix, token_key, AppRecord, AuditRecord,
    KeyCheckRecord, PendingRecord, TicketRecord, TokenKey, TokenRecord, KEY_CHECK_KEY,
};
use super::seal::StoreKey;
use super::{Store, StoreError, StoreResult};
use crate::clock::Clock;

/// Tree names. Changing one orphans existing data, so they are fixed here.
const TREE_APPS: &str = "apps";
const TREE_TOKENS: &str = "tokens";
const TREE_TICKETS: &str = "tickets";
const TREE_PENDING: &str = "pending";
const TREE_AUDIT: &str = "audit";
const TREE_META: &str = "meta";

/// sled's page cache limit. The default (1 GiB) is sized for a database server; the store
/// holds a few records per user and app, and the proxy's memory belongs to connections.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// The file sled locks inside the store directory (sled 0.34's `Config::db_path`).
const SLED_DB_FILE: &str = "db";

/// How long [`SledStore::close`] waits for sled's I/O threads to let go of the database file;
/// they finish within milliseconds, so reaching this means something else holds it.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often [`SledStore::close`] checks the lock.
const CLOSE_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// The sled-backed store. Open it once per process and share it (`Arc<dyn Store>`): sled
/// locks the directory, so a second open, in this process or another, fails.
pub struct SledStore {
    /// The database, for flushes and id generation.
    db: sled::Db,
    /// `org ‖ id` → app.
    apps: Tree,
    /// `org ‖ app ‖ incarnation ‖ generation ‖ user` → token set.
    tokens: Tree,
    /// ticket id → consent ticket.
    tickets: Tree,
    /// state → pending authorization.
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
                let stored = match tokens.get(tkey.as_slice())? {
                    None => None,
                    Some(bytes) => match TokenRecord::decode(&tk, &bytes) {
                        Ok(rec) => Some(rec.version()),
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
                let mut rec = sealed.clone();
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

    /// Opens (creating if needed) the store in directory `path`, sealing with `key`.
    ///
    /// Blocking (recovery, a clean-up pass and a flush): call it at startup, before serving.
    /// Fails with [`StoreError::Corrupt`] naming `meta/key-check` if the store was written
    /// under another key, and with [`StoreError::Io`] if another process holds it open.
    pub fn open(path: &Path, key: StoreKey) -> StoreResult<SledStore> {
        Self::open_with_clock(path, key, Clock::system())
    }

    /// Like [`SledStore::open`], with a clock for timestamps and expiry (tests).
    pub fn open_with_clock(path: &Path, key: StoreKey, clock: Clock) -> StoreResult<SledStore> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()
            .map_err(|e| open_error(path, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let meta = tree(TREE_META)?;
        let store = SledStore {
            apps: tree(TREE_APPS)?,
            tokens: tree(TREE_TOKENS)?,
            tickets: tree(TREE_TICKETS)?,
            pending: tree(TREE_PENDING)?,
            audit: tree(TREE_AUDIT)?,
            db,
            key,
            clock,
            path: path.to_path_buf(),
            changes: ChangeFeed::default(),
        };
        store.check_key(&meta)?;
        let purged = store.purge_stale_now()?;
        if purged > 0 {
            tracing::info!(
                purged,
                "store: removed stale records left from an earlier run"
            );
        }
        store.db.flush().map_err(io)?;
        Ok(store)
    }

    /// Makes every write durable and closes the store, returning once sled has released the
    /// directory lock, so the directory can be opened again at once (a restart within one
    /// process, tests).
    ///
    /// Dropping the last handle is not enough: sled's background I/O threads write buffers
    /// out on their own and each such task holds the database file until it finishes, after
    /// the flush that waited for it has returned. The lock lives as long as the file is open,
    /// so an open right after a drop could find it still held ("store locked").
    pub async fn close(self) -> StoreResult<()> {
        self.durable().await?;
        let db_file = self.path.join(SLED_DB_FILE);
        drop(self);
        let deadline = std::time::Instant::now() + CLOSE_TIMEOUT;
        loop {
            let file = std::fs::File::open(&db_file).map_err(|e| {
                StoreError::Io(format!("closing the store {}: {e}", db_file.display()))
            })?;
            // Dropping `file` releases the probe's own lock.
            match file.try_lock() {
                Ok(()) => return Ok(()),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(CLOSE_POLL).await;
                }
                Err(e) => {
                    return Err(StoreError::Io(format!(
                        "closing the store {}: the lock was not released: {e}",
                        db_file.display()
                    )))
                }
            }
        }
    }

    /// Verifies the key-check record, writing it on first open.
    fn check_key(&self, meta: &Tree) -> StoreResult<()> {
        let fresh = encode(&KeyCheckRecord::seal(&self.key)?)?;
        match meta
            .compare_and_swap(KEY_CHECK_KEY, None as Option<&[u8]>, Some(fresh))
            .map_err(io)?
        {
            Ok(()) => Ok(()),
            Err(existing) => match existing.current {
                Some(bytes) => KeyCheckRecord::verify(&bytes, &self.key),
                // Cannot happen: the swap failed because a value exists.
                None => Err(StoreError::Io("key check raced with a delete".into())),
            },
        }
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

    /// Whether a record made for `(incarnation, generation)` of an app is stale. An app that
    /// cannot be read counts as current (with a warning): clean-up must not delete what it
    /// cannot judge, nor fail because of one bad record.
    fn is_stale(&self, org: &str, app: &str, incarnation: u64, generation: u64) -> bool {
        match self.current_version(org, app) {
            Ok(current) => current != Some((incarnation, generation)),
            Err(e) => {
                tracing::warn!(error = %e, "store: cannot tell whether a record is stale");
                false
            }
        }
    }

    /// Removes token sets under `prefix` whose app no longer has their incarnation and
    /// generation. See the module docs for why this needs no transaction.
    fn sweep_tokens(&self, prefix: &[u8]) -> StoreResult<usize> {
        let mut removed = 0;
        for item in self.tokens.scan_prefix(prefix) {
            let (k, v) = item.map_err(io)?;
            let Some(tk) = TokenKey::parse(&k) else {
                tracing::warn!(tree = TREE_TOKENS, "store: skipping an unparsable key");
                continue;
            };
            if self.is_stale(&tk.org, &tk.app, tk.incarnation, tk.generation) {
                removed += remove_if_unchanged(&self.tokens, &k, v)?;
            }
        }
        Ok(removed)
    }

    /// Removes tickets and pending authorizations that expired, or whose app no longer has
    /// their incarnation and generation; limited to one app when `only` is given.
    fn sweep_consents(&self, only: Option<(&str, &str)>) -> StoreResult<usize> {
        let now = self.clock.now()?;
        let scope = |org: &str, app: &str, incarnation, generation, expires_at| {
            only.is_none_or(|o| o == (org, app))
                && (now >= expires_at || self.is_stale(org, app, incarnation, generation))
        };
        let mut removed = self.sweep_tree(&self.tickets, "ticket", |id, v| {
            TicketRecord::decode(id, v)
                .map(|r| scope(&r.org, &r.app, r.incarnation, r.generation, r.expires_at))
        })?;
        removed += self.sweep_tree(&self.pending, "pending authorization", |state, v| {
            PendingRecord::decode(state, v)
                .map(|r| scope(&r.org, &r.app, r.incarnation, r.generation, r.expires_at))
        })?;
        Ok(removed)
    }

    /// Removes the records of `tree` that `sweep` says to (undecodable ones are skipped and
    /// logged, never deleted); `what` names them in the log.
    fn sweep_tree(
        &self,
        tree: &sled::Tree,
        what: &str,
        sweep: impl Fn(&str, &[u8]) -> Result<bool, StoreError>,
    ) -> StoreResult<usize> {
        let mut removed = 0;
        for item in tree.iter() {
            let (k, v) = item.map_err(io)?;
            match sweep(&String::from_utf8_lossy(&k), &v) {
                Ok(true) => removed += remove_if_unchanged(tree, &k, v)?,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "store: skipping a {what}"),
            }
        }
        Ok(removed)
    }

    /// Cleans up after a reset or delete of one app.
    fn sweep_app(&self, org: &str, id: &str) -> StoreResult<usize> {
        Ok(
            self.sweep_tokens(&token_app_prefix(org, id))?
                + self.sweep_consents(Some((org, id)))?,
        )
    }

    fn purge_stale_now(&self) -> StoreResult<usize> {
        Ok(self.sweep_tokens(&[])? + self.sweep_consents(None)?)
    }

    /// Removes a consent record (ticket or pending) atomically with checking it, returning
    /// its decoded form only if it is unexpired and its app is still at the same incarnation
    /// and generation. A stale or expired record is removed all the same.
    fn take_consent<R>(
        &self,
        tree: &Tree,
        id: &str,
        decode: impl Fn(&[u8]) -> StoreResult<R>,
        version: impl Fn(&R) -> (&str, &str, u64, u64, u64),
    ) -> StoreResult<Option<R>> {
        let now = self.clock.now()?;
        (tree, &self.apps)
            .transaction(|(records, apps)| {
                let Some(bytes) = records.remove(id.as_bytes())? else {
                    return Ok(None);
                };
                let rec = match decode(&bytes) {
                    Ok(rec) => rec,
                    Err(e) => return abort(e),
                };
                let (org, app, inc, generation, expires_at) = version(&rec);
                if now >= expires_at {
                    return Ok(None);
                }
                let current = match app_version(org, app, apps.get(app_key(org, app))?) {
                    Ok(current) => current,
                    Err(e) => return abort(e),
                };
                Ok((current == Some((inc, generation))).then_some(rec))
            })
            .map_err(tx_error)
    }
}

/// Removes `key` if it still holds `value`; 1 if it did.
fn remove_if_unchanged(tree: &Tree, key: &[u8], value: IVec) -> StoreResult<usize> {
    let swapped = tree
        .compare_and_swap(key, Some(value), None as Option<&[u8]>)
        .map_err(io)?;
    Ok(usize::from(swapped.is_ok()))
}

fn unparsable_key(tree: &str) -> StoreError {
    StoreError::Corrupt {
        record: format!("{tree}/<unparsable key>"),
        reason: "key not written by this build".into(),
    }
}

/// Turns sled's open error into one an operator can act on.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    let text = e.to_string();
    // sled 0.34 reports a held flock only through this message (an `Other` I/O error).
    if text.contains("could not acquire lock") {
        StoreError::Io(format!(
            "{}: the store is locked by another process (is another tollgate running with this \
             data directory?)",
            path.display()
        ))
    } else {
        StoreError::Io(format!("opening the store at {}: {text}", path.display()))
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
                rec.generation = cur.generation;
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
        rec.open(&self.key)
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
        let removed = self.sweep_app(org, id)?;
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
        let removed = self.sweep_app(org, id)?;
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
            .map(TokenRecord::authorization)
            .collect())
    }

    async fn count_authorizations(&self, org: &str, app: &str) -> StoreResult<usize> {
        let (inc, generation) = self
            .current_version(org, app)?
            .ok_or(StoreError::NotFound)?;
        let mut n = 0;
        for item in self
            .tokens
            .scan_prefix(token_gen_prefix(org, app, inc, generation))
            .keys()
        {
            item.map_err(io)?;
            n += 1;
        }
        Ok(n)
    }

    async fn put_ticket(&self, ticket: ConsentTicket) -> StoreResult<()> {
        let bytes = encode(&TicketRecord::new(&ticket))?;
        self.tickets
            .insert(ticket.id.as_bytes(), bytes)
            .map_err(io)?;
        Ok(())
    }

    async fn get_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        let Some(bytes) = self.tickets.get(id.as_bytes()).map_err(io)? else {
            return Ok(None);
        };
        let rec = TicketRecord::decode(id, &bytes)?;
        if self.clock.now()? >= rec.expires_at
            || self.current_version(&rec.org, &rec.app)? != Some((rec.incarnation, rec.generation))
        {
            return Ok(None);
        }
        Ok(Some(rec.into_ticket()))
    }

    async fn take_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        let taken = self.take_consent(
            &self.tickets,
            id,
            |b| TicketRecord::decode(id, b),
            |r| (&r.org, &r.app, r.incarnation, r.generation, r.expires_at),
        )?;
        Ok(taken.map(TicketRecord::into_ticket))
    }

    async fn put_pending(&self, pending: PendingAuthorization) -> StoreResult<()> {
        let bytes = encode(&PendingRecord::seal(&pending, &self.key)?)?;
        self.pending
            .insert(pending.state.as_bytes(), bytes)
            .map_err(io)?;
        Ok(())
    }

    async fn take_pending(&self, state: &str) -> StoreResult<Option<PendingAuthorization>> {
        let taken = self.take_consent(
            &self.pending,
            state,
            |b| PendingRecord::decode(state, b),
            |r| (&r.org, &r.app, r.incarnation, r.generation, r.expires_at),
        )?;
        taken.map(|r| r.open(&self.key)).transpose()
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
        let removed = self.purge_stale_now()?;
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::contract;
    use crate::store::model::Secret;
    use crate::store::{AppConfig, ClientAuth, Handshake};

    const T0: u64 = 1_700_000_000;

    fn key_a() -> StoreKey {
        StoreKey::from_hex_text(&"a1".repeat(32)).unwrap()
    }

    fn key_b() -> StoreKey {
        StoreKey::from_hex_text(&"b2".repeat(32)).unwrap()
    }

    fn open(dir: &Path, clock: &ManualClock) -> SledStore {
        SledStore::open_with_clock(dir, key_a(), clock.clock()).unwrap()
    }

    fn fresh() -> (tempfile::TempDir, ManualClock, SledStore) {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let store = open(&tmp.path().join("store"), &clock);
        (tmp, clock, store)
    }

    fn app(org: &str, id: &str) -> App {
        let config = AppConfig {
            id: id.into(),
            name: "GitHub VISIBLE-NAME-789".into(),
            description: "Source hosting".into(),
            approval_prompt: "Allow the runner to act for you on GitHub?".into(),
            authorize_url: "https://github.com/login/oauth/authorize".into(),
            token_url: Some("https://github.com/login/oauth/access_token".into()),
            client_id: "Iv1.abc".into(),
            client_secret: Some(Secret::new("sk-PLAINTEXT-123")),
            scopes: vec!["repo".into(), "read:user".into()],
            access_token_ttl: Some(3600),
            egress_policy: "public-saas".into(),
            domains: vec!["api.github.com".into()],
            client_auth: ClientAuth::Post,
            authorize_params: BTreeMap::from([("prompt".into(), "consent".into())]),
            issuer: Some("https://github.com".into()),
            handshake: Handshake::Webhook,
            webhook: Some(
                serde_json::from_value(serde_json::json!({
                    "token": {"headers": {"X-Api-Key": "hook-PLAINTEXT-000"}}
                }))
                .unwrap(),
            ),
            ..Default::default()
        };
        App {
            // Set by the store on create; these values must be ignored.
            enabled: false,
            generation: 99,
            incarnation: 99,
            created_at: 1,
            updated_at: 1,
            ..App::new(org, config)
        }
    }

    fn token(a: &App, user: &str, access: &str) -> TokenSet {
        TokenSet {
            org: a.org.clone(),
            app: a.id.clone(),
            user: user.into(),
            generation: a.generation,
            // What the store sets on a first consent.
            version: 1,
            access_token: Secret::new(access),
            refresh_token: Some(Secret::new(format!("rt-{access}"))),
            token_type: Some("bearer".into()),
            scopes: vec!["repo".into()],
            expires_at: Some(T0 + 3600),
            obtained_at: T0,
        }
    }

    fn ticket(a: &App, user: &str, expires_at: u64) -> ConsentTicket {
        ConsentTicket::new(&a.org, user, &a.id, a.generation, a.incarnation, expires_at).unwrap()
    }

    fn pending(a: &App, user: &str, expires_at: u64) -> PendingAuthorization {
        PendingAuthorization::new(
            &a.org,
            user,
            &a.id,
            a.generation,
            a.incarnation,
            Some(Secret::new("pkce-PLAINTEXT-777")),
            "https://tollgate.example/oauth/callback",
            expires_at,
        )
        .unwrap()
    }

    async fn current(s: &SledStore, a: &App, user: &str) -> Option<TokenSet> {
        s.get_token(&a.org, &a.id, a.incarnation, a.generation, user)
            .await
            .unwrap()
    }

    fn corrupt_record(r: StoreResult<impl fmt::Debug>) -> (String, String) {
        match r {
            Err(StoreError::Corrupt { record, reason }) => (record, reason),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// Rewrites the JSON of one raw record.
    fn edit_raw(tree: &Tree, key: &[u8], f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
        f(&mut v);
        tree.insert(key, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    /// Flips one bit in the middle of a sealed base64 value.
    fn flip_sealed(v: &mut serde_json::Value) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut raw = b64.decode(v.as_str().unwrap()).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x01;
        *v = serde_json::Value::String(b64.encode(raw));
    }

    /// Raw record moves for the contract's sealing test.
    struct SledTamper {
        apps: Tree,
        tokens: Tree,
    }

    impl contract::Tamper for SledTamper {
        fn copy_app(&self, org: &str, from: &str, to: &str) {
            let raw = self.apps.get(app_key(org, from)).unwrap().unwrap();
            let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            v["id"] = to.into();
            self.apps
                .insert(app_key(org, to), serde_json::to_vec(&v).unwrap())
                .unwrap();
        }

        fn copy_grant(&self, org: &str, app: &str, from_user: &str, to_user: &str) {
            let (k, raw) = self
                .tokens
                .scan_prefix(token_app_prefix(org, app))
                .map(Result::unwrap)
                .find(|(k, _)| TokenKey::parse(k).unwrap().user == from_user)
                .unwrap();
            let tk = TokenKey::parse(&k).unwrap();
            let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            v["user"] = to_user.into();
            let to = token_key(org, app, tk.incarnation, tk.generation, to_user);
            self.tokens
                .insert(to, serde_json::to_vec(&v).unwrap())
                .unwrap();
        }
    }

    #[tokio::test]
    async fn passes_the_store_contract() {
        contract::run_all(|clock| {
            let tmp = tempfile::tempdir().unwrap();
            let store =
                SledStore::open_with_clock(&tmp.path().join("store"), key_a(), clock).unwrap();
            let tamper = SledTamper {
                apps: store.apps.clone(),
                tokens: store.tokens.clone(),
            };
            contract::Fixture {
                store: Arc::new(store),
                tamper: Box::new(tamper),
                _guard: Box::new(tmp),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn app_round_trip_sets_store_fields() {
        let (_tmp, _clock, s) = fresh();
        let created = s.create_app(app("acme", "github")).await.unwrap();
        assert!(created.enabled);
        assert_eq!(created.generation, 1);
        assert_ne!(created.incarnation, 99);
        assert_eq!((created.created_at, created.updated_at), (T0, T0));
        let got = s.get_app("acme", "github").await.unwrap().unwrap();
        assert_eq!(got, created);
        assert_eq!(
            got.client_secret.as_ref().unwrap().expose(),
            "sk-PLAINTEXT-123"
        );
        assert_eq!(got.webhook, app("acme", "github").webhook);
        assert_eq!(s.get_app("acme", "gitlab").await.unwrap(), None);
        let mut no_secrets = app("acme", "plain");
        no_secrets.config.client_secret = None;
        no_secrets.config.webhook = None;
        let created2 = s.create_app(no_secrets).await.unwrap();
        assert_eq!(s.get_app("acme", "plain").await.unwrap().unwrap(), created2);
    }

    #[tokio::test]
    async fn usable_as_a_shared_trait_object() {
        let (_tmp, _clock, s) = fresh();
        let store: Arc<dyn Store> = Arc::new(s);
        let a = store.create_app(app("acme", "github")).await.unwrap();
        let shared = store.clone();
        let got = tokio::spawn(async move { shared.get_app("acme", "github").await })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(a));
    }

    #[tokio::test]
    async fn duplicate_create_is_a_conflict() {
        let (_tmp, _clock, s) = fresh();
        let first = s.create_app(app("acme", "github")).await.unwrap();
        let mut again = app("acme", "github");
        again.config.client_id = "other".into();
        assert_eq!(s.create_app(again).await.unwrap_err(), StoreError::Conflict);
        assert_eq!(s.get_app("acme", "github").await.unwrap().unwrap(), first);
        // Same id in another org is another app.
        s.create_app(app("globex", "github")).await.unwrap();
    }

    #[tokio::test]
    async fn list_apps_per_org_and_all() {
        let (_tmp, _clock, s) = fresh();
        for (org, id) in [
            ("acme", "zeta"),
            ("acme", "alpha"),
            ("globex", "mid"),
            ("acme2", "x"),
        ] {
            s.create_app(app(org, id)).await.unwrap();
        }
        let ids = |v: Vec<App>| {
            v.into_iter()
                .map(|a| format!("{}/{}", a.org, a.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(s.list_apps("acme").await.unwrap()),
            ["acme/alpha", "acme/zeta"]
        );
        assert_eq!(
            ids(s.list_apps("nobody").await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(s.list_all_apps().await.unwrap()),
            ["acme/alpha", "acme/zeta", "acme2/x", "globex/mid"]
        );
    }

    #[tokio::test]
    async fn update_replaces_config_and_keeps_state() {
        let (_tmp, clock, s) = fresh();
        let created = s.create_app(app("acme", "github")).await.unwrap();
        s.set_app_enabled("acme", "github", false).await.unwrap();
        s.reset_app("acme", "github").await.unwrap();
        clock.advance(10);
        let mut change = app("acme", "github");
        change.config.name = "GitHub Enterprise".into();
        change.config.client_secret = Some(Secret::new("sk-rotated"));
        change.config.scopes = vec![];
        let updated = s.update_app(change).await.unwrap();
        assert_eq!(updated.name, "GitHub Enterprise");
        assert_eq!(
            updated.client_secret.as_ref().unwrap().expose(),
            "sk-rotated"
        );
        assert!(!updated.enabled);
        assert_eq!(updated.generation, 2);
        assert_eq!(updated.incarnation, created.incarnation);
        assert_eq!(updated.created_at, T0);
        assert_eq!(updated.updated_at, T0 + 10);
        assert_eq!(s.get_app("acme", "github").await.unwrap().unwrap(), updated);
        assert_eq!(
            s.update_app(app("acme", "nope")).await.unwrap_err(),
            StoreError::NotFound
        );
    }

    #[tokio::test]
    async fn enable_disable_keeps_tokens() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        assert!(s
            .put_token_if_current(token(&a, "alice", "at-1"), a.incarnation)
            .await
            .unwrap());
        let off = s.set_app_enabled("acme", "github", false).await.unwrap();
        assert!(!off.enabled);
        assert_eq!(off.generation, a.generation);
        assert!(current(&s, &a, "alice").await.is_some());
        assert!(
            s.set_app_enabled("acme", "github", true)
                .await
                .unwrap()
                .enabled
        );
        assert_eq!(
            current(&s, &a, "alice")
                .await
                .unwrap()
                .access_token
                .expose(),
            "at-1"
        );
        assert_eq!(
            s.set_app_enabled("acme", "nope", true).await.unwrap_err(),
            StoreError::NotFound
        );
    }

    /// A refresh's write goes only over an existing token: a revoke (delete) during the
    /// refresh wins.
    #[tokio::test]
    async fn replace_writes_only_over_an_existing_token() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        assert!(s
            .replace_token_if_current(token(&a, "bob", "at-1"), a.incarnation)
            .await
            .unwrap()
            .is_none());
        assert!(
            current(&s, &a, "bob").await.is_none(),
            "written over nothing"
        );
        assert!(s
            .put_token_if_current(token(&a, "bob", "at-1"), a.incarnation)
            .await
            .unwrap());
        let stored = s
            .replace_token_if_current(token(&a, "bob", "at-2"), a.incarnation)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.version, 2);
        assert_eq!(
            current(&s, &a, "bob").await.unwrap().access_token.expose(),
            "at-2"
        );
        assert!(s.delete_token("acme", "github", "bob").await.unwrap());
        assert!(s
            .replace_token_if_current(token(&a, "bob", "at-3"), a.incarnation)
            .await
            .unwrap()
            .is_none());
        assert!(current(&s, &a, "bob").await.is_none(), "revoke undone");
    }

    #[tokio::test]
    async fn token_round_trip_list_count_and_delete() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let t = token(&a, "bob", "at-bob");
        assert!(s
            .put_token_if_current(t.clone(), a.incarnation)
            .await
            .unwrap());
        let mut no_refresh = token(&a, "alice", "at-alice");
        no_refresh.refresh_token = None;
        no_refresh.expires_at = None;
        no_refresh.token_type = None;
        assert!(s
            .put_token_if_current(no_refresh.clone(), a.incarnation)
            .await
            .unwrap());
        assert_eq!(current(&s, &a, "bob").await.unwrap(), t);
        assert_eq!(current(&s, &a, "alice").await.unwrap(), no_refresh);
        assert_eq!(current(&s, &a, "carol").await, None);

        // A new consent overwrites, one version up.
        let mut refreshed = t.clone();
        refreshed.access_token = Secret::new("at-bob-2");
        assert!(s
            .put_token_if_current(refreshed.clone(), a.incarnation)
            .await
            .unwrap());
        refreshed.version = 2;
        assert_eq!(current(&s, &a, "bob").await.unwrap(), refreshed);

        let auths = s.list_authorizations("acme", "github").await.unwrap();
        assert_eq!(
            auths,
            vec![
                Authorization {
                    user: "alice".into(),
                    scopes: vec!["repo".into()],
                    expires_at: None,
                    obtained_at: T0,
                },
                Authorization {
                    user: "bob".into(),
                    scopes: vec!["repo".into()],
                    expires_at: Some(T0 + 3600),
                    obtained_at: T0,
                },
            ]
        );
        assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 2);
        let listed = s.list_tokens("acme", "github").await.unwrap();
        assert_eq!(listed, vec![no_refresh, refreshed]);

        assert!(s.delete_token("acme", "github", "bob").await.unwrap());
        assert!(!s.delete_token("acme", "github", "bob").await.unwrap());
        assert_eq!(current(&s, &a, "bob").await, None);
        assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 1);
        for r in [
            s.delete_token("acme", "nope", "bob").await.map(|_| ()),
            s.list_authorizations("acme", "nope").await.map(|_| ()),
            s.count_authorizations("acme", "nope").await.map(|_| ()),
            s.list_tokens("acme", "nope").await.map(|_| ()),
        ] {
            assert_eq!(r.unwrap_err(), StoreError::NotFound);
        }
    }

    #[tokio::test]
    async fn token_for_wrong_incarnation_or_missing_app_is_refused() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let t = token(&a, "alice", "at-1");
        assert!(!s
            .put_token_if_current(t.clone(), a.incarnation ^ 1)
            .await
            .unwrap());
        let mut ghost = t.clone();
        ghost.app = "ghost".into();
        assert!(!s.put_token_if_current(ghost, a.incarnation).await.unwrap());
        assert!(s.tokens.is_empty());
    }

    #[tokio::test]
    async fn reset_bumps_generation_and_deletes_tokens_and_consents() {
        let (_tmp, clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let other = s.create_app(app("acme", "other")).await.unwrap();
        for user in ["alice", "bob"] {
            assert!(s
                .put_token_if_current(token(&a, user, "at-old"), a.incarnation)
                .await
                .unwrap());
        }
        assert!(s
            .put_token_if_current(token(&other, "alice", "at-other"), other.incarnation)
            .await
            .unwrap());
        let tk = ticket(&a, "alice", T0 + 900);
        let pd = pending(&a, "alice", T0 + 600);
        let other_tk = ticket(&other, "alice", T0 + 900);
        s.put_ticket(tk.clone()).await.unwrap();
        s.put_pending(pd.clone()).await.unwrap();
        s.put_ticket(other_tk.clone()).await.unwrap();

        clock.advance(5);
        let r = s.reset_app("acme", "github").await.unwrap();
        assert_eq!(r.generation, a.generation + 1);
        assert_eq!(r.incarnation, a.incarnation);
        assert_eq!(r.updated_at, T0 + 5);
        assert_eq!(r.client_secret, a.client_secret, "configuration stays");

        // Unreachable under both generations, and physically gone.
        assert_eq!(current(&s, &a, "alice").await, None);
        assert_eq!(current(&s, &r, "alice").await, None);
        assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);
        assert_eq!(
            s.tokens
                .scan_prefix(token_app_prefix("acme", "github"))
                .count(),
            0
        );
        // Consents of the old generation are invalid and gone.
        assert_eq!(s.get_ticket(&tk.id).await.unwrap(), None);
        assert_eq!(s.take_pending(&pd.state).await.unwrap(), None);
        assert!(s.tickets.get(tk.id.as_bytes()).unwrap().is_none());
        // Another app is untouched.
        assert!(current(&s, &other, "alice").await.is_some());
        assert_eq!(s.get_ticket(&other_tk.id).await.unwrap(), Some(other_tk));

        // A refresh that started before the reset loses.
        assert!(!s
            .put_token_if_current(token(&a, "alice", "at-late"), a.incarnation)
            .await
            .unwrap());
        assert_eq!(current(&s, &a, "alice").await, None);
        // A consent under the new generation works.
        assert!(s
            .put_token_if_current(token(&r, "alice", "at-new"), r.incarnation)
            .await
            .unwrap());
        assert_eq!(
            current(&s, &r, "alice")
                .await
                .unwrap()
                .access_token
                .expose(),
            "at-new"
        );
        assert_eq!(
            s.reset_app("acme", "nope").await.unwrap_err(),
            StoreError::NotFound
        );
    }

    #[tokio::test]
    async fn delete_then_recreate_never_exposes_old_tokens() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        assert!(s
            .put_token_if_current(token(&a, "alice", "at-old"), a.incarnation)
            .await
            .unwrap());
        let tk = ticket(&a, "alice", T0 + 900);
        s.put_ticket(tk.clone()).await.unwrap();
        s.delete_app("acme", "github").await.unwrap();
        assert_eq!(s.get_app("acme", "github").await.unwrap(), None);
        assert_eq!(
            s.delete_app("acme", "github").await.unwrap_err(),
            StoreError::NotFound
        );
        assert!(s.tokens.is_empty());
        assert!(s.tickets.is_empty());

        let b = s.create_app(app("acme", "github")).await.unwrap();
        assert_ne!(b.incarnation, a.incarnation);
        assert_eq!(
            b.generation, a.generation,
            "generation restarts; incarnation tells them apart"
        );
        assert_eq!(current(&s, &b, "alice").await, None);
        assert_eq!(current(&s, &a, "alice").await, None);
        assert_eq!(
            s.list_authorizations("acme", "github").await.unwrap(),
            vec![]
        );
        assert_eq!(s.take_ticket(&tk.id).await.unwrap(), None);
        // A token exchange started against the deleted app cannot land in the new one.
        assert!(!s
            .put_token_if_current(token(&a, "alice", "at-late"), a.incarnation)
            .await
            .unwrap());
        assert_eq!(current(&s, &b, "alice").await, None);
    }

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let (_tmp, clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let t = ticket(&a, "alice", T0 + 900);
        s.put_ticket(t.clone()).await.unwrap();
        assert_eq!(s.get_ticket(&t.id).await.unwrap(), Some(t.clone()));
        assert_eq!(
            s.get_ticket(&t.id).await.unwrap(),
            Some(t.clone()),
            "get does not consume"
        );
        assert_eq!(s.take_ticket(&t.id).await.unwrap(), Some(t.clone()));
        assert_eq!(s.take_ticket(&t.id).await.unwrap(), None);
        assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);
        assert_eq!(s.take_ticket("never-issued").await.unwrap(), None);

        let e = ticket(&a, "alice", T0 + 900);
        s.put_ticket(e.clone()).await.unwrap();
        clock.set(T0 + 899);
        assert!(s.get_ticket(&e.id).await.unwrap().is_some());
        clock.set(T0 + 900);
        assert_eq!(s.get_ticket(&e.id).await.unwrap(), None);
        assert_eq!(s.take_ticket(&e.id).await.unwrap(), None);
        assert!(
            s.tickets.is_empty(),
            "an expired ticket is removed when taken"
        );
    }

    #[tokio::test]
    async fn pending_is_single_use_and_expires() {
        let (_tmp, clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let p = pending(&a, "alice", T0 + 600);
        s.put_pending(p.clone()).await.unwrap();
        let got = s.take_pending(&p.state).await.unwrap().unwrap();
        assert_eq!(got, p);
        assert_eq!(got.pkce_verifier.unwrap().expose(), "pkce-PLAINTEXT-777");
        assert_eq!(s.take_pending(&p.state).await.unwrap(), None);

        let mut no_pkce = pending(&a, "bob", T0 + 600);
        no_pkce.pkce_verifier = None;
        s.put_pending(no_pkce.clone()).await.unwrap();
        clock.set(T0 + 600);
        assert_eq!(s.take_pending(&no_pkce.state).await.unwrap(), None);
        assert!(s.pending.is_empty());
    }

    #[tokio::test]
    async fn purge_removes_expired_and_orphaned_records() {
        let (_tmp, clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let keep = ticket(&a, "alice", T0 + 900);
        let expire = ticket(&a, "bob", T0 + 10);
        s.put_ticket(keep.clone()).await.unwrap();
        s.put_ticket(expire.clone()).await.unwrap();
        s.put_pending(pending(&a, "bob", T0 + 10)).await.unwrap();
        assert!(s
            .put_token_if_current(token(&a, "alice", "at"), a.incarnation)
            .await
            .unwrap());
        // A token left behind by a reset whose clean-up never ran (crash in between).
        let leftover =
            TokenRecord::seal(&token(&a, "old", "at-old"), a.incarnation, &s.key).unwrap();
        s.tokens
            .insert(
                token_key("acme", "github", a.incarnation, 0, "old"),
                encode(&leftover).unwrap(),
            )
            .unwrap();
        clock.set(T0 + 10);
        assert_eq!(s.purge_stale().await.unwrap(), 3);
        assert_eq!(s.tickets.len(), 1);
        assert!(s.pending.is_empty());
        assert_eq!(s.tokens.len(), 1);
        assert!(current(&s, &a, "alice").await.is_some());
        assert_eq!(s.purge_stale().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn audit_is_newest_first_per_org_and_limited() {
        let (_tmp, clock, s) = fresh();
        for (i, org) in ["acme", "globex", "acme", "acme"].iter().enumerate() {
            clock.set(T0 + i as u64);
            let e = s
                .append_audit(AuditEvent::new(
                    *org,
                    "admin",
                    "app.create",
                    format!("app{i}"),
                    serde_json::json!({"n": i}),
                ))
                .await
                .unwrap();
            assert_eq!(e.at, T0 + i as u64);
        }
        let acme = s.list_audit("acme", 10).await.unwrap();
        let targets: Vec<_> = acme.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["app3", "app2", "app0"]);
        assert!(acme.windows(2).all(|w| w[0].seq > w[1].seq));
        assert_eq!(acme[0].detail, serde_json::json!({"n": 3}));
        assert_eq!(s.list_audit("acme", 2).await.unwrap().len(), 2);
        let globex = s.list_audit("globex", 10).await.unwrap();
        assert_eq!(globex.len(), 1);
        assert_eq!(globex[0].org, "globex");
        assert!(s.list_audit("initech", 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn orgs_are_isolated() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        assert!(s
            .put_token_if_current(token(&a, "alice", "at-acme"), a.incarnation)
            .await
            .unwrap());
        assert_eq!(s.get_app("globex", "github").await.unwrap(), None);
        assert!(s.list_apps("globex").await.unwrap().is_empty());
        assert_eq!(
            s.get_token("globex", "github", a.incarnation, a.generation, "alice")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            s.list_authorizations("globex", "github").await.unwrap_err(),
            StoreError::NotFound
        );
        // Even an app with the same id in the other org does not see the tokens.
        let g = s.create_app(app("globex", "github")).await.unwrap();
        assert_eq!(current(&s, &g, "alice").await, None);
        assert_eq!(
            s.get_token("globex", "github", a.incarnation, a.generation, "alice")
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.count_authorizations("globex", "github").await.unwrap(), 0);
        assert!(!s.delete_token("globex", "github", "alice").await.unwrap());
        assert!(current(&s, &a, "alice").await.is_some());
    }

    #[tokio::test]
    async fn secrets_never_reach_the_disk_in_plaintext() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let clock = ManualClock::new(T0);
        let s = open(&dir, &clock);
        let a = s.create_app(app("acme", "github")).await.unwrap();
        assert!(s
            .put_token_if_current(token(&a, "alice", "at-PLAINTEXT-456"), a.incarnation)
            .await
            .unwrap());
        s.put_pending(pending(&a, "alice", T0 + 600)).await.unwrap();
        s.flush().await.unwrap();

        let mut files = 0;
        let mut saw_marker = false;
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                files += 1;
                let bytes = std::fs::read(&path).unwrap();
                for secret in [
                    "sk-PLAINTEXT-123",
                    "at-PLAINTEXT-456",
                    "rt-at-PLAINTEXT-456",
                    "pkce-PLAINTEXT-777",
                    "hook-PLAINTEXT-000",
                ] {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                        "{secret} found in {}",
                        path.display()
                    );
                }
                saw_marker |= bytes.windows(16).any(|w| w == b"VISIBLE-NAME-789");
            }
        }
        assert!(files > 0, "scanned no files");
        // The scan is meaningful only if records are on disk uncompressed.
        assert!(saw_marker, "a non-secret field was not found on disk");
    }

    #[tokio::test]
    async fn reopen_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let clock = ManualClock::new(T0);
        let (a, t, tk, pd, ev) = {
            let s = open(&dir, &clock);
            let a = s.create_app(app("acme", "github")).await.unwrap();
            let t = token(&a, "alice", "at-1");
            assert!(s
                .put_token_if_current(t.clone(), a.incarnation)
                .await
                .unwrap());
            let tk = ticket(&a, "alice", T0 + 900);
            s.put_ticket(tk.clone()).await.unwrap();
            let pd = pending(&a, "alice", T0 + 600);
            s.put_pending(pd.clone()).await.unwrap();
            let ev = s
                .append_audit(AuditEvent::new(
                    "acme",
                    "admin",
                    "app.create",
                    "github",
                    serde_json::json!({}),
                ))
                .await
                .unwrap();
            s.close().await.unwrap();
            (a, t, tk, pd, ev)
        };
        let s = open(&dir, &clock);
        assert_eq!(s.get_app("acme", "github").await.unwrap(), Some(a.clone()));
        assert_eq!(current(&s, &a, "alice").await, Some(t));
        assert_eq!(s.take_ticket(&tk.id).await.unwrap(), Some(tk));
        assert_eq!(s.take_pending(&pd.state).await.unwrap(), Some(pd));
        assert_eq!(s.list_audit("acme", 10).await.unwrap(), vec![ev.clone()]);
        let ev2 = s
            .append_audit(AuditEvent::new(
                "acme",
                "admin",
                "app.reset",
                "github",
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        assert!(ev2.seq > ev.seq, "sequence stays monotonic across restarts");
    }

    #[tokio::test]
    async fn second_open_is_refused_with_a_helpful_error() {
        let (tmp, _clock, _s) = fresh();
        let err = SledStore::open(&tmp.path().join("store"), key_a()).unwrap_err();
        match err {
            StoreError::Io(msg) => assert!(msg.contains("locked by another process"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn wrong_key_is_refused_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let clock = ManualClock::new(T0);
        {
            let s = open(&dir, &clock);
            s.create_app(app("acme", "github")).await.unwrap();
            s.close().await.unwrap();
        }
        let (record, reason) = corrupt_record(SledStore::open(&dir, key_b()));
        assert_eq!(record, "meta/key-check");
        assert!(reason.contains("not the one"), "{reason}");
    }

    #[tokio::test]
    async fn secret_sealed_under_another_key_is_corrupt_on_read() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        // Plant records sealed under key B, as if the key file had been swapped for one
        // record's worth of data (the key check covers the whole-store case).
        let foreign_app = AppRecord::seal(&a, &key_b()).unwrap();
        s.apps
            .insert(app_key("acme", "github"), encode(&foreign_app).unwrap())
            .unwrap();
        let (record, reason) = corrupt_record(s.get_app("acme", "github").await);
        assert_eq!(record, "app/acme/github");
        assert!(reason.contains("does not open"), "{reason}");
        let foreign_token =
            TokenRecord::seal(&token(&a, "alice", "at"), a.incarnation, &key_b()).unwrap();
        s.tokens
            .insert(
                token_key("acme", "github", a.incarnation, a.generation, "alice"),
                encode(&foreign_token).unwrap(),
            )
            .unwrap();
        let (record, _) = corrupt_record(current_result(&s, &a, "alice").await);
        assert_eq!(
            record,
            format!("token/acme/github/{}/1/alice", a.incarnation)
        );
        // Listings that need no secret still work.
        assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 1);
        assert_eq!(
            s.list_authorizations("acme", "github").await.unwrap().len(),
            1
        );
    }

    async fn current_result(s: &SledStore, a: &App, user: &str) -> StoreResult<Option<TokenSet>> {
        s.get_token(&a.org, &a.id, a.incarnation, a.generation, user)
            .await
    }

    #[tokio::test]
    async fn tampered_records_are_corrupt_and_named() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        assert!(s
            .put_token_if_current(token(&a, "alice", "at"), a.incarnation)
            .await
            .unwrap());
        let akey = app_key("acme", "github");
        let tkey = token_key("acme", "github", a.incarnation, a.generation, "alice");

        edit_raw(&s.tokens, &tkey, |v| flip_sealed(&mut v["access_token"]));
        let (record, reason) = corrupt_record(current_result(&s, &a, "alice").await);
        assert_eq!(
            record,
            format!("token/acme/github/{}/1/alice", a.incarnation)
        );
        assert!(reason.contains("does not open"), "{reason}");

        // A sealed value moved between fields of one record does not open either.
        edit_raw(&s.tokens, &tkey, |v| {
            v["access_token"] = v["refresh_token"].clone()
        });
        corrupt_record(current_result(&s, &a, "alice").await);

        edit_raw(&s.apps, &akey, |v| flip_sealed(&mut v["client_secret"]));
        let (record, _) = corrupt_record(s.get_app("acme", "github").await);
        assert_eq!(record, "app/acme/github");
        corrupt_record(s.list_apps("acme").await);
        corrupt_record(s.list_all_apps().await);

        let cases: [(&str, Vec<u8>, &str); 4] = [
            (
                "truncated",
                br#"{"v":1,"org":"acme","id":"git"#.to_vec(),
                "not a JSON record",
            ),
            ("empty", Vec::new(), "not a JSON record"),
            (
                "older build",
                br#"{"org":"acme","id":"github"}"#.to_vec(),
                "no format version",
            ),
            (
                "newer build",
                br#"{"v":2,"org":"acme","id":"github"}"#.to_vec(),
                "unknown format version 2",
            ),
        ];
        for (case, bytes, want) in cases {
            s.apps.insert(akey.as_slice(), bytes).unwrap();
            let (record, reason) = corrupt_record(s.get_app("acme", "github").await);
            assert_eq!(record, "app/acme/github", "{case}");
            assert!(reason.contains(want), "{case}: {reason}");
            // Everything that reads the app reports it too, without panicking.
            corrupt_record(s.set_app_enabled("acme", "github", false).await);
            corrupt_record(
                s.put_token_if_current(token(&a, "bob", "at"), a.incarnation)
                    .await,
            );
        }

        // A truncated sealed value.
        let good = AppRecord::seal(&a, &s.key).unwrap();
        s.apps
            .insert(akey.as_slice(), encode(&good).unwrap())
            .unwrap();
        edit_raw(&s.apps, &akey, |v| {
            v["client_secret"] = serde_json::json!("AQID")
        });
        let (_, reason) = corrupt_record(s.get_app("acme", "github").await);
        assert!(reason.contains("truncated"), "{reason}");

        // A record stored under another app's key.
        s.apps
            .insert(
                app_key("acme", "gitlab"),
                encode(&AppRecord::seal(&a, &s.key).unwrap()).unwrap(),
            )
            .unwrap();
        let (record, reason) = corrupt_record(s.get_app("acme", "gitlab").await);
        assert_eq!(record, "app/acme/gitlab");
        assert!(reason.contains("do not match"), "{reason}");
    }

    #[tokio::test]
    async fn corrupt_tickets_and_pending_are_reported() {
        let (_tmp, _clock, s) = fresh();
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let p = pending(&a, "alice", T0 + 600);
        s.put_pending(p.clone()).await.unwrap();
        edit_raw(&s.pending, p.state.as_bytes(), |v| {
            flip_sealed(&mut v["pkce_verifier"])
        });
        let (record, _) = corrupt_record(s.take_pending(&p.state).await);
        assert!(record.starts_with("pending/"), "{record}");
        assert!(!record.contains(&p.state), "the whole state is not echoed");
        s.tickets
            .insert(b"tk".as_slice(), b"{\"v\":1".as_slice())
            .unwrap();
        let (record, _) = corrupt_record(s.take_ticket("tk").await);
        assert_eq!(record, "ticket/tk");
        // Clean-up skips what it cannot read instead of failing.
        s.purge_stale().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reset_racing_with_refreshes_leaves_no_stale_token() {
        let (_tmp, _clock, s) = fresh();
        let s = Arc::new(s);
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let mut writers = Vec::new();
        for w in 0..4 {
            let (s, a) = (s.clone(), a.clone());
            writers.push(tokio::spawn(async move {
                let mut refused = 0;
                for i in 0..100 {
                    let t = token(&a, &format!("user{w}-{i}"), "at");
                    if !s.put_token_if_current(t, a.incarnation).await.unwrap() {
                        refused += 1;
                    }
                }
                refused
            }));
        }
        // Reset in the middle of the writes, not before or after them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while s.count_authorizations("acme", "github").await.unwrap() < 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "writers made no progress"
            );
            tokio::task::yield_now().await;
        }
        let r = s.reset_app("acme", "github").await.unwrap();
        let mut refused = 0;
        for w in writers {
            refused += w.await.unwrap();
        }
        assert!(
            refused > 0,
            "no write came after the reset; the race was not exercised"
        );
        // Whatever the interleaving, nothing of generation 1 survives.
        let mut seen = 0;
        for item in s.tokens.iter() {
            let (k, _) = item.unwrap();
            let tk = TokenKey::parse(&k).unwrap();
            assert_eq!(tk.generation, r.generation, "stale token {}", tk.name());
            seen += 1;
        }
        assert_eq!(seen, 0);
        assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);
    }
}
