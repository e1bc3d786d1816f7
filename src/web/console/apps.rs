//! The console's apps list (`GET /admin`) and the app actions behind a confirmation: enable,
//! disable, reset and delete (`GET /admin/apps/{id}/{action}` asks, the POST does it, and
//! delete also wants the app id typed).

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;

use super::Confirm;
use super::{admin_error, console_page, param, posted, refuse, see_other, staff, Role, Staff};
use crate::web::page::esc;
use crate::web::WebState;

/// The actions of this page: path segment, button, what it does.
const ACTIONS: &[(&str, &str, &str)] = &[
    (
        "enable",
        "Enable",
        "Stored tokens are injected again and users can connect.",
    ),
    (
        "disable",
        "Disable",
        "Nothing is injected and no consent starts; every user's tokens are kept.",
    ),
    (
        "reset",
        "Reset",
        "Every user's tokens are deleted (and revoked at the provider when it has a \
         revocation URL); pending consents stop working. The configuration stays.",
    ),
    (
        "delete",
        "Delete",
        "The app, its configuration and every user's tokens are deleted (tokens revoked at \
         the provider when it has a revocation URL). This cannot be undone.",
    ),
];

/// What a finished action's redirect says (`?done=`), by its value.
pub(super) fn done_text(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "App created.",
        "updated" => "App updated.",
        "unchanged" => "Nothing to change: every field was as stored.",
        "enable" => "App enabled.",
        "disable" => "App disabled.",
        "reset" => "App reset: every user's tokens were deleted.",
        "delete" => "App deleted.",
        "revoked" => "Authorization revoked.",
        _ => return None,
    })
}

/// The status line of `?done=`, for screen readers too.
pub(super) fn status_line(parts: &Parts) -> String {
    param(parts, "done")
        .and_then(|d| done_text(&d))
        .map(|t| format!("<p class=\"status\" role=\"status\">{t}</p>"))
        .unwrap_or_default()
}

/// `GET /admin`: the org's apps, or the operator's way in.
pub(super) async fn list(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Any));
    let mut main = status_line(&parts);
    if !staff.admin {
        main.push_str(
            "<p>You are an operator: see the <a href=\"/admin/agents\">connected agents</a>, \
             the <a href=\"/admin/denials\">deny log</a> and the \
             <a href=\"/admin/policies\">policies</a>.</p>",
        );
        return console_page(&staff, "/admin", "Admin console", &main);
    }
    match apps_table(&state, &staff).await {
        Ok(t) => main.push_str(&t),
        Err(r) => return admin_error(&parts, r),
    }
    console_page(&staff, "/admin", "Apps", &main)
}

async fn apps_table(
    state: &WebState,
    staff: &Staff,
) -> Result<String, crate::oauth::admin::AdminError> {
    let admin = state.oauth.admin(&staff.caller);
    let apps = admin.list().await?;
    let org = esc(staff.org().unwrap_or_default());
    let mut out = format!(
        "<p><a href=\"/admin/apps/new\">Create an app</a></p>\n\
         <p>Register this redirect URI at each provider: <code>{}</code></p>\n\
         <div class=\"scroll\"><table><caption>Apps of {org}</caption>\n<thead><tr>\
         <th scope=\"col\">App</th><th scope=\"col\">State</th><th scope=\"col\">Domains</th>\
         <th scope=\"col\">Authorizations</th><th scope=\"col\">Egress policy</th></tr></thead><tbody>",
        esc(state.oauth.tokens.redirect_uri())
    );
    for app in &apps {
        let view = admin.view(app).await?;
        let state_text = match (view.enabled, view.problems.is_empty()) {
            (true, true) => "Enabled".to_string(),
            (false, _) => "Disabled".to_string(),
            (true, false) => format!("Enabled, broken: {}", esc(&view.problems.join("; "))),
        };
        let id = esc(&app.id);
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"/admin/apps/{id}\">{}</a> <code>{id}</code></th>\
             <td>{state_text}</td><td>{}</td>\
             <td><a href=\"/admin/apps/{id}/authorizations\">{}</a></td><td>{}</td></tr>",
            esc(&app.name),
            esc(&app.domains.join(", ")),
            view.authorized_users,
            esc(&app.egress_policy),
        );
    }
    if apps.is_empty() {
        out.push_str("<tr><td colspan=\"5\">No apps yet.</td></tr>");
    }
    out.push_str("</tbody></table></div>");
    Ok(out)
}

/// The action named by the path segment.
fn action(name: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    ACTIONS.iter().find(|(n, _, _)| *n == name)
}

/// `GET /admin/apps/{id}/{action}`: the confirmation (nothing changes).
pub(super) async fn confirm(
    State(state): State<WebState>,
    Path((id, name)): Path<(String, String)>,
    parts: Parts,
) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Admin));
    let Some((name, button, what)) = action(&name) else {
        return refuse(&parts, StatusCode::NOT_FOUND, "not_found", "no such action");
    };
    let app = match state.oauth.admin(&staff.caller).get(&id).await {
        Ok(a) => a,
        Err(e) => return admin_error(&parts, e),
    };
    let eid = esc(&app.id);
    let typed = if *name == "delete" {
        format!(
            "<label for=\"f-confirm\">Type the app id <code>{eid}</code> to confirm</label>\
             <input type=\"text\" id=\"f-confirm\" name=\"confirm_id\" autocomplete=\"off\" required>"
        )
    } else {
        String::new()
    };
    let main = Confirm {
        warning: what,
        action: &format!("/admin/apps/{}/{name}", app.id),
        fields: &[],
        extra: &typed,
        button: &format!("{button} {}", app.id),
        danger: matches!(*name, "reset" | "delete"),
        cancel: &format!("/admin/apps/{}", app.id),
    }
    .render(&staff);
    console_page(&staff, "/admin", &format!("{button} app {}", app.id), &main)
}

/// `POST /admin/apps/{id}/{action}`: does it, then back to the app (or the list).
pub(super) async fn act(
    State(state): State<WebState>,
    Path((id, name)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let (staff, form) = or_refuse!(posted(&state, &parts, &body, Role::Admin));
    let Some((name, _, _)) = action(&name) else {
        return refuse(&parts, StatusCode::NOT_FOUND, "not_found", "no such action");
    };
    let admin = state.oauth.admin(&staff.caller);
    let result = match *name {
        "enable" => admin.set_enabled(&id, true).await.map(|_| ()),
        "disable" => admin.set_enabled(&id, false).await.map(|_| ()),
        "reset" => admin.reset(&id).await.map(|_| ()),
        _ => {
            if form.get("confirm_id") != Some(&id) {
                return refuse(
                    &parts,
                    StatusCode::BAD_REQUEST,
                    "confirmation_required",
                    "Type the app id to confirm the deletion. Nothing was deleted.",
                );
            }
            admin.delete(&id).await
        }
    };
    match result {
        Ok(()) if *name == "delete" => see_other("/admin?done=delete"),
        Ok(()) => see_other(&format!(
            "/admin/apps/{}?done={name}",
            super::query_value(&id)
        )),
        Err(e) => admin_error(&parts, e),
    }
}
