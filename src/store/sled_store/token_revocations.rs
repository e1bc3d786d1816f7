//! Caller-token revocations in sled: one record per [`TokenRevocation::key`] in their own
//! tree, merged with a compare-and-swap so that two revocations of the same tokens never
//! narrow what is refused.

use sled::Tree;

use super::super::changes::Change;
use super::super::record::encode;
use super::super::record::token_revocation::{token_revocation_name, TokenRevocationRecord};
use super::{io, SledStore};
use crate::store::{StoreError, StoreResult, TokenRevocation};

/// Tree of token revocations (key → [`TokenRevocationRecord`]). Opened on use, like the agent
/// revocations' tree.
const TREE_TOKEN_REVOCATIONS: &str = "token_revocations";

impl SledStore {
    fn token_revocation_tree(&self) -> StoreResult<Tree> {
        self.db.open_tree(TREE_TOKEN_REVOCATIONS).map_err(io)
    }

    /// [`crate::store::Store::revoke_tokens`].
    pub(super) async fn revoke_tokens_now(
        &self,
        revocation: TokenRevocation,
    ) -> StoreResult<TokenRevocation> {
        let tree = self.token_revocation_tree()?;
        let key = revocation.key();
        let mut current = tree.get(key.as_bytes()).map_err(io)?;
        let written = loop {
            let previous = current
                .as_ref()
                .map(|b| TokenRevocationRecord::decode(&key, b))
                .transpose()?;
            let merged = revocation.clone().merged(previous.as_ref());
            let bytes = encode(&TokenRevocationRecord::new(&merged))?;
            match tree
                .compare_and_swap(key.as_bytes(), current.clone(), Some(bytes))
                .map_err(io)?
            {
                Ok(()) => break merged,
                // Another revocation of the same tokens won: build on what it wrote.
                Err(e) => current = e.current,
            }
        };
        self.durable().await?;
        self.changes.publish(Change::TokensRevoked);
        Ok(written)
    }

    /// [`crate::store::Store::list_token_revocations`]: the unexpired ones.
    pub(super) fn token_revocations(&self) -> StoreResult<Vec<TokenRevocation>> {
        let now = self.clock.now()?;
        let mut out = Vec::new();
        for item in self.token_revocation_tree()?.iter() {
            let (k, v) = item.map_err(io)?;
            let key = std::str::from_utf8(&k).map_err(|_| StoreError::Corrupt {
                record: token_revocation_name("<not UTF-8>"),
                reason: "key not written by this build".into(),
            })?;
            let r = TokenRevocationRecord::decode(key, &v)?;
            if r.expires_at > now {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Deletes the expired token revocations (part of `purge_stale`), off the runtime like
    /// every walk of a whole tree; returns how many.
    pub(super) async fn purge_token_revocations(&self) -> StoreResult<usize> {
        let tree = self.token_revocation_tree()?;
        let clock = self.clock.clone();
        super::off_runtime(move || purge_expired(&tree, &clock)).await
    }
}

/// Deletes the records of `tree` expired at `clock`'s time (each with a compare-and-swap, so
/// a revocation renewed meanwhile stays).
fn purge_expired(tree: &Tree, clock: &crate::clock::Clock) -> StoreResult<usize> {
    let now = clock.now()?;
    let mut removed = 0;
    for item in tree.iter() {
        let (k, v) = item.map_err(io)?;
        let key = String::from_utf8_lossy(&k).into_owned();
        // A record that cannot be read is left for an operator to see in the listing.
        let Ok(r) = TokenRevocationRecord::decode(&key, &v) else {
            continue;
        };
        if r.expires_at <= now
            && tree
                .compare_and_swap(&k, Some(v), None::<Vec<u8>>)
                .map_err(io)?
                .is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}
