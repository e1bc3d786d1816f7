//! The records the store keeps, as the rest of tollgate sees them.
//!
//! These are the in-memory shapes. Records without secrets ([`AuditEvent`], [`Authorization`])
//! derive serde directly. Records holding a [`Secret`] ([`App`], [`TokenSet`],
//! [`PendingAuthorization`]) or a bearer capability ([`ConsentTicket`]'s id, a pending
//! authorization's `state`) deliberately do not: a `Secret` cannot be
//! serialized at all, so the only way such a record reaches bytes is through the sealing
//! layer (`store::record`), which writes every secret as an AEAD-sealed blob bound to the
//! record's key. Serializing a secret in plaintext by accident is a compile error, not a review
//! finding. (An app's configuration, [`AppConfig`], serializes with its secrets masked.)

use std::fmt;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::app_config::AppConfig;
use super::StoreError;

/// How long a consent ticket is valid (DESIGN: "valid 15 minutes").
pub const TICKET_TTL_SECS: u64 = 15 * 60;

/// How long a pending authorization is valid (DESIGN: "single-use, 10 minutes").
pub const PENDING_TTL_SECS: u64 = 10 * 60;

/// Random bytes in a ticket id or `state`: 256 bits, twice the 128-bit floor, so guessing one
/// is hopeless even with many outstanding.
const RANDOM_ID_BYTES: usize = 32;

/// A secret string: a client secret, access or refresh token, PKCE verifier.
///
/// `Debug` and `Display` print `MASKED`, and there is intentionally no `Serialize`: the store
/// seals secrets explicitly, and anything else that needs the value has to call
/// [`Secret::expose`], which is easy to grep for. `Deserialize` reads one from an admin's
/// input (a client secret, a webhook header value), which cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Call it only where the value must leave the process (a header sent
    /// upstream, a token request body) or be sealed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// An outbound application: an OAuth 2.0 client configured by an org's admins, one per
/// `(org, id)`. Its configuration, plus the state the store keeps about it.
///
/// Reads of the configuration go through `Deref` (`app.domains`): an app *is* its
/// configuration for everything but the lifecycle fields below.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// Organization that owns the app; apps of one org are never used for callers of another.
    pub org: String,
    /// What the admins configured (`config.id` is the app id).
    pub config: AppConfig,
    /// Disabled apps keep their tokens but inject nothing and start no consent.
    pub enabled: bool,
    /// Bumped by reset: tokens, tickets and pending consents carry the generation they were
    /// made for, so a reset invalidates all of them at once. Set by the store.
    pub generation: u64,
    /// Random per creation, so an app deleted and re-created with the same id never sees the
    /// old app's tokens or consents. Set by the store.
    pub incarnation: u64,
    /// Creation time, Unix seconds. Set by the store.
    pub created_at: u64,
    /// Last configuration or state change, Unix seconds. Set by the store.
    pub updated_at: u64,
}

impl App {
    /// A new app of `org`, enabled; the store sets the generation, incarnation and times
    /// when it creates it.
    pub fn new(org: impl Into<String>, config: AppConfig) -> App {
        App {
            org: org.into(),
            config,
            enabled: true,
            generation: 0,
            incarnation: 0,
            created_at: 0,
            updated_at: 0,
        }
    }
}

impl std::ops::Deref for App {
    type Target = AppConfig;

    fn deref(&self) -> &AppConfig {
        &self.config
    }
}

/// One user's tokens for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSet {
    /// Organization of the app and of the user.
    pub org: String,
    /// App id within the org.
    pub app: String,
    /// The user (caller token `sub`) the tokens act for.
    pub user: String,
    /// App generation the tokens were obtained under; a reset makes them unreachable.
    pub generation: u64,
    /// The grant's own version: the store sets it on every write (1 for a first consent, one
    /// more for each later consent or refresh). A refresh passes the version it read and is
    /// written only if that is still the stored one, so of two concurrent refreshes (two
    /// replicas) one wins and the other re-reads. Separate from `generation`, which only an
    /// app reset moves.
    pub version: u64,
    /// Bearer token injected as `Authorization: Bearer ...`.
    pub access_token: Secret,
    /// Used to refresh the access token; `None` means re-consent when it expires.
    pub refresh_token: Option<Secret>,
    /// `token_type` as the provider returned it, if it did.
    pub token_type: Option<String>,
    /// Scopes granted (the provider's `scope`, else the requested ones).
    pub scopes: Vec<String>,
    /// Expiry of the access token, Unix seconds; `None` = unknown lifetime (used until the
    /// upstream answers 401 `invalid_token`).
    pub expires_at: Option<u64>,
    /// When the tokens were obtained or last refreshed, Unix seconds; shown in listings and
    /// used to compute the lifetime for the refresh threshold.
    pub obtained_at: u64,
    /// How the grant's refreshes are going and when it was last used: shown to people
    /// (`/connections`, the console), counted in metrics, never a secret.
    pub health: GrantHealth,
}

/// The state of a grant, for people and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GrantState {
    /// Usable, and the last refresh (if any) succeeded.
    #[default]
    Ok,
    /// The last refresh failed for a reason that may pass (network, 5xx,
    /// `temporarily_unavailable`); the tokens are kept and refreshes go on.
    RefreshFailing,
    /// The provider refused the grant for good (`invalid_grant`): the user must consent again.
    NeedsConsent,
}

impl GrantState {
    /// The name used in JSON, metrics and events: `ok`, `refresh_failing`, `needs_consent`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Ok => "ok",
            GrantState::RefreshFailing => "refresh_failing",
            GrantState::NeedsConsent => "needs_consent",
        }
    }
}

/// A grant's health, kept with its tokens (outside the sealed secrets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantHealth {
    /// See [`GrantState`].
    pub state: GrantState,
    /// The last refresh failure, worded for people; never contains a token or secret.
    pub last_error: Option<String>,
    /// When refreshes started failing, Unix seconds; `None` while `state` is `Ok`.
    pub failing_since: Option<u64>,
    /// The last successful refresh, Unix seconds.
    pub last_refreshed_at: Option<u64>,
    /// The last time a request used the grant, Unix seconds, coalesced: written at most
    /// once a minute per grant, never once per request.
    pub last_used_at: Option<u64>,
}

/// A consent URL's ticket: bound server-side to who may consent to what, single-use, and
/// at most one live per (org, user, app): until it is used or expires, every
/// `401 authorization_required` for them repeats it.
///
/// The store never holds the id in the clear: it looks tickets up by a SHA-256 hash of the id
/// and keeps the id itself only sealed (bound to org, app and user), to repeat the same URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentTicket {
    /// Random, URL-safe, 256 bits ([`random_id`]); the last path segment of the consent URL.
    pub id: String,
    /// Organization of the user and the app.
    pub org: String,
    /// The user the consent is for; the signed-in user must be this one (`web::login`).
    pub user: String,
    /// App id within the org.
    pub app: String,
    /// App generation at issue; a reset in between invalidates the ticket.
    pub generation: u64,
    /// App incarnation at issue; a delete and re-create in between invalidates the ticket.
    pub incarnation: u64,
    /// Expiry, Unix seconds (issue time + [`TICKET_TTL_SECS`]).
    pub expires_at: u64,
}

impl ConsentTicket {
    /// A new ticket with a fresh random id: `user`'s consent to `app` as it is now (its
    /// generation and incarnation).
    pub fn new(app: &App, user: impl Into<String>, expires_at: u64) -> Result<Self, StoreError> {
        Ok(Self {
            id: random_id()?,
            org: app.org.clone(),
            user: user.into(),
            app: app.config.id.clone(),
            generation: app.generation,
            incarnation: app.incarnation,
            expires_at,
        })
    }
}

/// An authorization request in flight: created when the user clicks Authorize, consumed by
/// the OAuth callback (also on `error=` callbacks). The store looks it up by a SHA-256 hash of
/// `state` and never holds `state` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingAuthorization {
    /// The OAuth `state` parameter: random, URL-safe, 256 bits ([`random_id`]); the lookup key
    /// on the callback and the CSRF defence.
    pub state: String,
    /// Organization of the user and the app.
    pub org: String,
    /// The user the tokens will be stored for.
    pub user: String,
    /// App id within the org.
    pub app: String,
    /// App generation at start; tokens are stored only if it is still current.
    pub generation: u64,
    /// App incarnation at start; tokens are stored only if it is still current.
    pub incarnation: u64,
    /// PKCE code verifier sent with the code exchange; `None` when the app has PKCE off.
    pub pkce_verifier: Option<Secret>,
    /// The redirect URI sent on the authorization request; the exchange must repeat it.
    pub redirect_uri: String,
    /// Hash of the browser's consent cookie (`oauth::browser`): the callback must come from
    /// the browser that clicked Authorize.
    pub browser: [u8; BROWSER_TAG_LEN],
    /// Expiry, Unix seconds (start + [`PENDING_TTL_SECS`]).
    pub expires_at: u64,
}

/// Length of [`PendingAuthorization::browser`]: a SHA-256 output.
pub const BROWSER_TAG_LEN: usize = 32;

impl PendingAuthorization {
    /// A new pending authorization with a fresh random `state`, for what `ticket` was issued
    /// for (user, app, and the app's generation and incarnation at issue), started by the
    /// browser whose consent cookie hashes to `browser`.
    pub fn new(
        ticket: &ConsentTicket,
        pkce_verifier: Option<Secret>,
        redirect_uri: impl Into<String>,
        browser: [u8; BROWSER_TAG_LEN],
        expires_at: u64,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            state: random_id()?,
            org: ticket.org.clone(),
            user: ticket.user.clone(),
            app: ticket.app.clone(),
            generation: ticket.generation,
            incarnation: ticket.incarnation,
            pkce_verifier,
            redirect_uri: redirect_uri.into(),
            browser,
            expires_at,
        })
    }
}

/// One entry of an org's audit log. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened, Unix seconds. Stamped by the store on append.
    pub at: u64,
    /// Store-wide monotonic sequence number, so events within one second keep their order.
    /// Assigned by the store on append.
    pub seq: u64,
    /// Organization the event belongs to; an org's admins see only its own events.
    pub org: String,
    /// Who did it (caller token `sub`).
    pub actor: String,
    /// What was done, dotted: `app.create`, `app.reset`, `authorization.revoke`, ...
    pub action: String,
    /// What it was done to (app id).
    pub target: String,
    /// Extra context (changed fields, affected user). Must never contain a secret.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event to append; `at` and `seq` are filled in by the store.
    pub fn new(
        org: impl Into<String>,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            at: 0,
            seq: 0,
            org: org.into(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail,
        }
    }
}

/// A user's authorization of an app, as admins see it in listings: never token values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The user who consented.
    pub user: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Access token expiry, Unix seconds; `None` = unknown lifetime.
    pub expires_at: Option<u64>,
    /// When the tokens were obtained or last refreshed, Unix seconds.
    pub obtained_at: u64,
}

/// A fresh random identifier: 256 bits from the system CSPRNG, base64url without padding
/// (43 characters, safe in URLs and query strings). Used for consent ticket ids and OAuth
/// `state`.
pub fn random_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; RANDOM_ID_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Io("system random generator failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A random `u64` from the system CSPRNG (app incarnations).
pub(crate) fn random_u64() -> Result<u64, StoreError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Io("system random generator failed".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_masked_in_debug_and_display() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(format!("{s}"), "MASKED");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn app_debug_masks_secret_and_webhook_headers() {
        let config: AppConfig = serde_json::from_value(serde_json::json!({
            "id": "gh",
            "client_secret": "sk-PLAIN",
            "webhook": {"token": {"headers": {"X-Key": "hook-PLAIN"}}}
        }))
        .unwrap();
        let app = App::new("acme", config);
        let dbg = format!("{app:?}");
        assert!(!dbg.contains("sk-PLAIN"), "{dbg}");
        assert!(!dbg.contains("hook-PLAIN"), "{dbg}");
        assert!(dbg.contains("client_secret: Some(MASKED)"), "{dbg}");
        assert!(dbg.contains("X-Key"), "{dbg}");
        assert_eq!(app.id, "gh");
    }

    #[test]
    fn random_ids_are_url_safe_and_long_enough() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
