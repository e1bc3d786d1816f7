//! The sled side of the store key re-seal (`store::reseal`): the progress lives in the `meta`
//! tree (key `reseal`) and each batch is one transaction over the walked tree and `meta`, in
//! which a record is written only if it still holds the bytes the batch read. Batches and
//! counts walk trees, so they run on a blocking thread ([`off_runtime`]); each batch is
//! flushed before it returns, so a kill -9 loses at most the batch under way.

use std::collections::BTreeMap;

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{IVec, Transactional, Tree};

use super::super::record::sealed::{kids, reseal, Table};
use super::super::reseal::ResealProgress;
use super::super::seal::StoreKey;
use super::super::{StoreError, StoreResult};
use super::{io, off_runtime, tx_error, SledStore, TREE_META};
use crate::clock::Clock;

/// Key of the progress record in `meta`.
const PROGRESS_KEY: &[u8] = b"reseal";

/// What a re-seal step reads and writes: handles on the trees (cheap clones), so it can run
/// on a blocking thread.
struct Resealing {
    /// The database, to flush each batch.
    db: sled::Db,
    /// Every sealed tree, by table.
    trees: Vec<(Table, Tree)>,
    /// Where the progress lives (and the key check).
    meta: Tree,
    /// Opens and seals.
    key: StoreKey,
    /// Progress times and leases.
    clock: Clock,
}

impl SledStore {
    fn resealing(&self) -> StoreResult<Resealing> {
        let meta = self.db.open_tree(TREE_META).map_err(io)?;
        let trees = Table::ALL
            .iter()
            .map(|&t| {
                let tree = match t {
                    Table::Apps => self.apps.clone(),
                    Table::Tokens => self.tokens.clone(),
                    Table::Tickets => self.tickets.clone(),
                    Table::Pending => self.pending.clone(),
                    Table::Meta => meta.clone(),
                };
                (t, tree)
            })
            .collect();
        Ok(Resealing {
            db: self.db.clone(),
            trees,
            meta,
            key: self.key.clone(),
            clock: self.clock.clone(),
        })
    }

    pub(super) async fn seal_usage_off_runtime(&self) -> StoreResult<BTreeMap<String, u64>> {
        let r = self.resealing()?;
        off_runtime(move || r.usage()).await
    }

    pub(super) fn reseal_progress_now(&self) -> StoreResult<Option<ResealProgress>> {
        self.resealing()?.progress()
    }

    pub(super) async fn start_reseal_off_runtime(
        &self,
        target: &str,
    ) -> StoreResult<ResealProgress> {
        let r = self.resealing()?;
        let target = target.to_owned();
        off_runtime(move || r.start(&target)).await
    }

    pub(super) async fn reseal_batch_off_runtime(
        &self,
        limit: usize,
        owner: &str,
    ) -> StoreResult<Option<ResealProgress>> {
        let r = self.resealing()?;
        let owner = owner.to_owned();
        off_runtime(move || r.batch(limit, &owner)).await
    }
}

fn corrupt_progress(reason: String) -> StoreError {
    StoreError::Corrupt {
        record: "meta/reseal".into(),
        reason,
    }
}

fn encode_progress(p: &ResealProgress) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(p).map_err(|e| StoreError::Io(format!("encoding the re-seal progress: {e}")))
}

impl Resealing {
    fn tree(&self, table: Table) -> &Tree {
        // `trees` holds every table of `Table::ALL`.
        self.trees
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(&self.meta, |(_, tree)| tree)
    }

    fn progress(&self) -> StoreResult<Option<ResealProgress>> {
        self.meta
            .get(PROGRESS_KEY)
            .map_err(io)?
            .map(|b| serde_json::from_slice(&b).map_err(|e| corrupt_progress(e.to_string())))
            .transpose()
    }

    fn usage(&self) -> StoreResult<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (table, tree) in &self.trees {
            for item in tree.iter() {
                let (k, v) = item.map_err(io)?;
                if !table.holds_sealed(&k) {
                    continue;
                }
                for kid in kids(*table, &k, &v, &self.key)? {
                    *out.entry(kid).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }

    fn start(&self, target: &str) -> StoreResult<ResealProgress> {
        let total = self
            .trees
            .iter()
            .map(|(table, tree)| match table {
                Table::Meta => 1,
                _ => tree.len() as u64,
            })
            .sum();
        let p = ResealProgress::start(target, total, self.clock.now()?);
        self.meta
            .insert(PROGRESS_KEY, encode_progress(&p)?)
            .map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(p)
    }

    fn batch(&self, limit: usize, owner: &str) -> StoreResult<Option<ResealProgress>> {
        let Some(mut p) = self.progress()? else {
            return Ok(None);
        };
        let Some(table) = p.current() else {
            return Ok(None);
        };
        let now = self.clock.now()?;
        if !p.begin_batch(owner, now, &self.key.sealing_kid())? {
            return Ok(Some(p));
        }
        let tree = self.tree(table);
        let start = p.cursor_bytes();
        let range = match &start {
            Some(after) => tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(after.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => tree.iter(),
        };
        let mut read: Vec<(IVec, IVec, Option<Vec<u8>>)> = Vec::new();
        let mut exhausted = true;
        for item in range {
            if read.len() >= limit.max(1) {
                exhausted = false;
                break;
            }
            let (k, v) = item.map_err(io)?;
            if !table.holds_sealed(&k) {
                continue;
            }
            let new = reseal(table, &k, &v, &self.key)?;
            read.push((k, v, new));
        }
        let last = read.last().map(|(k, _, _)| k.to_vec());
        let scanned = read.len() as u64;
        // Written in the transaction: each record only if unchanged since read.
        let write =
            |t: &TransactionalTree| -> Result<u64, ConflictableTransactionError<StoreError>> {
                let mut n = 0;
                for (k, old, new) in &read {
                    let Some(new) = new else { continue };
                    if t.get(k)?.as_ref() == Some(old) {
                        t.insert(k.as_ref(), new.as_slice())?;
                        n += 1;
                    }
                }
                Ok(n)
            };
        let advance = |p: &mut ResealProgress, n: u64| {
            p.advance(scanned, n, last.as_deref(), exhausted, now);
        };
        // The records into `t`, the progress into `m` (the same tree when walking `meta`).
        let body = |t: &TransactionalTree, m: &TransactionalTree| {
            let n = write(t)?;
            let mut p = p.clone();
            advance(&mut p, n);
            let bytes = encode_progress(&p).map_err(ConflictableTransactionError::Abort)?;
            m.insert(PROGRESS_KEY, bytes)?;
            Ok(p)
        };
        let p = if table == Table::Meta {
            self.meta.transaction(|m| body(m, m))
        } else {
            (tree, &self.meta).transaction(|(t, m)| body(t, m))
        }
        .map_err(tx_error)?;
        self.db.flush().map_err(io)?;
        Ok(Some(p))
    }
}
