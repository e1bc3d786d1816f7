//! The injection decision (DESIGN "Token injection and the consent flow"), in one type that
//! both plain-http forwarding and (later) HTTPS interception call:
//!
//! 1. app disabled → [`InjectError::Disabled`] (`403 app_disabled`);
//! 2. fresh token → `Authorization: Bearer` set, replacing the client's;
//! 3. stale (or rejected upstream) with a refresh token → one refresh per (org, app, user)
//!    at a time, concurrent requests wait for it; the result is persisted with the store's
//!    compare-and-swap before the lock is released, so a reset during the refresh wins;
//! 4. otherwise → [`InjectError::AuthorizationRequired`] with a freshly stored consent ticket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;

use super::index::AppIndex;
use super::token::{TokenClient, TokenError};
use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::policy::Host;
use crate::store::{
    App, Clock, ConsentTicket, Secret, Store, StoreError, TokenSet, TICKET_TTL_SECS,
};

/// A token is refreshed when less than this is left (or half its lifetime, if shorter).
const REFRESH_MARGIN_SECS: u64 = 60;

/// Single-flight map entries are pruned when the map grows past this many.
const FLIGHTS_PRUNE_AT: usize = 1024;

/// What the proxy must answer instead of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The app is disabled (`403 app_disabled`).
    #[error("outbound application {app:?} is disabled")]
    Disabled {
        /// App id.
        app: String,
        /// App name.
        app_name: String,
    },
    /// The user must consent first (`401 authorization_required`).
    #[error("authorization required")]
    AuthorizationRequired(Box<ConsentRequired>),
    /// Refreshing failed for a reason that does not invalidate the grant
    /// (`502 token_refresh_failed`).
    #[error("refreshing the token of {app:?} failed: {reason}")]
    RefreshFailed {
        /// App id.
        app: String,
        /// Why, for the caller (never a token).
        reason: String,
    },
    /// The store failed.
    #[error("token store: {0}")]
    Store(#[from] StoreError),
}

/// The body of a `401 authorization_required`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRequired {
    /// The caller's org.
    pub org: String,
    /// App id.
    pub app: String,
    /// App name.
    pub app_name: String,
    /// `{public_url}/consent/{ticket}`.
    pub consent_url: String,
    /// Seconds the ticket is valid.
    pub expires_in: u64,
}

/// A token was injected.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The app whose token it is.
    pub app: Arc<App>,
    /// The injected access token: a forced refresh after an upstream `401 invalid_token`
    /// compares it with the stored one, so concurrent rejections refresh only once.
    access_token: Secret,
}

/// Key of the single-flight map: one refresh per (org, app, user) at a time.
type FlightKey = (String, String, String);

/// Decides and performs token injection.
pub struct Injector {
    /// Domain → app, per org.
    index: Arc<AppIndex>,
    /// Token sets and consent tickets.
    store: Arc<dyn Store>,
    /// Refresh calls.
    tokens: Arc<TokenClient>,
    /// Base of consent URLs.
    public_url: String,
    /// Refresh outcomes.
    metrics: Arc<Metrics>,
    /// Expiry decisions.
    clock: Arc<dyn Clock>,
    /// In-flight refresh locks; `Weak` so finished flights free themselves.
    flights: Mutex<HashMap<FlightKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl Injector {
    /// An injector over these parts.
    pub fn new(
        index: Arc<AppIndex>,
        store: Arc<dyn Store>,
        tokens: Arc<TokenClient>,
        public_url: String,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Injector {
            index,
            store,
            tokens,
            public_url,
            metrics,
            clock,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The app of the caller's org bound to `host`, if any.
    pub async fn lookup(
        &self,
        caller: &Caller,
        host: &Host,
    ) -> Result<Option<Arc<App>>, InjectError> {
        Ok(self.index.lookup(&caller.org, host).await?)
    }

    /// Looks up the app for `host` and injects its token into `headers`; `Ok(None)` when no
    /// app of the caller's org is bound to `host` (headers untouched).
    pub async fn apply(
        &self,
        caller: &Caller,
        host: &Host,
        headers: &mut HeaderMap,
    ) -> Result<Option<Injected>, InjectError> {
        match self.lookup(caller, host).await? {
            None => Ok(None),
            Some(app) => self.inject(caller, app, headers).await.map(Some),
        }
    }

    /// Injects `app`'s token for the caller into `headers` (replacing any `Authorization`),
    /// refreshing it first when it is stale.
    pub async fn inject(
        &self,
        caller: &Caller,
        app: Arc<App>,
        headers: &mut HeaderMap,
    ) -> Result<Injected, InjectError> {
        self.inject_inner(caller, app, headers, None).await
    }

    /// After the upstream rejected `rejected`'s token (`401` with `error="invalid_token"`):
    /// refreshes once (unless another request already replaced the token) and injects the
    /// result into `headers`.
    pub async fn inject_after_rejection(
        &self,
        caller: &Caller,
        rejected: &Injected,
        headers: &mut HeaderMap,
    ) -> Result<Injected, InjectError> {
        self.inject_inner(
            caller,
            rejected.app.clone(),
            headers,
            Some(&rejected.access_token),
        )
        .await
    }

    async fn inject_inner(
        &self,
        caller: &Caller,
        app: Arc<App>,
        headers: &mut HeaderMap,
        rejected: Option<&Secret>,
    ) -> Result<Injected, InjectError> {
        if !app.enabled {
            return Err(InjectError::Disabled {
                app: app.id.clone(),
                app_name: app.name.clone(),
            });
        }
        let stored = self.read(&app, &caller.user).await?;
        let token = match stored {
            None => return Err(self.consent_required(&app, &caller.user).await),
            Some(t) if rejected.is_none() && self.is_fresh(&t) => t,
            Some(_) => self.refresh(&app, &caller.user, rejected).await?,
        };
        set_bearer(headers, &token.access_token)?;
        Ok(Injected {
            app,
            access_token: token.access_token,
        })
    }

    async fn read(&self, app: &App, user: &str) -> Result<Option<TokenSet>, StoreError> {
        self.store
            .get_token(&app.org, &app.id, app.incarnation, app.generation, user)
            .await
    }

    /// More than `min(60 s, lifetime/2)` left; an unknown lifetime is fresh.
    fn is_fresh(&self, t: &TokenSet) -> bool {
        let Some(expires_at) = t.expires_at else {
            return true;
        };
        let lifetime = expires_at.saturating_sub(t.obtained_at);
        let margin = REFRESH_MARGIN_SECS.min(lifetime / 2);
        expires_at.saturating_sub(self.clock.now()) > margin
    }

    fn flight(&self, key: FlightKey) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another thread panicked while inserting; the map itself
        // is still consistent, so keep using it.
        let mut map = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() >= FLIGHTS_PRUNE_AT {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key, Arc::downgrade(&lock));
        lock
    }

    /// The refresh, single-flight. Waiters re-read the store once they hold the lock and use
    /// what the refresh that went before them stored.
    async fn refresh(
        &self,
        app: &Arc<App>,
        user: &str,
        rejected: Option<&Secret>,
    ) -> Result<TokenSet, InjectError> {
        let lock = self.flight((app.org.clone(), app.id.clone(), user.to_string()));
        let _held = lock.lock().await;
        let Some(current) = self.read(app, user).await? else {
            return Err(self.consent_required(app, user).await);
        };
        let replaced = rejected.is_some_and(|r| *r != current.access_token);
        if (rejected.is_none() || replaced) && self.is_fresh(&current) {
            return Ok(current);
        }
        let Some(refresh_token) = current.refresh_token.clone() else {
            // Expired or rejected, and nothing to refresh with: the user must consent again.
            if rejected.is_some() {
                self.store.delete_token(&app.org, &app.id, user).await?;
            }
            self.metrics.count_refresh("no_refresh_token");
            return Err(self.consent_required(app, user).await);
        };
        match self.tokens.refresh(app, &refresh_token).await {
            Ok(grant) => {
                let now = self.clock.now();
                let token = grant.into_token_set(app, user, now, Some(&current));
                // An admin revoke of this one user (which deletes the token without bumping
                // the generation) during the refresh must not be undone by our write. The
                // store's CAS covers reset and delete, not this; re-reading shrinks the
                // window from the provider round trip to the gap between two store calls.
                if self.read(app, user).await?.is_none() {
                    self.metrics.count_refresh("superseded");
                    return Err(self.consent_required(app, user).await);
                }
                if self
                    .store
                    .put_token_if_current(token.clone(), app.incarnation)
                    .await?
                {
                    self.metrics.count_refresh("success");
                    tracing::info!(org = %app.org, app = %app.id, user, "token refreshed");
                    Ok(token)
                } else {
                    // Reset or deleted while we refreshed: the reset wins.
                    self.metrics.count_refresh("superseded");
                    tracing::info!(
                        org = %app.org, app = %app.id, user,
                        "refreshed token discarded: the app was reset or deleted meanwhile"
                    );
                    Err(self.consent_required(app, user).await)
                }
            }
            Err(e) if e.provider_code() == Some("invalid_grant") => {
                self.metrics.count_refresh("invalid_grant");
                // Another replica may have rotated the refresh token meanwhile.
                if let Some(now) = self.read(app, user).await? {
                    if now.refresh_token.as_ref() != Some(&refresh_token) && self.is_fresh(&now) {
                        return Ok(now);
                    }
                }
                tracing::info!(
                    org = %app.org, app = %app.id, user,
                    "refresh token rejected (invalid_grant): the user must consent again"
                );
                self.store.delete_token(&app.org, &app.id, user).await?;
                Err(self.consent_required(app, user).await)
            }
            Err(e) => Err(self.refresh_failed(app, user, e)),
        }
    }

    fn refresh_failed(&self, app: &App, user: &str, e: TokenError) -> InjectError {
        let reason = match e.provider_code() {
            Some("invalid_client") | Some("unauthorized_client") => {
                self.metrics.count_refresh("invalid_client");
                tracing::error!(
                    org = %app.org, app = %app.id, user, error = %e,
                    "the provider rejected the app's client credentials; fix client_id/client_secret"
                );
                "the provider rejected the application's client credentials".to_string()
            }
            _ => {
                self.metrics.count_refresh("error");
                tracing::warn!(org = %app.org, app = %app.id, user, error = %e, "token refresh failed");
                e.to_string()
            }
        };
        InjectError::RefreshFailed {
            app: app.id.clone(),
            reason,
        }
    }

    /// Issues a consent ticket for the app as it is stored now (a reset may have moved its
    /// generation since the index snapshot).
    async fn consent_required(&self, app: &App, user: &str) -> InjectError {
        match self.issue_ticket(app, user).await {
            Ok(c) => InjectError::AuthorizationRequired(Box::new(c)),
            Err(e) => e,
        }
    }

    async fn issue_ticket(&self, app: &App, user: &str) -> Result<ConsentRequired, InjectError> {
        let current = self
            .store
            .get_app(&app.org, &app.id)
            .await?
            .ok_or_else(|| InjectError::RefreshFailed {
                app: app.id.clone(),
                reason: "the application was deleted".into(),
            })?;
        if !current.enabled {
            return Err(InjectError::Disabled {
                app: current.id,
                app_name: current.name,
            });
        }
        let ticket = ConsentTicket::new(
            &current.org,
            user,
            &current.id,
            current.generation,
            current.incarnation,
            self.clock.now() + TICKET_TTL_SECS,
        )?;
        let consent_url = format!("{}/consent/{}", self.public_url, ticket.id);
        self.store.put_ticket(ticket).await?;
        Ok(ConsentRequired {
            org: current.org,
            app: current.id,
            app_name: current.name,
            consent_url,
            expires_in: TICKET_TTL_SECS,
        })
    }
}

fn set_bearer(headers: &mut HeaderMap, token: &Secret) -> Result<(), InjectError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        InjectError::RefreshFailed {
            app: String::new(),
            reason: "the stored access token is not a valid header value".into(),
        }
    })?;
    value.set_sensitive(true);
    headers.remove(AUTHORIZATION);
    headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// Whether an upstream response rejects the injected token: `401` with
/// `WWW-Authenticate: Bearer ... error="invalid_token"` (RFC 6750 §3.1).
pub fn rejects_token(status: http::StatusCode, headers: &HeaderMap) -> bool {
    status == http::StatusCode::UNAUTHORIZED
        && headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                let v = v.to_ascii_lowercase();
                v.trim_start().starts_with("bearer")
                    && (v.contains("error=\"invalid_token\"") || v.contains("error=invalid_token"))
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_token_challenges() {
        let cases = [
            (
                "bearer invalid_token",
                401,
                "Bearer realm=\"x\", error=\"invalid_token\"",
                true,
            ),
            (
                "case insensitive",
                401,
                "bearer ERROR=\"INVALID_TOKEN\"",
                true,
            ),
            (
                "other error",
                401,
                "Bearer error=\"insufficient_scope\"",
                false,
            ),
            ("basic", 401, "Basic realm=\"x\"", false),
            ("not 401", 403, "Bearer error=\"invalid_token\"", false),
        ];
        for (name, status, header, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(header),
            );
            let status = http::StatusCode::from_u16(status).unwrap();
            assert_eq!(rejects_token(status, &h), want, "{name}");
        }
    }
}
