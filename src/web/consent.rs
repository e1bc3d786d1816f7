//! The consent pages a user sees once per application, in a browser, without JavaScript.
//! Each handler only translates HTTP; the steps themselves are `oauth::flow`:
//!
//! - `GET /consent/{ticket}`: what is being authorized (app, description, approval prompt,
//!   org, user) and an Authorize button;
//! - `POST /consent/{ticket}`: starts the authorization and redirects (303) to the provider;
//! - `GET /oauth/callback`: completes it and says the user can return to their workflow.
//!
//! Every page is server-rendered with every dynamic value HTML-escaped, and is sent with
//! `Cache-Control: no-store`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` (the
//! URLs carry tickets and codes) and a CSP that allows no script at all. Errors are pages
//! with a proper status, and store nothing.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;

use super::WebState;
use crate::oauth::flow::{Callback, FlowError};

/// The only style on the pages; the CSP allows exactly this block (by hash).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;\
padding:0 1rem;color:#222;line-height:1.5}h1{font-size:1.4rem}dl{display:grid;\
grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}\
.prompt{border-left:4px solid #36c;padding:.5rem 1rem;background:#f4f7fc}\
button{font-size:1rem;padding:.5rem 1.5rem;background:#36c;color:#fff;border:0;\
border-radius:4px;cursor:pointer}.error{border-left:4px solid #c33;padding:.5rem 1rem;\
background:#fcf4f4}";

/// The consent routes.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/consent/{ticket}", get(show).post(authorize))
        .route("/oauth/callback", get(callback))
}

/// Escapes text for HTML element content and double-quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `'sha256-...'` of [`STYLE`], computed once.
fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    })
}

/// `scheme://host[:port]` of a URL, for the CSP `form-action` (browsers apply it to the
/// redirect that follows the form POST).
fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// The security headers every consent response carries.
fn harden(resp: &mut Response, form_target: Option<&str>) {
    let form_action = match form_target.and_then(origin_of) {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; style-src {}; form-action {form_action}; frame-ancestors 'none'; \
         base-uri 'none'",
        style_hash()
    );
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

/// A complete page. `body` must already be escaped.
pub(super) fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    form_target: Option<&str>,
) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tollgate</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        esc(title)
    );
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    harden(&mut resp, form_target);
    resp
}

/// An error page: a title and a sentence saying what to do next.
pub(super) fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1>\n<p class=\"error\">{}</p>",
            esc(title),
            esc(detail)
        ),
        None,
    )
}

/// The page for a consent step that cannot go on. Nothing was stored.
fn refused(e: FlowError) -> Response {
    let (status, title, detail) = match e {
        FlowError::Store(e) => {
            tracing::error!(error = %e, "store failed in the consent flow");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "tollgate could not read or write its store. Try again in a moment; if it \
                 persists, tell your administrators."
                    .to_string(),
            )
        }
        FlowError::LinkUnusable => (
            StatusCode::NOT_FOUND,
            "This consent link cannot be used",
            "The link is unknown, has expired (links are valid for 15 minutes), was already \
             used, or the application was reset since. Run your workflow again to get a new \
             link."
                .to_string(),
        ),
        FlowError::WrongUser => (
            StatusCode::FORBIDDEN,
            "This consent link is for another user",
            "Sign in as the user the link was issued for, or run your workflow again as \
             yourself."
                .to_string(),
        ),
        FlowError::Disabled { org, app_name } => (
            StatusCode::FORBIDDEN,
            "This application is disabled",
            format!(
                "The administrators of {org} have disabled {app_name}. No new authorization \
                 can start until they enable it again."
            ),
        ),
        FlowError::AuthorizeUrl(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "This application is misconfigured",
            "The authorization URL could not be built. Tell your administrators.".to_string(),
        ),
        FlowError::MissingState => (
            StatusCode::BAD_REQUEST,
            "Incomplete response from the provider",
            "The provider sent you back without a state parameter. Start again from your \
             workflow."
                .to_string(),
        ),
        FlowError::PendingUnusable => (
            StatusCode::BAD_REQUEST,
            "This authorization cannot be completed",
            "The authorization is unknown, has expired (10 minutes), was already completed, \
             or the application was reset since. Run your workflow again to start over."
                .to_string(),
        ),
        FlowError::Provider { error, description } => {
            let said = match description {
                Some(d) => format!("The provider answered {error}: {d}."),
                None => format!("The provider answered {error}."),
            };
            let detail = format!("{said} Nothing was stored. Run your workflow again to retry.");
            if error == "access_denied" {
                (StatusCode::FORBIDDEN, "Access was not granted", detail)
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "The provider reported an error",
                    detail,
                )
            }
        }
        FlowError::IssuerMismatch => (
            StatusCode::BAD_REQUEST,
            "Unexpected authorization server",
            "The response did not come from the authorization server this application is \
             configured for. Nothing was stored."
                .to_string(),
        ),
        FlowError::MissingCode => (
            StatusCode::BAD_REQUEST,
            "Incomplete response from the provider",
            "The provider sent you back without an authorization code. Nothing was stored."
                .to_string(),
        ),
        FlowError::Exchange(e) => (
            StatusCode::BAD_GATEWAY,
            "The token exchange failed",
            format!("{e}. Nothing was stored. Run your workflow again to retry."),
        ),
        FlowError::AppChanged => (
            StatusCode::CONFLICT,
            "The application changed during your authorization",
            "It was reset or deleted while you were at the provider. Nothing was stored. Run \
             your workflow again to start over."
                .to_string(),
        ),
    };
    error_page(status, title, &detail)
}

/// Who is at the page (`oauth::flow` asks whether they may act for the ticket's user).
fn signed_in(state: &WebState, parts: &Parts) -> super::login::Visitor {
    super::login::visitor(state, parts)
}

async fn show(
    State(state): State<WebState>,
    Path(ticket_id): Path<String>,
    parts: Parts,
) -> Response {
    let who = signed_in(&state, &parts);
    let may = |org: &str, user: &str| who.may_act_for(org, user);
    let (ticket, app) = match state.oauth.flow().ticket(&ticket_id, &may).await {
        Ok(found) => found,
        Err(e) => return refused(e),
    };
    let provider = origin_of(&app.authorize_url).unwrap_or_default();
    let scopes = if app.scopes.is_empty() {
        "(none requested)".to_string()
    } else {
        app.scopes.join(" ")
    };
    let description = if app.description.is_empty() {
        String::new()
    } else {
        format!("<p>{}</p>\n", esc(&app.description))
    };
    let body = format!(
        "<h1>Authorize {name}</h1>\n{description}\
         <p class=\"prompt\">{prompt}</p>\n\
         <dl><dt>Organization</dt><dd>{org}</dd><dt>User</dt><dd>{user}</dd>\
         <dt>Provider</dt><dd>{provider}</dd><dt>Scopes</dt><dd>{scopes}</dd></dl>\n\
         <p>Authorize sends you to the provider to sign in and approve. Afterwards, requests \
         your workflows make to {name} carry your authorization.</p>\n\
         <form method=\"post\"><button type=\"submit\">Authorize</button></form>",
        name = esc(&app.name),
        prompt = esc(&app.approval_prompt),
        org = esc(&ticket.org),
        user = esc(&ticket.user),
        provider = esc(&provider),
        scopes = esc(&scopes),
    );
    page(
        StatusCode::OK,
        &format!("Authorize {}", app.name),
        &body,
        Some(&app.authorize_url),
    )
}

async fn authorize(
    State(state): State<WebState>,
    Path(ticket_id): Path<String>,
    parts: Parts,
) -> Response {
    let who = signed_in(&state, &parts);
    let may = |org: &str, user: &str| who.may_act_for(org, user);
    let url = match state.oauth.flow().authorize(&ticket_id, &may).await {
        Ok(url) => url,
        Err(e) => return refused(e),
    };
    let Ok(location) = HeaderValue::from_str(&url) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "This application is misconfigured",
            "The authorization URL is not valid. Tell your administrators.",
        );
    };
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut().insert(header::LOCATION, location);
    harden(&mut resp, None);
    resp
}

async fn callback(
    State(state): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| params.get(name).map(String::as_str);
    let params = Callback {
        state: param("state"),
        code: param("code"),
        error: param("error"),
        error_description: param("error_description"),
        iss: param("iss"),
    };
    let granted = match state.oauth.flow().callback(&params).await {
        Ok(g) => g,
        Err(e) => return refused(e),
    };
    let app = &granted.app;
    page(
        StatusCode::OK,
        &format!("{} authorized", app.name),
        &format!(
            "<h1>{name} is authorized</h1>\n<p>{user} in {org} has authorized {name}. You can \
             close this window and return to your workflow: its requests to {name} now carry \
             your authorization.</p>",
            name = esc(&app.name),
            user = esc(&granted.user),
            org = esc(&app.org),
        ),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn csp_allows_the_provider_as_form_target_and_no_script() {
        let mut r = StatusCode::OK.into_response();
        harden(&mut r, Some("https://idp.example:8443/authorize?x=1"));
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("form-action 'self' https://idp.example:8443;"),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}
