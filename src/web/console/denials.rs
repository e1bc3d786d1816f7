//! The live deny log in the console, `GET /admin/denials`: the last denied requests
//! (`crate::denials`, fed by the proxy's access line), every one for operators and the
//! org's callers' for its admins. Live means a reload shows the newest.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::Response;

use super::{console_page, staff, Role};
use crate::denials::CAPACITY;
use crate::web::page::esc;
use crate::web::WebState;

fn or_dash(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_string(), esc)
}

/// `GET /admin/denials`.
pub(super) async fn show(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Any));
    // Operators see every org's (and unidentified callers'); an admin its org's.
    let (org, scope) = if staff.operator {
        (None, "every caller".to_string())
    } else {
        let org = staff.org().unwrap_or_default();
        (Some(org), format!("callers of {}", esc(org)))
    };
    let list = state.metrics.denials.recent(org);
    let mut main = format!(
        "<p>The last {CAPACITY} requests the proxy denied on this instance, newest first. \
         Reload the page for new ones.</p>\
         <div class=\"scroll\"><table><caption>Denied requests of {scope}</caption><thead><tr>\
         <th scope=\"col\">Time (UTC)</th><th scope=\"col\">Caller</th><th scope=\"col\">Request</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Reason</th><th scope=\"col\">Policy</th>\
         <th scope=\"col\">Rule</th></tr></thead><tbody>"
    );
    for d in &list {
        let caller = match (&d.org, &d.user) {
            (Some(o), Some(u)) => format!("{} ({})", esc(u), esc(o)),
            _ => "unidentified".to_string(),
        };
        let target = format!(
            "{} {}:{}{}",
            d.method,
            d.host.as_deref().unwrap_or("-"),
            d.port,
            d.path.as_deref().unwrap_or("")
        );
        let _ = write!(
            main,
            "<tr><td>{}</td><td>{caller}</td><th scope=\"row\"><code>{}</code></th><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            super::time(Some(d.at)),
            esc(&target),
            d.status,
            esc(&d.reason),
            or_dash(d.policy.as_deref()),
            or_dash(d.rule.as_deref()),
        );
    }
    if list.is_empty() {
        main.push_str("<tr><td colspan=\"7\">No request was denied since the start.</td></tr>");
    }
    main.push_str("</tbody></table></div>");
    console_page(&staff, "/admin/denials", "Deny log", &main)
}
