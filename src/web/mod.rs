//! The web listener (axum): health, readiness, metrics, the admin API (`/v1/...`), the
//! consent pages with the OAuth callback, and the pages' sign-in (`login`).

pub mod admin;
pub mod consent;
pub mod login;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::identity::Verifier;
use crate::metrics::Metrics;
use crate::oauth::OAuth;

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
    /// Who is signing in at the pages (`--login`), with the session cookie's keys.
    pub login: Arc<login::Login>,
}

/// The router.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin::routes())
        .merge(consent::routes())
        .merge(login::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Serves the router on `listener` until `shutdown`.
pub async fn run(listener: TcpListener, state: WebState, shutdown: CancellationToken) {
    // The peer address travels with each request: `--login header` trusts only some peers.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "web listener failed");
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when a valid policy set is in force. A broken edit after a good load leaves the
/// proxy serving the last good set, so it stays ready (taking it out of rotation would turn
/// a typo into an outage) but reports `degraded` with the errors.
async fn readyz(State(state): State<WebState>) -> Response {
    let status = state.oauth.policies.status();
    let current = state.oauth.policies.current();
    let policies = json!({
        "loaded": status.ever_loaded,
        "policies": current.policy_count(),
        "files": current.file_count(),
        "generation": status.generation,
        "errors": status.last_errors,
    });
    let mut broken_apps = Vec::new();
    // From the in-memory index: the store is read only when apps changed since the last probe.
    let store_ok = match state.oauth.index.apps().await {
        Ok(apps) => {
            for app in apps {
                let problems = crate::oauth::app::problems(&app, &current);
                if !problems.is_empty() {
                    broken_apps.push(json!({"org": app.org, "id": app.id, "problems": problems}));
                }
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "store unreadable in /readyz");
            false
        }
    };
    let (code, word) = if !status.ever_loaded || !store_ok {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    } else if !status.last_errors.is_empty() || !broken_apps.is_empty() {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        code,
        Json(json!({
            "status": word,
            "policies": policies,
            "store": if store_ok { "open" } else { "error" },
            "apps": broken_apps,
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<WebState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": "no such endpoint"})),
    )
        .into_response()
}
