//! "My connections", the page (`GET /connections`): every app of the signed-in person's org
//! with their state — connected (scopes, expiry, last used, last refreshed), needs consent,
//! refresh failing (with the last error), app disabled — and a form per action:
//!
//! - `POST /connections/{id}/connect` (Connect, Reconnect): `303` to the consent page of the
//!   ticket a `401` would carry;
//! - `POST /connections/{id}/disconnect`: revokes at the provider, deletes the grant and
//!   shows the page again saying whether the provider confirmed.
//!
//! No GET changes anything. Every form carries the `web::csrf` token of the person (the one
//! CSRF mechanism of the signed-in pages, shared with the admin console), so another site's
//! form cannot act for them: a forged, absent or another person's token is `403
//! csrf_invalid`. Who is signed in comes from `web::login`; a visitor who is not goes through
//! the sign-in (OIDC) or is told to sign in. With `--login none` (loopback development only)
//! the page asks whose connections to show, as the consent pages let anyone act, and the
//! token is bound to the person the page was asked for (another site still cannot read it).
//! Server-rendered with the one layout (`web::page`), no script; `oauth::connections` does
//! the work.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::consent::wants_json;
use super::csrf;
use super::login::{self, SignedIn, Visitor};
use super::page::{esc, page};
use super::WebState;
use crate::clock::rfc3339;
use crate::oauth::connections::{Connection, ConnectionError, ConnectionState, Disconnected};
use crate::oauth::token::Revocation;
use crate::store::StoreError;

/// Where the page lives (and where sign-in returns).
const PATH: &str = "/connections";

/// The page's routes.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route(PATH, get(show))
        .route("/connections/{id}/connect", post(connect))
        .route("/connections/{id}/disconnect", post(disconnect))
}

/// Whose connections a request is about.
struct Person {
    /// Their org: only its apps are listed.
    org: String,
    /// The user whose grants these are.
    user: String,
    /// `--login none`: nobody signed in, the person was named in the request.
    unsigned: bool,
}

impl Person {
    /// Whom the forms' `web::csrf` token is bound to: this user of this org (under `--login
    /// none`, the person named in the request).
    fn csrf_subject(&self) -> SignedIn {
        SignedIn {
            user: self.user.clone(),
            org: Some(self.org.clone()),
            roles: Vec::new(),
        }
    }
}

/// A page (or JSON) that refuses, naming `code`, with `Proxy-Status`.
fn refused(json: bool, status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    let mut resp = if json {
        (
            status,
            Json(serde_json::json!({"error": code, "message": detail})),
        )
            .into_response()
    } else {
        let body = format!(
            "<h1>{}</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n<p>Error code: <code>{}</code></p>\n\
             <p><a href=\"{PATH}\">Back to my connections</a></p>",
            esc(title),
            esc(detail),
            esc(code)
        );
        page(status, title, &body, None)
    };
    let kind = match status.as_u16() {
        500.. => "proxy_internal_error",
        401 | 403 => "http_request_denied",
        _ => "http_request_error",
    };
    let value = format!("tollgate; error={kind}; details=\"{code}\"");
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert("proxy-status", v);
    }
    resp
}

/// A form field of an urlencoded body, or a query parameter.
fn field(data: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(data)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Who the request is for, or the answer for a visitor the page cannot serve. `named` is
/// where `--login none` reads `org` and `user` (the query, or the form).
fn person(state: &WebState, parts: &Parts, named: &[u8]) -> Result<Person, Box<Response>> {
    let json = wants_json(&parts.headers);
    let refusal = match login::visitor(state, parts) {
        Visitor::User(s) => match s.org {
            Some(org) => {
                return Ok(Person {
                    org,
                    user: s.user,
                    unsigned: false,
                })
            }
            None => refused(
                json,
                StatusCode::FORBIDDEN,
                "login_org_missing",
                "Your sign-in names no organization",
                "tollgate cannot tell which organization's applications to show. Ask your \
                 administrators to set --login-oidc-org-claim or --login-org-header.",
            ),
        },
        Visitor::Anonymous => match login::sign_in(state, PATH).filter(|_| !json) {
            Some(to_sign_in) => to_sign_in,
            None => refused(
                json,
                StatusCode::UNAUTHORIZED,
                "login_required",
                "Sign in first",
                "Sign in through your organization's login, then open this page again.",
            ),
        },
        Visitor::Anyone => match (field(named, "org"), field(named, "user")) {
            (Some(org), Some(user)) => {
                return Ok(Person {
                    org,
                    user,
                    unsigned: true,
                })
            }
            _ => pick_person(),
        },
    };
    Err(Box::new(refusal))
}

/// `--login none`: nobody signs in, so the page asks whose connections to show.
fn pick_person() -> Response {
    let body = format!(
        "<h1>My connections</h1>\n<p class=\"warning\">Sign-in is off (<code>--login none</code>, \
         for development on this machine only): say whose connections to show.</p>\n\
         <form method=\"get\" action=\"{PATH}\">\n\
         <p><label for=\"org\">Organization</label><br><input id=\"org\" name=\"org\" required></p>\n\
         <p><label for=\"user\">User</label><br><input id=\"user\" name=\"user\" required></p>\n\
         <p><button type=\"submit\">Show connections</button></p>\n</form>"
    );
    page(StatusCode::OK, "My connections", &body, None)
}

/// A ConnectionError as a page.
fn failed(e: ConnectionError, json: bool) -> Response {
    let message = e.to_string();
    let (status, code, title) = match e {
        ConnectionError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "No such application"),
        ConnectionError::NotConnected(_) => (
            StatusCode::NOT_FOUND,
            "not_connected",
            "Already disconnected",
        ),
        ConnectionError::Disabled { .. } => (
            StatusCode::FORBIDDEN,
            "app_disabled",
            "This application is disabled",
        ),
        // Not reachable from the page's actions; answered all the same.
        ConnectionError::NotExposed(_) => (
            StatusCode::FORBIDDEN,
            "token_not_exposed",
            "Tokens are not exposed",
        ),
        ConnectionError::ConsentRequired(_) => (
            StatusCode::UNAUTHORIZED,
            "authorization_required",
            "Authorization required",
        ),
        ConnectionError::RefreshFailed { .. } => (
            StatusCode::BAD_GATEWAY,
            "token_refresh_failed",
            "Refreshing failed",
        ),
        ConnectionError::Store(StoreError::Unavailable(e)) => {
            tracing::warn!(error = %e, "store unreachable on the connections page");
            return refused(
                json,
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "Please try again in a moment",
                "tollgate cannot reach its store right now. Nothing was changed.",
            );
        }
        ConnectionError::Store(e) => {
            tracing::error!(error = %e, "store failed on the connections page");
            return refused(
                json,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong",
                "tollgate could not read or write its store. Try again in a moment.",
            );
        }
    };
    refused(json, status, code, title, &message)
}

/// The form fields that name the person under `--login none` (signed-in people are known).
fn person_fields(p: &Person) -> String {
    if !p.unsigned {
        return String::new();
    }
    format!(
        "<input type=\"hidden\" name=\"org\" value=\"{}\"><input type=\"hidden\" name=\"user\" value=\"{}\">",
        esc(&p.org),
        esc(&p.user)
    )
}

/// A time for people (`2026-12-06 15:41:19 UTC`, which wraps at the space on a phone), or
/// `none`.
fn when(t: Option<u64>, none: &str) -> String {
    t.map_or_else(
        || none.to_string(),
        |t| rfc3339(t).replace('T', " ").replace('Z', " UTC"),
    )
}

/// The status line: words first (colour only repeats them).
fn status_line(c: &Connection) -> (&'static str, String) {
    match c.state {
        ConnectionState::Connected => ("prompt", "Connected".into()),
        ConnectionState::NeedsConsent if c.obtained_at.is_some() => (
            "warning",
            "Needs consent: the provider no longer accepts this authorization; reconnect".into(),
        ),
        ConnectionState::NeedsConsent => ("warning", "Not connected: needs your consent".into()),
        ConnectionState::RefreshFailing => (
            "error",
            format!(
                "Refresh failing (temporary; tollgate keeps trying): {}",
                c.last_error.as_deref().unwrap_or("no detail")
            ),
        ),
        ConnectionState::AppDisabled => (
            "warning",
            "Disabled by your administrators: nothing is sent with your tokens".into(),
        ),
    }
}

/// One app's section.
fn section(c: &Connection, p: &Person, csrf: &str) -> String {
    let id = esc(&c.app);
    let name = esc(&c.name);
    let (class, status) = status_line(c);
    let mut out = format!(
        "<section aria-labelledby=\"app-{id}\">\n<h2 id=\"app-{id}\">{name}</h2>\n\
         <p class=\"{class}\" data-state=\"{}\"><strong>Status:</strong> {}</p>\n",
        c.state.as_str(),
        esc(&status)
    );
    if !c.description.is_empty() {
        out.push_str(&format!("<p>{}</p>\n", esc(&c.description)));
    }
    if c.obtained_at.is_some() {
        let scopes = if c.scopes.is_empty() {
            "none".to_string()
        } else {
            c.scopes.join(" ")
        };
        out.push_str(&format!(
            "<dl>\n<dt>Scopes</dt><dd>{}</dd>\n<dt>Expires</dt><dd>{}</dd>\n\
             <dt>Last used</dt><dd>{}</dd>\n<dt>Last refreshed</dt><dd>{}</dd>\n\
             <dt>Connected at</dt><dd>{}</dd>\n</dl>\n",
            esc(&scopes),
            when(c.expires_at, "unknown"),
            when(c.last_used_at, "not yet"),
            when(c.last_refreshed_at, "not yet"),
            when(c.obtained_at, "unknown"),
        ));
    }
    let hidden = format!("{}{}", csrf::hidden(csrf), person_fields(p));
    let connect = match c.state {
        ConnectionState::AppDisabled | ConnectionState::Connected => None,
        _ if c.obtained_at.is_some() => Some("Reconnect"),
        _ => Some("Connect"),
    };
    if let Some(label) = connect {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/connections/{id}/connect\">{hidden}\
             <button type=\"submit\">{label} {name}</button></form>\n"
        ));
    }
    if c.obtained_at.is_some() {
        let note = if c.revocable {
            "Your tokens are revoked at the provider, then deleted."
        } else {
            "This provider offers no revocation: your tokens are deleted here only."
        };
        out.push_str(&format!(
            "<form method=\"post\" action=\"/connections/{id}/disconnect\">{hidden}\
             <p>{note}</p><button type=\"submit\">Disconnect {name}</button></form>\n"
        ));
    }
    out.push_str("</section>\n");
    out
}

/// What a Disconnect did, worded for the person.
fn disconnected_notice(name: &str, d: &Disconnected) -> (&'static str, String) {
    match &d.revocation {
        Revocation::Confirmed => (
            "prompt",
            format!("Disconnected from {name}. The provider confirmed the revocation."),
        ),
        Revocation::NotSupported => (
            "warning",
            format!(
                "Disconnected from {name}. Your tokens are deleted here; this provider offers \
                 no revocation, so revoke tollgate's access in your account settings there too."
            ),
        ),
        Revocation::Refused { status } => (
            "warning",
            format!(
                "Disconnected from {name}, but the provider did not confirm the revocation \
                 (it answered HTTP {status}). Revoke tollgate's access in your account \
                 settings there."
            ),
        ),
        Revocation::Failed { reason } => (
            "warning",
            format!(
                "Disconnected from {name}, but the provider could not be asked to revoke \
                 ({reason}). Revoke tollgate's access in your account settings there."
            ),
        ),
    }
}

/// The page: every connection, and `notice` (class, text) on top.
async fn render(
    state: &WebState,
    parts: &Parts,
    p: &Person,
    notice: Option<(&str, String)>,
) -> Response {
    let json = wants_json(&parts.headers);
    let list = match state.oauth.connections(&p.org, &p.user).list().await {
        Ok(l) => l,
        Err(e) => return failed(e, json),
    };
    let Some(csrf) = csrf::token(state, &p.csrf_subject()) else {
        tracing::error!("the connections page cannot sign its forms");
        return refused(
            json,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong",
            "tollgate cannot sign this page's forms. Try again in a moment.",
        );
    };
    let mut body = format!(
        "<header><h1>My connections</h1>\n<p>Signed in as <strong>{}</strong> of <strong>{}</strong>.</p></header>\n",
        esc(&p.user),
        esc(&p.org)
    );
    if let Some((class, text)) = notice {
        body.push_str(&format!(
            "<p class=\"{class}\" role=\"status\">{}</p>\n",
            esc(&text)
        ));
    }
    if list.is_empty() {
        body.push_str("<p>Your organization has no applications yet.</p>\n");
    }
    body.push_str("<main>\n");
    for c in &list {
        body.push_str(&section(c, p, &csrf));
    }
    body.push_str("</main>\n");
    page(StatusCode::OK, "My connections", &body, None)
}

async fn show(State(state): State<WebState>, parts: Parts) -> Response {
    let query = parts.uri.query().unwrap_or_default().as_bytes().to_vec();
    match person(&state, &parts, &query) {
        Ok(p) => render(&state, &parts, &p, None).await,
        Err(resp) => *resp,
    }
}

/// The person of a form POST whose `csrf` field is their `web::csrf` token: `403
/// csrf_invalid` (nothing changed) when it is missing, forged or another person's.
fn checked(state: &WebState, parts: &Parts, body: &[u8]) -> Result<Person, Box<Response>> {
    let p = person(state, parts, body)?;
    let sent = field(body, csrf::FIELD);
    if csrf::valid(state, &p.csrf_subject(), sent.as_deref()) {
        return Ok(p);
    }
    tracing::warn!(org = %p.org, user = %p.user, "connections form without this person's csrf token");
    Err(Box::new(refused(
        wants_json(&parts.headers),
        StatusCode::FORBIDDEN,
        "csrf_invalid",
        "This request did not come from your connections page",
        "Nothing was changed. Open My connections again and use its buttons.",
    )))
}

/// A form's action.
#[derive(Clone, Copy)]
enum Action {
    /// Connect or Reconnect.
    Connect,
    /// Disconnect.
    Disconnect,
}

async fn connect(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    act(state, id, parts, body, Action::Connect).await
}

async fn disconnect(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    act(state, id, parts, body, Action::Disconnect).await
}

/// A checked form POST: Connect answers a `303` to the consent page, Disconnect the page
/// saying what the provider did.
async fn act(state: WebState, id: String, parts: Parts, body: Bytes, action: Action) -> Response {
    let p = match checked(&state, &parts, &body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let json = wants_json(&parts.headers);
    let connections = state.oauth.connections(&p.org, &p.user);
    match action {
        Action::Connect => match connections.connect(&id).await {
            Ok(c) => match HeaderValue::from_str(&c.consent_url) {
                Ok(location) => {
                    let mut resp = StatusCode::SEE_OTHER.into_response();
                    resp.headers_mut().insert(header::LOCATION, location);
                    super::page::harden(&mut resp, None);
                    resp
                }
                Err(_) => failed(ConnectionError::NotFound(id), json),
            },
            Err(e) => failed(e, json),
        },
        Action::Disconnect => match connections.disconnect(&id).await {
            Ok(d) => {
                let notice = disconnected_notice(&d.app_name, &d);
                render(&state, &parts, &p, Some(notice)).await
            }
            Err(e) => failed(e, json),
        },
    }
}
