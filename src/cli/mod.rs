//! The subcommands behind `main`, one file per command group: `serve`, `policy`, `token`,
//! `ca`, `agent`, `app` (the admin API from the shell) and `store` (`store copy`). `main` parses the command line,
//! sets up logging and the crypto provider, then calls `run` here. `anyhow` is fine in this
//! glue, as in `main`.
//! `demo` runs the offline tour (`tollgate demo`) with the fixtures of `crate::demo`.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub mod agent;
pub mod app;
pub mod ca;
pub mod demo;
pub mod keys;
pub mod policy;
pub mod policy_test;
pub mod providers;
pub mod serve;
pub mod store;
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
    Ok(ring.signing(crate::clock::Clock::system().now()?).clone())
}

/// The store `serve` would open for the data directory `data` (or `store`, a `--store`
/// value), with the data directory's store key: for the offline commands (`token revoke`,
/// `keys`), which audit what they do there.
async fn open_store(
    data: &Path,
    store: Option<&str>,
) -> anyhow::Result<std::sync::Arc<dyn crate::store::Store>> {
    use crate::config::store::StoreLocation;
    let paths = crate::datadir::DataDir::at(data);
    let key = crate::keys::store_key::load(&data.join("keys"))
        .with_context(|| format!("{}: no store key", paths.store_key.display()))?;
    let location = match store {
        Some(s) => StoreLocation::parse(s).map_err(anyhow::Error::msg)?,
        None => StoreLocation::Sled(data.join(crate::datadir::STORE_DIR)),
    };
    Ok(match &location {
        StoreLocation::Sled(dir) => {
            std::sync::Arc::new(crate::store::SledStore::open(dir, key).with_context(|| {
                format!(
                    "opening {location} (a running server holds it: use --token to go through it)"
                )
            })?)
        }
        StoreLocation::Postgres(url) => std::sync::Arc::new(
            crate::store::PgStore::open(url, key)
                .await
                .with_context(|| format!("opening {location}"))?,
        ),
    })
}

/// Where an operation runs: online (with a token) through the server's API, or offline on the
/// data directory and its store (`token revoke`, `keys`).
#[derive(Debug, clap::Args)]
pub struct Place {
    /// Data directory (offline): its keys, and by default its sled store.
    #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
    pub data: PathBuf,
    /// The store, offline: `sled:DIR` or `postgres://…` (default: sled in DATA/store).
    #[arg(long, env = "TOLLGATE_STORE", hide_env_values = true)]
    pub store: Option<String>,
    #[command(flatten)]
    pub target: app::Target,
}

impl Place {
    /// Whether a token was given: the operation goes through the server.
    pub fn online(&self) -> bool {
        self.target.token.as_ref().is_some_and(|t| !t.is_empty())
    }
}
