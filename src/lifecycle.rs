//! A replica's life: the signals it answers from the first instant, and the order in which
//! it leaves a load balancer's rotation.
//!
//! [`Signals`] registers SIGTERM, SIGINT and SIGHUP before any startup work, so a signal sent
//! while the data directory is prepared or the store is opened is held instead of killing
//! the process (SIGHUP's default action is to terminate; the policy watcher, which reloads on
//! it, starts only once the server runs). A SIGTERM received during startup begins the
//! shutdown as soon as the server runs.
//!
//! [`Lifecycle`] owns the shutdown sequence, which [`Lifecycle::drive`] runs when the server's
//! shutdown token is cancelled:
//!
//! 1. **draining**: `/readyz` answers `503` ([`Lifecycle::draining`]) while every listener
//!    still accepts, for `--shutdown-delay`, so the balancer's health check takes the
//!    replica out of rotation before connections are refused (SIGINT, or a second signal,
//!    cuts the delay short: [`Lifecycle::hurry`]);
//! 2. **stop accepting**: the listeners' token ([`Lifecycle::stop_token`]) is cancelled;
//!    requests in flight drain for up to `--shutdown-grace` (the proxy, then its tunnels; the
//!    relay's agent connections close after the proxy drained, and the agents reconnect to
//!    another replica);
//! 3. **leave**: [`Lifecycle::finish`] releases the refresh leases this replica still holds
//!    (so no other replica waits for them to expire), then runs the registered shutdown
//!    hooks ([`Lifecycle::on_shutdown`]) in registration order, each bounded by
//!    [`HOOK_TIMEOUT`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Longest a single shutdown hook may run; one stuck on an unreachable database must not
/// keep the process alive.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Most hooks one process may register (they are a handful of fixed steps; a bound keeps a
/// bug from growing the list without end).
const MAX_HOOKS: usize = 32;

/// A shutdown step: an async closure run once, after the listeners drained.
pub type ShutdownHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The signals a server answers, registered as early as possible ([`Signals::install`]).
pub struct Signals {
    /// SIGTERM: the balancer's (or the orchestrator's) request to leave.
    term: Option<Signal>,
    /// SIGINT: Ctrl-C at a terminal; leaves without the drain delay.
    int: Option<Signal>,
    /// SIGHUP: held here so that, until the policy watcher listens for it, it is ignored
    /// instead of terminating the process (the watcher reloads on the ones after).
    _hup: Option<Signal>,
}

/// Which signal asked the server to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: drain with the delay.
    Terminate,
    /// SIGINT: drain without the delay.
    Interrupt,
}

impl Signals {
    /// Registers the handlers. Must run inside the runtime, before anything slow.
    pub fn install() -> Signals {
        let register = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the {name} handler");
                None
            }
        };
        Signals {
            term: register(SignalKind::terminate(), "SIGTERM"),
            int: register(SignalKind::interrupt(), "SIGINT"),
            _hup: register(SignalKind::hangup(), "SIGHUP"),
        }
    }

    /// The next SIGTERM or SIGINT (a signal received before this is called counts).
    pub async fn next(&mut self) -> Stop {
        async fn recv(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => Stop::Terminate,
            () = recv(&mut self.int) => Stop::Interrupt,
        }
    }

    /// Cancels `shutdown` on the first SIGTERM or SIGINT; a SIGINT, or any second signal,
    /// also tells `lifecycle` to skip what is left of the drain delay.
    pub async fn drive(mut self, shutdown: CancellationToken, lifecycle: Arc<Lifecycle>) {
        match self.next().await {
            Stop::Terminate => tracing::info!("SIGTERM: leaving the balancer's rotation"),
            Stop::Interrupt => {
                tracing::info!("SIGINT: draining");
                lifecycle.hurry();
            }
        }
        shutdown.cancel();
        self.next().await;
        tracing::info!("second signal: skipping the rest of the drain delay");
        lifecycle.hurry();
    }
}

/// The shutdown sequence of one server (see the module documentation).
pub struct Lifecycle {
    /// Set when the shutdown begins: `/readyz` answers `503` from then on.
    draining: AtomicBool,
    /// How long the listeners keep accepting after `/readyz` turned `503`.
    delay: Duration,
    /// Cancelled to end the delay early (SIGINT, a second signal).
    hurry: CancellationToken,
    /// Cancelled when the listeners stop accepting and drain.
    stop: CancellationToken,
    /// Steps run after the drain, in registration order.
    hooks: Mutex<Vec<(String, ShutdownHook)>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("draining", &self.draining())
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// A lifecycle whose listeners keep accepting for `delay` after `/readyz` turns `503`.
    pub fn new(delay: Duration) -> Lifecycle {
        Lifecycle {
            draining: AtomicBool::new(false),
            delay,
            hurry: CancellationToken::new(),
            stop: CancellationToken::new(),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// Whether the shutdown began (`/readyz` answers `503`).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The token the listeners stop accepting on.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Ends the drain delay now.
    pub fn hurry(&self) {
        self.hurry.cancel();
    }

    /// Registers a step to run once the listeners drained (after the leases are released),
    /// e.g. deleting this replica's rows. Steps run in registration order, each for at most
    /// [`HOOK_TIMEOUT`]; a step registered after the shutdown ran is ignored.
    pub fn on_shutdown<F, Fut>(&self, name: &str, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if hooks.len() >= MAX_HOOKS {
            tracing::error!(
                hook = name,
                "too many shutdown hooks; this one will not run"
            );
            return;
        }
        hooks.push((name.to_owned(), Box::new(move || Box::pin(hook()))));
    }

    /// Waits for `shutdown`, then turns `/readyz` to `503`, waits the drain delay (or until
    /// [`Lifecycle::hurry`]) and stops the listeners. Runs as its own task.
    pub async fn drive(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            // The server ended on its own (a listener task failed): nothing to announce.
            () = self.stop.cancelled() => return,
        }
        self.draining.store(true, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tracing::info!(
                delay = ?self.delay,
                "/readyz answers 503; listeners accept for the drain delay"
            );
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                () = self.hurry.cancelled() => {}
            }
        }
        tracing::info!("listeners stop accepting; draining requests in flight");
        self.stop.cancel();
    }

    /// The last steps, once the listeners drained: this replica's refresh leases released,
    /// then the hooks.
    pub async fn finish(&self, store: &dyn Store) {
        match tokio::time::timeout(HOOK_TIMEOUT, store.release_all_refresh_leases()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(released = n, "released refresh leases still held"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing refresh leases failed; they expire on their own")
            }
            Err(_) => {
                tracing::warn!("releasing refresh leases timed out; they expire on their own")
            }
        }
        let hooks = std::mem::take(&mut *self.hooks.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, hook) in hooks {
            if tokio::time::timeout(HOOK_TIMEOUT, hook()).await.is_err() {
                tracing::warn!(hook = %name, "shutdown step timed out");
            } else {
                tracing::debug!(hook = %name, "shutdown step done");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn readyz_turns_first_then_listeners_stop_after_the_delay() {
        let life = Arc::new(Lifecycle::new(Duration::from_secs(5)));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(life.clone().drive(shutdown.clone()));
        tokio::task::yield_now().await;
        assert!(!life.draining());
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(life.draining(), "readyz turns 503 at once");
        assert!(!life.stop_token().is_cancelled(), "listeners still accept");
        tokio::time::sleep(Duration::from_secs(5)).await;
        task.await.unwrap();
        assert!(life.stop_token().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn hurry_cuts_the_delay_short() {
        let life = Arc::new(Lifecycle::new(Duration::from_secs(3600)));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(life.clone().drive(shutdown.clone()));
        shutdown.cancel();
        life.hurry();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("no delay after hurry")
            .unwrap();
        assert!(life.stop_token().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn hooks_run_in_order_and_a_stuck_one_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(
            &dir.path().join("s"),
            crate::store::StoreKey::from_hex_text(&"a1".repeat(32)).unwrap(),
        )
        .unwrap();
        let life = Lifecycle::new(Duration::ZERO);
        let order = Arc::new(Mutex::new(Vec::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        for name in ["first", "stuck", "last"] {
            let (order, ran) = (order.clone(), ran.clone());
            life.on_shutdown(name, move || async move {
                order.lock().unwrap().push(name);
                if name == "stuck" {
                    std::future::pending::<()>().await;
                }
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        life.finish(&store).await;
        assert_eq!(*order.lock().unwrap(), ["first", "stuck", "last"]);
        assert_eq!(
            ran.load(Ordering::SeqCst),
            2,
            "the stuck hook never finished"
        );
        // Hooks run once.
        life.finish(&store).await;
        assert_eq!(order.lock().unwrap().len(), 3);
    }
}
