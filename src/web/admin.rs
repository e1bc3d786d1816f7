//! Admin API (`/v1/...`): outbound applications of the caller's organization, their user
//! authorizations, and the audit log. Callers authenticate with a caller token holding the
//! `admin` role (`Authorization: Bearer`); an admin sees only its own org, so another org's
//! app is simply not found.
//!
//! Only HTTP lives here (the admin token, JSON bodies, statuses); the lifecycle itself is
//! `oauth::admin`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::WebState;
use crate::identity::Caller;
use crate::oauth::admin::{AdminError, AppAdmin};
use crate::oauth::app::FieldErrors;
use crate::oauth::catalog;
use crate::store::{App, StoreError};

/// Most audit events one request returns.
const MAX_AUDIT_LIMIT: usize = 1000;

/// The admin routes, mounted under `/v1`.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/v1/apps", get(list_apps).post(create_app))
        .route(
            "/v1/apps/{id}",
            get(show_app).patch(update_app).delete(delete_app),
        )
        .route("/v1/apps/{id}/enable", post(enable_app))
        .route("/v1/apps/{id}/disable", post(disable_app))
        .route("/v1/apps/{id}/reset", post(reset_app))
        .route("/v1/apps/{id}/authorizations", get(list_authorizations))
        .route(
            "/v1/apps/{id}/authorizations/{user}",
            delete(revoke_authorization),
        )
        .route("/v1/audit", get(list_audit))
}

/// An admin API error: status + `{"error": CODE, "message": ..., "fields"?: {...}}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    status: StatusCode,
    /// Stable machine-readable code (`not_found`, `invalid_request`, ...) scripts match on.
    code: &'static str,
    /// For people; never a secret.
    message: String,
    /// With `invalid_request`: every invalid field and what is wrong with it.
    fields: Option<FieldErrors>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    pub(super) fn invalid(fields: FieldErrors) -> Self {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: format!("invalid fields: {}", names.join(", ")),
            fields: Some(fields),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let message = e.to_string();
        match e {
            AdminError::NotFound(_) | AdminError::NotAuthorized { .. } => {
                Self::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            AdminError::Exists(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            AdminError::Invalid(fields) => Self::invalid(fields),
            AdminError::SecretRequired(_) => {
                Self::new(StatusCode::BAD_REQUEST, "secret_required", message)
            }
            AdminError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Conflict => Self::new(StatusCode::CONFLICT, "conflict", "already exists"),
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "store unreachable in the admin API");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store cannot be reached; nothing was changed, retry shortly",
                )
            }
            other => {
                // The detail names records, never secrets; keep it in the log, not the reply.
                tracing::error!(error = %other, "store error in the admin API");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the store failed; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(f) = self.fields {
            body.insert("fields".into(), json!(f));
        }
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        if self.code == "store_unavailable" {
            resp.headers_mut().insert(
                "proxy-status",
                HeaderValue::from_static(
                    "tollgate; error=proxy_internal_error; details=\"store_unavailable\"",
                ),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate\""),
            );
        }
        resp
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// A verified caller holding the `admin` role.
pub struct Admin(pub Arc<Caller>);

/// A verified caller holding the `operator` role.
pub struct Operator(pub Arc<Caller>);

/// The caller of `Authorization: Bearer`, if it holds `role` (`401`/`403` otherwise).
pub(super) async fn caller_with(
    parts: &Parts,
    state: &WebState,
    role: &str,
    holds: fn(&Caller) -> bool,
) -> ApiResult<Arc<Caller>> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("send a caller token with the {role} role as Authorization: Bearer <token>"),
        ));
    };
    let caller = state
        .verifier
        .verify_header_fetching(value.as_bytes())
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    if !holds(&caller) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the {role} role"),
        ));
    }
    Ok(caller)
}

impl FromRequestParts<WebState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> ApiResult<Self> {
        caller_with(parts, state, "admin", Caller::is_admin)
            .await
            .map(Admin)
    }
}

impl FromRequestParts<WebState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> ApiResult<Self> {
        caller_with(parts, state, "operator", Caller::is_operator)
            .await
            .map(Operator)
    }
}

/// Parses a JSON body into a document (an object of app fields).
fn parse_body(body: &[u8]) -> ApiResult<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("body is not JSON: {e}"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be a JSON object",
        ));
    };
    Ok(map)
}

/// The JSON view of an app: never the client secret nor a webhook header value.
async fn view(admin: &AppAdmin<'_>, app: &App) -> ApiResult<Value> {
    let view = admin.view(app).await?;
    serde_json::to_value(&view).map_err(|e| {
        tracing::error!(error = %e, "cannot encode an app view");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "see the server log",
        )
    })
}

async fn list_apps(State(state): State<WebState>, Admin(admin): Admin) -> ApiResult<Json<Value>> {
    let admin = state.oauth.admin(&admin);
    let mut out = Vec::new();
    for app in admin.list().await? {
        out.push(view(&admin, &app).await?);
    }
    Ok(Json(json!({ "apps": out })))
}

async fn create_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    body: Bytes,
) -> ApiResult<Response> {
    let doc = parse_body(&body)?;
    // `"provider": ID` starts from that catalog entry (docs/providers.md).
    let doc = catalog::expand(&doc).map_err(ApiError::invalid)?;
    let admin = state.oauth.admin(&admin);
    let app = admin.create(&doc).await?;
    let location = format!("/v1/apps/{}", app.id);
    let mut resp = (StatusCode::CREATED, Json(view(&admin, &app).await?)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn show_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let admin = state.oauth.admin(&admin);
    let app = admin.get(&id).await?;
    Ok(Json(view(&admin, &app).await?))
}

async fn update_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let patch = parse_body(&body)?;
    let admin = state.oauth.admin(&admin);
    let app = admin.update(&id, &patch).await?;
    Ok(Json(view(&admin, &app).await?))
}

async fn delete_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.oauth.admin(&admin).delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    state: WebState,
    admin: Arc<Caller>,
    id: String,
    enabled: bool,
) -> ApiResult<Json<Value>> {
    let admin = state.oauth.admin(&admin);
    let app = admin.set_enabled(&id, enabled).await?;
    Ok(Json(view(&admin, &app).await?))
}

async fn enable_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    set_enabled(state, admin, id, true).await
}

async fn disable_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    set_enabled(state, admin, id, false).await
}

async fn reset_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let admin = state.oauth.admin(&admin);
    let app = admin.reset(&id).await?;
    Ok(Json(view(&admin, &app).await?))
}

async fn list_authorizations(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let list = state.oauth.admin(&admin).authorizations(&id).await?;
    Ok(Json(json!({ "authorizations": list })))
}

async fn revoke_authorization(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.oauth.admin(&admin).revoke(&id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/audit` query.
#[derive(Deserialize)]
struct AuditQuery {
    /// Most events to return (default 100, at most [`MAX_AUDIT_LIMIT`]).
    limit: Option<usize>,
}

async fn list_audit(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_LIMIT);
    let events = state.oauth.admin(&admin).audit_log(limit).await?;
    Ok(Json(json!({ "events": events })))
}
