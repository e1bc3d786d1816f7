//! `tollgate token`: caller tokens, minted offline with the data directory's identity key,
//! and inspected (claims and validity; never the key or the signature).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

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
        /// `GET /v1/agents`) and revoke agents. Other roles are refused.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 1h, 30m, 7d; at most `--max-ttl`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Longest lifetime allowed; the server refuses longer-lived tokens with the same cap
        /// (`serve --max-token-ttl`).
        #[arg(long, env = "TOLLGATE_MAX_TOKEN_TTL", default_value = "30d",
              value_parser = humantime::parse_duration)]
        max_ttl: Duration,
    },
    /// Show a token's claims and whether it is valid now (never the key or the signature).
    Inspect {
        /// The token (a bare JWT; `-` reads it from stdin, keeping it out of shell history).
        token: String,
        /// Data directory whose identity key checks the signature; without a readable key,
        /// the signature is reported as not checked.
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// The server's `--max-token-ttl`, for the validity verdict.
        #[arg(long, env = "TOLLGATE_MAX_TOKEN_TTL", default_value = "30d",
              value_parser = humantime::parse_duration)]
        max_ttl: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Refuse caller tokens before they expire: one by `--jti`, or every token of `--org`
    /// `--user` issued up to `--before` (default now). Online with `--token` (admins in their
    /// org, operators anywhere), else offline against the data directory's store.
    Revoke(Box<super::token_revoke::RevokeArgs>),
    /// Print your own access token for an app whose admins set `expose_token` (refreshed
    /// when needed; every read is audited). Online: `--server` and your caller `--token`.
    Get {
        /// The app's id.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        target: super::app::Target,
    },
}

/// Runs a `token` subcommand; the token (or the report) goes to stdout.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Mint {
            data,
            org,
            user,
            roles,
            ttl,
            max_ttl,
        } => mint(&data, &org, &user, &roles, ttl, max_ttl),
        TokenCommand::Inspect {
            token,
            data,
            max_ttl,
            json,
        } => inspect(&token, &data, max_ttl, json),
        TokenCommand::Revoke(args) => super::block_on(super::token_revoke::run(*args)),
        TokenCommand::Get { app, target } => super::block_on(get(&app, &target)),
    }
}

/// `token get`: the access token alone on stdout (for `$(tollgate token get --app gh)`), or
/// the whole answer with `--json`. A refusal (no consent yet: its URL; not exposed; disabled)
/// is the error, on stderr.
async fn get(app: &str, target: &super::app::Target) -> anyhow::Result<()> {
    let api = super::app::Api::new(target)?;
    let path = format!(
        "/v1/me/tokens/{}",
        url::form_urlencoded::byte_serialize(app.as_bytes()).collect::<String>()
    );
    let out = api.call(http::Method::GET, &path, None).await?;
    if target.json {
        println!("{out}");
        return Ok(());
    }
    match out["access_token"].as_str() {
        Some(t) => {
            println!("{t}");
            Ok(())
        }
        None => bail!("the server answered without an access_token"),
    }
}

fn mint(
    data: &std::path::Path,
    org: &str,
    user: &str,
    roles: &[String],
    ttl: Duration,
    max_ttl: Duration,
) -> anyhow::Result<()> {
    if let Some(problem) = crate::identity::claims_problem(org, user, roles) {
        bail!("{problem}");
    }
    if let Some(r) = roles
        .iter()
        .find(|r| !crate::identity::KNOWN_ROLES.contains(&r.as_str()))
    {
        bail!(
            "--role {r:?} is not a role tollgate knows; roles: {}",
            crate::identity::KNOWN_ROLES.join(", ")
        );
    }
    if ttl > max_ttl {
        bail!(
            "--ttl {} is longer than the maximum {} (--max-ttl; the server refuses longer-lived \
             tokens with its --max-token-ttl)",
            humantime::format_duration(ttl),
            humantime::format_duration(max_ttl)
        );
    }
    let key = super::load_identity_key(data)?;
    let token = crate::identity::mint(&key, org, user, roles, ttl)?;
    println!("{token}");
    Ok(())
}

/// The JSON of one base64url part of a JWT.
fn part(token_part: Option<&str>, what: &str) -> anyhow::Result<Value> {
    let raw = token_part.with_context(|| format!("not a JWT: no {what}"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .with_context(|| format!("not a JWT: the {what} is not base64url"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("not a JWT: the {what} is not JSON"))
}

fn inspect(
    token: &str,
    data: &std::path::Path,
    max_ttl: Duration,
    as_json: bool,
) -> anyhow::Result<()> {
    let token = if token == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
            &mut s,
        )?;
        s.trim().to_owned()
    } else {
        token.trim().to_owned()
    };
    let mut parts = token.split('.');
    let header = part(parts.next(), "header")?;
    let claims = part(parts.next(), "payload")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let time = |name: &str| claims[name].as_f64().map(|v| v as u64);
    let (iat, exp) = (time("iat"), time("exp"));
    // The verdict: the server's own verification when the key is at hand.
    let (signature, verdict) =
        match crate::identity::load_key_file(crate::datadir::DataDir::at(data).identity_key) {
            Ok(key) => {
                let v = crate::identity::Verifier::new(key).with_max_ttl(max_ttl);
                match v.verify_token(&token) {
                    Ok(_) => ("valid", "valid".to_owned()),
                    Err(crate::identity::IdentityError::Expired) => {
                        ("valid", "invalid: expired".to_owned())
                    }
                    Err(e) => ("invalid or claims refused", format!("invalid: {e}")),
                }
            }
            Err(_) => (
                "not checked (no identity key)",
                "unknown (signature not checked)".to_owned(),
            ),
        };
    let lifetime = match (iat, exp) {
        (Some(i), Some(e)) => Some(e.saturating_sub(i)),
        _ => None,
    };
    let over_cap = lifetime.is_some_and(|l| l > max_ttl.as_secs());
    let out = json!({
        "algorithm": header["alg"],
        "kid": header.get("kid"),
        "org": claims["org"],
        "user": claims["sub"],
        "roles": claims.get("roles").cloned().unwrap_or(json!([])),
        "issued_at": iat.map(crate::clock::rfc3339),
        "expires_at": exp.map(crate::clock::rfc3339),
        "lifetime_seconds": lifetime,
        "lifetime_over_max": over_cap,
        "expires_in_seconds": exp.map(|e| i128::from(e) - i128::from(now)),
        "signature": signature,
        "valid": verdict,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    println!("org:        {}", s(&out["org"]));
    println!("user:       {}", s(&out["user"]));
    println!("roles:      {}", s(&out["roles"]));
    println!("algorithm:  {}", s(&out["algorithm"]));
    println!("issued at:  {}", s(&out["issued_at"]));
    let left = match exp {
        Some(e) if e >= now => format!(
            " (in {})",
            humantime::format_duration(Duration::from_secs(e - now))
        ),
        Some(e) => format!(
            " ({} ago)",
            humantime::format_duration(Duration::from_secs(now - e))
        ),
        None => String::new(),
    };
    println!("expires at: {}{left}", s(&out["expires_at"]));
    if let Some(l) = lifetime {
        let cap = if over_cap { " (over the maximum)" } else { "" };
        println!(
            "lifetime:   {}{cap}",
            humantime::format_duration(Duration::from_secs(l))
        );
    }
    println!("signature:  {signature}");
    println!("valid:      {verdict}");
    Ok(())
}
