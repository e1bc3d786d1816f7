//! Key operations (`tollgate keys`, `/v1/keys/...`): list, rotate, retire, each audited in
//! the store, for every kind of key that has a ring (identity, session, store, the
//! interception CA: [`KeyAdmin::rotate_ca`]). Rotating the store key also records a re-seal
//! in the store; retiring one is refused while records use it. Offline the CLI runs them against the data directory; online the server does, and applies the changed ring at
//! once on its own replica (others follow the file within [`super::watch::WATCH_EVERY`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::ca_ring::{self, CaInfo, CaKey, CaRing, CA_SWITCH_AFTER};
use super::ring::{IdentityRing, KeyInfo, Ring, RingError, RingKey, SIGNING_DELAY_SECS};
use super::session_key::{SessionKey, SessionRing};
use super::store_key::StoreRing;
use crate::clock::Clock;
use crate::identity::IdentityKey;
use crate::store::seal::SealKey;
use crate::store::ResealProgress;
use crate::store::{AuditEvent, Store, StoreError};
use std::collections::BTreeMap;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a key kind this build rotates.
    #[error("{0}")]
    Unsupported(String),
    /// The ring refused or could not be changed.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The audit event could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A CA rotation is under way: the pending CA must sign before the next rotation.
    #[error("{0}")]
    InProgress(String),
    /// A store key still seals records: the re-seal has not moved them all yet.
    #[error("store key {kid} still seals {records} records; wait for the re-seal to finish (`tollgate keys list`)")]
    InUse {
        /// The key.
        kid: String,
        /// How many records it seals.
        records: u64,
    },
}

/// Who asks: an operator's caller token (org, user), or the offline CLI.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The org the audit event goes to (the operator's; empty offline).
    pub org: String,
    /// Who, in the audit event.
    pub user: String,
}

impl Actor {
    /// The offline CLI.
    pub fn offline() -> Actor {
        Actor {
            org: String::new(),
            user: "offline".into(),
        }
    }
}

/// Called with a ring of kind `K` after each change made here.
type ApplyRing<K> = Box<dyn Fn(&Ring<K>) + Send + Sync>;

/// Called with the identity ring after each change made here (the server's verifiers).
type Apply = ApplyRing<IdentityKey>;

/// Called with the session ring after each change made here (the pages' cookies).
type ApplySession = ApplyRing<SessionKey>;

/// Called with the store key ring after each change made here (the store's keys).
type ApplyStore = ApplyRing<SealKey>;

/// Every key, by kind, as `keys list` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct KeyLists {
    /// Sign caller tokens and agent credentials.
    pub identity: Vec<KeyInfo>,
    /// Sign the pages' session cookies.
    pub session: Vec<KeyInfo>,
    /// Sign the leaves of intercepted hosts (empty with an operator-supplied CA).
    pub ca: Vec<CaInfo>,
    /// Seal the store's secrets.
    pub store: Vec<KeyInfo>,
    /// How many records each store key seals (absent when the store was not asked).
    pub store_records: Option<BTreeMap<String, u64>>,
    /// The last store key re-seal (absent when none ran, or the store was not asked).
    pub reseal: Option<ResealProgress>,
}

/// The key operations of one data directory.
pub struct KeyAdmin {
    /// The `keys` directory.
    keys_dir: PathBuf,
    /// Where key operations are audited.
    store: Arc<dyn Store>,
    /// Key times.
    clock: Clock,
    /// Serializes changes made through this process (the ring file is read, changed, written).
    lock: tokio::sync::Mutex<()>,
    /// Applies a changed ring here at once.
    apply: Option<Apply>,
    /// Applies a changed session ring here at once.
    apply_session: Option<ApplySession>,
    /// The interception CA's ring directory (`DATA/ca`); none when the operator supplies
    /// the CA (`--ca-cert`), which rotates by pointing at a new pair instead.
    ca_dir: Option<PathBuf>,
    /// Applies a changed CA ring here at once (the leaf cache).
    apply_ca: Option<ApplyRing<CaKey>>,
    /// Applies a changed store key ring here at once.
    apply_store: Option<ApplyStore>,
    /// Wakes this process's re-seal after a store key rotation.
    reseal_wake: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for KeyAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAdmin")
            .field("keys_dir", &self.keys_dir)
            .finish_non_exhaustive()
    }
}

impl KeyAdmin {
    /// Key operations on `keys_dir`, audited in `store`; `apply` (the server's) sees every
    /// ring changed here.
    pub fn new(
        keys_dir: PathBuf,
        store: Arc<dyn Store>,
        clock: Clock,
        apply: Option<Apply>,
    ) -> Self {
        KeyAdmin {
            keys_dir,
            store,
            clock,
            lock: tokio::sync::Mutex::new(()),
            apply,
            apply_session: None,
            ca_dir: None,
            apply_ca: None,
            apply_store: None,
            reseal_wake: None,
        }
    }

    /// Also rotates the interception CA whose ring is in `dir` (none: the operator supplies
    /// the CA), applying every CA ring changed here with `apply` (the server's leaf cache).
    pub fn with_ca(mut self, dir: Option<PathBuf>, apply: Option<ApplyRing<CaKey>>) -> Self {
        self.ca_dir = dir;
        self.apply_ca = apply;
        self
    }

    /// Also applies every store key ring changed here with `apply` (the server's store), and
    /// wakes `wake` (its re-seal) after a store key rotation.
    pub fn with_store_apply(mut self, apply: ApplyStore, wake: Arc<tokio::sync::Notify>) -> Self {
        self.apply_store = Some(apply);
        self.reseal_wake = Some(wake);
        self
    }

    /// Also applies every session ring changed here with `apply` (the server's pages).
    pub fn with_session_apply(mut self, apply: ApplySession) -> Self {
        self.apply_session = Some(apply);
        self
    }

    /// Every key and its state now.
    pub fn list(&self) -> Result<KeyLists, KeyError> {
        let now = self.clock.now().map_err(StoreError::from)?;
        Ok(KeyLists {
            identity: IdentityRing::load(&self.keys_dir)?.list(now),
            session: SessionRing::load(&self.keys_dir)?.list(now),
            ca: match &self.ca_dir {
                Some(dir) => ca_ring::load_if_present(dir)?
                    .map(|ring| ca_ring::list(&ring, now))
                    .unwrap_or_default(),
                None => Vec::new(),
            },
            store: StoreRing::load(&self.keys_dir)?.list(now),
            store_records: None,
            reseal: None,
        })
    }

    /// [`KeyAdmin::list`] with how many records each store key seals and the re-seal's
    /// progress (walks the store).
    pub async fn list_with_store(&self) -> Result<KeyLists, KeyError> {
        let mut lists = self.list()?;
        lists.store_records = Some(self.store.seal_usage().await?);
        lists.reseal = self.store.reseal_progress().await?;
        Ok(lists)
    }

    /// Rotates the key of `kind` (`identity` or `session`). Returns the new key's id.
    pub async fn rotate(&self, kind: &str, actor: &Actor) -> Result<String, KeyError> {
        match kind {
            "identity" => self.rotate_ring::<IdentityKey>(actor, &self.apply).await,
            "session" => {
                self.rotate_ring::<SessionKey>(actor, &self.apply_session)
                    .await
            }
            "ca" => self.rotate_ca(actor, None).await,
            "store" => {
                let kid = self
                    .rotate_ring::<SealKey>(actor, &self.apply_store)
                    .await?;
                // Recorded in the store: whichever process re-seals (this server, the next
                // one to start, or another replica) finds it there.
                let progress = self.store.start_reseal(&kid).await?;
                tracing::info!(target = %kid, records = progress.total, "store key re-seal started");
                if let Some(wake) = &self.reseal_wake {
                    wake.notify_one();
                }
                Ok(kid)
            }
            _ => Err(KeyError::Unsupported(format!(
                "rotating the {kind:?} key is not supported (identity, session, store and ca)"
            ))),
        }
    }

    async fn rotate_ring<K: RingKey>(
        &self,
        actor: &Actor,
        apply: &Option<ApplyRing<K>>,
    ) -> Result<String, KeyError> {
        let _one = self.lock.lock().await;
        let now = self.clock.now().map_err(StoreError::from)?;
        let ring = Ring::<K>::load(&self.keys_dir)?;
        self.rotate_in(ring, now, SIGNING_DELAY_SECS, actor, apply)
            .await
    }

    /// Adds a new interception CA that signs the leaves `switch_after` seconds from now
    /// (default [`CA_SWITCH_AFTER`]); the signing one keeps signing until then, and both are
    /// exported. Refused while a rotation is pending, and with an operator-supplied CA.
    pub async fn rotate_ca(
        &self,
        actor: &Actor,
        switch_after: Option<u64>,
    ) -> Result<String, KeyError> {
        let Some(dir) = &self.ca_dir else {
            return Err(KeyError::Unsupported(
                "the interception CA is the operator's (--ca-cert/--ca-key): rotate it by \
                 pointing --ca-cert/--ca-key at a new pair (docs/keys.md)"
                    .into(),
            ));
        };
        let _one = self.lock.lock().await;
        let now = self.clock.now().map_err(StoreError::from)?;
        let ring = CaRing::load(dir)?;
        if let Some(at) = ring.switches_at(now) {
            return Err(KeyError::InProgress(format!(
                "CA {} is pending: it signs from {}; rotate again after that",
                ring.active_kid(),
                crate::clock::rfc3339(at)
            )));
        }
        let delay = switch_after.unwrap_or(CA_SWITCH_AFTER);
        self.rotate_in(ring, now, delay, actor, &self.apply_ca)
            .await
    }

    /// Rotates `ring` (loaded under the lock, which the caller holds), applies and audits.
    async fn rotate_in<K: RingKey>(
        &self,
        mut ring: Ring<K>,
        now: u64,
        delay: u64,
        actor: &Actor,
        apply: &Option<ApplyRing<K>>,
    ) -> Result<String, KeyError> {
        let previous = ring.active_kid().to_owned();
        let kid = ring.rotate_after(now, delay)?;
        if let Some(apply) = apply {
            apply(&ring);
        }
        tracing::warn!(kind = K::KIND, kid = %kid, previous = %previous, by = %actor.user, "key rotated");
        let detail = serde_json::json!({"kind": K::KIND, "previous": previous});
        self.audit(actor, "key.rotate", &kid, detail).await?;
        Ok(kid)
    }

    /// Retires key `kid` (of whichever kind has it): what it signed is refused from now on.
    pub async fn retire(&self, kid: &str, actor: &Actor) -> Result<(), KeyError> {
        let now = self.clock.now().map_err(StoreError::from)?;
        if let Some(dir) = &self.ca_dir {
            let ring = ca_ring::load_if_present(dir)?;
            if ring.is_some_and(|r| r.list(now).iter().any(|k| k.kid == kid)) {
                return self
                    .retire_in::<CaKey>(dir, kid, actor, &self.apply_ca)
                    .await;
            }
        }
        if StoreRing::load(&self.keys_dir)?
            .list(now)
            .iter()
            .any(|k| k.kid == kid)
        {
            let records = self
                .store
                .seal_usage()
                .await?
                .get(kid)
                .copied()
                .unwrap_or(0);
            if records > 0 {
                return Err(KeyError::InUse {
                    kid: kid.to_owned(),
                    records,
                });
            }
            return self
                .retire_ring::<SealKey>(kid, actor, &self.apply_store)
                .await;
        }
        if SessionRing::load(&self.keys_dir)?
            .list(now)
            .iter()
            .any(|k| k.kid == kid)
        {
            return self
                .retire_ring::<SessionKey>(kid, actor, &self.apply_session)
                .await;
        }
        self.retire_ring::<IdentityKey>(kid, actor, &self.apply)
            .await
    }

    async fn retire_ring<K: RingKey>(
        &self,
        kid: &str,
        actor: &Actor,
        apply: &Option<ApplyRing<K>>,
    ) -> Result<(), KeyError> {
        self.retire_in(&self.keys_dir, kid, actor, apply).await
    }

    /// Retires `kid` of the ring in `dir`, applies and audits.
    async fn retire_in<K: RingKey>(
        &self,
        dir: &Path,
        kid: &str,
        actor: &Actor,
        apply: &Option<ApplyRing<K>>,
    ) -> Result<(), KeyError> {
        let _one = self.lock.lock().await;
        let now = self.clock.now().map_err(StoreError::from)?;
        let mut ring = Ring::<K>::load(dir)?;
        ring.retire(kid, now)?;
        if let Some(apply) = apply {
            apply(&ring);
        }
        tracing::warn!(kind = K::KIND, kid = %kid, by = %actor.user, "key retired");
        let detail = serde_json::json!({"kind": K::KIND});
        self.audit(actor, "key.retire", kid, detail).await
    }

    async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        kid: &str,
        detail: serde_json::Value,
    ) -> Result<(), KeyError> {
        let event = AuditEvent::new(
            &actor.org,
            &actor.user,
            action,
            format!("key:{kid}"),
            detail,
        );
        self.store.append_audit(event).await?;
        Ok(())
    }
}
