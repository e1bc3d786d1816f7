//! "Last used", coalesced: a request that injects a grant's token only notes the time in
//! memory ([`LastUsed::touch`], no I/O); a periodic flush ([`LastUsed::run`]) writes it to the
//! store as a health-only write, at most once per grant per [`WRITE_EVERY`] per process,
//! never once per request. The map is bounded ([`MAX_ENTRIES`]); when it is full, uses of
//! grants not in it are dropped (counted) until the next flush makes room. Shutdown writes
//! what is still pending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{GrantRef, HealthUpdate, Store};

/// A grant is written at most once per this many seconds per process.
pub const WRITE_EVERY: u64 = 60;

/// How often pending uses are looked at (a first use is stored within this long).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Most grants noted at once.
pub const MAX_ENTRIES: usize = 100_000;

/// One grant's pending use.
#[derive(Debug, Clone, Copy)]
struct Use {
    /// The latest use, Unix seconds.
    used_at: u64,
    /// When this process last wrote the grant's use (Unix seconds); `None` = never.
    written_at: Option<u64>,
    /// A use not written yet.
    dirty: bool,
}

/// Identifies a grant: (org, app, user, incarnation, generation).
type UseKey = (String, String, String, u64, u64);

/// A grant as a request names it, borrowed: [`LastUsed::touch`] copies the names only for a
/// grant not in the map yet (the first use since its last write), not once per request.
#[derive(Clone, Copy, Debug)]
pub struct UseOf<'a> {
    /// Organization.
    pub org: &'a str,
    /// App id.
    pub app: &'a str,
    /// User.
    pub user: &'a str,
    /// The app's incarnation.
    pub incarnation: u64,
    /// The grant's generation.
    pub generation: u64,
}

/// The map's key seen through its parts, so that a borrowed [`UseOf`] can look up an owned
/// [`UseKey`] (the two hash alike: a tuple hashes its fields in order, a `String` as its `str`).
trait KeyParts {
    fn parts(&self) -> (&str, &str, &str, u64, u64);
}

impl KeyParts for UseKey {
    fn parts(&self) -> (&str, &str, &str, u64, u64) {
        (&self.0, &self.1, &self.2, self.3, self.4)
    }
}

impl KeyParts for UseOf<'_> {
    fn parts(&self) -> (&str, &str, &str, u64, u64) {
        (
            self.org,
            self.app,
            self.user,
            self.incarnation,
            self.generation,
        )
    }
}

impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for UseKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl std::hash::Hash for dyn KeyParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

/// The coalescing map; see the module.
#[derive(Debug, Default)]
pub struct LastUsed {
    /// Pending and recently written uses, by grant.
    entries: Mutex<HashMap<UseKey, Use>>,
    /// Uses dropped because the map was full.
    dropped: AtomicU64,
    /// Store writes made, for tests and metrics.
    writes: AtomicU64,
}

impl LastUsed {
    /// Notes that `grant` was used at `now`. Never blocks on I/O, and copies the grant's
    /// names only when the map does not hold it yet (this runs once per injected request).
    pub fn touch(&self, grant: UseOf<'_>, now: u64) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = map.get_mut(&grant as &dyn KeyParts) {
            if now > u.used_at || (now == u.used_at && u.written_at.is_none()) {
                u.used_at = now;
                u.dirty = true;
            }
            return;
        }
        if map.len() >= MAX_ENTRIES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let key = (
            grant.org.to_owned(),
            grant.app.to_owned(),
            grant.user.to_owned(),
            grant.incarnation,
            grant.generation,
        );
        map.insert(
            key,
            Use {
                used_at: now,
                written_at: None,
                dirty: true,
            },
        );
    }

    /// The uses to write now (all pending ones when `all`), marked written; forgets grants
    /// written long enough ago that a new entry could write again anyway.
    fn due(&self, now: u64, all: bool) -> Vec<(GrantRef, u64)> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        map.retain(|k, u| {
            let may_write = all || u.written_at.is_none_or(|w| now >= w + WRITE_EVERY);
            if u.dirty && may_write {
                u.dirty = false;
                u.written_at = Some(now);
                out.push((
                    GrantRef {
                        org: k.0.clone(),
                        app: k.1.clone(),
                        user: k.2.clone(),
                        incarnation: k.3,
                        generation: k.4,
                        version: None,
                    },
                    u.used_at,
                ));
                return true;
            }
            u.dirty || u.written_at.is_some_and(|w| now < w + WRITE_EVERY)
        });
        out
    }

    /// Writes the uses that are due (all pending ones when `all`). Returns how many.
    pub async fn flush(&self, store: &dyn Store, now: u64, all: bool) -> usize {
        let due = self.due(now, all);
        for (grant, at) in &due {
            self.writes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = store
                .update_grant_health(grant, &HealthUpdate::Used { at: *at })
                .await
            {
                tracing::warn!(org = %grant.org, app = %grant.app, error = %e, "storing a grant's last use failed");
            }
        }
        due.len()
    }

    /// Store writes made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Uses dropped because the map was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `stop`, counting writes and drops in
    /// `metrics`. What is still pending then is written by [`LastUsed::flush_all`] (a
    /// shutdown step, after requests drained).
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        clock: Clock,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Ok(now) = clock.now() {
                        let n = self.flush(&*store, now, false).await;
                        metrics.grants.last_used_writes.inc_by(n as u64);
                    }
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    metrics.grants.last_used_dropped.inc_by(dropped);
                }
            }
        }
    }

    /// Writes every pending use (at shutdown).
    pub async fn flush_all(&self, store: Arc<dyn Store>, clock: Clock) {
        if let Ok(now) = clock.now() {
            let n = self.flush(&*store, now, true).await;
            tracing::debug!(written = n, "stored the grants' last uses");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: &str) -> UseOf<'_> {
        UseOf {
            org: "acme",
            app: "gh",
            user,
            incarnation: 1,
            generation: 1,
        }
    }

    #[test]
    fn one_write_per_grant_per_minute() {
        let u = LastUsed::default();
        for i in 0..500 {
            u.touch(grant("bob"), 1000 + i / 100);
        }
        let first = u.due(1005, false);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, 1004, "the latest use is written");
        u.touch(grant("bob"), 1010);
        assert!(u.due(1030, false).is_empty(), "not again within the minute");
        let later = u.due(1065, false);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].1, 1010);
        assert!(u.due(1200, false).is_empty(), "nothing pending");
        assert!(
            u.entries.lock().unwrap().is_empty(),
            "old entries are forgotten"
        );
        u.touch(grant("carol"), 1300);
        assert_eq!(
            u.due(1300, true).len(),
            1,
            "shutdown writes what is pending"
        );
    }
}
