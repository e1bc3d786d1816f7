//! Clean-up: removing what a reset, a delete or expiry left unreachable.
//!
//! A sweep walks whole trees, so it never runs on an async runtime worker: [`Sweeper`] holds
//! its own handles on the trees and runs on a blocking thread ([`off_runtime`]); only
//! [`SledStore::open`], before anything is served, runs one inline.

use sled::{IVec, Tree};

use super::super::record::{
    token_app_prefix, Binding, ConsentRecord, Kind, PendingRecord, TicketRecord, TokenKey,
};
use super::super::{StoreError, StoreResult};
use super::{app_version, io, SledStore, TREE_TOKENS};
use crate::clock::Clock;
use crate::store::record::app_key;

/// What a sweep reads and removes: handles on the store's trees (cheap clones of sled's), so
/// it can run on another thread than the store's caller.
pub(super) struct Sweeper {
    /// Apps, to tell stale records.
    apps: Tree,
    /// Token sets.
    tokens: Tree,
    /// Consent tickets, by hash.
    tickets: Tree,
    /// The owners index of tickets.
    ticket_owners: Tree,
    /// Pending authorizations, by hash.
    pending: Tree,
    /// Expiry.
    clock: Clock,
}

/// Runs `work` (a sweep) on tokio's blocking pool, so no runtime worker waits for it.
pub(super) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io(format!("store clean-up task failed: {e}")))?
}

impl SledStore {
    /// A sweeper over this store's trees.
    pub(super) fn sweeper(&self) -> Sweeper {
        Sweeper {
            apps: self.apps.clone(),
            tokens: self.tokens.clone(),
            tickets: self.tickets.clone(),
            ticket_owners: self.ticket_owners.clone(),
            pending: self.pending.clone(),
            clock: self.clock.clone(),
        }
    }

    /// Cleans up after a reset or delete of one app, off the runtime.
    pub(super) async fn sweep_app(&self, org: &str, id: &str) -> StoreResult<usize> {
        let sweeper = self.sweeper();
        let (org, id) = (org.to_owned(), id.to_owned());
        off_runtime(move || sweeper.app(&org, &id)).await
    }
}

impl Sweeper {
    /// Everything stale or expired, in every tree.
    pub(super) fn purge(&self) -> StoreResult<usize> {
        #[cfg(test)]
        tests::count_sweep();
        Ok(self.sweep_tokens(&[])? + self.sweep_consents(None)?)
    }

    /// What a reset or delete of one app left behind.
    fn app(&self, org: &str, id: &str) -> StoreResult<usize> {
        #[cfg(test)]
        tests::count_sweep();
        Ok(
            self.sweep_tokens(&token_app_prefix(org, id))?
                + self.sweep_consents(Some((org, id)))?,
        )
    }

    /// Whether a record made for `(incarnation, generation)` of an app is stale. An app that
    /// cannot be read counts as current (with a warning): clean-up must not delete what it
    /// cannot judge, nor fail because of one bad record.
    fn is_stale(&self, org: &str, app: &str, incarnation: u64, generation: u64) -> bool {
        let current = self
            .apps
            .get(app_key(org, app))
            .map_err(io)
            .and_then(|bytes| app_version(org, app, bytes));
        match current {
            Ok(current) => current != Some((incarnation, generation)),
            Err(e) => {
                tracing::warn!(error = %e, "store: cannot tell whether a record is stale");
                false
            }
        }
    }

    /// Removes token sets under `prefix` whose app no longer has their incarnation and
    /// generation. See the module docs of `sled_store` for why this needs no transaction.
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
    /// their incarnation and generation; limited to one app when `only` is given. Owner
    /// entries of removed tickets, and any left pointing nowhere, go too.
    fn sweep_consents(&self, only: Option<(&str, &str)>) -> StoreResult<usize> {
        let now = self.clock.now()?;
        let scope = |b: Binding<'_>| {
            only.is_none_or(|o| o == (b.org, b.app))
                && (now >= b.expires_at || self.is_stale(b.org, b.app, b.incarnation, b.generation))
        };
        let mut removed = 0;
        for item in self.tickets.iter() {
            let (k, v) = item.map_err(io)?;
            match TicketRecord::decode(&k, &v) {
                Ok(rec) if scope(rec.binding()) => {
                    let owner = rec.owner_key();
                    removed += remove_if_unchanged(&self.tickets, &k, v)?;
                    remove_if_unchanged(&self.ticket_owners, &owner, k)?;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "store: skipping a ticket"),
            }
        }
        for item in self.ticket_owners.iter() {
            let (owner, hash) = item.map_err(io)?;
            if self.tickets.get(&hash).map_err(io)?.is_none() {
                remove_if_unchanged(&self.ticket_owners, &owner, hash)?;
            }
        }
        for item in self.pending.iter() {
            let (k, v) = item.map_err(io)?;
            match PendingRecord::decode(&k, &v) {
                Ok(rec) if scope(rec.binding()) => {
                    removed += remove_if_unchanged(&self.pending, &k, v)?
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, kind = ?Kind::Pending, "store: skipping a record")
                }
            }
        }
        Ok(removed)
    }
}

/// Removes `key` if it still holds `value`; 1 if it did.
pub(super) fn remove_if_unchanged(tree: &Tree, key: &[u8], value: IVec) -> StoreResult<usize> {
    let swapped = tree
        .compare_and_swap(key, Some(value), None as Option<&[u8]>)
        .map_err(io)?;
    Ok(usize::from(swapped.is_ok()))
}

#[cfg(test)]
pub(super) mod tests {
    //! Where sweeps ran: on this thread (a runtime worker in a `#[tokio::test]`) or not.

    use std::cell::Cell;

    thread_local! {
        /// Sweeps run on this thread.
        static HERE: Cell<usize> = const { Cell::new(0) };
    }

    pub(in super::super) fn count_sweep() {
        HERE.with(|c| c.set(c.get() + 1));
    }

    /// Sweeps run on the calling thread so far.
    pub(in super::super) fn sweeps_on_this_thread() -> usize {
        HERE.with(Cell::get)
    }
}
