//! Policy hot reload (STUB).

use std::path::PathBuf;
use std::sync::Arc;

use super::PolicySet;

/// Outcome of the last load attempt, for `/readyz` and logs.
#[derive(Clone, Debug, Default)]
pub struct LoadStatus {
    /// A valid set has been loaded at least once (otherwise everything is denied).
    pub ever_loaded: bool,
    /// Errors of the last attempt (`FILE:LINE: message`), empty when it succeeded.
    pub last_errors: Vec<String>,
    /// Number of successful loads so far.
    pub generation: u64,
}

/// The live policy set: an `Arc` snapshot swapped atomically on reload, plus the load status.
pub struct Policies {
    dir: PathBuf,
}

impl Policies {
    /// Creates the handle and performs the first load. A failed first load leaves the
    /// empty (deny-all) set in force and the errors in the status.
    pub fn load(dir: PathBuf) -> Arc<Self> {
        let _ = dir;
        todo!()
    }

    /// The set in force (cheap: one atomic load).
    pub fn current(&self) -> Arc<PolicySet> {
        todo!()
    }

    /// Reloads now. On error the previous set stays in force; the errors are logged and kept
    /// in the status. Returns the errors, if any.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        todo!()
    }

    /// Status of the last load attempt.
    pub fn status(&self) -> LoadStatus {
        todo!()
    }

    /// The directory being watched.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// Watches the directory (notify, debounced) and SIGHUP, reloading on each change, until
/// `shutdown` resolves. A valid edit takes effect within 2 seconds.
pub async fn watch(policies: Arc<Policies>, shutdown: impl std::future::Future<Output = ()>) {
    let _ = policies;
    shutdown.await
}
