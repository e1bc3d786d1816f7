//! Agents for operators (`/v1/agents`): the agents connected to this instance, and
//! revocation (`tollgate agent revoke`). Only HTTP lives here; `relay::control` does the work.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::admin::{ApiError, ApiResult, Operator};
use super::WebState;
use crate::relay::control::RevokeError;

/// The agent routes, mounted under `/v1`.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/v1/agents", get(list_agents))
        .route("/v1/agents/{id}/revoke", post(revoke_agent))
        .route("/v1/agents/audit", get(agent_audit))
}

/// `GET /v1/agents/audit` query.
#[derive(serde::Deserialize)]
struct AuditQuery {
    /// Most events to return (default 100, at most 1000).
    limit: Option<usize>,
}

/// The relay's audit events (credential renewals and refusals), deployment-wide.
async fn agent_audit(
    State(state): State<WebState>,
    _: Operator,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.agents.events(limit).await?;
    Ok(Json(json!({ "events": events })))
}

async fn list_agents(State(state): State<WebState>, _: Operator) -> Json<Value> {
    Json(json!({ "agents": state.agents.connected() }))
}

async fn revoke_agent(
    State(state): State<WebState>,
    Operator(operator): Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = state
        .agents
        .revoke(&id, &operator.user)
        .await
        .map_err(|e| match e {
            RevokeError::InvalidId(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m)
            }
            RevokeError::Store(e) => e.into(),
        })?;
    tracing::warn!(agent = %r.agent, by = %operator.user, org = %operator.org,
        "agent revoked: credentials issued so far are refused");
    Ok(Json(json!({
        "agent": r.agent,
        "revoked_at": r.revoked_at_ns / 1_000_000_000,
        "revoked_at_ns": r.revoked_at_ns,
    })))
}
