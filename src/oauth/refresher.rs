//! The background refresher (`--refresh-ahead`): users' grants with refresh tokens are
//! refreshed before their access tokens expire (when less than the window is left) and at
//! least once a day, with no request waiting on it, so refresh failures show as grant
//! health (`refresh_failing`, `needs_consent`) before anyone needs the grant.
//!
//! It scans every app's grants every [`scan_interval`] (a quarter of the window, between 1 s
//! and a minute, jittered ±20 % so replicas drift apart), pacing itself: one app's grants at
//! a time, [`PACE`] between grants it refreshes, at most [`CONCURRENCY`] refreshes at once.
//! A refresh goes through the injector's own path ([`Injector::refresh_ahead`]): the same
//! in-process single-flight and the same store lease (`Store::acquire_refresh_lease`), and
//! it re-checks under the lock that the grant is still due, so two replicas on one database
//! refresh a grant once per round, and a request racing the refresher never refreshes twice.
//! Each scan also counts grants by state per app (`tollgate_grants`). It stops at shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::health_metrics::GrantLabels;
use super::inject::{InjectError, Injector};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{GrantState, Store, TokenSet};

/// A grant is refreshed at least this often, whatever its expiry (some providers expire
/// refresh tokens that are not used).
pub const MAX_AGE_SECS: u64 = 24 * 60 * 60;

/// Most refreshes in flight at once.
pub const CONCURRENCY: usize = 4;

/// Pause between two refreshes started by one scan.
pub const PACE: Duration = Duration::from_millis(20);

/// Whether grant `t` is due for a background refresh at `now`: less than `window` seconds
/// left, or its last refresh a day old.
pub fn due(t: &TokenSet, now: u64, window: u64) -> bool {
    t.expires_at
        .is_some_and(|e| e.saturating_sub(now) <= window)
        || now.saturating_sub(t.obtained_at) >= MAX_AGE_SECS
}

/// Time between scans for a window: a quarter of it, within [1 s, 60 s].
pub fn scan_interval(window: Duration) -> Duration {
    (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// `d` ± 20 %, at random.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = SystemRandom::new().fill(&mut b).map_or(0.5, |()| {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    });
    d.mul_f64(0.8 + 0.4 * r)
}

/// The refresher; see the module.
pub struct Refresher {
    /// Refreshes go through it (single-flight, lease, health, events).
    pub injector: Arc<Injector>,
    /// Where the grants are.
    pub store: Arc<dyn Store>,
    /// Expiry decisions.
    pub clock: Clock,
    /// `tollgate_grants`, `tollgate_refresher_*`.
    pub metrics: Arc<Metrics>,
    /// The refresh-ahead window.
    pub window: Duration,
}

impl Refresher {
    /// Scans every [`scan_interval`] (jittered) until `stop`; the first scan waits one
    /// interval, so a starting replica serves first.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = scan_interval(self.window);
        tracing::info!(window = ?self.window, every = ?every, "background refresher started");
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(jittered(every)) => {}
            }
            if let Err(e) = self.scan(&stop).await {
                tracing::warn!(error = %e, "background refresh scan failed");
            }
        }
    }

    /// One pass over every app's grants.
    pub async fn scan(self: &Arc<Self>, stop: &CancellationToken) -> Result<(), InjectError> {
        let window = self.window.as_secs();
        let limit = Arc::new(Semaphore::new(CONCURRENCY));
        let mut running = JoinSet::new();
        let mut counts: BTreeMap<(String, String), [i64; 3]> = BTreeMap::new();
        for app in self.store.list_all_apps().await? {
            let app = Arc::new(app);
            let grants = match self.store.list_tokens(&app.org, &app.id).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(org = %app.org, app = %app.id, error = %e, "listing grants failed");
                    continue;
                }
            };
            let c = counts.entry((app.org.clone(), app.id.clone())).or_default();
            for t in grants {
                c[state_index(t.health.state)] += 1;
                if stop.is_cancelled() {
                    break;
                }
                let now = self.clock.now().map_err(crate::store::StoreError::from)?;
                if !app.enabled
                    || t.health.state == GrantState::NeedsConsent
                    || !self.injector.refreshable(&app, &t)
                    || !due(&t, now, window)
                {
                    continue;
                }
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (me, app, user) = (self.clone(), app.clone(), t.user.clone());
                running.spawn(async move {
                    let outcome = match me.injector.refresh_ahead(&app, &user, window).await {
                        Ok(n) if n.version != t.version => "refreshed",
                        Ok(_) => "fresh",
                        Err(InjectError::AuthorizationRequired(_)) => "needs_consent",
                        Err(_) => "failed",
                    };
                    me.metrics.grants.count_refresher(outcome);
                    drop(permit);
                });
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(PACE) => {}
                }
            }
        }
        while running.join_next().await.is_some() {}
        self.publish(counts);
        self.metrics.grants.refresher_scans.inc();
        Ok(())
    }

    /// Replaces `tollgate_grants` with this scan's counts.
    fn publish(&self, counts: BTreeMap<(String, String), [i64; 3]>) {
        let family = &self.metrics.grants.grants;
        family.clear();
        for ((org, app), n) in counts {
            for (i, state) in [
                GrantState::Ok,
                GrantState::RefreshFailing,
                GrantState::NeedsConsent,
            ]
            .into_iter()
            .enumerate()
            {
                family
                    .get_or_create(&GrantLabels {
                        org: org.clone(),
                        app: app.clone(),
                        state: state.as_str(),
                    })
                    .set(n[i]);
            }
        }
    }
}

/// Index of a state in the per-app counts.
fn state_index(s: GrantState) -> usize {
    match s {
        GrantState::Ok => 0,
        GrantState::RefreshFailing => 1,
        GrantState::NeedsConsent => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_ahead_of_expiry_or_daily() {
        let mut t = crate::store::contract::grant(
            &crate::store::contract::sample_app("acme", "gh"),
            "bob",
            "at",
        );
        t.obtained_at = 1000;
        t.expires_at = Some(1000 + 3600);
        assert!(!due(&t, 1000, 300));
        assert!(due(&t, 1000 + 3300, 300));
        t.expires_at = None;
        assert!(!due(&t, 1000 + 3600, 300));
        assert!(due(&t, 1000 + MAX_AGE_SECS, 300));
        assert_eq!(
            scan_interval(Duration::from_secs(300)),
            Duration::from_secs(60)
        );
        assert_eq!(
            scan_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        let j = jittered(Duration::from_secs(10));
        assert!(j >= Duration::from_secs(8) && j <= Duration::from_secs(12));
    }
}
