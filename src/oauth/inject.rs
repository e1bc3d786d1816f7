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
use std::sync::{Arc, Mutex, RwLock, Weak};

use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;

pub use super::flow::ConsentRequired;
use super::flow::{TicketError, Tickets};
use super::grant::TokenError;
use super::index::AppIndex;
use super::token::TokenClient;
use crate::clock::Clock;
use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::policy::Host;
use crate::store::{App, Change, Changes, Secret, Seen, Store, StoreError, TokenSet};

mod health;
mod lease;
pub mod usage;
pub use lease::{REFRESH_DEADLINE, REFRESH_LEASE};

/// A token is refreshed when less than this is left (or half its lifetime, if shorter).
const REFRESH_MARGIN_SECS: u64 = 60;

/// Single-flight map entries are pruned when the map grows past this many.
const FLIGHTS_PRUNE_AT: usize = 1024;

/// The token cache is emptied when it holds this many token sets (entries of reset or
/// deleted apps are otherwise only replaced, never removed).
const CACHE_MAX_ENTRIES: usize = 100_000;

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

/// A token was injected.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The app whose token it is.
    pub app: Arc<App>,
    /// The injected token set: a forced refresh after an upstream `401 invalid_token`
    /// compares its access token with the stored one, so concurrent rejections refresh once.
    token: Arc<TokenSet>,
    /// Whether the token was refreshed to inject it (it was stale, or the upstream rejected
    /// the previous one): the request's span reports it.
    pub refreshed: bool,
}

impl Injected {
    /// The token set injected (`GET /v1/me/tokens/{app}` hands it to code that asked).
    pub fn token(&self) -> &TokenSet {
        &self.token
    }
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
    /// Consent tickets, for answers that need the user's consent.
    tickets: Tickets,
    /// Refresh outcomes.
    pub(crate) metrics: Arc<Metrics>,
    /// Expiry decisions.
    clock: Clock,
    /// In-flight refresh locks; `Weak` so finished flights free themselves.
    flights: Mutex<HashMap<FlightKey, Weak<tokio::sync::Mutex<()>>>>,
    /// Token sets already read and unsealed, so injecting a fresh token costs no store read.
    cache: TokenCache,
    /// The store's change events, which evict what `cache` holds of a changed grant or app.
    changes: Changes,
    /// "Last used", noted per injection and written coalesced (`usage`).
    usage: Arc<usage::LastUsed>,
    /// Where grant events go (`--events-webhook`), once set.
    events: std::sync::OnceLock<super::events::EventSink>,
}

impl Injector {
    /// An injector over these parts.
    pub fn new(
        index: Arc<AppIndex>,
        store: Arc<dyn Store>,
        tokens: Arc<TokenClient>,
        public_url: String,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Injector {
            tickets: Tickets::new(store.clone(), clock.clone(), public_url)
                .with_metrics(metrics.clone()),
            index,
            changes: store.subscribe(),
            store,
            tokens,
            metrics,
            clock,
            flights: Mutex::new(HashMap::new()),
            cache: TokenCache::default(),
            usage: Arc::default(),
            events: std::sync::OnceLock::new(),
        }
    }

    /// The consent tickets the `401`s carry: `oauth::connections` issues (or repeats) the same
    /// one for a Connect.
    pub(crate) fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// Evicts from the token cache what the store's change events say changed: a grant
    /// (consent, refresh, revoke) evicts that user's entry, an app change or delete the app's
    /// entries, missed events everything.
    fn follow_changes(&self) {
        self.changes.catch_up(|seen| match seen {
            Seen::Event(e) => match &e.change {
                Change::GrantChanged { org, app, user }
                | Change::GrantDeleted { org, app, user } => self.cache.remove(org, app, user),
                Change::AppChanged { org, app } | Change::AppDeleted { org, app } => {
                    self.cache.remove_app(org, app)
                }
                Change::AgentRevoked { .. } | Change::TokensRevoked => {}
            },
            Seen::Missed => self.cache.clear(),
        });
    }

    /// The app of the caller's org bound to `host`, if any.
    pub async fn lookup(
        &self,
        caller: &Caller,
        host: &Host,
    ) -> Result<Option<Arc<App>>, InjectError> {
        Ok(self.index.lookup(&caller.org, host).await?)
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
            Some(&rejected.token.access_token),
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
        let stored = self.cached_or_read(&app, &caller.user).await?;
        let now = self.clock_now()?;
        let (token, refreshed) = match stored {
            None => return Err(self.consent_required(&app, &caller.user).await),
            Some(t) if t.health.state == crate::store::GrantState::NeedsConsent => {
                return Err(self.consent_required(&app, &caller.user).await)
            }
            Some(t) if rejected.is_none() && self.is_fresh(&app, &t, now) => (t, false),
            Some(_) => (
                self.refresh(&app, &caller.user, rejected, None).await?,
                true,
            ),
        };
        set_bearer(headers, &token.access_token)?;
        self.note_used(&app, &token, now);
        Ok(Injected {
            app,
            token,
            refreshed,
        })
    }

    async fn cached_or_read(
        &self,
        app: &App,
        user: &str,
    ) -> Result<Option<Arc<TokenSet>>, StoreError> {
        self.follow_changes();
        if let Some(t) = self.cache.get(app, user) {
            return Ok(Some(t));
        }
        self.read(app, user).await
    }

    /// Reads the store (never the cache: a refresh must see what other replicas wrote) and
    /// caches what it found.
    async fn read(&self, app: &App, user: &str) -> Result<Option<Arc<TokenSet>>, StoreError> {
        let epoch = self.cache.epoch();
        let found = self
            .store
            .get_token(&app.org, &app.id, app.incarnation, app.generation, user)
            .await?
            .map(Arc::new);
        if let Some(t) = &found {
            self.cache.put(epoch, app, t.clone());
        }
        Ok(found)
    }

    /// More than `min(60 s, lifetime/2)` left; an unknown lifetime is fresh. The margin exists
    /// only to refresh ahead of expiry, so a token that cannot be refreshed (no refresh token,
    /// or a webhook app without a refresh template) is fresh until it really expires.
    fn is_fresh(&self, app: &App, t: &TokenSet, now: u64) -> bool {
        let Some(expires_at) = t.expires_at else {
            return true;
        };
        let lifetime = expires_at.saturating_sub(t.obtained_at);
        let margin = REFRESH_MARGIN_SECS.min(lifetime / 2);
        let left = expires_at.saturating_sub(now);
        left > margin || (left > 0 && !self.can_refresh(app, t))
    }

    /// The clock, as a store-level failure (it fails only on a broken host clock).
    fn clock_now(&self) -> Result<u64, StoreError> {
        Ok(self.clock.now()?)
    }

    fn can_refresh(&self, app: &App, t: &TokenSet) -> bool {
        t.refresh_token.is_some() && self.tokens.can_refresh(app)
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

    /// The refresh, single-flight ([`Self::refresh_in_flight`]). Boxed: inline, its 7 KB
    /// future (the token endpoint's exchange) would size every injected request's future,
    /// and the slot hyper keeps per client connection for that future.
    async fn refresh(
        &self,
        app: &Arc<App>,
        user: &str,
        rejected: Option<&Secret>,
        ahead: Option<u64>,
    ) -> Result<Arc<TokenSet>, InjectError> {
        Box::pin(self.refresh_in_flight(app, user, rejected, ahead)).await
    }

    /// Waiters re-read the store once they hold the lock and use what the refresh that went
    /// before them stored.
    async fn refresh_in_flight(
        &self,
        app: &Arc<App>,
        user: &str,
        rejected: Option<&Secret>,
        ahead: Option<u64>,
    ) -> Result<Arc<TokenSet>, InjectError> {
        let lock = self.flight((app.org.clone(), app.id.clone(), user.to_string()));
        let _held = lock.lock().await;
        let current = match self.read(app, user).await? {
            Some(t) if t.health.state != crate::store::GrantState::NeedsConsent => t,
            _ => return Err(self.consent_required(app, user).await),
        };
        let replaced = rejected.is_some_and(|r| *r != current.access_token);
        let now = self.clock_now()?;
        // The background refresher's own test (`refresher::due`), else the request path's.
        let fresh = match ahead {
            Some(window) => !super::refresher::due(&current, now, window),
            None => self.is_fresh(app, &current, now),
        };
        if (rejected.is_none() || replaced) && fresh {
            return Ok(current);
        }
        let refresh_token = current
            .refresh_token
            .clone()
            .filter(|_| self.can_refresh(app, &current));
        let Some(refresh_token) = refresh_token else {
            // Expired or rejected, and nothing to refresh with: the user must consent again.
            if rejected.is_some() {
                self.store.delete_token(&app.org, &app.id, user).await?;
            }
            self.metrics.count_refresh("no_refresh_token");
            return Err(self.consent_required(app, user).await);
        };
        // Across replicas: one refresh per grant, under a lease on the grant (`lease`).
        if let Some(written) = self.refresh_lease(app, user, &current).await? {
            return Ok(written);
        }
        match self.refresh_leased(app, &current, &refresh_token).await {
            Ok(grant) => {
                let now = self.clock_now()?;
                let mut token = grant.into_token_set(app, user, now, Some(&current));
                token.health = Self::refreshed_health(&current, now);
                // A compare-and-swap on the version of the grant read above, under the app's
                // incarnation and generation: whatever changed either during the refresh wins
                // (checked in the store's transaction).
                let epoch = self.cache.epoch();
                let stored = self
                    .store
                    .replace_token_if_current(token, app.incarnation)
                    .await?;
                if let Some(stored) = stored {
                    self.refresh_stored(app, &current, &stored);
                    let token = Arc::new(stored);
                    self.cache.put(epoch, app, token.clone());
                    self.metrics.count_refresh("success");
                    tracing::info!(org = %app.org, app = %app.id, user, "token refreshed");
                    return Ok(token);
                }
                // Another writer won the compare-and-swap: a refresh elsewhere (use its
                // token), or a reset, delete, revoke or new consent (that wins).
                if let Some(winner) = self.read(app, user).await? {
                    if winner.version != current.version
                        && self.is_fresh(app, &winner, self.clock_now()?)
                    {
                        self.metrics.count_refresh("superseded");
                        return Ok(winner);
                    }
                }
                self.metrics.count_refresh("superseded");
                tracing::info!(
                    org = %app.org, app = %app.id, user,
                    "refreshed token discarded: the app was reset or deleted, or the user's authorization revoked, meanwhile"
                );
                Err(self.consent_required(app, user).await)
            }
            Err(e) if e.provider_code() == Some("invalid_grant") => {
                self.metrics.count_refresh("invalid_grant");
                // Another replica may have rotated the refresh token meanwhile.
                if let Some(now) = self.read(app, user).await? {
                    if now.refresh_token.as_ref() != Some(&refresh_token)
                        && self.is_fresh(app, &now, self.clock_now()?)
                    {
                        return Ok(now);
                    }
                }
                tracing::info!(
                    org = %app.org, app = %app.id, user,
                    "refresh token rejected (invalid_grant): the user must consent again"
                );
                self.mark_needs_consent(app, &current, &e).await?;
                Err(self.consent_required(app, user).await)
            }
            Err(e) => {
                self.note_refresh_failed(app, &current, &e).await;
                Err(self.refresh_failed(app, user, e))
            }
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
                e.caller_reason()
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
        // Boxed, like the refresh: a rare path that would otherwise size the request's future.
        match Box::pin(self.issue_ticket(app, user)).await {
            Ok(c) => InjectError::AuthorizationRequired(Box::new(c)),
            Err(e) => e,
        }
    }

    async fn issue_ticket(&self, app: &App, user: &str) -> Result<ConsentRequired, InjectError> {
        self.tickets.issue(app, user).await.map_err(|e| match e {
            TicketError::Deleted => InjectError::RefreshFailed {
                app: app.id.clone(),
                reason: "the application was deleted".into(),
            },
            TicketError::Disabled { app_name } => InjectError::Disabled {
                app: app.id.clone(),
                app_name,
            },
            TicketError::Store(e) => e.into(),
        })
    }
}

/// A cached token set and the app version it was read under.
struct Cached {
    /// App incarnation of the token set.
    incarnation: u64,
    /// App generation of the token set.
    generation: u64,
    /// The token set.
    token: Arc<TokenSet>,
}

/// Token sets by org → app → user (nested so lookups borrow `&str`, no key allocation).
type CacheMap = HashMap<String, HashMap<String, HashMap<String, Cached>>>;

/// Unsealed token sets, so the hot path (a fresh token) reads no store and opens no AEAD.
///
/// An entry is used only while the app (from the index) still has the incarnation and
/// generation it was read under. Entries are evicted by the store's change events (see
/// [`Injector::follow_changes`]), whoever wrote: this process or, with a shared store,
/// another replica. A read that raced with an eviction must not re-insert what it read before
/// the change: every removal bumps `epoch`, and an insert is dropped when the epoch moved
/// since its read began.
#[derive(Default)]
struct TokenCache {
    /// The entries and how many there are.
    inner: RwLock<(CacheMap, usize)>,
    /// Bumped by every removal.
    epoch: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn get(&self, app: &App, user: &str) -> Option<Arc<TokenSet>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is intact.
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let c = inner.0.get(&app.org)?.get(&app.id)?.get(user)?;
        (c.incarnation == app.incarnation && c.generation == app.generation)
            .then(|| c.token.clone())
    }

    fn put(&self, seen_epoch: u64, app: &App, token: Arc<TokenSet>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch() != seen_epoch {
            return;
        }
        let (map, len) = &mut *inner;
        if *len >= CACHE_MAX_ENTRIES {
            map.clear();
            *len = 0;
        }
        let previous = map
            .entry(app.org.clone())
            .or_default()
            .entry(app.id.clone())
            .or_default()
            .insert(
                token.user.clone(),
                Cached {
                    incarnation: app.incarnation,
                    generation: app.generation,
                    token,
                },
            );
        if previous.is_none() {
            *len += 1;
        }
    }

    fn remove_app(&self, org: &str, app: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let (map, len) = &mut *inner;
        if let Some(users) = map.get_mut(org).and_then(|apps| apps.remove(app)) {
            *len -= users.len();
        }
    }

    fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let (map, len) = &mut *inner;
        map.clear();
        *len = 0;
    }

    fn remove(&self, org: &str, app: &str, user: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let (map, len) = &mut *inner;
        if let Some(users) = map.get_mut(org).and_then(|apps| apps.get_mut(app)) {
            if users.remove(user).is_some() {
                *len -= 1;
            }
        }
    }
}

fn set_bearer(headers: &mut HeaderMap, token: &Secret) -> Result<(), InjectError> {
    let invalid = || InjectError::RefreshFailed {
        app: String::new(),
        reason: "the stored access token is not a valid header value".into(),
    };
    let token = token.expose();
    // Visible ASCII only, as `HeaderValue::from_str` insists (from bytes, obs-text would pass).
    if !token
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return Err(invalid());
    }
    // One allocation per request: the value takes this buffer as it is.
    let mut buf = bytes::BytesMut::with_capacity(7 + token.len());
    buf.extend_from_slice(b"Bearer ");
    buf.extend_from_slice(token.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(buf.freeze()).map_err(|_| invalid())?;
    value.set_sensitive(true);
    // `insert` replaces every value the client sent.
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

    fn app(generation: u64) -> App {
        let config = crate::store::AppConfig {
            id: "crm".into(),
            name: "CRM".into(),
            ..Default::default()
        };
        App {
            generation,
            incarnation: 7,
            ..App::new("acme", config)
        }
    }

    fn token(user: &str) -> Arc<TokenSet> {
        Arc::new(TokenSet {
            org: "acme".into(),
            app: "crm".into(),
            user: user.into(),
            generation: 1,
            version: 1,
            access_token: Secret::new("t"),
            refresh_token: None,
            token_type: None,
            scopes: vec![],
            expires_at: None,
            obtained_at: 0,
            health: Default::default(),
        })
    }

    #[test]
    fn cache_hits_only_for_the_same_app_version_and_no_stale_insert_after_an_eviction() {
        let cache = TokenCache::default();
        let v1 = app(1);
        cache.put(cache.epoch(), &v1, token("alice"));
        assert!(cache.get(&v1, "alice").is_some());
        assert!(cache.get(&v1, "bob").is_none());
        // A reset (new generation) misses without any invalidation.
        assert!(cache.get(&app(2), "alice").is_none());
        // A read that began before an eviction must not re-insert what it read.
        let seen = cache.epoch();
        cache.remove("acme", "crm", "alice");
        cache.put(seen, &v1, token("alice"));
        assert!(cache.get(&v1, "alice").is_none());
        cache.put(cache.epoch(), &v1, token("alice"));
        assert!(cache.get(&v1, "alice").is_some());
        assert_eq!(cache.inner.read().unwrap().1, 1);
        // An app change evicts the app's users; missed events evict everything.
        cache.put(cache.epoch(), &v1, token("bob"));
        cache.remove_app("acme", "crm");
        assert!(cache.get(&v1, "alice").is_none() && cache.get(&v1, "bob").is_none());
        assert_eq!(cache.inner.read().unwrap().1, 0);
        cache.put(cache.epoch(), &v1, token("alice"));
        let seen = cache.epoch();
        cache.clear();
        cache.put(seen, &v1, token("alice"));
        assert!(cache.get(&v1, "alice").is_none());
        assert_eq!(cache.inner.read().unwrap().1, 0);
    }

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
