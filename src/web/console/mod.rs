//! The admin console, `GET /admin`: server-rendered pages (no script) for an org's admins —
//! apps (`apps`, `app_form`), their authorizations (`authorizations`), the audit log
//! (`audit`) — and for operators — connected agents (`agents`) — and for both the policies
//! with an explain form (`policies`) and the live deny log (`denials`).
//!
//! Who may use it comes from the pages' sign-in (`web::login::visitor`): role `admin` with an
//! org, or role `operator`. Every state change is a POST carrying the `web::csrf` token of
//! the signed-in person, checked before anything else; a GET never changes anything.
//! Destructive actions are behind a confirmation page. The handlers call the same
//! operations as the admin API (`oauth::admin::AppAdmin`, `relay::control`), never the store.

/// The answer of a handler's step that refused: returns it from the handler.
macro_rules! or_refuse {
    ($step:expr) => {
        match $step {
            Ok(x) => x,
            Err(r) => return axum::response::IntoResponse::into_response(r),
        }
    };
}

mod agents;
mod app_form;
mod apps;
mod audit;
mod authorizations;
mod denials;
mod policies;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::login::{self, SignedIn, Visitor};
use super::page::{esc, wide_page};
use super::{csrf, WebState};
use crate::identity::Caller;
use crate::oauth::admin::AdminError;
use crate::store::StoreError;

/// The console's routes.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin", get(apps::list))
        .route("/admin/apps/new", get(app_form::new_form))
        .route("/admin/apps", axum::routing::post(app_form::create))
        .route(
            "/admin/apps/{id}",
            get(app_form::show).post(app_form::update),
        )
        .route("/admin/apps/{id}/authorizations", get(authorizations::list))
        .route(
            "/admin/apps/{id}/revoke",
            get(authorizations::confirm).post(authorizations::revoke),
        )
        .route(
            "/admin/apps/{id}/{action}",
            get(apps::confirm).post(apps::act),
        )
        .route("/admin/policies", get(policies::show))
        .route("/admin/agents", get(agents::list))
        .route(
            "/admin/agents/revoke",
            get(agents::confirm).post(agents::revoke),
        )
        .route("/admin/audit", get(audit::show))
        .route("/admin/denials", get(denials::show))
}

/// A signed-in person allowed into the console.
pub(super) struct Staff {
    /// Who signed in.
    who: SignedIn,
    /// The same person as the app lifecycle's actor (org, user, roles; no token).
    caller: Caller,
    /// Holds `admin` and the login names an org: manages that org's apps.
    admin: bool,
    /// Holds `operator`: agents and the whole deployment's deny log.
    operator: bool,
    /// The CSRF token for this person's forms.
    csrf: String,
}

impl Staff {
    /// The org whose apps this admin manages.
    fn org(&self) -> Option<&str> {
        self.admin.then_some(self.caller.org.as_str())
    }

    /// The hidden CSRF field for a form.
    fn csrf_field(&self) -> String {
        csrf::hidden(&self.csrf)
    }
}

/// Who a page is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Admins and operators alike.
    Any,
    /// Admins of an org (apps, audit).
    Admin,
    /// Operators (agents).
    Operator,
}

/// Why nobody may use the console under `--login none`.
const NO_LOGIN: &str = "The admin console needs a sign-in (--login header or oidc): with \
                        --login none nobody can be told apart.";

/// For a visitor who is not signed in: the sign-in (OIDC), else `401 not_signed_in`.
fn not_signed_in(state: &WebState, parts: &Parts) -> Refusal {
    let back = parts.uri.path_and_query().map_or("/admin", |p| p.as_str());
    let resp = login::sign_in(state, back).unwrap_or_else(|| {
        refuse(
            parts,
            StatusCode::UNAUTHORIZED,
            "not_signed_in",
            "Sign in through your organization's login to use the console.",
        )
    });
    resp.into()
}

/// The console visitor of `parts`, or the answer for one who may not enter: a sign-in (OIDC),
/// `401 not_signed_in`, or `403 forbidden`.
pub(super) fn staff(state: &WebState, parts: &Parts, role: Role) -> Result<Staff, Refusal> {
    let who = match login::visitor(state, parts) {
        Visitor::User(who) => who,
        Visitor::Anonymous => return Err(not_signed_in(state, parts)),
        Visitor::Anyone => {
            return Err(refusal(
                parts,
                StatusCode::FORBIDDEN,
                "login_required",
                NO_LOGIN,
            ))
        }
    };
    let has = |r: &str| who.roles.iter().any(|x| x == r);
    let admin = has("admin") && who.org.is_some();
    let operator = has("operator");
    if !admin && !operator {
        return Err(refusal(
            parts,
            StatusCode::FORBIDDEN,
            "forbidden",
            "The console is for the admins of an organization and for operators.",
        ));
    }
    let Some(csrf) = csrf::token(state, &who) else {
        return Err(refusal(
            parts,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The console cannot sign its forms.",
        ));
    };
    let caller = Caller {
        org: who.org.clone().unwrap_or_default(),
        user: who.user.clone(),
        roles: who.roles.clone(),
        exp: 0,
        jti: None,
        iat: None,
    };
    let (allowed, whose) = match role {
        Role::Any => (true, ""),
        Role::Admin => (
            admin,
            "the admins of an organization (role admin, with an org)",
        ),
        Role::Operator => (operator, "operators (role operator)"),
    };
    if !allowed {
        return Err(refusal(
            parts,
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("This page is for {whose}."),
        ));
    }
    Ok(Staff {
        who,
        caller,
        admin,
        operator,
        csrf,
    })
}

/// Most bytes of a console form.
const MAX_FORM: usize = 64 * 1024;

/// A submitted form's fields (the last value of a repeated name wins).
pub(super) type Form = BTreeMap<String, String>;

/// The console visitor of a POST and its form, once the CSRF token is checked: `403
/// csrf_invalid` (nothing changed) when it is missing or not this person's.
pub(super) fn posted(
    state: &WebState,
    parts: &Parts,
    body: &[u8],
    role: Role,
) -> Result<(Staff, Form), Refusal> {
    let staff = staff(state, parts, role)?;
    if body.len() > MAX_FORM {
        return Err(refusal(
            parts,
            StatusCode::PAYLOAD_TOO_LARGE,
            "form_too_large",
            "The form is too large.",
        ));
    }
    let form: Form = url::form_urlencoded::parse(body).into_owned().collect();
    if !csrf::valid(state, &staff.who, form.get(csrf::FIELD).map(String::as_str)) {
        return Err(refusal(
            parts,
            StatusCode::FORBIDDEN,
            "csrf_invalid",
            "This form did not come from a console page of yours (its csrf token is missing or \
             wrong). Nothing was changed: reload the page and try again.",
        ));
    }
    Ok((staff, form))
}

/// A console error: a page naming `code` for browsers, JSON for clients that ask for it;
/// both with `Proxy-Status`. `message` is plain text (escaped here).
pub(super) fn refuse(parts: &Parts, status: StatusCode, code: &str, message: &str) -> Response {
    let wants_json = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let mut resp = if wants_json {
        (status, Json(json!({"error": code, "message": message}))).into_response()
    } else {
        let body = format!(
            "<main><h1>{}</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n\
             <p>Error code: <code>{}</code></p>\n<p><a href=\"/admin\">Back to the console</a></p></main>",
            esc(status.canonical_reason().unwrap_or("Error")),
            esc(message),
            esc(code)
        );
        wide_page(status, "Admin console", &body)
    };
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "http_request_denied",
        s if s.is_server_error() => "proxy_internal_error",
        _ => "http_request_error",
    };
    if let Ok(v) = HeaderValue::from_str(&format!("tollgate; error={kind}; details=\"{code}\"")) {
        resp.headers_mut().insert("proxy-status", v);
    }
    resp
}

/// A refused request's answer, boxed: a `Response` is too large to travel in every `Err`.
pub(super) struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(r: Response) -> Self {
        Refusal(Box::new(r))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// [`refuse`] as a [`Refusal`].
fn refusal(parts: &Parts, status: StatusCode, code: &str, message: &str) -> Refusal {
    refuse(parts, status, code, message).into()
}

/// The answer to a failed lifecycle call that is not the form's fault.
pub(super) fn admin_error(parts: &Parts, e: AdminError) -> Response {
    match e {
        AdminError::NotFound(_) | AdminError::NotAuthorized { .. } => {
            refuse(parts, StatusCode::NOT_FOUND, "not_found", &e.to_string())
        }
        AdminError::Exists(_) => refuse(parts, StatusCode::CONFLICT, "conflict", &e.to_string()),
        AdminError::Invalid(_) | AdminError::SecretRequired(_) => refuse(
            parts,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &e.to_string(),
        ),
        AdminError::Store(StoreError::Unavailable(err)) => {
            tracing::warn!(error = %err, "store unreachable in the console");
            refuse(
                parts,
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The store cannot be reached; nothing was changed. Retry shortly.",
            )
        }
        AdminError::Store(err) => {
            tracing::error!(error = %err, "store error in the console");
            refuse(
                parts,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The store failed; see the server log.",
            )
        }
    }
}

/// The navigation, `current` marked for assistive technology.
fn nav(staff: &Staff, current: &str) -> String {
    let mut items: Vec<(&str, &str)> = Vec::new();
    if staff.admin {
        items.push(("/admin", "Apps"));
        items.push(("/admin/audit", "Audit log"));
    }
    items.push(("/admin/policies", "Policies"));
    if staff.operator {
        items.push(("/admin/agents", "Agents"));
    }
    items.push(("/admin/denials", "Deny log"));
    let mut out = String::from("<nav aria-label=\"Console\"><ul>");
    for (href, label) in items {
        let cur = if href == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<li><a href=\"{href}\"{cur}>{label}</a></li>");
    }
    out.push_str("</ul></nav>");
    out
}

/// A console page: the header with who is signed in, the navigation, and `main`.
pub(super) fn console_page(staff: &Staff, current: &str, title: &str, main: &str) -> Response {
    let who = match &staff.who.org {
        Some(org) => format!("{} ({})", esc(&staff.who.user), esc(org)),
        None => esc(&staff.who.user),
    };
    let body = format!(
        "<header><p>tollgate admin console · signed in as {who}</p>{}</header>\n\
         <main>\n<h1>{}</h1>\n{main}\n</main>",
        nav(staff, current),
        esc(title)
    );
    wide_page(StatusCode::OK, title, &body)
}

/// A confirmation: `warning` (escaped already), then a form POSTing to `action` with the
/// CSRF field, the hidden `fields` and `extra` inputs (escaped already), a `button` (plain
/// text) and a Cancel link back to `cancel`.
pub(super) struct Confirm<'a> {
    /// What the action does, as HTML.
    pub warning: &'a str,
    /// Where the form POSTs.
    pub action: &'a str,
    /// Hidden fields: name and value.
    pub fields: &'a [(&'a str, &'a str)],
    /// More inputs, as HTML (a typed confirmation).
    pub extra: &'a str,
    /// The button's text.
    pub button: &'a str,
    /// Whether the action destroys something (a red button).
    pub danger: bool,
    /// Where Cancel goes.
    pub cancel: &'a str,
}

impl Confirm<'_> {
    /// The HTML, with `staff`'s CSRF field.
    pub(super) fn render(&self, staff: &Staff) -> String {
        let hidden: String = self
            .fields
            .iter()
            .map(|(n, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(n),
                    esc(v)
                )
            })
            .collect();
        let class = if self.danger { " class=\"danger\"" } else { "" };
        format!(
            "<p class=\"warning\">{}</p>\n<form method=\"post\" action=\"{}\">{}{hidden}{}\
             <p><button type=\"submit\"{class}>{}</button> <a href=\"{}\">Cancel</a></p></form>",
            self.warning,
            esc(self.action),
            staff.csrf_field(),
            self.extra,
            esc(self.button),
            esc(self.cancel),
        )
    }
}

/// A `303` to a console path (a constant or built from validated ids).
pub(super) fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The query parameter `name` of `parts`, empty values as none.
pub(super) fn param(parts: &Parts, name: &str) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// `s` for a query string value.
pub(super) fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A Unix time for people (UTC, RFC 3339), `-` for none.
pub(super) fn time(t: Option<u64>) -> String {
    t.map_or_else(|| "-".into(), crate::clock::rfc3339)
}

/// A text input with its label, hint and error, all escaped; `value` pre-fills it.
pub(super) fn field(
    name: &str,
    label: &str,
    value: &str,
    hint: &str,
    errors: &BTreeMap<String, String>,
) -> String {
    let id = format!("f-{}", name.replace('.', "-"));
    let mut described = Vec::new();
    let mut extra = String::new();
    if !hint.is_empty() {
        described.push(format!("{id}-hint"));
        let _ = write!(
            extra,
            "<p class=\"hint\" id=\"{id}-hint\">{}</p>",
            esc(hint)
        );
    }
    let invalid = match errors.get(name) {
        Some(e) => {
            described.push(format!("{id}-error"));
            let _ = write!(
                extra,
                "<p class=\"field-error\" id=\"{id}-error\">{}</p>",
                esc(e)
            );
            " aria-invalid=\"true\""
        }
        None => "",
    };
    let kind = if name == "client_secret" {
        "password\" autocomplete=\"new-password"
    } else {
        "text"
    };
    let describedby = if described.is_empty() {
        String::new()
    } else {
        format!(" aria-describedby=\"{}\"", described.join(" "))
    };
    format!(
        "<label for=\"{id}\">{}</label><input type=\"{kind}\" id=\"{id}\" name=\"{}\" \
         value=\"{}\"{describedby}{invalid}>{extra}\n",
        esc(label),
        esc(name),
        esc(value)
    )
}
