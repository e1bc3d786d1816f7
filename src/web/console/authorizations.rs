//! An app's authorizations in the console: `GET /admin/apps/{id}/authorizations` lists the
//! users holding tokens (never a token), `GET /admin/apps/{id}/revoke?user=U` asks, and the
//! POST revokes that user's tokens (deleted, and revoked at the provider when it can).

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;

use super::apps::status_line;
use super::Confirm;
use super::{
    admin_error, console_page, param, posted, query_value, refuse, see_other, staff, Role,
};
use crate::web::page::esc;
use crate::web::WebState;

/// `GET /admin/apps/{id}/authorizations`.
pub(super) async fn list(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Admin));
    let list = match state.oauth.admin(&staff.caller).authorizations(&id).await {
        Ok(l) => l,
        Err(e) => return admin_error(&parts, e),
    };
    let eid = esc(&id);
    let mut main = format!(
        "{}<p><a href=\"/admin/apps/{eid}\">Back to app {eid}</a></p>\
         <div class=\"scroll\"><table><caption>Users who authorized {eid}</caption><thead><tr>\
         <th scope=\"col\">User</th><th scope=\"col\">Scopes</th>\
         <th scope=\"col\">Obtained or refreshed</th><th scope=\"col\">Expires</th>\
         <th scope=\"col\">Action</th></tr></thead><tbody>",
        status_line(&parts)
    );
    for a in &list {
        let _ = write!(
            main,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/admin/apps/{eid}/revoke?user={}\">Revoke</a></td></tr>",
            esc(&a.user),
            esc(&a.scopes.join(" ")),
            super::time(Some(a.obtained_at)),
            super::time(a.expires_at),
            esc(&query_value(&a.user)),
        );
    }
    if list.is_empty() {
        main.push_str("<tr><td colspan=\"5\">Nobody has authorized this app.</td></tr>");
    }
    main.push_str("</tbody></table></div>");
    console_page(&staff, "/admin", &format!("Authorizations of {id}"), &main)
}

/// `GET /admin/apps/{id}/revoke?user=U`: the confirmation.
pub(super) async fn confirm(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Admin));
    let Some(user) = param(&parts, "user") else {
        return refuse(
            &parts,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no user named",
        );
    };
    if let Err(e) = state.oauth.admin(&staff.caller).get(&id).await {
        return admin_error(&parts, e);
    }
    let warning = format!(
        "{user}'s tokens for {id} are deleted, and revoked at the provider when the app has a \
         revocation URL. {user} must consent again to use it.",
        user = esc(&user),
        id = esc(&id)
    );
    let main = Confirm {
        warning: &warning,
        action: &format!("/admin/apps/{id}/revoke"),
        fields: &[("user", &user)],
        extra: "",
        button: &format!("Revoke {user}"),
        danger: true,
        cancel: &format!("/admin/apps/{id}/authorizations"),
    }
    .render(&staff);
    console_page(
        &staff,
        "/admin",
        &format!("Revoke {user}'s authorization"),
        &main,
    )
}

/// `POST /admin/apps/{id}/revoke` (`user` in the form).
pub(super) async fn revoke(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let (staff, form) = or_refuse!(posted(&state, &parts, &body, Role::Admin));
    let Some(user) = form.get("user").filter(|u| !u.is_empty()) else {
        return refuse(
            &parts,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no user named",
        );
    };
    match state.oauth.admin(&staff.caller).revoke(&id, user).await {
        Ok(()) => see_other(&format!(
            "/admin/apps/{}/authorizations?done=revoked",
            query_value(&id)
        )),
        Err(e) => admin_error(&parts, e),
    }
}
