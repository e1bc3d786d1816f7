//! The caller's own connections as JSON (`/v1/me/...`), for scripts and agent tools that want
//! to know what they can reach, and tokens for code:
//!
//! - `GET /v1/me/connections`: every app of the caller's org with the caller's state;
//! - `POST /v1/me/connections/{id}/connect`: `{consent_url, expires_in}`, the ticket a `401`
//!   would carry;
//! - `DELETE /v1/me/connections/{id}`: revoke at the provider, delete the grant;
//!   `{revoked_at_provider: confirmed | not_supported | refused | failed}`;
//! - `GET /v1/me/tokens/{id}`: `{access_token, expires_at, scopes}` for apps with
//!   `expose_token`, `Cache-Control: no-store`, audited.
//!
//! Callers authenticate with their caller token (`Authorization: Bearer`), verified as for
//! the admin API (revocations and workload identities included); no role is needed, and a
//! caller only ever acts for itself. Only HTTP lives here; `oauth::connections` does the work.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::admin::ApiError;
use super::WebState;
use crate::identity::Caller;
use crate::oauth::connections::ConnectionError;
use crate::oauth::token::Revocation;

/// The routes, mounted under `/v1/me`.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/v1/me/connections", get(list))
        .route("/v1/me/connections/{id}/connect", post(connect))
        .route("/v1/me/connections/{id}", delete(disconnect))
        .route("/v1/me/tokens/{id}", get(token))
}

/// A verified caller, any role.
pub struct Me(pub Arc<Caller>);

impl FromRequestParts<WebState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send your caller token as Authorization: Bearer <token>",
            ));
        };
        state
            .verifier
            .verify_header_fetching(value.as_bytes())
            .await
            .map(Me)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))
    }
}

/// A refused action, as JSON with `{error, message}` (the web layer adds `Proxy-Status`).
fn refused(e: ConnectionError) -> Response {
    let message = e.to_string();
    let (status, code, extra) = match e {
        ConnectionError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", json!({})),
        ConnectionError::NotConnected(app) => (
            StatusCode::NOT_FOUND,
            "not_connected",
            json!({ "app": app }),
        ),
        ConnectionError::Disabled { app, app_name } => (
            StatusCode::FORBIDDEN,
            "app_disabled",
            json!({ "app": app, "app_name": app_name }),
        ),
        ConnectionError::NotExposed(app) => (
            StatusCode::FORBIDDEN,
            "token_not_exposed",
            json!({ "app": app }),
        ),
        ConnectionError::ConsentRequired(c) => {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "error": "authorization_required",
                    "message": format!(
                        "authorize {} first: open {} in a browser",
                        c.app_name, c.consent_url
                    ),
                    "org": c.org,
                    "app": c.app,
                    "app_name": c.app_name,
                    "consent_url": c.consent_url,
                    "expires_in": c.expires_in,
                })),
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate\""),
            );
            return no_store(resp);
        }
        ConnectionError::RefreshFailed { app, .. } => (
            StatusCode::BAD_GATEWAY,
            "token_refresh_failed",
            json!({ "app": app }),
        ),
        ConnectionError::Store(e) => return ApiError::from(e).into_response(),
    };
    let mut body = json!({ "error": code, "message": message });
    if let (Some(b), Value::Object(x)) = (body.as_object_mut(), extra) {
        b.extend(x);
    }
    no_store((status, Json(body)).into_response())
}

/// `Cache-Control: no-store` on an answer about a person's grants.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn list(State(state): State<WebState>, Me(me): Me) -> Response {
    match state.oauth.connections(&me.org, &me.user).list().await {
        Ok(list) => no_store(Json(json!({ "connections": list })).into_response()),
        Err(e) => refused(e),
    }
}

async fn connect(State(state): State<WebState>, Me(me): Me, Path(app): Path<String>) -> Response {
    match state
        .oauth
        .connections(&me.org, &me.user)
        .connect(&app)
        .await
    {
        Ok(c) => no_store(
            Json(json!({
                "app": c.app,
                "consent_url": c.consent_url,
                "expires_in": c.expires_in,
            }))
            .into_response(),
        ),
        Err(e) => refused(e),
    }
}

async fn disconnect(
    State(state): State<WebState>,
    Me(me): Me,
    Path(app): Path<String>,
) -> Response {
    let connections = state.oauth.connections(&me.org, &me.user);
    match connections.disconnect(&app).await {
        Ok(d) => {
            let mut body = json!({ "app": app, "revoked_at_provider": d.outcome() });
            match &d.revocation {
                Revocation::Refused { status } => body["provider_status"] = json!(status),
                Revocation::Failed { reason } => body["reason"] = json!(reason),
                Revocation::Confirmed | Revocation::NotSupported => {}
            }
            no_store(Json(body).into_response())
        }
        Err(e) => refused(e),
    }
}

async fn token(State(state): State<WebState>, Me(me): Me, Path(app): Path<String>) -> Response {
    let connections = state.oauth.connections(&me.org, &me.user);
    match connections.token(&me, &app).await {
        Ok(t) => no_store(
            Json(json!({
                "app": app,
                "access_token": t.access_token.expose(),
                "token_type": "Bearer",
                "expires_at": t.expires_at,
                "scopes": t.scopes,
            }))
            .into_response(),
        ),
        Err(e) => refused(e),
    }
}
