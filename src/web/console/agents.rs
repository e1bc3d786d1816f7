//! Connected agents in the console (operators only): `GET /admin/agents` lists them
//! (`relay::control`), `GET /admin/agents/revoke?agent=ID` asks, and the POST revokes every
//! credential of that agent issued so far and closes its connections.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;

use super::Confirm;
use super::{console_page, param, posted, query_value, refuse, see_other, staff, Role};
use crate::relay::control::RevokeError;
use crate::web::page::esc;
use crate::web::WebState;

/// `GET /admin/agents`.
pub(super) async fn list(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Operator));
    let mut main = String::new();
    if let Some(a) = param(&parts, "revoked") {
        let _ = write!(
            main,
            "<p class=\"status\" role=\"status\">Agent {} revoked: its connections are closed.</p>",
            esc(&a)
        );
    }
    main.push_str(
        "<div class=\"scroll\"><table><caption>Agents connected to this instance</caption>\
         <thead><tr><th scope=\"col\">Agent</th><th scope=\"col\">Instance</th>\
         <th scope=\"col\">Connected since</th><th scope=\"col\">Action</th></tr></thead><tbody>",
    );
    let agents = state.agents.connected();
    for a in &agents {
        let _ = write!(
            main,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td>{}</td>\
             <td><a href=\"/admin/agents/revoke?agent={}\">Revoke</a></td></tr>",
            esc(&a.id),
            esc(&a.instance),
            super::time(Some(a.connected_since)),
            esc(&query_value(&a.id)),
        );
    }
    if agents.is_empty() {
        main.push_str("<tr><td colspan=\"4\">No agent is connected.</td></tr>");
    }
    main.push_str("</tbody></table></div>");
    console_page(&staff, "/admin/agents", "Agents", &main)
}

/// `GET /admin/agents/revoke?agent=ID`: the confirmation.
pub(super) async fn confirm(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Operator));
    let Some(agent) = param(&parts, "agent") else {
        return refuse(
            &parts,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no agent named",
        );
    };
    let warning = format!(
        "Every credential of agent {} issued until now stops working and its connections are \
         closed, with their tunnels. It must be given a new credential.",
        esc(&agent)
    );
    let main = Confirm {
        warning: &warning,
        action: "/admin/agents/revoke",
        fields: &[("agent", &agent)],
        extra: "",
        button: &format!("Revoke {agent}"),
        danger: true,
        cancel: "/admin/agents",
    }
    .render(&staff);
    console_page(
        &staff,
        "/admin/agents",
        &format!("Revoke agent {agent}"),
        &main,
    )
}

/// `POST /admin/agents/revoke` (`agent` in the form).
pub(super) async fn revoke(State(state): State<WebState>, parts: Parts, body: Bytes) -> Response {
    let (staff, form) = or_refuse!(posted(&state, &parts, &body, Role::Operator));
    let agent = form.get("agent").map(String::as_str).unwrap_or_default();
    match state.agents.revoke(agent, &staff.who.user).await {
        Ok(r) => {
            tracing::warn!(agent = %r.agent, by = %staff.who.user, "agent revoked in the console");
            see_other(&format!("/admin/agents?revoked={}", query_value(&r.agent)))
        }
        Err(RevokeError::InvalidId(problem)) => refuse(
            &parts,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("invalid agent id: {problem}"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "agent revocation failed in the console");
            refuse(
                &parts,
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The revocation could not be stored; nothing was changed. Retry shortly.",
            )
        }
    }
}
