//! The policies in the console, `GET /admin/policies`: the live set's generation and load
//! status, the load errors (`FILE:LINE: message`), the policies (an admin sees those that
//! apply to its org), and an explain form (`?target=&user=&method=`, operators may name any
//! org) answered by `crate::explain::explain` — the decision `tollgate policy explain`
//! prints, from the set in force.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::Value;

use super::{console_page, field, param, staff, Role, Staff};
use crate::explain::{explain, Target};
use crate::policy::PolicySet;
use crate::web::page::esc;
use crate::web::WebState;

/// `GET /admin/policies`.
pub(super) async fn show(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Any));
    let policies = &state.oauth.policies;
    let status = policies.status();
    let set = policies.current();
    let mut main = format!(
        "<dl><dt>Generation</dt><dd>{}</dd><dt>Last loaded</dt><dd>{}</dd>\
         <dt>Files</dt><dd>{}</dd><dt>Failed reloads</dt><dd>{}</dd></dl>",
        status.generation,
        status.last_success.map_or_else(
            || "never".to_string(),
            |t| super::time(
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            )
        ),
        set.file_count(),
        status.failed_reloads,
    );
    if status.last_errors.is_empty() {
        main.push_str("<p class=\"status\" role=\"status\">The last load succeeded.</p>");
    } else {
        let _ = write!(
            main,
            "<div class=\"error\" role=\"alert\"><p>The last load failed; the previous set stays \
             in force:</p><ul>{}</ul></div>",
            status
                .last_errors
                .iter()
                .map(|e| format!("<li><code>{}</code></li>", esc(e)))
                .collect::<String>()
        );
    }
    main.push_str(&policy_table(&set, &staff));
    main.push_str(&explain_section(&state, &staff, &parts, &set).await);
    console_page(&staff, "/admin/policies", "Policies", &main)
}

/// The policies this person may see: every one for operators, else those of the org.
fn policy_table(set: &PolicySet, staff: &Staff) -> String {
    let mut out = String::from(
        "<div class=\"scroll\"><table><caption>Policies in force</caption><thead><tr>\
         <th scope=\"col\">Policy</th><th scope=\"col\">Defined at</th><th scope=\"col\">Route</th>\
         <th scope=\"col\">Orgs</th><th scope=\"col\">Allow rules</th>\
         <th scope=\"col\">Description</th></tr></thead><tbody>",
    );
    for p in set.policies() {
        if !staff.operator && !p.visible_to(staff.org().unwrap_or_default()) {
            continue;
        }
        let orgs = p.orgs.as_ref().map_or_else(
            || "every org".to_string(),
            |o| o.iter().map(|x| x.as_ref()).collect::<Vec<_>>().join(", "),
        );
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.defined_at.to_string()),
            esc(&p.route.to_string()),
            esc(&orgs),
            p.allow_rules,
            esc(p.description.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The explain form and, when a target was given, its answer.
async fn explain_section(
    state: &WebState,
    staff: &Staff,
    parts: &Parts,
    set: &PolicySet,
) -> String {
    let v = |k: &str| param(parts, k).unwrap_or_default();
    // An admin explains for its own org; an operator for any (its own by default).
    let org = match (staff.operator, param(parts, "org")) {
        (true, Some(o)) => o,
        _ => staff.caller.org.clone(),
    };
    let mut errors = BTreeMap::new();
    let mut answer = String::new();
    if let Some(t) = param(parts, "target") {
        match t.parse::<Target>() {
            Err(e) => {
                errors.insert("target".to_string(), e.to_string());
            }
            Ok(mut target) => {
                target.method = param(parts, "method").map(|m| m.to_ascii_uppercase());
                let apps = org_apps(state, staff, &org).await;
                let user = param(parts, "user");
                let (out, _) = explain(set, &org, user.as_deref(), &target, false, apps.as_deref());
                answer = explanation(&out);
            }
        }
    }
    let mut form = String::from(
        "<h2 id=\"explain\">Explain a decision</h2>\
         <form method=\"get\" action=\"/admin/policies#explain\" class=\"row\">",
    );
    if staff.operator {
        let _ = write!(
            form,
            "<div>{}</div>",
            field("org", "Org", &org, "", &errors)
        );
    }
    for (name, label, hint) in [
        (
            "target",
            "Target",
            "https://host/path, http://host:port/ or host:port",
        ),
        ("user", "User", "optional"),
        ("method", "Method", "optional: decide one HTTP request"),
    ] {
        let _ = write!(
            form,
            "<div>{}</div>",
            field(name, label, &v(name), hint, &errors)
        );
    }
    form.push_str("<div><button type=\"submit\">Explain</button></div></form>");
    form + &answer
}

/// The org's apps as the admin API lists them (what explain's app line reads), when this
/// person administers `org`.
async fn org_apps(state: &WebState, staff: &Staff, org: &str) -> Option<Vec<Value>> {
    if staff.org() != Some(org) {
        return None;
    }
    let admin = state.oauth.admin(&staff.caller);
    let mut out = Vec::new();
    for app in admin.list().await.ok()? {
        let view = admin.view(&app).await.ok()?;
        out.push(serde_json::to_value(&view).ok()?);
    }
    Some(out)
}

/// The explanation's fields as a description list.
fn explanation(out: &Value) -> String {
    let mut dl = String::from("<section aria-live=\"polite\"><h3>Decision</h3><dl>");
    for (key, label) in [
        ("target", "Target"),
        ("decision", "Decision"),
        ("reason", "Reason"),
        ("policy", "Policy"),
        ("rule", "Rule"),
        ("route", "Route"),
        ("method", "Method"),
        ("path", "Path"),
        ("private_allowed", "Private addresses"),
        ("upstream_tls_port", "Upstream TLS port"),
    ] {
        let text = match &out[key] {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(dl, "<dt>{label}</dt><dd>{}</dd>", esc(&text));
    }
    if let Some(id) = out["app"]["id"].as_str() {
        let _ = write!(dl, "<dt>App</dt><dd>{} injects its token</dd>", esc(id));
    }
    for l in out["limits"].as_array().into_iter().flatten() {
        let _ = write!(
            dl,
            "<dt>Limit</dt><dd>{} ({}): {}</dd>",
            esc(l["name"].as_str().unwrap_or_default()),
            esc(l["rule"].as_str().unwrap_or_default()),
            esc(l["rate"].as_str().unwrap_or_default())
        );
    }
    dl.push_str("</dl></section>");
    dl
}
