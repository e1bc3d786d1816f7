//! A person's view of the apps of their org ("my connections"): every app with this user's
//! state, and the actions a user takes on their own grants: connect (the consent ticket a
//! `401` would carry), disconnect (revoke at the provider, then delete the grant) and, for
//! apps with `expose_token`, reading the access token itself.
//!
//! The web layer (`/connections`, `/v1/me/...`) calls this; it never reads the store. The
//! admin's `DELETE /v1/apps/{id}/authorizations/{user}` shares [`OAuth::disconnect`] with the
//! user's own Disconnect, so both revoke and audit the same way.

use crate::oauth::events::{EventKind, GrantEvent};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::flow::{ConsentRequired, TicketError};
use super::inject::InjectError;
use super::token::Revocation;
use super::OAuth;
use crate::identity::Caller;
use crate::store::{App, AuditEvent, GrantState, StoreError, TokenSet};

/// Longest wait for the provider's answer to a revocation: the page and the API say whether
/// it confirmed, so the wait is bounded rather than left to the background.
pub const REVOKE_DEADLINE: Duration = Duration::from_secs(10);

/// Where a user stands with one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Tokens stored and usable (refreshed when needed).
    Connected,
    /// No grant, or the provider refused it for good: the user must consent (again).
    NeedsConsent,
    /// The last refresh failed for a reason that may pass; the tokens are kept.
    RefreshFailing,
    /// The app is disabled by its admins: nothing is injected and no consent can start.
    AppDisabled,
}

impl ConnectionState {
    /// The name used in JSON and on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::NeedsConsent => "needs_consent",
            ConnectionState::RefreshFailing => "refresh_failing",
            ConnectionState::AppDisabled => "app_disabled",
        }
    }
}

/// One app of the org as its user sees it. Never a token value.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    /// App id (the path segment of the actions).
    pub app: String,
    /// App name.
    pub name: String,
    /// What the app is for, as its admins wrote it.
    pub description: String,
    /// This user's state.
    pub state: ConnectionState,
    /// Scopes granted, when there is a grant.
    pub scopes: Vec<String>,
    /// When the access token expires, Unix seconds (unknown lifetime: `None`).
    pub expires_at: Option<u64>,
    /// When the tokens were obtained or last refreshed, Unix seconds.
    pub obtained_at: Option<u64>,
    /// The last time a request used the grant (coalesced to a minute), Unix seconds.
    pub last_used_at: Option<u64>,
    /// The last successful refresh, Unix seconds.
    pub last_refreshed_at: Option<u64>,
    /// With `refresh_failing` (and a refused grant): the last refresh error, for people.
    pub last_error: Option<String>,
    /// Whether code may read the token (`GET /v1/me/tokens/{app}`).
    pub expose_token: bool,
    /// Whether Disconnect can revoke at the provider (the app has a revocation endpoint).
    pub revocable: bool,
}

/// What a Disconnect did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnected {
    /// The app's name, for people.
    pub app_name: String,
    /// What the provider said (within [`REVOKE_DEADLINE`]).
    pub revocation: Revocation,
}

impl Disconnected {
    /// `confirmed`, `not_supported`, `refused` or `failed`.
    pub fn outcome(&self) -> &'static str {
        revocation_name(&self.revocation)
    }
}

/// The name of a revocation outcome in JSON, the audit log and the page.
pub fn revocation_name(r: &Revocation) -> &'static str {
    match r {
        Revocation::Confirmed => "confirmed",
        Revocation::NotSupported => "not_supported",
        Revocation::Refused { .. } => "refused",
        Revocation::Failed { .. } => "failed",
    }
}

/// A token handed to code (`GET /v1/me/tokens/{app}`).
#[derive(Clone, Debug)]
pub struct ExposedToken {
    /// The access token; the only place tollgate hands one out.
    pub access_token: crate::store::Secret,
    /// Expiry, Unix seconds, when known.
    pub expires_at: Option<u64>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Whether it was refreshed to answer.
    pub refreshed: bool,
}

/// Why a user's action on their connection cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// No app with that id in the user's org.
    #[error("no app {0:?} in your organization")]
    NotFound(String),
    /// The app is disabled (`403 app_disabled`).
    #[error("app {app_name:?} is disabled")]
    Disabled {
        /// App id.
        app: String,
        /// App name.
        app_name: String,
    },
    /// Disconnect: the user holds no grant for the app.
    #[error("you have not connected app {0:?}")]
    NotConnected(String),
    /// The app does not let code read tokens (`403 token_not_exposed`).
    #[error("app {0:?} does not expose tokens to code (expose_token is false)")]
    NotExposed(String),
    /// The user must consent first (`401 authorization_required`).
    #[error("authorization required")]
    ConsentRequired(Box<ConsentRequired>),
    /// The token is stale and refreshing it failed (`502 token_refresh_failed`).
    #[error("refreshing the token of {app:?} failed: {reason}")]
    RefreshFailed {
        /// App id.
        app: String,
        /// Why, for the caller (never a token).
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One user's connections: `org` and `user` are who is asking (a signed-in person or a
/// caller token); nothing here acts for anyone else.
pub struct Connections<'a> {
    /// Store, tickets, injector, provider calls.
    oauth: &'a OAuth,
    /// The user's org: only its apps are seen.
    org: &'a str,
    /// The user whose grants these are.
    user: &'a str,
}

impl OAuth {
    /// `user` of `org`'s connections.
    pub fn connections<'a>(&'a self, org: &'a str, user: &'a str) -> Connections<'a> {
        Connections {
            oauth: self,
            org,
            user,
        }
    }

    /// Revokes `user`'s tokens for `app` at its provider (within [`REVOKE_DEADLINE`]), then
    /// deletes the grant, and appends `action` by `actor` to the audit log. `None` when the
    /// user holds no grant. The one implementation of the user's Disconnect and the admin's
    /// revoke.
    pub async fn disconnect(
        &self,
        app: &App,
        user: &str,
        actor: &str,
        action: &str,
    ) -> Result<Option<Disconnected>, StoreError> {
        // This user's token set only: listing the app's tokens would unseal every user's.
        let tokens = self
            .store
            .get_token(&app.org, &app.id, app.incarnation, app.generation, user)
            .await?;
        let revocation = match &tokens {
            Some(t) => self.revoke_bounded(app, t).await,
            // A grant of an older generation may remain to delete; nothing usable to revoke.
            None => Revocation::NotSupported,
        };
        if !self.store.delete_token(&app.org, &app.id, user).await? {
            return Ok(None);
        }
        let outcome = revocation_name(&revocation);
        let mut detail = json!({ "user": user, "revoked_at_provider": outcome });
        if let Revocation::Refused { status } = &revocation {
            detail["provider_status"] = json!(status);
        }
        self.audit(&app.org, actor, action, &app.id, detail).await;
        let now = self.clock.now().unwrap_or(0);
        let gone = GrantEvent::of(EventKind::Disconnected, &app.org, &app.id, user, now, None);
        self.injector.announce(gone);
        tracing::info!(org = %app.org, app = %app.id, user, by = actor, revoked_at_provider = outcome,
            "authorization deleted");
        Ok(Some(Disconnected {
            app_name: app.name.clone(),
            revocation,
        }))
    }

    /// The provider's answer to revoking `tokens`, or `Failed` after [`REVOKE_DEADLINE`].
    async fn revoke_bounded(&self, app: &App, tokens: &TokenSet) -> Revocation {
        match tokio::time::timeout(REVOKE_DEADLINE, self.tokens.revoke(app, tokens)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(org = %app.org, app = %app.id, user = %tokens.user,
                    "the provider did not answer the revocation in time");
                Revocation::Failed {
                    reason: format!(
                        "the provider did not answer within {} s",
                        REVOKE_DEADLINE.as_secs()
                    ),
                }
            }
        }
    }

    /// Appends an audit event; a failure is logged, never returned (the change is made).
    async fn audit(&self, org: &str, actor: &str, action: &str, target: &str, detail: Value) {
        let event = AuditEvent::new(org, actor, action, target, detail);
        if let Err(e) = self.store.append_audit(event).await {
            tracing::error!(error = %e, action, "could not append an audit event");
        }
    }
}

impl Connections<'_> {
    /// Every app of the org with this user's state, by app id.
    pub async fn list(&self) -> Result<Vec<Connection>, ConnectionError> {
        let store = &self.oauth.store;
        let now = self.oauth.clock.now().map_err(StoreError::from)?;
        let mut out = Vec::new();
        for app in store.list_apps(self.org).await? {
            let grant = store
                .get_token(
                    &app.org,
                    &app.id,
                    app.incarnation,
                    app.generation,
                    self.user,
                )
                .await?;
            out.push(connection(&app, grant.as_ref(), now));
        }
        out.sort_by(|a, b| a.app.cmp(&b.app));
        Ok(out)
    }

    /// One app of the org.
    async fn app(&self, id: &str) -> Result<App, ConnectionError> {
        self.oauth
            .store
            .get_app(self.org, id)
            .await?
            .ok_or_else(|| ConnectionError::NotFound(id.to_string()))
    }

    /// Connect or Reconnect: the consent ticket for this user and `app`, exactly as a `401`
    /// would carry it (the live one repeated, else a new one).
    pub async fn connect(&self, id: &str) -> Result<ConsentRequired, ConnectionError> {
        let app = self.app(id).await?;
        self.oauth
            .injector
            .tickets()
            .issue(&app, self.user)
            .await
            .map_err(|e| match e {
                TicketError::Deleted => ConnectionError::NotFound(id.to_string()),
                TicketError::Disabled { app_name } => ConnectionError::Disabled {
                    app: id.to_string(),
                    app_name,
                },
                TicketError::Store(e) => e.into(),
            })
    }

    /// Disconnect: revoke at the provider, delete the grant, audited as
    /// `connection.disconnect` by the user.
    pub async fn disconnect(&self, id: &str) -> Result<Disconnected, ConnectionError> {
        let app = self.app(id).await?;
        self.oauth
            .disconnect(&app, self.user, self.user, "connection.disconnect")
            .await?
            .ok_or_else(|| ConnectionError::NotConnected(id.to_string()))
    }

    /// The caller's access token for an app with `expose_token`, refreshed when stale
    /// through the injector (its single-flight and the grant's lease), audited as
    /// `token.read` (without the value).
    pub async fn token(&self, caller: &Caller, id: &str) -> Result<ExposedToken, ConnectionError> {
        let app = self.app(id).await?;
        if !app.expose_token {
            return Err(ConnectionError::NotExposed(id.to_string()));
        }
        let app = std::sync::Arc::new(app);
        // The injector's path, into a scratch header map: one refresh implementation.
        let mut scratch = http::HeaderMap::new();
        let injected = self
            .oauth
            .injector
            .inject(caller, app.clone(), &mut scratch)
            .await
            .map_err(|e| match e {
                InjectError::Disabled { app, app_name } => {
                    ConnectionError::Disabled { app, app_name }
                }
                InjectError::AuthorizationRequired(c) => ConnectionError::ConsentRequired(c),
                InjectError::RefreshFailed { app, reason } => {
                    ConnectionError::RefreshFailed { app, reason }
                }
                InjectError::Store(e) => e.into(),
            })?;
        let token = injected.token();
        let exposed = ExposedToken {
            access_token: token.access_token.clone(),
            expires_at: token.expires_at,
            scopes: token.scopes.clone(),
            refreshed: injected.refreshed,
        };
        let detail = json!({
            "scopes": exposed.scopes,
            "expires_at": exposed.expires_at,
            "refreshed": exposed.refreshed,
        });
        self.oauth
            .audit(self.org, self.user, "token.read", &app.id, detail)
            .await;
        Ok(exposed)
    }
}

/// How `app` looks to a user holding `grant` (of the app's current generation) at `now`.
fn connection(app: &App, grant: Option<&TokenSet>, now: u64) -> Connection {
    let expired_for_good = grant
        .is_some_and(|g| g.refresh_token.is_none() && g.expires_at.is_some_and(|exp| exp <= now));
    let state = match grant.map(|g| g.health.state) {
        _ if !app.enabled => ConnectionState::AppDisabled,
        None | Some(GrantState::NeedsConsent) => ConnectionState::NeedsConsent,
        Some(_) if expired_for_good => ConnectionState::NeedsConsent,
        Some(GrantState::RefreshFailing) => ConnectionState::RefreshFailing,
        Some(GrantState::Ok) => ConnectionState::Connected,
    };
    let health = grant.map(|g| &g.health);
    Connection {
        app: app.id.clone(),
        name: app.name.clone(),
        description: app.description.clone(),
        state,
        scopes: grant.map(|g| g.scopes.clone()).unwrap_or_default(),
        expires_at: grant.and_then(|g| g.expires_at),
        obtained_at: grant.map(|g| g.obtained_at),
        last_used_at: health.and_then(|h| h.last_used_at),
        last_refreshed_at: health.and_then(|h| h.last_refreshed_at),
        last_error: health.and_then(|h| h.last_error.clone()),
        expose_token: app.expose_token,
        revocable: app.revocation_url.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AppConfig, GrantHealth, Secret};

    fn app(enabled: bool) -> App {
        let mut a = App::new(
            "acme",
            AppConfig {
                id: "crm".into(),
                name: "CRM".into(),
                ..Default::default()
            },
        );
        a.enabled = enabled;
        a
    }

    fn grant(state: GrantState, refresh: bool, expires_at: Option<u64>) -> TokenSet {
        TokenSet {
            org: "acme".into(),
            app: "crm".into(),
            user: "alice".into(),
            generation: 0,
            version: 1,
            access_token: Secret::new("AT".to_string()),
            refresh_token: refresh.then(|| Secret::new("RT".to_string())),
            token_type: None,
            scopes: vec!["read".into()],
            expires_at,
            obtained_at: 100,
            health: GrantHealth {
                state,
                last_error: Some("provider said 503".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn states_follow_the_app_the_grant_and_its_health() {
        use ConnectionState::*;
        let cases = [
            ("no grant", true, None, NeedsConsent),
            (
                "disabled wins",
                false,
                Some(grant(GrantState::Ok, true, None)),
                AppDisabled,
            ),
            ("disabled, no grant", false, None, AppDisabled),
            (
                "healthy",
                true,
                Some(grant(GrantState::Ok, true, Some(50))),
                Connected,
            ),
            (
                "refused for good",
                true,
                Some(grant(GrantState::NeedsConsent, true, None)),
                NeedsConsent,
            ),
            (
                "failing",
                true,
                Some(grant(GrantState::RefreshFailing, true, None)),
                RefreshFailing,
            ),
            (
                "expired, nothing to refresh with",
                true,
                Some(grant(GrantState::Ok, false, Some(999))),
                NeedsConsent,
            ),
            (
                "unexpired, no refresh token",
                true,
                Some(grant(GrantState::Ok, false, Some(2000))),
                Connected,
            ),
        ];
        for (name, enabled, g, want) in cases {
            let c = connection(&app(enabled), g.as_ref(), 1000);
            assert_eq!(c.state, want, "{name}");
            assert_eq!(c.scopes.is_empty(), g.is_none(), "{name}");
        }
        let failing = grant(GrantState::RefreshFailing, true, None);
        let c = connection(&app(true), Some(&failing), 1000);
        assert_eq!(c.last_error.as_deref(), Some("provider said 503"));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["state"], "refresh_failing");
        assert!(!json.to_string().contains("AT"), "no token value: {json}");
    }
}
