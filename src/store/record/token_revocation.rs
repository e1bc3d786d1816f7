//! Caller-token revocations (`tollgate token revoke`): which tokens are refused, and until
//! when the record matters. Nothing secret (a `jti` is an identifier, not a credential), so
//! nothing sealed; stored under [`TokenRevocation::key`] in the `token_revocations` tree (sled)
//! or table (PostgreSQL).

use serde::{Deserialize, Serialize};

use super::{decode_keyed, FORMAT_VERSION};
use crate::store::StoreError;

/// Which caller tokens a revocation refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RevokedTokens {
    /// The token whose `jti` claim is `jti`, in `org` (or in any org when `None`: an
    /// operator's revocation).
    Jti {
        /// The token's `jti` claim.
        jti: String,
        /// The org the token must name for the revocation to apply; `None` for any.
        org: Option<String>,
    },
    /// Every token of `user` in `org` issued (`iat`) at or before `before`, and every such
    /// token without `iat`.
    User {
        /// The token's `org` claim.
        org: String,
        /// The token's `sub` claim.
        user: String,
        /// Unix seconds: tokens issued at or before this are refused.
        before: u64,
    },
}

/// One revocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRevocation {
    /// What it refuses.
    pub target: RevokedTokens,
    /// Unix seconds after which no token it covers can still be valid (the longest token
    /// lifetime after the newest token it covers was issued): the record is then deleted, so
    /// the set of revocations stays bounded.
    pub expires_at: u64,
}

impl TokenRevocation {
    /// The record's identity: one record per `(org, jti)` and per `(org, user)`, so revoking
    /// the same tokens again updates it instead of adding another. JSON of the parts, so no
    /// org, user or jti can make two keys collide.
    pub fn key(&self) -> String {
        let parts = match &self.target {
            RevokedTokens::Jti { jti, org } => serde_json::json!(["jti", org, jti]),
            RevokedTokens::User { org, user, .. } => serde_json::json!(["user", org, user]),
        };
        parts.to_string()
    }

    /// `self` merged with `previous`, the record stored under the same key: a revocation never
    /// narrows (the later `before` and `expires_at` win).
    pub fn merged(mut self, previous: Option<&TokenRevocation>) -> TokenRevocation {
        let Some(previous) = previous else {
            return self;
        };
        self.expires_at = self.expires_at.max(previous.expires_at);
        if let (
            RevokedTokens::User { before, .. },
            RevokedTokens::User {
                before: previous, ..
            },
        ) = (&mut self.target, &previous.target)
        {
            *before = (*before).max(*previous);
        }
        self
    }
}

/// The stored form of a [`TokenRevocation`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRevocationRecord {
    v: u32,
    target: RevokedTokens,
    expires_at: u64,
}

/// Name of a token revocation in errors.
pub(crate) fn token_revocation_name(key: &str) -> String {
    format!("token_revocation/{key}")
}

impl TokenRevocationRecord {
    /// The stored form of `r`.
    pub(crate) fn new(r: &TokenRevocation) -> Self {
        TokenRevocationRecord {
            v: FORMAT_VERSION,
            target: r.target.clone(),
            expires_at: r.expires_at,
        }
    }

    /// Reads the record stored under `key`.
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<TokenRevocation, StoreError> {
        let rec: TokenRevocationRecord =
            decode_keyed(&token_revocation_name(key), bytes, |r: &Self| {
                TokenRevocation {
                    target: r.target.clone(),
                    expires_at: r.expires_at,
                }
                .key()
                    == key
            })?;
        Ok(TokenRevocation {
            target: rec.target,
            expires_at: rec.expires_at,
        })
    }
}
