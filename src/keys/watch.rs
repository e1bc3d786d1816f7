//! Following the identity key ring on disk: a running server reads `keys/identity/ring.json`
//! every [`WATCH_EVERY`] and, when it changed (a rotation or a retirement by the CLI, the
//! operator API, or another replica sharing the keys directory), hands the new ring to the
//! verifiers. It also hands the ring over every [`REAPPLY_EVERY`] unchanged, so a key whose
//! automatic retirement time passed stops verifying without any file changing.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::identity_ring::{ring_path, IdentityRing};

/// How often the ring file is read: a rotation applies on every replica within this.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How often the unchanged ring is applied again, for automatic retirement.
const REAPPLY_EVERY: Duration = Duration::from_secs(60);

/// Reads the ring under `keys_dir` until `stop`, calling `apply` with every new version (and
/// every [`REAPPLY_EVERY`]). A ring that cannot be read is logged and the last one kept.
pub async fn watch(
    keys_dir: PathBuf,
    apply: impl Fn(&IdentityRing) + Send + 'static,
    stop: CancellationToken,
) {
    let path = ring_path(&keys_dir);
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::fs::read(&path).ok();
        if now == last && applied.elapsed() < REAPPLY_EVERY {
            continue;
        }
        match IdentityRing::load(&keys_dir) {
            Ok(ring) => {
                if now != last {
                    let kids: Vec<String> = ring
                        .list(crate::clock::Clock::system().now().unwrap_or(0))
                        .into_iter()
                        .map(|k| format!("{}:{:?}", k.kid, k.state))
                        .collect();
                    tracing::info!(keys = ?kids, "identity key ring changed; applied");
                }
                apply(&ring);
                last = now;
                applied = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the identity key ring; keeping the last one")
            }
        }
    }
}
