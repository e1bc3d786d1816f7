//! The web listener (axum): health, readiness and metrics (`health`), the admin API
//! (`/v1/apps`, `admin`), operators' agent API (`/v1/agents`, `agents`), caller-token
//! revocation (`/v1/tokens/revoke`, `tokens`), key operations (`/v1/keys`, `keys`), the consent
//! pages
//! with the OAuth callback, the pages' sign-in (`login`), a caller's own connections and
//! tokens for code (`/v1/me`, `me`) and the page of the same (`/connections`,
//! `connections`); the provider catalog (`/v1/providers`, `providers`); the admin console
//! (`/admin`, `console`) and the CSRF tokens of the pages' forms (`csrf`).

pub mod admin;
pub mod agents;
pub mod connections;
pub mod consent;
pub mod console;
pub mod csrf;
mod errors;
pub mod health;
pub mod keys;
pub mod listener;
pub mod login;
pub mod me;
pub mod page;
pub mod providers;
mod times;
pub mod tokens;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::identity::Verifier;
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::relay::AgentControl;

/// What the web handlers share.
#[derive(Clone)]
pub struct WebState {
    /// Metrics, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Verifies admin caller tokens.
    pub verifier: Arc<Verifier>,
    /// The app lifecycle, the consent flow, the app index, and the live policy set with its
    /// load status (`oauth.policies`, also read by `/readyz`).
    pub oauth: Arc<OAuth>,
    /// Connected agents and their revocation, for operators (`/v1/agents`).
    pub agents: Arc<AgentControl>,
    /// Who is signing in at the pages (`--login`), with the session cookie's keys.
    pub login: Arc<login::Login>,
    /// The shutdown sequence: `/readyz` answers `503` once it began.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Caller-token revocation (`POST /v1/tokens/revoke`).
    pub tokens: Arc<crate::revoke::TokenControl>,
    /// Key operations for operators (`/v1/keys`).
    pub keys: Arc<crate::keys::admin::KeyAdmin>,
}

/// The router.
pub fn router(state: WebState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(admin::routes().layer(axum::middleware::from_fn(times::rfc3339_times)))
        .merge(agents::routes().layer(axum::middleware::from_fn(times::rfc3339_times)))
        .merge(tokens::routes().layer(axum::middleware::from_fn(times::rfc3339_times)))
        .merge(keys::routes().layer(axum::middleware::from_fn(times::rfc3339_times)))
        .merge(me::routes().layer(axum::middleware::from_fn(times::rfc3339_times)))
        .merge(providers::routes())
        .merge(consent::routes())
        .merge(connections::routes())
        .merge(login::routes())
        .merge(console::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(errors::json_errors))
        .with_state(state)
}

/// Serves the router on `listener` until `shutdown`, within `settings`' limits (see
/// [`listener`]: header and idle timeouts, connection cap, the peer in `ConnectInfo`).
pub async fn run(
    listener: TcpListener,
    state: WebState,
    settings: listener::WebSettings,
    shutdown: CancellationToken,
) {
    listener::serve(listener, router(state), settings, shutdown).await;
}

/// `404 not_found` with a JSON body, for every unknown path.
pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": "no such endpoint"})),
    )
        .into_response()
}
