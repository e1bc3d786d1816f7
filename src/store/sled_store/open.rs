//! Opening and closing the sled store: sled's configuration, the key check that refuses a
//! store written under another key, the schema migrations (`migrate`), the clean-up pass at
//! start, and a close that returns
//! only once sled has let go of the directory lock.

use std::path::Path;

use sled::Tree;

use super::super::changes::ChangeFeed;
use super::super::record::{encode, KeyCheckRecord, KEY_CHECK_KEY};
use super::super::seal::StoreKey;
use super::super::{StoreError, StoreResult};
use super::{
    io, SledStore, TREE_APPS, TREE_AUDIT, TREE_META, TREE_PENDING, TREE_TICKETS,
    TREE_TICKET_OWNERS, TREE_TOKENS,
};
use crate::clock::Clock;

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

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`, sealing with `key`.
    ///
    /// Blocking (recovery, migrations, a clean-up pass and a flush): call it at startup,
    /// before serving.
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
            ticket_owners: tree(TREE_TICKET_OWNERS)?,
            pending: tree(TREE_PENDING)?,
            audit: tree(TREE_AUDIT)?,
            db,
            key,
            clock,
            path: path.to_path_buf(),
            changes: ChangeFeed::default(),
            replicas: Default::default(),
        };
        store.check_key(&meta)?;
        store.migrate()?;
        // Before anything is served, so inline is fine here.
        let purged = store.sweeper().purge()?;
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
