//! The subcommands behind `main`, one file per command group: `serve`, `policy`, `token`,
//! `ca`, `agent` and `app` (the admin API from the shell). `main` parses the command line,
//! sets up logging and the crypto provider, then calls `run` here. `anyhow` is fine in this
//! glue, as in `main`.

use std::future::Future;
use std::path::Path;

use anyhow::Context;

pub mod agent;
pub mod app;
pub mod ca;
pub mod policy;
pub mod policy_test;
pub mod serve;
pub mod token;
pub mod token_revoke;

/// Runs `work` to completion on a single-threaded runtime: the one-shot commands wait on one
/// thing at a time.
pub fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(work)
}

/// The data directory's active identity key (the key ring's signing key), which signs caller
/// tokens and agent credentials.
fn load_identity_key(data: &Path) -> anyhow::Result<crate::identity::IdentityKey> {
    let path = crate::datadir::DataDir::at(data).identity_key;
    if !path.exists() {
        anyhow::bail!(
            "{}: no identity key; run `tollgate serve` once to create the data directory",
            path.display()
        );
    }
    let ring = crate::keys::IdentityRing::load(&data.join("keys"))?;
    Ok(ring.active().clone())
}
