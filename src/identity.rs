//! Caller identity (STUB).

use std::sync::Arc;
use std::time::Duration;

/// A verified caller: who is making the request, for which organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Organization (`org` claim).
    pub org: String,
    /// User (`sub` claim).
    pub user: String,
    /// Roles (`roles` claim); `admin` may manage its org's outbound applications.
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch (`exp` claim).
    pub exp: u64,
}

impl Caller {
    /// True when the caller holds the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
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
    /// Basic user part differs from the token's `sub`.
    #[error("user does not match token")]
    UserMismatch,
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
}

/// Mints a caller token (HS256) with `sub`, `org`, `iat`, `exp = now + ttl`, and `roles`.
pub fn mint(key: &IdentityKey, org: &str, user: &str, roles: &[String], ttl: Duration) -> String {
    let _ = (key, org, user, roles, ttl);
    todo!()
}

/// Verifies tokens and `Proxy-Authorization` values, caching successes so the hot path does
/// not re-verify the same token on every request.
pub struct Verifier {}

impl Verifier {
    /// A verifier for tokens signed with `key`.
    pub fn new(key: IdentityKey) -> Self {
        let _ = key;
        todo!()
    }

    /// Verifies a bare JWT.
    pub fn verify_token(&self, token: &str) -> Result<Arc<Caller>, IdentityError> {
        let _ = token;
        todo!()
    }

    /// Verifies a `Proxy-Authorization` (or `Authorization`) header value:
    /// `Bearer <jwt>` or `Basic base64(user:<jwt>)`.
    pub fn verify_header(&self, value: &[u8]) -> Result<Arc<Caller>, IdentityError> {
        let _ = value;
        todo!()
    }
}
