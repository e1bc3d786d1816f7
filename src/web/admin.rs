//! Admin API (`/v1/...`): outbound applications of the caller's organization, their user
//! authorizations, and the audit log. Callers authenticate with a caller token holding the
//! `admin` role (`Authorization: Bearer`); an admin sees only its own org, so another org's
//! app is simply not found.

use std::collections::BTreeMap;
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
use crate::oauth::app::{
    endpoint, token_endpoint_problem, validate, AppSpec, FieldErrors, ValidApp,
};
use crate::oauth::webhook::Webhook;
use crate::policy::PolicySet;
use crate::store::{App, AuditEvent, ClientAuth, Handshake, Secret, StoreError};

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
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<FieldErrors>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no app {id:?} in your organization"),
        )
    }

    fn invalid(fields: FieldErrors) -> Self {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: format!("invalid fields: {}", names.join(", ")),
            fields: Some(fields),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Conflict => Self::new(StatusCode::CONFLICT, "conflict", "already exists"),
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
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate\""),
            );
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A verified caller holding the `admin` role.
pub struct Admin(pub Arc<Caller>);

impl FromRequestParts<WebState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> ApiResult<Self> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send an admin caller token as Authorization: Bearer <token>",
            ));
        };
        let caller = state
            .verifier
            .verify_header(value.as_bytes())
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
        if !caller.is_admin() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token lacks the admin role",
            ));
        }
        Ok(Admin(caller))
    }
}

/// Parses a JSON body into an [`AppSpec`], naming every unknown or mistyped field.
fn parse_spec(body: &[u8]) -> ApiResult<(AppSpec, Vec<String>)> {
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
    let mut errs = FieldErrors::new();
    for (k, v) in &map {
        let mut one = Map::new();
        one.insert(k.clone(), v.clone());
        if let Err(e) = serde_json::from_value::<AppSpec>(Value::Object(one)) {
            // The key itself unknown: say so plainly. A nested problem (an unknown field
            // inside `webhook`, say) keeps serde's message, which names the inner field.
            let msg = e.to_string();
            let msg = if msg.starts_with(&format!("unknown field `{k}`")) {
                "unknown field".to_string()
            } else {
                msg
            };
            errs.insert(k.clone(), msg);
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(errs));
    }
    let keys = map.keys().cloned().collect();
    let spec = serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    Ok((spec, keys))
}

/// The stored app as a spec (secret omitted), to merge a PATCH over.
fn spec_of(app: &App) -> AppSpec {
    AppSpec {
        id: Some(app.id.clone()),
        name: Some(app.name.clone()),
        description: Some(app.description.clone()),
        approval_prompt: Some(app.approval_prompt.clone()),
        authorize_url: Some(app.authorize_url.clone()),
        token_url: app.token_url.clone(),
        client_id: Some(app.client_id.clone()),
        client_secret: None,
        scopes: Some(app.scopes.clone()),
        access_token_ttl: app.access_token_ttl.map(|t| t as i64),
        pkce: Some(app.pkce),
        egress_policy: Some(app.egress_policy.clone()),
        domains: Some(app.domains.clone()),
        upstream_tls: Some(app.upstream_tls),
        client_auth: Some(app.client_auth),
        authorize_params: Some(app.authorize_params.clone()),
        issuer: app.issuer.clone(),
        revocation_url: app.revocation_url.clone(),
        handshake: Some(app.handshake),
        webhook: stored_webhook(app).map(|w| w.to_spec(true)),
    }
}

/// The app's webhook handshake, when it has one that reads back.
fn stored_webhook(app: &App) -> Option<Webhook> {
    let stored = app.webhook.as_ref()?;
    match Webhook::from_stored(stored) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(org = %app.org, app = %app.id, error = %e, "unreadable webhook handshake");
            None
        }
    }
}

/// Overlays the fields present in `patch` (by the keys the client sent) on `base`.
///
/// A PATCH that switches `handshake` drops what only the old handshake uses, unless it sends
/// that field itself: `token_url` when switching to `webhook`, the `webhook` templates when
/// switching to `standard`. Otherwise the stored value would make the switch fail
/// validation and the admin would have to send an explicit `null`.
fn merge(mut base: AppSpec, patch: AppSpec, keys: &[String]) -> AppSpec {
    let sent = |k: &str| keys.iter().any(|x| x == k);
    if sent("handshake") && patch.handshake != base.handshake {
        match patch.handshake.unwrap_or_default() {
            Handshake::Webhook if !sent("token_url") => base.token_url = None,
            Handshake::Standard if !sent("webhook") => base.webhook = None,
            _ => {}
        }
    }
    for k in keys {
        match k.as_str() {
            "id" => base.id = patch.id.clone(),
            "name" => base.name = patch.name.clone(),
            "description" => base.description = patch.description.clone(),
            "approval_prompt" => base.approval_prompt = patch.approval_prompt.clone(),
            "authorize_url" => base.authorize_url = patch.authorize_url.clone(),
            "token_url" => base.token_url = patch.token_url.clone(),
            "client_id" => base.client_id = patch.client_id.clone(),
            "client_secret" => base.client_secret = patch.client_secret.clone(),
            "scopes" => base.scopes = patch.scopes.clone(),
            "access_token_ttl" => base.access_token_ttl = patch.access_token_ttl,
            "pkce" => base.pkce = patch.pkce,
            "egress_policy" => base.egress_policy = patch.egress_policy.clone(),
            "domains" => base.domains = patch.domains.clone(),
            "upstream_tls" => base.upstream_tls = patch.upstream_tls,
            "client_auth" => base.client_auth = patch.client_auth,
            "authorize_params" => base.authorize_params = patch.authorize_params.clone(),
            "issuer" => base.issuer = patch.issuer.clone(),
            "revocation_url" => base.revocation_url = patch.revocation_url.clone(),
            "handshake" => base.handshake = patch.handshake,
            "webhook" => {
                // Header values are write-only: `null` keeps what is stored.
                let mut webhook = patch.webhook.clone();
                if let Some(w) = &mut webhook {
                    w.keep_headers_from(base.webhook.as_ref());
                }
                base.webhook = webhook;
            }
            _ => {}
        }
    }
    base
}

/// Domain patterns of the org's other apps → owning app id.
async fn taken_domains(
    state: &WebState,
    org: &str,
    except: Option<&str>,
) -> ApiResult<BTreeMap<String, String>> {
    let mut taken = BTreeMap::new();
    for app in state.oauth.store.list_apps(org).await? {
        if Some(app.id.as_str()) == except {
            continue;
        }
        for d in app.domains {
            taken.insert(d, app.id.clone());
        }
    }
    Ok(taken)
}

/// Writes a validated config onto a stored app (new or existing).
fn apply(valid: ValidApp, org: &str, base: Option<App>) -> App {
    let keep_secret = base.as_ref().and_then(|b| b.client_secret.clone());
    let mut app = base.unwrap_or_else(|| App {
        org: org.to_string(),
        id: valid.id.clone(),
        name: String::new(),
        description: String::new(),
        approval_prompt: String::new(),
        authorize_url: String::new(),
        token_url: None,
        client_id: String::new(),
        client_secret: None,
        scopes: Vec::new(),
        access_token_ttl: None,
        pkce: true,
        egress_policy: String::new(),
        domains: Vec::new(),
        upstream_tls: true,
        client_auth: ClientAuth::Basic,
        authorize_params: BTreeMap::new(),
        issuer: None,
        revocation_url: None,
        handshake: Handshake::Standard,
        webhook: None,
        enabled: true,
        generation: 0,
        incarnation: 0,
        created_at: 0,
        updated_at: 0,
    });
    app.name = valid.name;
    app.description = valid.description;
    app.approval_prompt = valid.approval_prompt;
    app.authorize_url = valid.authorize_url;
    app.token_url = valid.token_url;
    app.client_id = valid.client_id;
    app.client_secret = valid.client_secret.map(Secret::new).or(keep_secret);
    app.scopes = valid.scopes;
    app.access_token_ttl = valid.access_token_ttl;
    app.pkce = valid.pkce;
    app.egress_policy = valid.egress_policy;
    app.domains = valid.domains;
    app.upstream_tls = valid.upstream_tls;
    app.client_auth = valid.client_auth;
    app.authorize_params = valid.authorize_params;
    app.issuer = valid.issuer;
    app.revocation_url = valid.revocation_url;
    app.handshake = valid.handshake;
    app.webhook = valid.webhook.as_ref().map(Webhook::to_stored);
    app
}

/// Problems with an app's configuration against the policies in force now (a policy can
/// disappear or change on reload after the app was saved).
pub fn app_problems(app: &App, policies: &PolicySet) -> Vec<String> {
    let endpoint_problem = |what: &str, url: &str, policy: &str| match endpoint(url) {
        Ok((_, host, port)) => token_endpoint_problem(policies, policy, &app.org, &host, port),
        Err(e) => Some(format!("{what}: {e}")),
    };
    let mut problems = Vec::new();
    if app.handshake == Handshake::Webhook {
        match stored_webhook(app) {
            Some(w) => {
                let policy = w.policy(&app.egress_policy);
                for (step, t) in w.templates() {
                    let what = format!("webhook.{}.url", step.name());
                    problems.extend(endpoint_problem(&what, &t.url, policy));
                }
            }
            None => problems.push("the webhook handshake is missing or unreadable".into()),
        }
    } else {
        problems.extend(match app.token_url.as_deref() {
            Some(url) => endpoint_problem("token_url", url, &app.egress_policy),
            None => Some("no token_url".into()),
        });
    }
    if problems.is_empty() && policies.policy_route(&app.egress_policy).is_none() {
        problems.push(format!("no policy named {:?} is loaded", app.egress_policy));
    }
    problems.dedup();
    problems
        .into_iter()
        .map(|p| format!("{p}: token requests will be refused"))
        .collect()
}

/// The JSON view of an app: never the client secret.
async fn view(state: &WebState, app: &App) -> ApiResult<Value> {
    let authorized = state
        .oauth
        .store
        .count_authorizations(&app.org, &app.id)
        .await?;
    let problems = app_problems(app, &state.policies.current());
    Ok(json!({
        "id": app.id,
        "name": app.name,
        "description": app.description,
        "approval_prompt": app.approval_prompt,
        "authorize_url": app.authorize_url,
        "token_url": app.token_url,
        "client_id": app.client_id,
        "client_secret_set": app.client_secret.is_some(),
        "scopes": app.scopes,
        "access_token_ttl": app.access_token_ttl,
        "pkce": app.pkce,
        "egress_policy": app.egress_policy,
        "domains": app.domains,
        "upstream_tls": app.upstream_tls,
        "client_auth": app.client_auth,
        "authorize_params": app.authorize_params,
        "issuer": app.issuer,
        "revocation_url": app.revocation_url,
        "handshake": app.handshake,
        "webhook": stored_webhook(app).map(|w| w.to_spec(false)),
        "enabled": app.enabled,
        "generation": app.generation,
        "redirect_uri": state.oauth.tokens.redirect_uri(),
        "authorized_users": authorized,
        "status": if problems.is_empty() { "ok" } else { "broken" },
        "problems": problems,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
    }))
}

async fn audit(state: &WebState, admin: &Caller, action: &str, target: &str, detail: Value) {
    let event = AuditEvent::new(&admin.org, &admin.user, action, target, detail);
    if let Err(e) = state.oauth.store.append_audit(event).await {
        tracing::error!(error = %e, action, "could not append an audit event");
    }
}

async fn list_apps(State(state): State<WebState>, Admin(admin): Admin) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for app in state.oauth.store.list_apps(&admin.org).await? {
        out.push(view(&state, &app).await?);
    }
    Ok(Json(json!({ "apps": out })))
}

async fn create_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    body: Bytes,
) -> ApiResult<Response> {
    let (spec, _) = parse_spec(&body)?;
    let taken = taken_domains(&state, &admin.org, spec.id.as_deref()).await?;
    let valid = validate(&spec, &admin.org, &state.policies.current(), &taken, false)
        .map_err(ApiError::invalid)?;
    let id = valid.id.clone();
    // The store's create is the one (atomic) duplicate check.
    let app = apply(valid, &admin.org, None);
    let app = state
        .oauth
        .store
        .create_app(app)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("app {id:?} already exists in your organization"),
            ),
            other => other.into(),
        })?;
    audit(
        &state,
        &admin,
        "app.create",
        &app.id,
        json!({"name": app.name, "domains": app.domains}),
    )
    .await;
    let location = format!("/v1/apps/{}", app.id);
    let mut resp = (StatusCode::CREATED, Json(view(&state, &app).await?)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn get_own(state: &WebState, org: &str, id: &str) -> ApiResult<App> {
    state
        .oauth
        .store
        .get_app(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found(id))
}

async fn show_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = get_own(&state, &admin.org, &id).await?;
    Ok(Json(view(&state, &app).await?))
}

async fn update_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (patch, keys) = parse_spec(&body)?;
    let stored = get_own(&state, &admin.org, &id).await?;
    if patch.id.as_deref().is_some_and(|p| p != id) {
        let mut f = FieldErrors::new();
        f.insert(
            "id".into(),
            "cannot be changed; create a new app instead".into(),
        );
        return Err(ApiError::invalid(f));
    }
    let merged = merge(spec_of(&stored), patch, &keys);
    let taken = taken_domains(&state, &admin.org, Some(&id)).await?;
    let valid = validate(
        &merged,
        &admin.org,
        &state.policies.current(),
        &taken,
        stored.client_secret.is_some(),
    )
    .map_err(ApiError::invalid)?;
    let app = apply(valid, &admin.org, Some(stored));
    let app = state.oauth.store.update_app(app).await?;
    // Field names only: values (the secret above all) never go to the audit log.
    let changed: Vec<&String> = keys.iter().collect();
    audit(
        &state,
        &admin,
        "app.update",
        &id,
        json!({"changed": changed}),
    )
    .await;
    Ok(Json(view(&state, &app).await?))
}

async fn delete_app(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let app = get_own(&state, &admin.org, &id).await?;
    // Read before deleting: afterwards the tokens (and the client secret) are gone.
    let tokens = state.oauth.store.list_tokens(&admin.org, &id).await?;
    state.oauth.store.delete_app(&admin.org, &id).await?;
    audit(&state, &admin, "app.delete", &id, json!({})).await;
    state.oauth.revoke_in_background(app, tokens);
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    state: WebState,
    admin: Arc<Caller>,
    id: String,
    enabled: bool,
) -> ApiResult<Json<Value>> {
    get_own(&state, &admin.org, &id).await?;
    let app = state
        .oauth
        .store
        .set_app_enabled(&admin.org, &id, enabled)
        .await?;
    let action = if enabled { "app.enable" } else { "app.disable" };
    audit(&state, &admin, action, &id, json!({})).await;
    Ok(Json(view(&state, &app).await?))
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
    get_own(&state, &admin.org, &id).await?;
    let tokens = state.oauth.store.list_tokens(&admin.org, &id).await?;
    let app = state.oauth.store.reset_app(&admin.org, &id).await?;
    audit(
        &state,
        &admin,
        "app.reset",
        &id,
        json!({"generation": app.generation}),
    )
    .await;
    state.oauth.revoke_in_background(app.clone(), tokens);
    Ok(Json(view(&state, &app).await?))
}

async fn list_authorizations(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    get_own(&state, &admin.org, &id).await?;
    let list = state
        .oauth
        .store
        .list_authorizations(&admin.org, &id)
        .await?;
    Ok(Json(json!({ "authorizations": list })))
}

async fn revoke_authorization(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let app = get_own(&state, &admin.org, &id).await?;
    let tokens: Vec<_> = state
        .oauth
        .store
        .list_tokens(&admin.org, &id)
        .await?
        .into_iter()
        .filter(|t| t.user == user)
        .collect();
    let deleted = state
        .oauth
        .store
        .delete_token(&admin.org, &id, &user)
        .await?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user {user:?} has not authorized app {id:?}"),
        ));
    }
    audit(
        &state,
        &admin,
        "authorization.revoke",
        &id,
        json!({"user": user}),
    )
    .await;
    state.oauth.revoke_in_background(app, tokens);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn list_audit(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_LIMIT);
    let events = state.oauth.store.list_audit(&admin.org, limit).await?;
    Ok(Json(json!({ "events": events })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(hosts: &str) -> PolicySet {
        PolicySet::from_sources(&[(
            "p.toml".into(),
            format!(
                r#"
[[policy]]
name = "idp"
route = "direct"
  [[policy.allow]]
  hosts = [{hosts}]
  ports = [443]
"#
            ),
        )])
        .unwrap()
    }

    #[test]
    fn unknown_fields_are_named_at_the_top_level_and_inside_the_webhook() {
        let body = br#"{"colour": "red", "webhook": {"token": {"body": {}}}}"#;
        let Err(e) = parse_spec(body) else {
            panic!("accepted");
        };
        let fields = e.fields.expect("field errors");
        assert_eq!(fields["colour"], "unknown field");
        assert!(fields["webhook"].contains("`body`"), "{fields:?}");
    }

    /// A webhook app is checked by its template URLs under the webhook's policy, not by a
    /// token_url it does not have.
    #[test]
    fn readiness_problems_of_a_webhook_app_name_its_template_urls() {
        let spec: AppSpec = serde_json::from_value(json!({
            "id": "legacy", "name": "Legacy", "approval_prompt": "Allow?",
            "authorize_url": "https://idp.example/authorize",
            "client_id": "c", "scopes": [], "egress_policy": "idp",
            "domains": ["api.example"], "handshake": "webhook",
            "webhook": {
                "token": {"url": "https://idp.example/token",
                          "json": {"code": "{authorization_code}"},
                          "outputs": {"access_token": "/t", "scope": "/s"}},
                "refresh": {"url": "https://refresh.example/r",
                            "form": {"rt": "{refresh_token}"},
                            "outputs": {"access_token": "/t", "scope": "/s"}}
            }
        }))
        .unwrap();
        let both = policies(r#""idp.example", "refresh.example""#);
        let valid = validate(&spec, "acme", &both, &BTreeMap::new(), false).unwrap();
        let app = apply(valid, "acme", None);
        assert!(app.token_url.is_none());
        assert_eq!(app_problems(&app, &both), Vec::<String>::new());
        // A reload drops the refresh host: the refresh request would be refused.
        let problems = app_problems(&app, &policies(r#""idp.example""#));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("refresh.example:443"), "{problems:?}");
    }
}
