//! The consent lifecycle: ticket → pending authorization → code exchange → token set.
//!
//! - [`Tickets::issue`]: the injector, finding no usable token, issues a ticket (random,
//!   single-use, 15 minutes, bound to the app's generation) and answers `401
//!   authorization_required` with its consent URL ([`ConsentRequired`]). Until it is used or
//!   expires, every `401` for the same (org, user, app, generation) repeats it, with
//!   `expires_in` counting down: one live ticket per (org, user, app), however many `401`s;
//! - [`ConsentFlow::ticket`]: what the consent page shows (the ticket, unconsumed, and its app);
//! - [`ConsentFlow::authorize`]: consumes the ticket, stores a pending authorization (`state`,
//!   PKCE verifier, redirect URI, the browser's cookie hash; single-use, 10 minutes) and
//!   returns the provider URL;
//! - [`ConsentFlow::callback`]: consumes the pending authorization (also on `error=`), checks
//!   the user and the browser, then `iss` (RFC 9207), exchanges the code through tollgate's
//!   egress path and stores the token set with the store's compare-and-swap, so a reset
//!   during the consent wins.
//!
//! Every step checks who is signed in ([`ActsFor`], the web layer's sign-in) against the
//! ticket's or pending authorization's user: the page, the Authorize `POST` (before the
//! ticket is consumed) and the callback. The browser is bound through its consent cookie
//! ([`super::browser`]). Every failure is a [`FlowError`] that stores nothing;
//! `web::consent` renders the pages.

use crate::oauth::events::{EventKind, GrantEvent};
use std::sync::Arc;

use serde_json::json;

use crate::clock::Clock;
use crate::store::{
    random_id, App, AuditEvent, ConsentTicket, PendingAuthorization, Secret, Store, StoreError,
    PENDING_TTL_SECS, TICKET_TTL_SECS,
};

use super::browser::ConsentCookie;
use super::grant::TokenError;
use super::OAuth;

/// Who is at the consent pages, as the web layer's sign-in tells (`web::login::Visitor`).
pub trait ActsFor: Sync {
    /// Whether they may act for `user` of `org`.
    fn may_act_for(&self, org: &str, user: &str) -> bool;
    /// Who they are, for logs (`-` when unknown).
    fn who(&self) -> &str;
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
    /// Seconds the ticket stays valid (counts down while it is repeated).
    pub expires_in: u64,
}

/// Why no ticket was issued.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The app was deleted since the caller looked it up.
    #[error("the application was deleted")]
    Deleted,
    /// The app is disabled: no consent can start.
    #[error("app {app_name:?} is disabled")]
    Disabled {
        /// The app's display name.
        app_name: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issues consent tickets, the first step of the lifecycle.
pub struct Tickets {
    /// Where tickets are kept (and the app's current generation read).
    store: Arc<dyn Store>,
    /// Ticket expiry.
    clock: Clock,
    /// Base of consent URLs: `{public_url}/consent/{ticket}`.
    public_url: String,
    /// Counts the tickets issued (the consent funnel's first step), when set.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Tickets {
    /// Tickets kept in `store`, with consent URLs under `public_url`.
    pub fn new(store: Arc<dyn Store>, clock: Clock, public_url: String) -> Self {
        Tickets {
            store,
            clock,
            public_url,
            metrics: None,
        }
    }

    /// Counts issued tickets in `metrics` (`tollgate_consent_tickets_total`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The ticket for `user` and `app` as it is stored now (a reset may have moved its
    /// generation since the caller's snapshot): the live one if there is one, else a new one.
    pub async fn issue(&self, app: &App, user: &str) -> Result<ConsentRequired, TicketError> {
        let current = self
            .store
            .get_app(&app.org, &app.id)
            .await?
            .ok_or(TicketError::Deleted)?;
        if !current.enabled {
            return Err(TicketError::Disabled {
                app_name: current.config.name,
            });
        }
        let now = self.clock.now().map_err(StoreError::from)?;
        let candidate = ConsentTicket::new(&current, user, now + TICKET_TTL_SECS)?;
        let candidate_id = candidate.id.clone();
        let ticket = self.store.issue_ticket(candidate).await?;
        if let Some(m) = self.metrics.as_ref().filter(|_| ticket.id == candidate_id) {
            m.count_ticket("issued");
        }
        Ok(ConsentRequired {
            org: current.org,
            app: current.config.id,
            app_name: current.config.name,
            consent_url: format!("{}/consent/{}", self.public_url, ticket.id),
            expires_in: ticket.expires_at.saturating_sub(now),
        })
    }
}

/// Why a consent step cannot go on. None of them leaves anything stored.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ticket is unknown, expired, used, or its app is gone.
    #[error("the consent link cannot be used")]
    LinkUnusable,
    /// The signed-in user (or org) is not the ticket's or pending authorization's.
    #[error("the consent link is for another user")]
    WrongUser,
    /// The callback did not come from the browser that clicked Authorize.
    #[error("the authorization was started in another browser")]
    WrongBrowser,
    /// The app is disabled: no consent can start or finish.
    #[error("app {app_name:?} of {org:?} is disabled")]
    Disabled {
        /// The app's org.
        org: String,
        /// The app's display name.
        app_name: String,
    },
    /// The authorization URL cannot be built from the app's configuration.
    #[error("cannot build the authorization URL: {0}")]
    AuthorizeUrl(TokenError),
    /// The callback has no `state`.
    #[error("the callback has no state")]
    MissingState,
    /// The pending authorization is unknown, expired, used, or was reset.
    #[error("the authorization cannot be completed")]
    PendingUnusable,
    /// The provider answered `error=` (the user declined, or something failed there).
    #[error("the provider answered {error}")]
    Provider {
        /// The `error` parameter; `access_denied` when the user declined.
        error: String,
        /// The `error_description` parameter.
        description: Option<String>,
    },
    /// The callback's `iss` is not the app's `issuer` (RFC 9207: possible mix-up attack).
    #[error("unexpected authorization server")]
    IssuerMismatch,
    /// The callback has no `code`.
    #[error("the callback has no code")]
    MissingCode,
    /// The code exchange failed.
    #[error("{0}")]
    Exchange(TokenError),
    /// The app was reset or deleted while the user was at the provider.
    #[error("the application changed during the authorization")]
    AppChanged,
}

/// The provider's redirect back to `/oauth/callback`, as query parameters.
#[derive(Debug, Default)]
pub struct Callback<'a> {
    /// `state`: names the pending authorization.
    pub state: Option<&'a str>,
    /// `code`: the authorization code.
    pub code: Option<&'a str>,
    /// `error`, when the provider did not grant.
    pub error: Option<&'a str>,
    /// `error_description`, with `error`.
    pub error_description: Option<&'a str>,
    /// `iss` (RFC 9207).
    pub iss: Option<&'a str>,
}

/// A completed consent.
#[derive(Debug)]
pub struct Granted {
    /// The app now authorized.
    pub app: App,
    /// The user whose tokens were stored.
    pub user: String,
}

/// The consent steps over one [`OAuth`].
pub struct ConsentFlow<'a> {
    /// Store, provider calls, the injector's cache and the login header setting.
    oauth: &'a OAuth,
}

impl OAuth {
    /// The consent steps.
    pub fn flow(&self) -> ConsentFlow<'_> {
        ConsentFlow { oauth: self }
    }
}

impl ConsentFlow<'_> {
    /// The ticket found, or `LinkUnusable` counted in the consent funnel.
    fn usable(&self, found: Option<ConsentTicket>) -> Result<ConsentTicket, FlowError> {
        found.ok_or_else(|| {
            self.oauth.injector.metrics.count_ticket("unusable");
            FlowError::LinkUnusable
        })
    }

    /// The ticket `id` (not consumed) and its app, for the page that asks for consent, if
    /// `who` may act for its user.
    pub async fn ticket(
        &self,
        id: &str,
        who: &dyn ActsFor,
    ) -> Result<(ConsentTicket, App), FlowError> {
        let ticket = self.oauth.store.get_ticket(id).await?;
        let ticket = self.usable(ticket)?;
        check_user("ticket", &ticket.org, &ticket.app, &ticket.user, who)?;
        let app = self.enabled_app(&ticket.org, &ticket.app).await?;
        Ok((ticket, app))
    }

    /// The user clicked Authorize in the browser with `cookie` (whose `csrf` the caller has
    /// checked): consumes the ticket, stores the pending authorization bound to that browser
    /// and returns the provider URL to redirect to.
    pub async fn authorize(
        &self,
        id: &str,
        who: &dyn ActsFor,
        cookie: &ConsentCookie,
    ) -> Result<String, FlowError> {
        let store = &self.oauth.store;
        // Check the user before consuming, so a wrong visitor does not burn the link.
        let ticket = self.usable(store.get_ticket(id).await?)?;
        check_user("ticket", &ticket.org, &ticket.app, &ticket.user, who)?;
        let ticket = self.usable(store.take_ticket(id).await?)?;
        self.oauth.injector.metrics.count_ticket("used");
        let app = self.enabled_app(&ticket.org, &ticket.app).await?;
        let verifier = match app.pkce {
            true => Some(Secret::new(random_id()?)),
            false => None,
        };
        let pending = PendingAuthorization::new(
            &ticket,
            verifier,
            self.oauth.tokens.redirect_uri(),
            cookie.tag(),
            self.oauth.clock.now().map_err(StoreError::from)? + PENDING_TTL_SECS,
        )?;
        let url = self
            .oauth
            .tokens
            .authorize_url(&app, &pending.state, pending.pkce_verifier.as_ref())
            .map_err(|e| {
                tracing::error!(org = %app.org, app = %app.id, error = %e, "cannot build the authorization URL");
                FlowError::AuthorizeUrl(e)
            })?;
        store.put_pending(pending).await?;
        Ok(url)
    }

    /// The provider sent the user back: consumes the pending authorization, checks that
    /// `who` may act for its user and that one of `cookies` is the browser's that clicked
    /// Authorize,
    /// exchanges the code and stores the token set.
    pub async fn callback(
        &self,
        params: &Callback<'_>,
        who: &dyn ActsFor,
        cookies: &[ConsentCookie],
    ) -> Result<Granted, FlowError> {
        let store = &self.oauth.store;
        let state = params.state.ok_or(FlowError::MissingState)?;
        let pending = store
            .take_pending(state)
            .await?
            .ok_or(FlowError::PendingUnusable)?;
        check_user("callback", &pending.org, &pending.app, &pending.user, who)?;
        if !cookies.iter().any(|c| c.has_tag(&pending.browser)) {
            tracing::warn!(
                org = %pending.org, app = %pending.app, user = %pending.user,
                cookies = cookies.len(),
                "consent refused: the callback came from another browser than Authorize"
            );
            return Err(FlowError::WrongBrowser);
        }
        if let Some(error) = params.error {
            tracing::info!(org = %pending.org, app = %pending.app, user = %pending.user, error = %error, "consent not granted");
            return Err(FlowError::Provider {
                error: error.to_string(),
                description: params.error_description.map(str::to_string),
            });
        }
        let app = self.enabled_app(&pending.org, &pending.app).await?;
        if let Some(expected) = &app.issuer {
            if params.iss != Some(expected.as_str()) {
                tracing::warn!(
                    org = %app.org, app = %app.id, expected = %expected,
                    got = params.iss,
                    "callback issuer mismatch (RFC 9207): possible mix-up attack"
                );
                return Err(FlowError::IssuerMismatch);
            }
        }
        let code = params.code.ok_or(FlowError::MissingCode)?;
        let grant = self
            .oauth
            .tokens
            .exchange_code(
                &app,
                code,
                pending.pkce_verifier.as_ref(),
                &pending.redirect_uri,
            )
            .await
            .map_err(|e| {
                tracing::warn!(org = %app.org, app = %app.id, user = %pending.user, error = %e, "code exchange failed");
                FlowError::Exchange(e)
            })?;
        let now = self.oauth.clock.now().map_err(StoreError::from)?;
        let mut token = grant.into_token_set(&app, &pending.user, now, None);
        // Bound to the generation the consent started under: a reset since makes the write fail.
        token.generation = pending.generation;
        let scopes = token.scopes.clone();
        let health = token.health.clone();
        if !store
            .put_token_if_current(token, pending.incarnation)
            .await?
        {
            return Err(FlowError::AppChanged);
        }
        let (kind, user) = (EventKind::Connected, &pending.user);
        let connected = GrantEvent::of(kind, &app.org, &app.id, user, now, Some(&health));
        self.oauth.injector.announce(connected);
        let event = AuditEvent::new(
            &app.org,
            &pending.user,
            "authorization.grant",
            &app.id,
            json!({ "scopes": scopes }),
        );
        if let Err(e) = store.append_audit(event).await {
            tracing::error!(error = %e, "could not append an audit event");
        }
        tracing::info!(org = %app.org, app = %app.id, user = %pending.user, "authorization granted");
        Ok(Granted {
            app,
            user: pending.user,
        })
    }

    /// The app a consent step is for; gone is an unusable link, disabled is refused.
    async fn enabled_app(&self, org: &str, id: &str) -> Result<App, FlowError> {
        match self.oauth.store.get_app(org, id).await? {
            None => Err(FlowError::LinkUnusable),
            Some(app) if !app.enabled => Err(FlowError::Disabled {
                org: app.org,
                app_name: app.config.name,
            }),
            Some(app) => Ok(app),
        }
    }
}

/// `who` must be allowed to act for `user` of `org` (at the `step` named in the log).
fn check_user(
    step: &str,
    org: &str,
    app: &str,
    user: &str,
    who: &dyn ActsFor,
) -> Result<(), FlowError> {
    if who.may_act_for(org, user) {
        return Ok(());
    }
    tracing::warn!(
        step,
        org,
        app,
        consent_user = user,
        signed_in = who.who(),
        "consent refused: the signed-in user is not the consent's user"
    );
    Err(FlowError::WrongUser)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{AppConfig, SledStore, StoreKey};

    #[tokio::test]
    async fn tickets_follow_the_app_as_stored_now() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::from_hex_text(&"d4".repeat(32)).unwrap();
        let clock = ManualClock::new(1_000);
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open_with_clock(dir.path(), key, clock.clock()).unwrap());
        let config = AppConfig {
            id: "gh".into(),
            name: "GitHub".into(),
            ..Default::default()
        };
        let snapshot = store.create_app(App::new("acme", config)).await.unwrap();
        let reset = store.reset_app("acme", "gh").await.unwrap();
        let tickets = Tickets::new(store.clone(), clock.clock(), "https://tg.example".into());

        // Issued for the stored generation, not the caller's older snapshot.
        let c = tickets.issue(&snapshot, "alice").await.unwrap();
        assert_eq!((c.org.as_str(), c.app.as_str()), ("acme", "gh"));
        assert_eq!(c.expires_in, TICKET_TTL_SECS);
        // Repeated while live, counting down; another user gets another.
        clock.advance(100);
        let again = tickets.issue(&snapshot, "alice").await.unwrap();
        assert_eq!(again.consent_url, c.consent_url);
        assert_eq!(again.expires_in, TICKET_TTL_SECS - 100);
        let bob = tickets.issue(&snapshot, "bob").await.unwrap();
        assert_ne!(bob.consent_url, c.consent_url);
        let id = c
            .consent_url
            .strip_prefix("https://tg.example/consent/")
            .unwrap();
        let ticket = store.get_ticket(id).await.unwrap().unwrap();
        assert_eq!(ticket.generation, reset.generation);
        assert_eq!(ticket.expires_at, 1_000 + TICKET_TTL_SECS);

        store.set_app_enabled("acme", "gh", false).await.unwrap();
        let e = tickets.issue(&snapshot, "alice").await.unwrap_err();
        assert!(matches!(e, TicketError::Disabled { app_name } if app_name == "GitHub"));
        store.delete_app("acme", "gh").await.unwrap();
        let e = tickets.issue(&snapshot, "alice").await.unwrap_err();
        assert!(matches!(e, TicketError::Deleted));
    }
}
