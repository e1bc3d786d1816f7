//! The provider catalog over HTTP: `GET /v1/providers` and `GET /v1/providers/{id}`, for any
//! signed-in caller (the catalog is public data, but the API is not anonymous). An app is
//! created from an entry with `POST /v1/apps` and `"provider"` (see `admin`); the entries
//! themselves are `oauth::catalog`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::admin::{caller_with, ApiError, ApiResult};
use super::WebState;
use crate::identity::Caller;
use crate::oauth::catalog;

/// The catalog routes, mounted under `/v1`.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/v1/providers", get(list_providers))
        .route("/v1/providers/{id}", get(show_provider))
}

/// Any verified caller, whatever its roles.
pub struct SignedIn(pub Arc<Caller>);

impl FromRequestParts<WebState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> ApiResult<Self> {
        caller_with(parts, state, "caller", |_| true)
            .await
            .map(SignedIn)
    }
}

async fn list_providers(_caller: SignedIn) -> Json<Value> {
    let all: Vec<Value> = catalog::providers().iter().map(|p| p.view()).collect();
    Json(json!({ "providers": all }))
}

async fn show_provider(_caller: SignedIn, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    catalog::provider(&id)
        .map(|p| Json(p.view()))
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))
}
