//! What a provider call yields: a [`Grant`] (the useful part of a token response, from the
//! `oauth2` crate or a webhook handshake) and how to store it, or a [`TokenError`]. A leaf
//! module, so that the standard handshake (`token`) and the webhook one (`webhook`) share
//! these without depending on each other.

use serde_json::Value;

use super::egress::EgressError;
use crate::route::DialError;
use crate::store::{App, Secret, TokenSet};

/// What a token or refresh request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The provider answered with an OAuth error (`invalid_grant`, `invalid_client`, ...).
    #[error("provider error {code}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Provider {
        /// The `error` code.
        code: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The provider could not be reached, or answered 5xx.
    #[error("token endpoint unreachable: {0}")]
    Transport(#[from] EgressError),
    /// The response is not a token response (e.g. no `access_token`).
    #[error("invalid token response: {0}")]
    InvalidResponse(String),
    /// The app's configuration cannot be turned into a client (bad URL).
    #[error("app configuration: {0}")]
    Config(String),
}

impl TokenError {
    /// Why, in words for the caller (`502 token_refresh_failed`) and the consent page: what
    /// the provider answered, or what kind of transport failure it was, never the token
    /// endpoint, its host or address, the egress policy or the agent (those are the org
    /// admins' and operators' to see, in the server log).
    pub fn caller_reason(&self) -> String {
        let transport = |why: &str| format!("token endpoint unreachable: {why}");
        match self {
            // What the provider itself said, and where in its answer: no endpoint in these.
            TokenError::Provider { .. } | TokenError::InvalidResponse(_) => self.to_string(),
            TokenError::Config(_) => "the application's configuration is invalid".into(),
            TokenError::Transport(e) => match e {
                EgressError::ServerError(_) | EgressError::Timeout(_) => transport(&e.to_string()),
                EgressError::Denied { .. } => {
                    transport("the app's egress policy does not allow it")
                }
                EgressError::Dial(d) => transport(match d {
                    DialError::Direct(d) => d.code(),
                    DialError::Agent(a) => a.code(),
                }),
                EgressError::Tls { .. } => transport("the TLS handshake failed"),
                EgressError::Http(_) => transport("the HTTP exchange failed"),
                EgressError::BadUrl(_) => transport("invalid URL"),
            },
        }
    }

    /// The OAuth error code, when the provider sent one.
    pub fn provider_code(&self) -> Option<&str> {
        match self {
            TokenError::Provider { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The useful part of a token response, normalized.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The access token.
    pub access_token: Secret,
    /// A (possibly rotated) refresh token.
    pub refresh_token: Option<Secret>,
    /// `token_type`, lowercase; `bearer` when the provider sent none.
    pub token_type: Option<String>,
    /// Lifetime in seconds, when the provider said.
    pub expires_in: Option<u64>,
    /// Scopes granted, when the provider said.
    pub scopes: Option<Vec<String>>,
}

impl Grant {
    /// The token set to store after a code exchange (`previous` = `None`) or a refresh: a
    /// missing `expires_in` falls back to the app's `access_token_ttl`, then to unknown; a
    /// missing `scope` means the requested (or previously granted) scopes; a refresh that
    /// returns no refresh token keeps the old one.
    pub fn into_token_set(
        self,
        app: &App,
        user: &str,
        now: u64,
        previous: Option<&TokenSet>,
    ) -> TokenSet {
        let scopes = self.scopes.unwrap_or_else(|| match previous {
            Some(p) => p.scopes.clone(),
            None => app.scopes.clone(),
        });
        TokenSet {
            org: app.org.clone(),
            app: app.id.clone(),
            user: user.to_string(),
            generation: app.generation,
            // The version this grant replaces: the store's compare-and-swap for a refresh.
            version: previous.map_or(0, |p| p.version),
            access_token: self.access_token,
            refresh_token: self
                .refresh_token
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            token_type: self.token_type,
            scopes,
            expires_at: self
                .expires_in
                .or(app.access_token_ttl)
                .map(|s| now.saturating_add(s)),
            obtained_at: now,
            health: Default::default(),
        }
    }
}

/// A non-negative number of seconds, as a JSON number or a numeric string (`"3600"`,
/// `"3600.0"`); fractions are cut. Providers send both.
pub fn seconds(v: &Value) -> Option<u64> {
    let whole = |f: f64| (f.is_finite() && f >= 0.0).then_some(f as u64);
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(whole)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(whole))
        }
        _ => None,
    }
}
