//! Outbound applications (OAuth 2.0 clients configured by an org's admins):
//! - [`app`]: their configuration ([`app::AppConfig`]): parsing, PATCH, validation;
//! - [`endpoint`]: the provider-URL parser and the policy check of a provider endpoint;
//! - [`admin`]: the app lifecycle (create, update, enable, disable, reset, delete, revoke);
//! - [`connections`]: a user's own view of the org's apps (connect, disconnect that revokes
//!   at the provider, tokens for code);
//! - [`flow`]: the consent lifecycle (ticket → pending authorization → exchange → token set);
//! - [`browser`]: the consent cookie that binds a consent to one browser, and its `csrf` field;
//! - [`index`]: the per-org domain index;
//! - [`inject`]: the injection decision, which also issues consent tickets;
//! - [`token`]: the `oauth2`-crate client for authorization URLs, code exchange, refresh and
//!   revocation, sent through tollgate's own egress ([`egress`]); what they yield is a
//!   [`grant::Grant`];
//! - [`revoke`]: revocation at the provider (RFC 7009, or the app's request template);
//! - [`catalog`]: the embedded provider catalog (`providers/*.toml`);
//! - [`webhook`]: the legacy webhook handshake's request templates.
//!
//! `web` translates HTTP into calls on [`OAuth`]; it does not touch the store.

pub mod admin;
pub mod app;
pub mod browser;
pub mod catalog;
pub mod connections;
pub mod egress;
pub mod endpoint;
pub mod events;
pub mod flow;
pub mod grant;
pub mod health_metrics;
pub mod index;
pub mod inject;
pub mod refresher;
pub mod revoke;
pub mod token;
pub mod webhook;

use std::sync::Arc;

use crate::policy::watch::Policies;
use crate::store::Store;
use index::AppIndex;
use inject::Injector;
use token::TokenClient;

/// Everything OAuth-related the proxy and the web listener share.
pub struct OAuth {
    /// Domain → app, per org.
    pub index: Arc<AppIndex>,
    /// The injection decision, for plain-http forwarding and interception.
    pub injector: Arc<Injector>,
    /// Provider calls (authorization URL, code exchange, refresh, revocation).
    pub tokens: Arc<TokenClient>,
    /// Apps, tokens, tickets, pending authorizations.
    pub store: Arc<dyn Store>,
    /// The policies in force: app validation and app problems are checked against them.
    pub policies: Arc<Policies>,
    /// Expiry of tickets and pending authorizations, and when tokens were obtained.
    pub clock: crate::clock::Clock,
}

impl OAuth {
    /// Assembles the outbound-application machinery over `store`: the domain index (built
    /// now; lookups retry if the store cannot be read yet), provider calls through the egress
    /// path (`policies`, `dialer`, `tls`), and the injector.
    #[allow(clippy::too_many_arguments)] // one call site per binary; each is a distinct part
    pub async fn build(
        store: Arc<dyn Store>,
        policies: Arc<Policies>,
        router: Arc<crate::route::Router>,
        tls: Arc<rustls::ClientConfig>,
        timeout: std::time::Duration,
        public_url: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<OAuth> {
        let clock = crate::clock::Clock::system();
        let index = Arc::new(index::AppIndex::new(store.clone()));
        if let Err(e) = index.refresh().await {
            // Lookups retry the build; the proxy must still come up to serve everything else.
            tracing::error!(error = %e, "cannot read outbound applications from the store");
        }
        let egress = Arc::new(egress::Egress::new(policies.clone(), router, tls, timeout));
        let tokens = Arc::new(token::TokenClient::new(
            egress,
            format!("{public_url}/oauth/callback"),
        ));
        let injector = Arc::new(inject::Injector::new(
            index.clone(),
            store.clone(),
            tokens.clone(),
            public_url,
            metrics,
            clock.clone(),
        ));
        Arc::new(OAuth {
            index,
            injector,
            tokens,
            store,
            policies,
            clock,
        })
    }
}

impl OAuth {
    /// Whether the store answers now (`/readyz`): `Err` with the reason while a shared store
    /// cannot be reached (requests served from the caches go on meanwhile).
    pub async fn store_reachable(&self) -> Result<(), String> {
        match self.store.ping().await {
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
