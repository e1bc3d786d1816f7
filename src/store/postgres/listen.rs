//! Other replicas' changes: one dedicated connection, outside the pool, `LISTEN`s for the
//! sequence numbers writers `NOTIFY`, and reads the `changes` rows after the last one it
//! saw into this process's [`ChangeFeed`].
//!
//! Sequence numbers are handed out before commit, so they can become visible out of order:
//! every read goes back [`OVERLAP`] numbers and skips those already published (this
//! process's own writes, which the store publishes itself, and earlier reads). A
//! notification sent while the connection was down is lost, so after a reconnect the feed
//! publishes a "missed" and every cache flushes; a poll every [`POLL`] is the backstop for
//! anything else.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::super::changes::{Change, ChangeFeed};
use super::{pg, CHANNEL};
use crate::store::StoreResult;

/// How far back each read goes, in sequence numbers, for rows that committed late.
const OVERLAP: i64 = 256;

/// The backstop poll, in case a notification was lost without the connection dropping.
const POLL: Duration = Duration::from_secs(30);

/// The wait before reconnecting after the connection failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Most rows read at once; the rest come on the next read.
const BATCH: i64 = 1024;

/// The listener task's state.
pub(super) struct Listener {
    /// Where to connect (the store's own configuration).
    pub(super) config: tokio_postgres::Config,
    /// TLS for the connection.
    pub(super) tls: MakeRustlsConnect,
    /// Where changes are published.
    pub(super) feed: Arc<ChangeFeed>,
    /// Sequence numbers already published (own writes, earlier reads), pruned below the
    /// overlap window.
    pub(super) own: Arc<Mutex<BTreeSet<i64>>>,
    /// The highest sequence number read; rows at or below it minus [`OVERLAP`] are never
    /// read again, and nothing at or below the value at open is ever published.
    pub(super) last: i64,
}

impl Listener {
    /// Runs until `stop`: connect, listen, read; reconnect on failure.
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let floor = self.last;
        let mut connected_before = false;
        loop {
            let session = self.session(floor, connected_before, &stop);
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = session => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "store: change listener disconnected; reconnecting");
            }
            connected_before = true;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }

    /// One connection's life: returns when it fails.
    async fn session(
        &mut self,
        floor: i64,
        reconnected: bool,
        stop: &CancellationToken,
    ) -> StoreResult<()> {
        let mut config = self.config.clone();
        let name = format!(
            "{}-listen",
            config.get_application_name().unwrap_or("tollgate")
        );
        config.application_name(&name);
        let (client, mut connection) = config.connect(self.tls.clone()).await.map_err(pg)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let driver = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    match next {
                        Some(Ok(AsyncMessage::Notification(_))) => {
                            // Full means a read is already due; one wakes it enough.
                            let _ = tx.try_send(());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "store: listener connection failed");
                            return;
                        }
                        None => return,
                    }
                }
            }
        });
        let result = self.follow(&client, floor, reconnected, &mut rx).await;
        driver.abort();
        result
    }

    /// Listens, then reads on every notification and every [`POLL`] until the connection
    /// ends.
    async fn follow(
        &mut self,
        client: &Client,
        floor: i64,
        reconnected: bool,
        wake: &mut tokio::sync::mpsc::Receiver<()>,
    ) -> StoreResult<()> {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(pg)?;
        if reconnected {
            // Notifications sent while we were away are gone: caches start over.
            self.feed.publish_missed();
        }
        let mut poll = tokio::time::interval(POLL);
        loop {
            self.read(client, floor).await?;
            tokio::select! {
                woke = wake.recv() => if woke.is_none() {
                    return Ok(());
                },
                _ = poll.tick() => {}
            }
        }
    }

    /// Publishes the rows after `last - OVERLAP` (and above `floor`) not published yet.
    async fn read(&mut self, client: &Client, floor: i64) -> StoreResult<()> {
        loop {
            let from = floor.max(self.last - OVERLAP);
            let rows = client
                .query(
                    "SELECT seq, kind, org, app, usr, agent FROM changes WHERE seq > $1 \
                     ORDER BY seq LIMIT $2",
                    &[&from, &BATCH],
                )
                .await
                .map_err(pg)?;
            for row in &rows {
                let seq: i64 = row.get(0);
                self.last = self.last.max(seq);
                let new = self
                    .own
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(seq);
                if !new {
                    continue;
                }
                match change_of(row) {
                    Some(change) => {
                        self.feed.publish(change);
                    }
                    None => tracing::warn!(seq, "store: skipping an unknown change row"),
                }
            }
            let cutoff = self.last - OVERLAP;
            let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
            *own = own.split_off(&cutoff);
            // A full batch may have more behind it.
            if rows.len() < BATCH as usize {
                return Ok(());
            }
        }
    }
}

/// The change a `changes` row records.
fn change_of(row: &tokio_postgres::Row) -> Option<Change> {
    let text = |i: usize| row.get::<_, Option<String>>(i);
    Some(match row.get::<_, &str>(1) {
        "app_changed" => Change::AppChanged {
            org: text(2)?,
            app: text(3)?,
        },
        "app_deleted" => Change::AppDeleted {
            org: text(2)?,
            app: text(3)?,
        },
        "grant_changed" => Change::GrantChanged {
            org: text(2)?,
            app: text(3)?,
            user: text(4)?,
        },
        "grant_deleted" => Change::GrantDeleted {
            org: text(2)?,
            app: text(3)?,
            user: text(4)?,
        },
        "agent_revoked" => Change::AgentRevoked { agent: text(5)? },
        "tokens_revoked" => Change::TokensRevoked,
        _ => return None,
    })
}
