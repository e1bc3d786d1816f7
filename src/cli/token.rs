//! `tollgate token`: caller tokens, minted offline with the data directory's identity key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

/// `tollgate token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a caller token offline with the data directory's identity key.
    Mint {
        /// Data directory holding keys/identity.key.
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// Organization (`org` claim).
        #[arg(long)]
        org: String,
        /// User (`sub` claim).
        #[arg(long)]
        user: String,
        /// Role to grant (repeatable): `admin` may manage the org's outbound applications;
        /// `operator` may read the deployment's health (`/metrics`, `/readyz` detail,
        /// `GET /v1/agents`) and revoke agents.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Refuse caller tokens before they expire: one by `--jti`, or every token of `--org`
    /// `--user` issued up to `--before` (default now). Online with `--token` (admins in their
    /// org, operators anywhere), else offline against the data directory's store.
    Revoke(Box<super::token_revoke::RevokeArgs>),
}

/// Runs a `token` subcommand; the token goes to stdout.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    let (data, org, user, roles, ttl) = match cmd {
        TokenCommand::Mint {
            data,
            org,
            user,
            roles,
            ttl,
        } => (data, org, user, roles, ttl),
        TokenCommand::Revoke(args) => return super::block_on(super::token_revoke::run(*args)),
    };
    if let Some(problem) = crate::identity::claims_problem(&org, &user, &roles) {
        bail!("{problem}");
    }
    let key = super::load_identity_key(&data)?;
    let token = crate::identity::mint(&key, &org, &user, &roles, ttl)?;
    println!("{token}");
    Ok(())
}
