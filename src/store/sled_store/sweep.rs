//! Clean-up and single-use consumption: removing what a reset, a delete or expiry left
//! unreachable, and taking a ticket or pending authorization atomically with checking it.

use sled::transaction::Transactional;
use sled::{IVec, Tree};

use super::super::record::{
    app_key, token_app_prefix, Binding, ConsentRecord, PendingRecord, TicketRecord, TokenKey,
};
use super::super::{StoreError, StoreResult};
use super::{abort, app_version, io, tx_error, SledStore, TREE_TOKENS};

impl SledStore {
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
        let scope = |b: Binding<'_>| {
            only.is_none_or(|o| o == (b.org, b.app))
                && (now >= b.expires_at || self.is_stale(b.org, b.app, b.incarnation, b.generation))
        };
        let mut removed = self.sweep_tree(&self.tickets, "ticket", |id, v| {
            TicketRecord::decode(id, v).map(|r| scope(r.binding()))
        })?;
        removed += self.sweep_tree(&self.pending, "pending authorization", |state, v| {
            PendingRecord::decode(state, v).map(|r| scope(r.binding()))
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
    pub(super) fn sweep_app(&self, org: &str, id: &str) -> StoreResult<usize> {
        Ok(
            self.sweep_tokens(&token_app_prefix(org, id))?
                + self.sweep_consents(Some((org, id)))?,
        )
    }

    pub(super) fn purge_stale_now(&self) -> StoreResult<usize> {
        Ok(self.sweep_tokens(&[])? + self.sweep_consents(None)?)
    }

    /// Removes a consent record (ticket or pending) atomically with checking it, returning
    /// its decoded form only if it is unexpired and its app is still at the same incarnation
    /// and generation. A stale or expired record is removed all the same.
    pub(super) fn take_consent<R: ConsentRecord>(
        &self,
        tree: &Tree,
        id: &str,
        decode: impl Fn(&[u8]) -> StoreResult<R>,
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
                let b = rec.binding();
                if now >= b.expires_at {
                    return Ok(None);
                }
                let current = match app_version(b.org, b.app, apps.get(app_key(b.org, b.app))?) {
                    Ok(current) => current,
                    Err(e) => return abort(e),
                };
                let usable = current == Some((b.incarnation, b.generation));
                Ok(usable.then_some(rec))
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
