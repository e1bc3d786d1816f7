//! Caller-token revocation over HTTP (`POST /v1/tokens/revoke`): admins revoke tokens of their
//! org, operators anywhere. Only HTTP lives here; `crate::revoke` decides and does the work.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::admin::{caller_with, ApiError, ApiResult};
use super::WebState;
use crate::identity::Caller;
use crate::revoke::{RevokeError, RevokeRequest, Revoker};

/// The token routes, mounted under `/v1`.
pub fn routes() -> Router<WebState> {
    Router::new().route("/v1/tokens/revoke", post(revoke_tokens))
}

/// A verified caller holding the `admin` or the `operator` role.
struct AdminOrOperator(std::sync::Arc<Caller>);

impl axum::extract::FromRequestParts<WebState> for AdminOrOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> ApiResult<Self> {
        caller_with(parts, state, "admin or the operator", |c| {
            c.is_admin() || c.is_operator()
        })
        .await
        .map(AdminOrOperator)
    }
}

async fn revoke_tokens(
    State(state): State<WebState>,
    AdminOrOperator(caller): AdminOrOperator,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: RevokeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("expected {{\"jti\"}} or {{\"org\", \"user\", \"before\"?}}: {e}"),
        )
    })?;
    let r = state
        .tokens
        .revoke(Revoker::Caller(&caller), request)
        .await
        .map_err(|e| match e {
            RevokeError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
            RevokeError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            RevokeError::Store(e) => e.into(),
        })?;
    tracing::warn!(by = %caller.user, org = %caller.org, revocation = ?r.target,
        "caller tokens revoked");
    Ok(Json(json!({
        "revocation": r.target,
        // Seconds: the API's time layer (`web::times`) writes every `*_at` as RFC 3339.
        "expires_at": r.expires_at,
    })))
}
