//! Caller-token revocation at run time (`tollgate token revoke`, `POST /v1/tokens/revoke`):
//! who may revoke what, the record in the store and its audit event, and the verifier's set
//! of revoked tokens kept in step with the store on this replica.
//!
//! A revocation is a store record ([`TokenRevocation`]); the store publishes
//! [`Change::TokensRevoked`] (on PostgreSQL, to every replica through its change feed), and
//! [`TokenControl::follow`] reads the live revocations again as soon as the feed has one (a
//! [`FOLLOW_EVERY`] tick is the backstop), replacing the verifier's [`RevokedSet`]. The
//! instance that took the request applies it before answering.
//!
//! Each record expires [`MAX_TOKEN_TTL`] after the newest token it covers was issued, when no
//! token it covers can still be valid; the store purges it then, so the set stays bounded.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::identity::revoked::MAX_TOKEN_TTL;
use crate::identity::{Caller, Revocation, RevokedSet, LEEWAY_SECS};
use crate::store::{
    AuditEvent, Change, Changes, RevokedTokens, Seen, Store, StoreError, TokenRevocation,
};

/// The backstop of [`TokenControl::follow`], which otherwise wakes on each change event.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How often the set is read again with no event at all, so entries past their expiry leave
/// memory (they already cover nothing).
const RELOAD_EVERY: Duration = Duration::from_secs(3600);

/// Longest `jti` accepted in a request: tollgate's are 32 characters, a platform's UUIDs 36.
const MAX_JTI_CHARS: usize = 128;

/// What to revoke, as `POST /v1/tokens/revoke` and `tollgate token revoke` take it: either
/// `jti` (with `org` for an operator who wants one org only), or `org` and `user` with an
/// optional `before` (default: now).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One token, by its `jti` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The tokens' org; an admin's own org when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Every token of this user (`sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// With `user`: tokens issued at or before this time (RFC 3339 or Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
}

/// Who asks for a revocation.
#[derive(Debug, Clone, Copy)]
pub enum Revoker<'a> {
    /// A caller token, through the API: `operator` anywhere, `admin` in its own org.
    Caller(&'a Caller),
    /// `tollgate token revoke` offline, against the store itself: whoever can read the data
    /// directory's keys can revoke anything.
    Offline,
}

/// Why a revocation was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not revoke these tokens.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revocations for one replica: the store and the verifier's set.
pub struct TokenControl {
    /// Where revocations are kept (and announced to other replicas).
    store: Arc<dyn Store>,
    /// What the verifier refuses.
    revoked: Arc<RevokedSet>,
    /// Revocation times and expiry.
    clock: Clock,
}

impl std::fmt::Debug for TokenControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenControl")
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

impl TokenControl {
    /// Revocations recorded in `store` apply to `revoked` (the verifier's); call
    /// [`TokenControl::load`] before serving.
    pub fn new(store: Arc<dyn Store>, revoked: Arc<RevokedSet>, clock: Clock) -> Self {
        TokenControl {
            store,
            revoked,
            clock,
        }
    }

    /// Replaces the set with the store's live revocations; returns how many.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let all = self.store.list_token_revocations().await?;
        let n = all.len();
        let now = self.clock.now()?;
        self.revoked.replace(all.into_iter().map(to_verifier), now);
        Ok(n)
    }

    /// Records the revocation `request` asks for, audits it, and applies it here.
    pub async fn revoke(
        &self,
        by: Revoker<'_>,
        request: RevokeRequest,
    ) -> Result<TokenRevocation, RevokeError> {
        let now = self.clock.now().map_err(StoreError::from)?;
        let revocation = authorize(by, validate(request, now)?, now)?;
        let stored = self.store.revoke_tokens(revocation).await?;
        let (org, actor) = match by {
            Revoker::Caller(c) => (c.org.clone(), c.user.clone()),
            Revoker::Offline => (String::new(), "offline".to_owned()),
        };
        let (org, target) = match &stored.target {
            RevokedTokens::Jti { jti, org: scope } => {
                (scope.clone().unwrap_or(org), format!("jti:{jti}"))
            }
            RevokedTokens::User { org, user, .. } => (org.clone(), format!("user:{user}")),
        };
        let detail = serde_json::json!({
            "revocation": stored.target,
            "expires_at": stored.expires_at,
        });
        self.store
            .append_audit(AuditEvent::new(org, actor, "token.revoke", target, detail))
            .await?;
        self.load().await?;
        Ok(stored)
    }

    /// Follows `changes` (subscribed before [`TokenControl::load`]) until `stop`, reading the
    /// revocations again on each `TokensRevoked` (or missed events) within [`FOLLOW_EVERY`].
    pub async fn follow(self: Arc<Self>, changes: Changes, stop: CancellationToken) {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_load = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = changes.changed() => {}
                _ = tick.tick() => {}
            }
            let mut reload = last_load.elapsed() >= RELOAD_EVERY;
            changes.catch_up(|seen| match seen {
                Seen::Event(e) => reload |= e.change == Change::TokensRevoked,
                Seen::Missed => reload = true,
            });
            if !reload {
                continue;
            }
            match self.load().await {
                Ok(n) => {
                    last_load = tokio::time::Instant::now();
                    tracing::debug!(revocations = n, "caller-token revocations read");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read caller-token revocations from the store")
                }
            }
        }
    }
}

/// The verifier's form of a stored revocation.
fn to_verifier(r: TokenRevocation) -> Revocation {
    match r.target {
        RevokedTokens::Jti { jti, org } => Revocation::Jti {
            jti,
            org,
            expires_at: r.expires_at,
        },
        RevokedTokens::User { org, user, before } => Revocation::User {
            org,
            user,
            before,
            expires_at: r.expires_at,
        },
    }
}

/// The request as a revocation, its org still to be settled by [`authorize`] (`None` for a
/// user revocation means "the admin's own org").
fn validate(r: RevokeRequest, now: u64) -> Result<(RevokedTokens, Option<String>), RevokeError> {
    let invalid = |m: &str| Err(RevokeError::Invalid(m.to_owned()));
    let name_ok = |s: &str| crate::identity::claims_problem(s, s, &[]).is_none();
    if let Some(org) = &r.org {
        if !name_ok(org) {
            return invalid("org: 1 to 128 characters, no control characters");
        }
    }
    match (r.jti, r.user) {
        (Some(jti), None) => {
            if r.before.is_some() {
                return invalid("before applies to user revocations only");
            }
            if jti.is_empty()
                || jti.chars().count() > MAX_JTI_CHARS
                || jti.contains(char::is_control)
            {
                return invalid("jti: 1 to 128 characters, no control characters");
            }
            Ok((RevokedTokens::Jti { jti, org: None }, r.org))
        }
        (None, Some(user)) => {
            if !name_ok(&user) {
                return invalid("user: 1 to 128 characters, no control characters");
            }
            let before = match r.before {
                None => now,
                Some(v) => parse_time(&v).ok_or_else(|| {
                    RevokeError::Invalid("before: an RFC 3339 time or Unix seconds".into())
                })?,
            };
            if before > now.saturating_add(LEEWAY_SECS) {
                return invalid("before is in the future: it would refuse tokens not minted yet");
            }
            let org = r.org.clone().unwrap_or_default();
            Ok((RevokedTokens::User { org, user, before }, r.org))
        }
        (Some(_), Some(_)) => invalid("give jti or user, not both"),
        (None, None) => invalid("give jti, or user (with org)"),
    }
}

/// Settles the revocation's org for `by` and checks that `by` may make it: operators and
/// offline anywhere (a jti without org: any org), admins in their own org only.
fn authorize(
    by: Revoker<'_>,
    (target, org): (RevokedTokens, Option<String>),
    now: u64,
) -> Result<TokenRevocation, RevokeError> {
    let ttl = MAX_TOKEN_TTL.as_secs();
    let everywhere = match by {
        Revoker::Offline => true,
        Revoker::Caller(c) if c.is_operator() => true,
        Revoker::Caller(c) if c.is_admin() => false,
        Revoker::Caller(_) => {
            return Err(RevokeError::Forbidden(
                "revoking tokens takes the admin or the operator role".into(),
            ))
        }
    };
    let org = match (org, by) {
        (Some(org), Revoker::Caller(c)) if !everywhere && org != c.org => {
            return Err(RevokeError::Forbidden(format!(
                "an admin revokes tokens of its own org ({}) only",
                c.org
            )))
        }
        (Some(org), _) => Some(org),
        (None, Revoker::Caller(c)) if !everywhere => Some(c.org.clone()),
        (None, _) => None,
    };
    let (target, expires_at) = match target {
        // A jti names a token issued by now at the latest.
        RevokedTokens::Jti { jti, .. } => {
            (RevokedTokens::Jti { jti, org }, now.saturating_add(ttl))
        }
        RevokedTokens::User { user, before, .. } => {
            let Some(org) = org else {
                return Err(RevokeError::Invalid("user revocations need org".into()));
            };
            let expires_at = before.saturating_add(ttl);
            (RevokedTokens::User { org, user, before }, expires_at)
        }
    };
    Ok(TokenRevocation { target, expires_at })
}

/// An RFC 3339 time or Unix seconds, as Unix seconds.
fn parse_time(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => humantime::parse_rfc3339_weak(s.trim())
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
