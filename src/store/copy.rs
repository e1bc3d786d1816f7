//! `tollgate store copy`: moves a single-node deployment's sled store into PostgreSQL.
//!
//! The records are copied as they are stored: the same versioned JSON, secrets still sealed
//! under the same `keys/store.key` (each bound to its record's name, which is the same in
//! both backends), apps with their incarnation and generation, grants with their version,
//! the audit log with its sequence numbers, agent revocations with their time. Nothing is
//! opened on the way. Each record is decoded first, so a corrupt one stops the copy before
//! anything is written. Grants of an app's older generation or incarnation (left for the
//! clean-up) are skipped; so are consent tickets and pending authorizations, which live
//! minutes: a consent in progress during the move is started again.
//!
//! The target is written in one transaction. A target that already holds records is refused
//! unless `merge` is set; then only the missing records are added, so a rerun is harmless.

use std::path::Path;

use super::{PgStore, SledStore, StoreKey, StoreResult};

/// The records read from the source, each with the columns the target selects on.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// (org, id, incarnation, generation, record).
    pub(crate) apps: Vec<(String, String, u64, u64, String)>,
    /// (org, app, incarnation, generation, user, version, record).
    pub(crate) grants: Vec<(String, String, u64, u64, String, u64, String)>,
    /// (org, seq, at, record).
    pub(crate) audit: Vec<(String, u64, u64, String)>,
    /// (agent, record).
    pub(crate) revocations: Vec<(String, String)>,
    /// Records left behind: stale grants, tickets and pending authorizations.
    pub(crate) skipped: usize,
}

/// What a copy did, per kind of record.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Apps written.
    pub apps: usize,
    /// Grants (users' token sets) written.
    pub grants: usize,
    /// Audit events written.
    pub audit: usize,
    /// Agent revocations written.
    pub agent_revocations: usize,
    /// Records already in the target (with `merge`), left as they were.
    pub already_present: usize,
    /// Source records not copied: grants of an old generation, tickets, pending
    /// authorizations.
    pub skipped: usize,
}

/// Copies the sled store in `from` into the PostgreSQL database at `to` (migrated and
/// key-checked as `serve` would), both sealed with `key`.
pub async fn copy_sled_to_postgres(
    from: &Path,
    to: &str,
    key: StoreKey,
    merge: bool,
) -> StoreResult<CopyReport> {
    let (dir, sled_key) = (from.to_path_buf(), key.clone());
    let dump = tokio::task::spawn_blocking(move || SledStore::open(&dir, sled_key)?.export())
        .await
        .map_err(|e| super::StoreError::Io(format!("reading the sled store: {e}")))??;
    let target = PgStore::open(to, key).await?;
    let mut report = target.import(&dump, merge).await?;
    report.skipped = dump.skipped;
    Ok(report)
}
