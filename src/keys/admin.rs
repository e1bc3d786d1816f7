//! Key operations (`tollgate keys`, `/v1/keys/...`): list, rotate, retire, each audited in
//! the store. Offline the CLI runs them against the data directory; online the server does,
//! and applies the changed ring at once on its own replica (others follow the file within
//! [`super::watch::WATCH_EVERY`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::identity_ring::{IdentityRing, KeyInfo, RingError};
use crate::clock::Clock;
use crate::store::{AuditEvent, Store, StoreError};

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

/// Called with the ring after each change made here (the server's verifiers).
type Apply = Box<dyn Fn(&IdentityRing) + Send + Sync>;

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
        }
    }

    /// Every key and its state now.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let now = self.clock.now().map_err(StoreError::from)?;
        Ok(IdentityRing::load(&self.keys_dir)?.list(now))
    }

    /// Rotates the key of `kind` (`identity`; the others are not rotatable yet). Returns the
    /// new key's id.
    pub async fn rotate(&self, kind: &str, actor: &Actor) -> Result<String, KeyError> {
        if kind != "identity" {
            return Err(KeyError::Unsupported(format!(
                "rotating the {kind:?} key is not supported yet (identity only)"
            )));
        }
        let _one = self.lock.lock().await;
        let now = self.clock.now().map_err(StoreError::from)?;
        let mut ring = IdentityRing::load(&self.keys_dir)?;
        let previous = ring.active_kid().to_owned();
        let kid = ring.rotate(now)?;
        self.applied(&ring);
        tracing::warn!(kid = %kid, previous = %previous, by = %actor.user, "identity key rotated");
        let detail = serde_json::json!({"kind": kind, "previous": previous});
        self.audit(actor, "key.rotate", &kid, detail).await?;
        Ok(kid)
    }

    /// Retires key `kid`: what it signed is refused from now on.
    pub async fn retire(&self, kid: &str, actor: &Actor) -> Result<(), KeyError> {
        let _one = self.lock.lock().await;
        let now = self.clock.now().map_err(StoreError::from)?;
        let mut ring = IdentityRing::load(&self.keys_dir)?;
        ring.retire(kid, now)?;
        self.applied(&ring);
        tracing::warn!(kid = %kid, by = %actor.user, "identity key retired");
        let detail = serde_json::json!({"kind": "identity"});
        self.audit(actor, "key.retire", kid, detail).await
    }

    fn applied(&self, ring: &IdentityRing) {
        if let Some(apply) = &self.apply {
            apply(ring);
        }
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
