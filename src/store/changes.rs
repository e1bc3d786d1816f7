//! Change events: every store write that a cache depends on publishes a [`Change`] with a
//! sequence number, and caches follow the events instead of being invalidated by the code
//! that wrote (which misses writes made elsewhere: another handler, another replica).
//!
//! The shape follows Pomerium's databroker: the event travels over a bounded channel (a tokio
//! `broadcast`), and the publisher also bumps a shared counter, the last sequence number
//! sent. A subscriber checks that counter on its hot path (one atomic load) and only when it
//! moved drains its receiver ([`Changes::catch_up`]). Because the event is in the channel
//! before the counter moves, and the store publishes before its write method returns, a
//! request that starts after a write has returned always sees it. A subscriber that fell
//! more than the channel's capacity behind gets [`Seen::Missed`] and must flush everything
//! it caches.
//!
//! This is the seam for shared backends: a PostgreSQL store feeds the same [`ChangeFeed`]
//! from LISTEN/NOTIFY (events written by other replicas), so the caches do not change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::Notify;

/// How many events a subscriber may fall behind before it must flush its cache. Writes are
/// admin actions, consents and refreshes; a subscriber catches up on its next request, so
/// only an idle one falls this far behind, and flushing an idle cache costs nothing.
pub const CHANGES_CAPACITY: usize = 1024;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An app was created, or its configuration, `enabled` or generation changed (update,
    /// enable, disable, reset).
    AppChanged {
        /// The app's org.
        org: String,
        /// The app's id.
        app: String,
    },
    /// An app was deleted, with all its grants.
    AppDeleted {
        /// The app's org.
        org: String,
        /// The app's id.
        app: String,
    },
    /// A user's grant (token set) was stored: a consent or a refresh.
    GrantChanged {
        /// The app's org.
        org: String,
        /// The app's id.
        app: String,
        /// The user the grant acts for.
        user: String,
    },
    /// A user's grant was deleted (admin revoke, disconnect, dead refresh token).
    GrantDeleted {
        /// The app's org.
        org: String,
        /// The app's id.
        app: String,
        /// The user the grant acted for.
        user: String,
    },
    /// An agent's credentials were revoked (`tollgate agent revoke`, [`Store::revoke_agent`]):
    /// the relay reads the revocation and drops the agent's connections.
    ///
    /// [`Store::revoke_agent`]: super::Store::revoke_agent
    AgentRevoked {
        /// The agent ID.
        agent: String,
    },
    /// Caller tokens were revoked ([`Store::revoke_tokens`]): the verifier's set of revoked
    /// tokens is read again.
    ///
    /// [`Store::revoke_tokens`]: super::Store::revoke_tokens
    TokensRevoked,
}

impl Change {
    /// Whether the change is to an app itself (its grants aside).
    pub fn is_app(&self) -> bool {
        matches!(self, Change::AppChanged { .. } | Change::AppDeleted { .. })
    }
}

/// A change and its place in the store's order of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Increases by one per event of this feed, starting at 1.
    pub seq: u64,
    /// What changed.
    pub change: Change,
}

/// What a subscriber is handed by [`Changes::catch_up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// The next event, in sequence order.
    Event(&'a ChangeEvent),
    /// Events were lost (the subscriber fell behind the channel's capacity): flush
    /// everything cached. Events that follow are still handed over.
    Missed,
}

/// What travels on a feed's channel: an event, or word that events were lost upstream.
#[derive(Debug, Clone)]
enum Item {
    /// A change.
    Event(ChangeEvent),
    /// The publisher itself lost events (a PostgreSQL listener that reconnected): every
    /// subscriber must flush.
    Missed,
}

/// The publishing side, owned by a store.
#[derive(Debug)]
pub struct ChangeFeed {
    /// The bounded channel events travel on.
    tx: broadcast::Sender<Item>,
    /// The sequence number of the last event sent, read by subscribers to tell in one atomic
    /// load whether there is anything to catch up on.
    published: Arc<AtomicU64>,
    /// Serializes publishing, so sequence numbers are the channel's order and the counter
    /// never runs ahead of what was sent.
    order: Mutex<()>,
    /// Wakes subscribers that wait for the next event ([`Changes::changed`]) instead of
    /// catching up before each use.
    wake: Arc<Notify>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed::new(CHANGES_CAPACITY)
    }
}

impl ChangeFeed {
    /// A feed whose subscribers may fall `capacity` events behind before they miss some.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        ChangeFeed {
            tx,
            published: Arc::default(),
            order: Mutex::new(()),
            wake: Arc::default(),
        }
    }

    /// Publishes `change` to every subscriber; returns its sequence number. Call it after the
    /// write is committed (and durable), before the write method returns.
    pub fn publish(&self, change: Change) -> u64 {
        // A poisoned lock only means a panic elsewhere while publishing; the order is intact.
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.published.load(Ordering::Acquire) + 1;
        // No subscriber is not an error: nothing caches yet.
        let _ = self.tx.send(Item::Event(ChangeEvent { seq, change }));
        self.published.store(seq, Ordering::Release);
        self.wake.notify_waiters();
        seq
    }

    /// Tells every subscriber that events were lost before they reached this feed (a
    /// shared store's listener was disconnected): each gets [`Seen::Missed`] and flushes.
    /// Takes a sequence number, so subscribers see something pending.
    pub fn publish_missed(&self) -> u64 {
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.published.load(Ordering::Acquire) + 1;
        let _ = self.tx.send(Item::Missed);
        self.published.store(seq, Ordering::Release);
        self.wake.notify_waiters();
        seq
    }

    /// A subscriber that sees every event published from now on.
    pub fn subscribe(&self) -> Changes {
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        Changes {
            rx: Mutex::new(self.tx.subscribe()),
            seen: AtomicU64::new(self.published.load(Ordering::Acquire)),
            published: self.published.clone(),
            wake: self.wake.clone(),
        }
    }
}

/// One subscriber's position in a store's change events.
#[derive(Debug)]
pub struct Changes {
    /// The subscriber's end of the channel; locked while catching up, so each event is
    /// handled once and in order even when several requests catch up at the same time.
    rx: Mutex<broadcast::Receiver<Item>>,
    /// The feed's last sequence number sent.
    published: Arc<AtomicU64>,
    /// The last sequence number this subscriber has handled; moved only after handling.
    seen: AtomicU64,
    /// The feed's wake-up, for [`Changes::changed`].
    wake: Arc<Notify>,
}

impl Changes {
    /// Whether events were published that [`Changes::catch_up`] has not handed over yet.
    pub fn pending(&self) -> bool {
        self.published.load(Ordering::Acquire) != self.seen.load(Ordering::Acquire)
    }

    /// Resolves once there is something to catch up on (at once if there already is): for a
    /// subscriber that must act on events as they come, not only before its next use.
    pub async fn changed(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before the check, so a publish in between still wakes us.
            woken.as_mut().enable();
            if self.pending() {
                return;
            }
            woken.await;
        }
    }

    /// Hands `apply` every event published since the last call, in order (and
    /// [`Seen::Missed`] where some were lost). Returns at once when there is nothing new;
    /// never waits for a publisher. When it returns, every write whose method returned
    /// before the call has been handed over.
    pub fn catch_up(&self, mut apply: impl FnMut(Seen<'_>)) {
        if !self.pending() {
            return;
        }
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = self.published.load(Ordering::Acquire);
        loop {
            match rx.try_recv() {
                Ok(Item::Event(event)) => {
                    last = last.max(event.seq);
                    apply(Seen::Event(&event));
                }
                Ok(Item::Missed) => apply(Seen::Missed),
                Err(TryRecvError::Lagged(_)) => apply(Seen::Missed),
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
            }
        }
        self.seen.fetch_max(last, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    fn app_changed(app: &str) -> Change {
        Change::AppChanged {
            org: "acme".into(),
            app: app.into(),
        }
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_by_the_next_event() {
        let feed = Arc::new(ChangeFeed::new(8));
        let changes = feed.subscribe();
        let publisher = feed.clone();
        let publish = tokio::spawn(async move {
            tokio::task::yield_now().await;
            publisher.publish(app_changed("gh"));
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed())
            .await
            .expect("woken by the publish");
        publish.await.unwrap();
        assert_eq!(drain(&changes), vec![Some((1, app_changed("gh")))]);
        // Something already pending: no wait at all.
        feed.publish(app_changed("gl"));
        changes
            .changed()
            .now_or_never()
            .expect("pending resolves at once");
        drain(&changes);
        assert!(
            changes.changed().now_or_never().is_none(),
            "nothing pending"
        );
    }

    fn drain(changes: &Changes) -> Vec<Option<(u64, Change)>> {
        let mut out = Vec::new();
        changes.catch_up(|seen| match seen {
            Seen::Event(e) => out.push(Some((e.seq, e.change.clone()))),
            Seen::Missed => out.push(None),
        });
        out
    }

    #[test]
    fn events_arrive_in_order_once_and_only_after_subscribing() {
        let feed = ChangeFeed::new(8);
        assert_eq!(feed.publish(app_changed("early")), 1);
        let changes = feed.subscribe();
        assert!(!changes.pending());
        feed.publish(app_changed("a"));
        feed.publish(app_changed("b"));
        assert!(changes.pending());
        assert_eq!(
            drain(&changes),
            vec![Some((2, app_changed("a"))), Some((3, app_changed("b")))]
        );
        assert!(!changes.pending());
        assert!(drain(&changes).is_empty());
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_to_flush() {
        let feed = ChangeFeed::new(2);
        let changes = feed.subscribe();
        for i in 0..5 {
            feed.publish(app_changed(&i.to_string()));
        }
        let seen = drain(&changes);
        assert_eq!(seen[0], None, "{seen:?}");
        // The events still in the channel follow the flush.
        assert_eq!(
            &seen[1..],
            &[Some((4, app_changed("3"))), Some((5, app_changed("4")))]
        );
        assert!(!changes.pending());
    }

    #[test]
    fn a_publisher_that_lost_events_tells_subscribers_to_flush() {
        let feed = ChangeFeed::new(8);
        let changes = feed.subscribe();
        feed.publish(app_changed("a"));
        feed.publish_missed();
        feed.publish(app_changed("b"));
        assert_eq!(
            drain(&changes),
            vec![
                Some((1, app_changed("a"))),
                None,
                Some((3, app_changed("b")))
            ]
        );
        assert!(!changes.pending());
    }
}
