//! Caller identity: the JWT (HS256) a workload presents in `Proxy-Authorization`, turned into a
//! [`Caller`] (org + user + roles).
//!
//! Tokens are minted offline with the identity key (`tollgate token mint`, or a platform holding
//! the same key) and verified by a [`Verifier`] on every request. Verification is the first
//! thing the proxy does for each request, so successes are cached keyed by the token's SHA-256
//! (every header form of one token is one entry): a warm hit is the header split, one SHA-256,
//! one shard read lock, one digest comparison and an `exp` check — no JSON, no HMAC. The `exp`
//! check on a hit is what keeps a cached token from outliving its expiry.
//!
//! Nothing here ever logs a token or puts one in an error: [`IdentityError`] carries no data and
//! [`IdentityKey`]'s `Debug` is masked.

mod cache;
mod header;
pub mod issuer;
pub mod jwks;
mod mint;
pub mod revoked;
#[cfg(test)]
mod tests;
mod verify;

use std::sync::Arc;

pub use issuer::{Issuers, JwksFetch};
pub use mint::{generate_key_text, load_key_file, mint, random_hex};
pub use revoked::{Revocation, RevokedSet};
pub use verify::{KeySet, Verifier};

/// Clock skew tolerated on `exp` (and `nbf`), in seconds: platforms mint on other hosts.
pub const LEEWAY_SECS: u64 = 5;

/// Longest `sub` / `org` / role accepted, in characters. Names longer than this are not
/// identities anyone types, and they end up in every log line.
pub const MAX_CLAIM_CHARS: usize = 128;

/// Most roles a token may carry; a token is a credential, not a directory.
pub const MAX_ROLES: usize = 32;

/// Longest `Proxy-Authorization` value considered at all. A caller token is a few hundred bytes;
/// the limit keeps a hostile client from filling the cache with megabyte keys.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Verified tokens kept in the cache. The cache is also bounded in bytes (32 MiB), which only
/// tokens with unusually large claims reach first.
pub const CACHE_CAPACITY: usize = 100_000;

/// Shortest identity key accepted from a key file: RFC 7518 §3.2 asks for a key at least as
/// long as the HS256 output (32 bytes). The generated key is 64 hex characters.
pub const MIN_KEY_LEN: usize = 32;

/// A verified caller: who is making the request, for which organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Organization (`org` claim).
    pub org: String,
    /// User (`sub` claim).
    pub user: String,
    /// Roles (`roles` claim); `admin` may manage its org's outbound applications,
    /// `operator` may read the deployment's health and revoke agents.
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch (`exp` claim).
    pub exp: u64,
    /// The token's id (`jti` claim), which `tollgate token revoke --jti` names; tokens minted
    /// before issue 18, or by platforms that set none, have none.
    pub jti: Option<String>,
    /// When the token was issued (`iat` claim), which `token revoke --before` compares.
    pub iat: Option<u64>,
}

impl Caller {
    /// True when the caller holds the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// True when the caller holds the `operator` role: the whole deployment's health
    /// (`/metrics`, `/readyz` detail, `GET /v1/agents`) and `tollgate agent revoke`, but no
    /// org's applications.
    pub fn is_operator(&self) -> bool {
        self.roles.iter().any(|r| r == "operator")
    }
}

/// Why a caller could not be identified. None of these carry the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// No credentials were presented.
    #[error("credentials required")]
    Missing,
    /// The header is not `Bearer <jwt>` or `Basic base64(user:<jwt>)`.
    #[error("malformed credentials")]
    Malformed,
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, missing or invalid claims.
    #[error("invalid token")]
    Invalid,
    /// The token was revoked (`tollgate token revoke`).
    #[error("token revoked")]
    Revoked,
    /// Basic user part differs from the token's `sub`.
    #[error("user does not match token")]
    UserMismatch,
    /// The host clock is unusable, so no expiry can be checked: refused, never assumed fresh.
    #[error("the proxy's clock is unusable")]
    Clock,
    /// An issuer's token whose keys are not cached yet (or whose `kid` is unknown and a
    /// refetch is allowed): await [`Verifier::fetch_issuer_keys`], then verify again.
    #[error("the issuer's keys are being fetched")]
    KeysNeeded,
    /// An issuer's token refused, with why (no token data in it).
    #[error("token refused: {0}")]
    Refused(&'static str),
}

/// The HS256 signing key (`data/keys/identity.key`). `Debug` never prints it.
#[derive(Clone)]
pub struct IdentityKey(Arc<[u8]>);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(MASKED)")
    }
}

impl IdentityKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    /// The key bytes, for other HS256 signers of this key (agent credentials).
    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }

    /// The key's id (`kid` in the tokens it signs): the first 16 hex characters of the
    /// SHA-256 of the key. Derived, so the original key file, which predates ids, has one
    /// too; it reveals nothing usable about a 256-bit random key.
    pub fn kid(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Longest caller-token lifetime by default, at minting and at verification
/// (`--max-token-ttl`, `token mint --max-ttl`).
pub const DEFAULT_MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// The roles tollgate knows: `admin` (the org's outbound applications) and `operator` (the
/// deployment's health). Minting refuses others, which would grant nothing.
pub const KNOWN_ROLES: &[&str] = &["admin", "operator"];

/// Why claims would make a token the verifier refuses (the checks `verify` applies to `sub`,
/// `org` and `roles`), so `token mint` fails instead of printing one.
pub fn claims_problem(org: &str, user: &str, roles: &[String]) -> Option<String> {
    let rule = format!("1 to {MAX_CLAIM_CHARS} characters, no control characters");
    if !valid_name(org) {
        return Some(format!("--org must be {rule}"));
    }
    if !valid_name(user) {
        return Some(format!("--user must be {rule}"));
    }
    if roles.len() > MAX_ROLES || !roles.iter().all(|r| valid_name(r)) {
        return Some(format!("--role: at most {MAX_ROLES}, each {rule}"));
    }
    None
}

/// `sub`, `org` and roles: non-empty, at most [`MAX_CLAIM_CHARS`] characters, no control
/// characters (they end up in log lines and headers).
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control)
}
