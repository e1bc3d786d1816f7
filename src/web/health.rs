//! Health surfaces: `/healthz` (alive), `/readyz` (`{"ready": bool}` for anyone; the detail,
//! which names orgs' apps and their token endpoints, for operators), and `/metrics`
//! (Prometheus text, whose labels name agents: an operator token on the web listener, or
//! no auth on the separate `--metrics-listen` listener meant for an internal scrape network).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::admin::Operator;
use super::WebState;
use crate::metrics::Metrics;

/// Connections the metrics listener serves at once; a scraper needs one or two.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Time a scraper has to send its request head on the metrics listener.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A scrape connection with no byte moving for this long is closed (scrapers reconnect).
const METRICS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `/healthz`, `/readyz` and `/metrics` on the web listener.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// An operator when the request carries a valid operator token; anyone else, including a
/// request with a bad token (probes send none), is `None`.
struct MaybeOperator(bool);

impl FromRequestParts<WebState> for MaybeOperator {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeOperator(
            Operator::from_request_parts(parts, state).await.is_ok(),
        ))
    }
}

/// Ready when a valid policy set is in force, requests can be served (the app index is
/// usable) and the replica is not leaving (from SIGTERM on it answers `503`, status
/// `draining`, while still serving). A shared store that cannot be reached leaves it ready
/// (cached tokens still serve; requests that need the store get `503 store_unavailable`) and
/// `degraded` for operators, with `store: "unreachable"` and the reason in `store_error`. A broken edit after a
/// good load leaves the proxy serving the last good set, so it stays ready (taking it out of
/// rotation would turn a typo into an outage); operators see `degraded` with the errors and
/// the apps whose token requests would be refused.
async fn readyz(State(state): State<WebState>, MaybeOperator(operator): MaybeOperator) -> Response {
    let status = state.oauth.policies.status();
    let current = state.oauth.policies.current();
    let mut broken_apps = Vec::new();
    // From the in-memory index: the store is read only when apps changed since the last probe.
    // `store_ok` is whether requests can be served (the index is usable); a shared store that
    // cannot be reached while the caches can serve leaves the replica ready but degraded.
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
    // Leaving (SIGTERM): not ready, so the balancer stops sending before the listeners close.
    let draining = state.lifecycle.draining();
    let ready = status.ever_loaded && store_ok && !draining;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !operator {
        return (code, Json(json!({ "ready": ready }))).into_response();
    }
    // Only operators see it, so only their probes cost a round trip to a shared store.
    let unreachable = state.oauth.store_reachable().await.err();
    let word = if draining {
        "draining"
    } else if !ready {
        "not_ready"
    } else if !status.last_errors.is_empty() || !broken_apps.is_empty() || unreachable.is_some() {
        "degraded"
    } else {
        "ready"
    };
    let policies = json!({
        "loaded": status.ever_loaded,
        "policies": current.policy_count(),
        "files": current.file_count(),
        "generation": status.generation,
        "errors": status.last_errors,
    });
    let body = json!({
        "ready": ready,
        "status": word,
        "policies": policies,
        "store": match (store_ok, &unreachable) {
            (false, _) => "error",
            (true, Some(_)) => "unreachable",
            (true, None) => "open",
        },
        "store_error": unreachable,
        "apps": broken_apps,
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<WebState>, _: Operator) -> Response {
    exposition(&state.metrics)
}

fn exposition(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// The metrics listener's router: `/metrics` without auth, nothing else.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { exposition(&m) }),
        )
        .fallback(super::not_found)
        .layer(axum::middleware::from_fn(super::errors::json_errors))
        .with_state(metrics)
}

/// Serves [`metrics_router`] on `listener` (`--metrics-listen`) until `shutdown`, on the web
/// listener's server: at most [`METRICS_MAX_CONNECTIONS`] at once (`503` beyond),
/// [`METRICS_HEADER_TIMEOUT`] for a request head, idle scrapes closed.
pub async fn run_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let settings = super::listener::WebSettings {
        header_timeout: METRICS_HEADER_TIMEOUT,
        idle_timeout: METRICS_IDLE_TIMEOUT,
        max_connections: METRICS_MAX_CONNECTIONS,
        shutdown_grace: Duration::ZERO,
        open: metrics.connections("metrics"),
    };
    super::listener::serve(listener, metrics_router(metrics), settings, shutdown).await;
}
