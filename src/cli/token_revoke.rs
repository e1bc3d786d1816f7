//! `tollgate token revoke`: refuse caller tokens before they expire, one by its `jti` or every
//! token of a user issued up to a time. With a token (`--token` / `TOLLGATE_TOKEN`) the request
//! goes to the server (`POST /v1/tokens/revoke`: admins in their org, operators anywhere);
//! without one it is written offline into the data directory's store (or `--store`), where a
//! running server's follower picks it up (on PostgreSQL at once; the sled store is locked by a
//! running server, so revoke online then).

use serde_json::{Map, Value};

use crate::revoke::{RevokeRequest, Revoker, TokenControl};

/// `tollgate token revoke` arguments.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Revoke the one token with this `jti` claim (in `--org` only, when given).
    #[arg(long, conflicts_with_all = ["user", "before"])]
    pub jti: Option<String>,
    /// The tokens' org (an admin's own org when omitted online).
    #[arg(long)]
    pub org: Option<String>,
    /// Revoke every token of this user (`sub`) issued up to `--before`.
    #[arg(long, required_unless_present = "jti")]
    pub user: Option<String>,
    /// With `--user`: tokens issued at or before this RFC 3339 time (default: now).
    #[arg(long)]
    pub before: Option<String>,
    #[command(flatten)]
    pub place: super::Place,
}

impl RevokeArgs {
    fn request(&self) -> RevokeRequest {
        RevokeRequest {
            jti: self.jti.clone(),
            org: self.org.clone(),
            user: self.user.clone(),
            before: self.before.clone().map(Value::String),
        }
    }
}

/// Runs `token revoke`, online with a token, offline without.
pub async fn run(args: RevokeArgs) -> anyhow::Result<()> {
    let online = args.place.online();
    let (revocation, expires_at) = if online {
        let api = super::app::Api::new(&args.place.target)?;
        let body = serde_json::to_value(args.request())?;
        let body: Map<String, Value> = serde_json::from_value(body)?;
        let out = api
            .call(http::Method::POST, "/v1/tokens/revoke", Some(body))
            .await?;
        if args.place.target.json {
            println!("{out}");
            return Ok(());
        }
        (out["revocation"].clone(), out["expires_at"].clone())
    } else {
        let store = super::open_store(&args.place.data, args.place.store.as_deref()).await?;
        let control = TokenControl::new(
            store.clone(),
            std::sync::Arc::default(),
            crate::clock::Clock::system(),
        );
        let r = control.revoke(Revoker::Offline, args.request()).await?;
        store.flush().await?;
        (serde_json::to_value(&r.target)?, Value::from(r.expires_at))
    };
    println!("revoked caller tokens: {revocation} (the record is kept until {expires_at})");
    Ok(())
}
