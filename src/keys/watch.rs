//! Following a key ring on disk: a running server reads `keys/KIND/ring.json` every
//! [`WATCH_EVERY`] and, when it changed (a rotation or a retirement by the CLI, the operator
//! API, or another replica sharing the keys directory), hands the new ring to its users (the
//! identity verifiers, the pages' session cookies). It hands the ring over again when the
//! newest key starts signing (after the signing delay), and every [`REAPPLY_EVERY`]
//! unchanged, so a key whose automatic retirement time passed stops verifying without any
//! file changing.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ring::{ring_path, Ring, RingKey};
use crate::clock::Clock;

/// How often the ring file is read: a rotation applies on every replica within this.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How often the unchanged ring is applied again, for automatic retirement.
const REAPPLY_EVERY: Duration = Duration::from_secs(60);

/// Reads the ring of kind `K` under `keys_dir` until `stop`, calling `apply` with every new
/// version (and when its newest key starts signing, and every [`REAPPLY_EVERY`]). A ring that
/// cannot be read is logged and the last one kept.
///
/// The ring file is read when this is called, not when the task first runs, so that a change
/// made between the server's start and the task's first turn is not taken for the start.
pub fn watch<K: RingKey>(
    keys_dir: PathBuf,
    apply: impl Fn(&Ring<K>) + Send + 'static,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let path = ring_path::<K>(&keys_dir);
    let clock = Clock::system();
    let last = std::fs::read(&path).ok();
    let switch_at = Ring::<K>::load(&keys_dir)
        .ok()
        .and_then(|r| r.switches_at(clock.now().unwrap_or(0)));
    follow(keys_dir, path, last, switch_at, apply, stop)
}

async fn follow<K: RingKey>(
    keys_dir: PathBuf,
    path: PathBuf,
    mut last: Option<Vec<u8>>,
    mut switch_at: Option<u64>,
    apply: impl Fn(&Ring<K>) + Send + 'static,
    stop: CancellationToken,
) {
    let clock = Clock::system();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let bytes = std::fs::read(&path).ok();
        let now = clock.now().unwrap_or(0);
        let switched = switch_at.is_some_and(|at| at <= now);
        if bytes == last && !switched && applied.elapsed() < REAPPLY_EVERY {
            continue;
        }
        match Ring::<K>::load(&keys_dir) {
            Ok(ring) => {
                if bytes != last || switched {
                    let kids: Vec<String> = ring
                        .list(now)
                        .into_iter()
                        .map(|k| format!("{}:{:?}", k.kid, k.state))
                        .collect();
                    tracing::info!(kind = K::KIND, keys = ?kids, "key ring changed; applied");
                }
                apply(&ring);
                switch_at = ring.switches_at(now);
                last = bytes;
                applied = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(kind = K::KIND, error = %e, "cannot read the key ring; keeping the last one")
            }
        }
    }
}
