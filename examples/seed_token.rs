//! Stores a token set for one user of one app directly in a stopped tollgate's store, as if
//! the user had consented: `bench/inject.sh` uses it to measure injection without a provider.
//!
//! ```sh
//! cargo run --release --example seed_token -- DATA_DIR ORG APP USER ACCESS_TOKEN [REFRESH_TOKEN]
//! ```
//!
//! The token has an unknown lifetime, so it is injected as is, never refreshed; with a
//! refresh token it has already expired, so its first use refreshes it (`bench/store.sh`).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tollgate::datadir::DataDir;
use tollgate::store::{Secret, SledStore, Store, StoreKey, TokenSet};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (data, org, app, user, token, refresh) = match args.as_slice() {
        [d, o, a, u, t] => (d, o, a, u, t, None),
        [d, o, a, u, t, r] => (d, o, a, u, t, Some(r.clone())),
        _ => bail!("usage: seed_token DATA_DIR ORG APP USER ACCESS_TOKEN [REFRESH_TOKEN]"),
    };
    let dir = DataDir::at(&PathBuf::from(data));
    let store = SledStore::open(&dir.root.join("store"), StoreKey::load(&dir.store_key)?)
        .context("opening the store (is tollgate still running?)")?;
    let stored = store
        .get_app(org, app)
        .await?
        .with_context(|| format!("no app {app:?} in org {org:?}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let set = TokenSet {
        org: org.clone(),
        app: app.clone(),
        user: user.clone(),
        generation: stored.generation,
        // Set by the store.
        version: 0,
        access_token: Secret::new(token.clone()),
        expires_at: refresh.as_ref().map(|_| now),
        refresh_token: refresh.map(Secret::new),
        token_type: Some("bearer".into()),
        scopes: stored.scopes.clone(),
        obtained_at: now,
        health: Default::default(),
    };
    if !store.put_token_if_current(set, stored.incarnation).await? {
        bail!("the app changed while seeding");
    }
    store.flush().await?;
    println!("stored a token for {user} in {org}/{app}");
    Ok(())
}
