//! The store key re-seal: after `keys rotate store`, every sealed record (apps' client
//! secrets and webhooks, token sets, consent tickets' ids, pending authorizations, the key
//! check) is opened with the key that sealed it and sealed again with the new one, in the
//! background, so that the old key can be retired.
//!
//! The work is a walk over the tables in a fixed order ([`Table::ALL`]) in bounded batches
//! ([`Store::reseal_batch`]). Each batch is one atomic write of the re-sealed records and of
//! the progress (which table, the last key done), both in the store: a process killed at any
//! point resumes after the last batch that committed. A record written between the batch's
//! read and its write (a refresh, a new consent) is left as written, because everything
//! written since the new key started sealing is already sealed with it. A record is skipped,
//! never overwritten.
//!
//! One process re-seals at a time: the progress record carries a lease ([`LEASE_SECS`]) that
//! each batch takes or renews, so replicas sharing a PostgreSQL store do not compete; another
//! replica takes over once a dead one's lease expires.
//!
//! [`Resealer`] is the background task. It starts when a rotation records a re-seal (or at
//! start, when one is under way) and waits until the store key seals with the new key (the
//! signing delay), then works through the batches, logging every [`LOG_EVERY`] records and at
//! the end, and reporting to the metrics through a callback (the store knows nothing of
//! metrics).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) use super::record::sealed::Table;
use super::{Store, StoreKey};

/// Records per batch unless `TOLLGATE_RESEAL_BATCH` says otherwise.
pub const DEFAULT_BATCH: usize = 256;

/// How long a process's claim on the re-seal lasts without a batch renewing it, in seconds.
pub const LEASE_SECS: u64 = 30;

/// How often the task looks for a re-seal to do (one started on another replica, or by the
/// offline CLI) when nothing woke it.
const POLL_EVERY: Duration = Duration::from_secs(5);

/// Progress is logged every this many records scanned.
pub const LOG_EVERY: u64 = 1000;

/// Format version of the progress record.
const PROGRESS_VERSION: u32 = 1;

/// A re-seal's state, stored with the records it moves (`meta`, key `reseal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResealProgress {
    /// Format version.
    pub v: u32,
    /// The key every record is sealed with when done.
    pub target: String,
    /// Index in [`Table::ALL`] of the table being walked; its length once done.
    pub table: usize,
    /// Hex of the key of the last record done in that table (none: from its start).
    pub cursor: Option<String>,
    /// Records in every table when the re-seal started (the "m" of "n/m").
    pub total: u64,
    /// Records looked at so far.
    pub scanned: u64,
    /// Records written again so far (the others were sealed with the target already).
    pub resealed: u64,
    /// Unix seconds the re-seal started.
    pub started_at: u64,
    /// Unix seconds it completed.
    pub finished_at: Option<u64>,
    /// The process holding the re-seal (its batches), if any.
    pub owner: Option<String>,
    /// Unix seconds the owner's claim ends unless renewed.
    pub lease_until: u64,
}

impl ResealProgress {
    /// A re-seal to `target` over `total` records, starting at `now`.
    pub fn start(target: &str, total: u64, now: u64) -> ResealProgress {
        ResealProgress {
            v: PROGRESS_VERSION,
            target: target.to_owned(),
            table: 0,
            cursor: None,
            total,
            scanned: 0,
            resealed: 0,
            started_at: now,
            finished_at: None,
            owner: None,
            lease_until: 0,
        }
    }

    /// The table being walked, `None` once every table was.
    pub(crate) fn current(&self) -> Option<Table> {
        Table::ALL.get(self.table).copied()
    }

    /// The cursor as key bytes.
    pub(crate) fn cursor_bytes(&self) -> Option<Vec<u8>> {
        let hex = self.cursor.as_deref()?;
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    }

    /// Takes or renews the claim for `owner` at `now`: false when another process holds it.
    pub(crate) fn claim(&mut self, owner: &str, now: u64) -> bool {
        if self.owner.as_deref().is_some_and(|o| o != owner) && now < self.lease_until {
            return false;
        }
        self.owner = Some(owner.to_owned());
        self.lease_until = now.saturating_add(LEASE_SECS);
        true
    }

    /// Starts a batch of `owner` at `now`, the store key sealing with `sealing`: takes or
    /// renews the lease (false when another process holds it). An error when the store key
    /// does not seal with the target yet (the signing delay): a batch then would seal with the
    /// old key.
    pub(crate) fn begin_batch(
        &mut self,
        owner: &str,
        now: u64,
        sealing: &str,
    ) -> Result<bool, super::StoreError> {
        if sealing != self.target {
            return Err(super::StoreError::Io(format!(
                "the store key seals with {sealing}, not yet with the re-seal's target {}",
                self.target
            )));
        }
        Ok(self.claim(owner, now))
    }

    /// Records a batch: `scanned` records looked at, `resealed` written again, `last` the key
    /// of the last one, `exhausted` when the table has no more. Moves to the next table (and
    /// marks the re-seal done after the last) when exhausted.
    pub(crate) fn advance(
        &mut self,
        scanned: u64,
        resealed: u64,
        last: Option<&[u8]>,
        exhausted: bool,
        now: u64,
    ) {
        self.scanned += scanned;
        self.resealed += resealed;
        if exhausted {
            self.table += 1;
            self.cursor = None;
        } else if let Some(last) = last {
            self.cursor = Some(last.iter().map(|b| format!("{b:02x}")).collect());
        }
        if self.current().is_none() {
            self.finished_at = Some(now);
            self.owner = None;
            self.lease_until = 0;
        }
    }

    /// Records not looked at yet (an estimate: records written since the start count too).
    pub fn remaining(&self) -> u64 {
        if self.finished_at.is_some() {
            0
        } else {
            self.total.saturating_sub(self.scanned)
        }
    }
}

/// Receives each batch's outcome: records written again by it, and the progress after it.
pub type Report = Arc<dyn Fn(u64, &ResealProgress) + Send + Sync>;

/// The background re-seal of one process.
pub struct Resealer {
    /// The store whose records it re-seals.
    pub store: Arc<dyn Store>,
    /// The store's keys: the re-seal waits until they seal with the target.
    pub key: StoreKey,
    /// Records per batch.
    pub batch: usize,
    /// Pause between batches (0 by default), to bound the load a re-seal adds.
    pub pause: Duration,
    /// Wakes the task at once (a rotation here).
    pub wake: Arc<Notify>,
    /// This process, in the progress record's lease.
    pub owner: String,
    /// Metrics.
    pub report: Report,
}

impl Resealer {
    /// The batch size and pause from `TOLLGATE_RESEAL_BATCH` and `TOLLGATE_RESEAL_PAUSE_MS`
    /// (operators rarely need them; tests make batches small).
    pub fn tuning_from_env() -> (usize, Duration) {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let batch = num("TOLLGATE_RESEAL_BATCH")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_BATCH);
        let pause = Duration::from_millis(num("TOLLGATE_RESEAL_PAUSE_MS").unwrap_or(0));
        (batch, pause)
    }

    /// Runs until `stop`: re-seals whenever a re-seal is under way.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.work(&stop).await {
                tracing::error!(error = %e, "store key re-seal: batch failed; retrying later");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    /// Works through the re-seal under way, if any, until it is done or another process
    /// holds it.
    async fn work(&self, stop: &CancellationToken) -> Result<(), super::StoreError> {
        let Some(mut progress) = self.store.reseal_progress().await? else {
            return Ok(());
        };
        if progress.finished_at.is_some() {
            return Ok(());
        }
        if self.key.sealing_kid() != progress.target {
            // The signing delay: the ring watch switches the sealing key, then wakes us by the
            // next poll.
            tracing::debug!(target = %progress.target, "store key re-seal waits for the new key to seal");
            return Ok(());
        }
        let mut logged = progress.scanned / LOG_EVERY;
        while !stop.is_cancelled() {
            let before = progress.resealed;
            let Some(after) = self.store.reseal_batch(self.batch, &self.owner).await? else {
                return Ok(());
            };
            if after.owner.as_deref().is_some_and(|o| o != self.owner) {
                return Ok(());
            }
            progress = after;
            (self.report)(progress.resealed.saturating_sub(before), &progress);
            if progress.finished_at.is_some() {
                tracing::info!(
                    target = %progress.target,
                    scanned = progress.scanned,
                    resealed = progress.resealed,
                    "store key re-seal complete"
                );
                return Ok(());
            }
            if progress.scanned / LOG_EVERY > logged {
                logged = progress.scanned / LOG_EVERY;
                tracing::info!(
                    target = %progress.target,
                    scanned = progress.scanned,
                    total = progress.total,
                    resealed = progress.resealed,
                    table = progress.current().map_or("-", Table::name),
                    "store key re-seal progress"
                );
            }
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_walks_the_tables_and_leases() {
        let mut p = ResealProgress::start("k2", 10, 100);
        assert_eq!(p.current(), Some(Table::Apps));
        assert!(p.claim("a", 100));
        assert!(!p.claim("b", 100 + LEASE_SECS - 1), "held by a");
        assert!(p.claim("a", 101), "renewed by its owner");
        p.advance(3, 2, Some(&[0x0a, 0xff]), false, 101);
        assert_eq!(p.cursor.as_deref(), Some("0aff"));
        assert_eq!(p.cursor_bytes(), Some(vec![0x0a, 0xff]));
        assert_eq!(p.remaining(), 7);
        for _ in Table::ALL {
            p.advance(1, 0, None, true, 102);
        }
        assert_eq!(p.finished_at, Some(102));
        assert_eq!(p.remaining(), 0);
        assert!(p.claim("b", 103), "a finished re-seal holds no lease");
        let mut q = ResealProgress::start("k3", 1, 0);
        assert!(q.claim("a", 0));
        assert!(q.claim("b", LEASE_SECS), "an expired lease is taken over");
    }
}
