//! Key operations for operators (`/v1/keys`): list the identity and session keys and the
//! interception CAs, rotate (`POST /v1/keys/ca/rotate?switch_after=SECONDS` for the CA),
//! retire. Only
//! HTTP lives here; `crate::keys::admin` does the work.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::admin::{ApiError, ApiResult, Operator};
use super::WebState;
use crate::identity::Caller;
use crate::keys::admin::{Actor, KeyError};
use crate::keys::RingError;

/// The key routes, mounted under `/v1`.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{name}/rotate", post(rotate_key))
        .route("/v1/keys/{name}/retire", post(retire_key))
}

fn actor(c: &Caller) -> Actor {
    Actor {
        org: c.org.clone(),
        user: c.user.clone(),
    }
}

fn api_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Unsupported(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
        KeyError::Ring(RingError::Unknown(kid)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key has id {kid}"),
        ),
        KeyError::InProgress(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        KeyError::Ring(e @ (RingError::Active(_) | RingError::Retired(_))) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        KeyError::Ring(e) => {
            tracing::error!(error = %e, "key ring");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the key ring could not be read or written; see the server's log",
            )
        }
        KeyError::Store(e) => e.into(),
        e @ KeyError::InUse { .. } => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
    }
}

async fn list_keys(State(state): State<WebState>, _: Operator) -> ApiResult<Json<Value>> {
    let keys = state.keys.list_with_store().await.map_err(api_error)?;
    Ok(Json(json!(keys)))
}

/// `POST /v1/keys/{kind}/rotate`'s query.
#[derive(Debug, serde::Deserialize)]
struct RotateQuery {
    /// For the CA: seconds until the new CA signs (default `CA_SWITCH_AFTER`).
    switch_after: Option<u64>,
}

async fn rotate_key(
    State(state): State<WebState>,
    Operator(operator): Operator,
    Path(kind): Path<String>,
    Query(query): Query<RotateQuery>,
) -> ApiResult<Json<Value>> {
    let keys = &state.keys;
    let kid = match kind.as_str() {
        "ca" => keys.rotate_ca(&actor(&operator), query.switch_after).await,
        _ => keys.rotate(&kind, &actor(&operator)).await,
    }
    .map_err(api_error)?;
    Ok(Json(json!({ "kind": kind, "kid": kid })))
}

async fn retire_key(
    State(state): State<WebState>,
    Operator(operator): Operator,
    Path(kid): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .keys
        .retire(&kid, &actor(&operator))
        .await
        .map_err(api_error)?;
    Ok(Json(json!({ "kid": kid, "retired": true })))
}
