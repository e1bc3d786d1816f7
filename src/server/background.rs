//! The background work `Server::run` starts besides the listeners: the key rings followed on
//! disk (identity, session, store, interception CA) with the operations on them
//! (`keys::admin::KeyAdmin`) and the store key re-seal, and the grants' health (coalesced
//! "last used" writes and the background refresher).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Server;
use crate::keys::admin::KeyAdmin;
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::web;

impl Server {
    /// "Last used" written coalesced (what is pending written once requests drained), and
    /// the background refresher (`--refresh-ahead`).
    pub(super) fn grant_health_tasks(
        &self,
        oauth: &Arc<OAuth>,
        metrics: &Arc<Metrics>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let last_used = oauth.injector.last_used();
        tasks.spawn(last_used.clone().run(
            oauth.store.clone(),
            oauth.clock.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let (store, clock) = (oauth.store.clone(), oauth.clock.clone());
        self.lifecycle
            .on_shutdown("grant last use", move || async move {
                last_used.flush_all(store, clock).await
            });
        if let Some(window) = self.config.health.refresh_ahead {
            let refresher = Arc::new(crate::oauth::refresher::Refresher {
                injector: oauth.injector.clone(),
                store: oauth.store.clone(),
                clock: oauth.clock.clone(),
                metrics: metrics.clone(),
                window,
            });
            tasks.spawn(refresher.run(shutdown.clone()));
        }
    }

    /// The key rings followed on disk from now on, each applied where it is used, and the
    /// key operations of the admin API, which apply a ring they change at once.
    /// `apply_ring` hands the identity ring to the verifiers.
    pub(super) fn key_rings(
        &self,
        keys_dir: PathBuf,
        apply_ring: Arc<impl Fn(&crate::keys::IdentityRing) + Send + Sync + 'static>,
        login: &Arc<web::login::Login>,
        metrics: &Arc<Metrics>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Arc<KeyAdmin> {
        // The store key ring: the store seals and opens with its changes; a rotation made
        // here wakes the re-seal.
        let apply_store = {
            let key = self.store_key.clone();
            Arc::new(move |ring: &crate::keys::StoreRing| {
                let now = crate::clock::Clock::system().now().unwrap_or(0);
                key.set(crate::keys::store_key::key_set(ring, now));
            })
        };
        let reseal_wake = Arc::new(tokio::sync::Notify::new());
        // The session key ring: the pages sign and verify with its changes.
        let apply_session = {
            let login = login.clone();
            Arc::new(move |ring: &crate::keys::SessionRing| {
                let now = crate::clock::Clock::system().now().unwrap_or(0);
                login.set_keys(web::login::session::SessionKeys::from_ring(ring, now));
            })
        };
        // The interception CA ring (unless the operator supplies the CA): the leaf cache
        // signs with its signing CA, flushed when that changes.
        let ca_dir = self
            .config
            .ca
            .is_none()
            .then(|| crate::keys::ca_ring::ca_dir(&self.data.root));
        let key_admin = Arc::new(
            crate::keys::admin::KeyAdmin::new(
                keys_dir.clone(),
                self.store.clone(),
                crate::clock::Clock::system(),
                Some(Box::new({
                    let apply = apply_ring.clone();
                    move |ring: &crate::keys::IdentityRing| apply(ring)
                })),
            )
            .with_session_apply(Box::new({
                let apply = apply_session.clone();
                move |ring: &crate::keys::SessionRing| apply(ring)
            }))
            .with_ca(
                ca_dir.clone(),
                Some(Box::new({
                    let leaves = self.leaves.clone();
                    move |ring: &crate::keys::CaRing| crate::keys::ca_ring::apply(&leaves, ring)
                })),
            )
            .with_store_apply(
                Box::new({
                    let apply = apply_store.clone();
                    move |ring: &crate::keys::StoreRing| apply(ring)
                }),
                reseal_wake.clone(),
            ),
        );
        tasks.spawn(crate::keys::watch::watch(
            keys_dir.clone(),
            move |ring: &crate::keys::StoreRing| apply_store(ring),
            shutdown.clone(),
        ));
        tasks.spawn(
            self.resealer(reseal_wake, metrics.clone())
                .run(shutdown.clone()),
        );
        tasks.spawn(crate::keys::watch::watch(
            keys_dir.clone(),
            move |ring: &crate::keys::IdentityRing| apply_ring(ring),
            shutdown.clone(),
        ));
        tasks.spawn(crate::keys::watch::watch(
            keys_dir,
            move |ring: &crate::keys::SessionRing| apply_session(ring),
            shutdown.clone(),
        ));
        if let Some(dir) = &ca_dir {
            let leaves = self.leaves.clone();
            tasks.spawn(crate::keys::watch::watch(
                dir.clone(),
                move |ring: &crate::keys::CaRing| crate::keys::ca_ring::apply(&leaves, ring),
                shutdown.clone(),
            ));
        }
        key_admin
    }

    /// The background store key re-seal of this process, reporting to `metrics`.
    fn resealer(
        &self,
        wake: Arc<tokio::sync::Notify>,
        metrics: Arc<Metrics>,
    ) -> crate::store::reseal::Resealer {
        let (batch, pause) = crate::store::reseal::Resealer::tuning_from_env();
        crate::store::reseal::Resealer {
            store: self.store.clone(),
            key: self.store_key.clone(),
            batch,
            pause,
            wake,
            owner: crate::store::random_id().unwrap_or_else(|_| "tollgate".into()),
            report: Arc::new(move |n, progress| {
                metrics.reseal_records.inc_by(n);
                metrics
                    .reseal_remaining
                    .set(i64::try_from(progress.remaining()).unwrap_or(i64::MAX));
            }),
        }
    }
}
