//! Outbound applications (OAuth 2.0 clients configured by an org's admins): their validated
//! configuration ([`app`]), the per-org domain index ([`index`]), tollgate's own egress for
//! provider calls ([`egress`]), the `oauth2`-crate client for authorization URLs, code
//! exchange, refresh and revocation ([`token`]), the legacy webhook handshake's request
//! templates ([`webhook`]), and the injection decision ([`inject`]).
//! The consent pages that drive the flow live in `web::consent`.

pub mod app;
pub mod egress;
pub mod index;
pub mod inject;
pub mod token;
pub mod webhook;

use std::sync::Arc;

use http::HeaderName;

use crate::store::{App, Store, TokenSet};
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
    /// When set, the consent pages require this trusted header (set by the platform's login
    /// proxy) to equal the ticket's user.
    pub consent_user_header: Option<HeaderName>,
}

impl OAuth {
    /// Revokes `tokens` at the app's provider in the background (RFC 7009, best effort);
    /// nothing to do when the app has no `revocation_url`.
    pub fn revoke_in_background(&self, app: App, tokens: Vec<TokenSet>) {
        if app.revocation_url.is_none() || tokens.is_empty() {
            return;
        }
        let client = self.tokens.clone();
        tokio::spawn(async move {
            for t in &tokens {
                client.revoke(&app, t).await;
            }
        });
    }
}

impl OAuth {
    /// Assembles the outbound-application machinery over `store`: the domain index (built
    /// now; lookups retry if the store cannot be read yet), provider calls through the egress
    /// path (`policies`, `dialer`, `tls`), and the injector.
    #[allow(clippy::too_many_arguments)] // one call site per binary; each is a distinct part
    pub async fn build(
        store: Arc<dyn Store>,
        policies: Arc<crate::policy::watch::Policies>,
        router: Arc<crate::route::Router>,
        tls: Arc<rustls::ClientConfig>,
        timeout: std::time::Duration,
        public_url: String,
        metrics: Arc<crate::metrics::Metrics>,
        consent_user_header: Option<HeaderName>,
    ) -> Arc<OAuth> {
        let index = Arc::new(index::AppIndex::new(store.clone()));
        if let Err(e) = index.refresh().await {
            // Lookups retry the build; the proxy must still come up to serve everything else.
            tracing::error!(error = %e, "cannot read outbound applications from the store");
        }
        let egress = Arc::new(egress::Egress::new(policies, router, tls, timeout));
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
            Arc::new(crate::store::SystemClock),
        ));
        Arc::new(OAuth {
            index,
            injector,
            tokens,
            store,
            consent_user_header,
        })
    }
}
