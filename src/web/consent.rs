//! The consent pages a user sees once per application, in a browser, without JavaScript.
//! Each handler only translates HTTP; the steps themselves are `oauth::flow`:
//!
//! - `GET /consent/{ticket}`: what is being authorized (app, description, approval prompt,
//!   org, user) and an Authorize button; sets the `tollgate_consent` cookie (or keeps the
//!   browser's) and puts the `csrf` field derived from it in the form;
//! - `POST /consent/{ticket}`: checks the `csrf` field against the cookie, starts the
//!   authorization and redirects (303) to the provider;
//! - `GET /oauth/callback`: completes it and says the user can return to their workflow.
//!
//! Who is signing in comes from `web::login` ([`Visitor`]): the signed-in user must be the
//! consent's on every step (`oauth::flow` checks), and a visitor who is not signed in while
//! a login is configured goes through [`not_signed_in`], the one place that answers them.
//!
//! Every page is server-rendered with every dynamic value HTML-escaped, and is sent with
//! `Cache-Control: no-store`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` (the
//! URLs carry tickets and codes) and a CSP that allows no script at all. Errors are pages
//! with a proper status, the error code, and `Proxy-Status` (JSON when the client asks for
//! JSON), and store nothing.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::login::{self, Visitor};
use super::page::{esc, harden, origin_of, page};
use super::WebState;
use crate::oauth::browser::{ConsentCookie, COOKIE_NAME};
use crate::oauth::flow::{ActsFor, Callback, FlowError};
use crate::store::StoreError;

/// At most this many `tollgate_consent` cookies of one request are considered.
const MAX_COOKIES: usize = 4;

/// The consent routes.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/consent/{ticket}", get(show).post(authorize))
        .route("/oauth/callback", get(callback))
}

/// A refused consent step: its status, error code, title and what to do next.
struct Refusal {
    /// HTTP status.
    status: StatusCode,
    /// The error code (docs/errors.md).
    code: &'static str,
    /// The page's title.
    title: &'static str,
    /// A sentence saying what happened and what to do next.
    detail: String,
}

impl Refusal {
    /// The page (or JSON, when `json`), with `Proxy-Status` naming the code.
    fn respond(self, json: bool) -> Response {
        let mut resp = if json {
            (
                self.status,
                Json(serde_json::json!({"error": self.code, "message": self.detail})),
            )
                .into_response()
        } else {
            page(
                self.status,
                self.title,
                &format!(
                    "<h1>{}</h1>\n<p class=\"error\">{}</p>\n<p>Error code: <code>{}</code></p>",
                    esc(self.title),
                    esc(&self.detail),
                    self.code
                ),
                None,
            )
        };
        let kind = match self.status.as_u16() {
            500.. => "proxy_internal_error",
            401 | 403 => "http_request_denied",
            _ => "http_request_error",
        };
        let value = format!("tollgate; error={kind}; details=\"{}\"", self.code);
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert("proxy-status", v);
        }
        harden(&mut resp, None);
        resp
    }
}

/// Whether the client asked for JSON rather than a page.
pub(super) fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// A visitor who is not signed in while a login is configured: every consent step sends
/// them here, with the local path to come back to once signed in. Nothing is read from or
/// written to the store (a callback's `state` stays usable after signing in).
fn not_signed_in(state: &WebState, return_to: &str, json: bool) -> Response {
    // A browser is sent to sign in (with OIDC) and comes back here.
    if let Some(to_sign_in) = login::sign_in(state, return_to).filter(|_| !json) {
        return to_sign_in;
    }
    Refusal {
        status: StatusCode::FORBIDDEN,
        code: "consent_user_mismatch",
        title: "Sign in first",
        detail: "Sign in as the user this consent link was issued for, then open the link \
                 again."
            .into(),
    }
    .respond(json)
}

/// The Authorize POST did not carry this browser's `csrf` field (another site's form, or
/// the consent cookie is missing). The ticket was not consumed.
fn csrf_refused(json: bool) -> Response {
    tracing::warn!("consent refused: Authorize without this browser's csrf field");
    Refusal {
        status: StatusCode::FORBIDDEN,
        code: "consent_csrf_invalid",
        title: "This request did not come from the consent page",
        detail: "Open the consent link again in this browser and click Authorize there. \
                 The link is still valid."
            .into(),
    }
    .respond(json)
}

/// The page for a consent step that cannot go on. Nothing was stored.
fn refused(e: FlowError, json: bool) -> Response {
    let (status, code, title, detail) = match e {
        FlowError::Store(StoreError::Unavailable(e)) => {
            tracing::warn!(error = %e, "store unreachable in the consent flow");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "Please try again in a moment",
                "tollgate cannot reach its store right now. Nothing was lost: reload this \
                 page in a moment."
                    .to_string(),
            )
        }
        FlowError::Store(e) => {
            tracing::error!(error = %e, "store failed in the consent flow");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong",
                "tollgate could not read or write its store. Try again in a moment; if it \
                 persists, tell your administrators."
                    .to_string(),
            )
        }
        FlowError::LinkUnusable => (
            StatusCode::NOT_FOUND,
            "consent_link_unusable",
            "This consent link cannot be used",
            "The link is unknown, has expired (links are valid for 15 minutes), was already \
             used, or the application was reset since. Run your workflow again to get a new \
             link."
                .to_string(),
        ),
        FlowError::WrongUser => (
            StatusCode::FORBIDDEN,
            "consent_user_mismatch",
            "This consent link is for another user",
            "Nothing was stored. Sign in as the user the link was issued for, or run your \
             workflow again as yourself."
                .to_string(),
        ),
        FlowError::WrongBrowser => (
            StatusCode::BAD_REQUEST,
            "consent_browser_mismatch",
            "This authorization was started in another browser",
            "Nothing was stored. Finish the authorization in the browser where you clicked \
             Authorize: run your workflow again and open the new link there."
                .to_string(),
        ),
        FlowError::Disabled { org, app_name } => (
            StatusCode::FORBIDDEN,
            "app_disabled",
            "This application is disabled",
            format!(
                "The administrators of {org} have disabled {app_name}. No new authorization \
                 can start until they enable it again."
            ),
        ),
        FlowError::AuthorizeUrl(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "app_misconfigured",
            "This application is misconfigured",
            "The authorization URL could not be built. Tell your administrators.".to_string(),
        ),
        FlowError::MissingState => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Incomplete response from the provider",
            "The provider sent you back without a state parameter. Start again from your \
             workflow."
                .to_string(),
        ),
        FlowError::PendingUnusable => (
            StatusCode::BAD_REQUEST,
            "consent_pending_unusable",
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
                (
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "Access was not granted",
                    detail,
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "provider_error",
                    "The provider reported an error",
                    detail,
                )
            }
        }
        FlowError::IssuerMismatch => (
            StatusCode::BAD_REQUEST,
            "issuer_mismatch",
            "Unexpected authorization server",
            "The response did not come from the authorization server this application is \
             configured for. Nothing was stored."
                .to_string(),
        ),
        FlowError::MissingCode => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Incomplete response from the provider",
            "The provider sent you back without an authorization code. Nothing was stored."
                .to_string(),
        ),
        FlowError::Exchange(e) => (
            StatusCode::BAD_GATEWAY,
            "token_exchange_failed",
            "The token exchange failed",
            // The detail (which names the token endpoint) is in the server log.
            format!(
                "Why: {}. Nothing was stored. Run your workflow again to retry.",
                e.caller_reason()
            ),
        ),
        FlowError::AppChanged => (
            StatusCode::CONFLICT,
            "app_changed",
            "The application changed during your authorization",
            "It was reset or deleted while you were at the provider. Nothing was stored. Run \
             your workflow again to start over."
                .to_string(),
        ),
    };
    Refusal {
        status,
        code,
        title,
        detail,
    }
    .respond(json)
}

impl ActsFor for Visitor {
    fn may_act_for(&self, org: &str, user: &str) -> bool {
        Visitor::may_act_for(self, org, user)
    }

    fn who(&self) -> &str {
        self.user().unwrap_or("-")
    }
}

/// The valid `tollgate_consent` cookies the browser sent (a few at most: a sibling site may
/// have added one of its own).
fn browser_cookies(headers: &HeaderMap) -> Vec<ConsentCookie> {
    super::login::session::cookies(headers, COOKIE_NAME)
        .filter_map(ConsentCookie::parse)
        .take(MAX_COOKIES)
        .collect()
}

/// `Set-Cookie` for the consent cookie: HttpOnly, SameSite=Lax, `Path=/` (the callback must
/// receive it), Secure when the public URL is https; a session cookie.
fn set_cookie(state: &WebState, resp: &mut Response, cookie: &ConsentCookie) {
    let https = state.oauth.tokens.redirect_uri().starts_with("https://");
    if let Some(v) = cookie_header(cookie, https) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The `Set-Cookie` value of `cookie`: it lasts the browser session; `Secure` when the public
/// URL is https.
fn cookie_header(cookie: &ConsentCookie, https: bool) -> Option<HeaderValue> {
    super::login::session::set_cookie(COOKIE_NAME, cookie.value(), "/", None, https)
}

/// The `csrf` field of an Authorize form body.
fn csrf_field(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
}

async fn show(
    State(state): State<WebState>,
    Path(ticket_id): Path<String>,
    parts: Parts,
) -> Response {
    let (uri, headers) = (&parts.uri, &parts.headers);
    let json = wants_json(headers);
    let visitor = login::visitor(&state, &parts);
    if visitor == Visitor::Anonymous {
        return not_signed_in(&state, uri.path(), json);
    }
    let (ticket, app) = match state.oauth.flow().ticket(&ticket_id, &visitor).await {
        Ok(found) => found,
        Err(e) => return refused(e, json),
    };
    let (cookie, fresh) = match browser_cookies(headers).into_iter().next() {
        Some(c) => (c, false),
        None => match ConsentCookie::new() {
            Ok(c) => (c, true),
            Err(e) => return refused(FlowError::Store(e), json),
        },
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
    let anyone = match visitor {
        Visitor::Anyone => format!(
            "<p class=\"warning\"><strong>No sign-in is configured</strong> (development \
             only). Anyone holding this link can connect an account to {user}.</p>\n",
            user = esc(&ticket.user)
        ),
        _ => String::new(),
    };
    let body = format!(
        "<h1>Authorize {name}</h1>\n{anyone}{description}\
         <p class=\"prompt\">{prompt}</p>\n\
         <dl><dt>Organization</dt><dd>{org}</dd><dt>User</dt><dd>{user}</dd>\
         <dt>Provider</dt><dd>{provider}</dd><dt>Scopes</dt><dd>{scopes}</dd></dl>\n\
         <p>Authorize sends you to the provider to sign in and approve. Afterwards, requests \
         your workflows make to {name} carry your authorization.</p>\n\
         <form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Authorize</button></form>",
        name = esc(&app.name),
        prompt = esc(&app.approval_prompt),
        org = esc(&ticket.org),
        user = esc(&ticket.user),
        provider = esc(&provider),
        scopes = esc(&scopes),
        csrf = esc(&cookie.csrf(&ticket.id)),
    );
    let mut resp = page(
        StatusCode::OK,
        &format!("Authorize {}", app.name),
        &body,
        Some(&app.authorize_url),
    );
    if fresh {
        set_cookie(&state, &mut resp, &cookie);
    }
    resp
}

async fn authorize(
    State(state): State<WebState>,
    Path(ticket_id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let (uri, headers) = (&parts.uri, &parts.headers);
    let json = wants_json(headers);
    let visitor = login::visitor(&state, &parts);
    if visitor == Visitor::Anonymous {
        return not_signed_in(&state, uri.path(), json);
    }
    let flow = state.oauth.flow();
    // Who, before the form: another user is told so, whatever they posted.
    if let Err(e) = flow.ticket(&ticket_id, &visitor).await {
        return refused(e, json);
    }
    let csrf = csrf_field(&body).unwrap_or_default();
    let cookies = browser_cookies(headers);
    let Some(cookie) = cookies.iter().find(|c| c.csrf_matches(&ticket_id, &csrf)) else {
        return csrf_refused(json);
    };
    let url = match flow.authorize(&ticket_id, &visitor, cookie).await {
        Ok(url) => url,
        Err(e) => return refused(e, json),
    };
    let Ok(location) = HeaderValue::from_str(&url) else {
        return refused(
            FlowError::AuthorizeUrl(crate::oauth::grant::TokenError::Config(
                "the authorization URL is not a valid header value".into(),
            )),
            json,
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
    parts: Parts,
) -> Response {
    let (uri, headers) = (&parts.uri, &parts.headers);
    let json = wants_json(headers);
    let visitor = login::visitor(&state, &parts);
    if visitor == Visitor::Anonymous {
        let back = uri
            .path_and_query()
            .map_or("/oauth/callback", |p| p.as_str());
        return not_signed_in(&state, back, json);
    }
    let param = |name: &str| params.get(name).map(String::as_str);
    let params = Callback {
        state: param("state"),
        code: param("code"),
        error: param("error"),
        error_description: param("error_description"),
        iss: param("iss"),
    };
    let cookies = browser_cookies(headers);
    let granted = match state
        .oauth
        .flow()
        .callback(&params, &visitor, &cookies)
        .await
    {
        Ok(g) => g,
        Err(e) => return refused(e, json),
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
    fn the_consent_cookie_is_secure_under_https_and_read_back() {
        let c = ConsentCookie::new().unwrap();
        let plain = cookie_header(&c, false).unwrap();
        assert_eq!(
            plain.to_str().unwrap(),
            format!(
                "tollgate_consent={}; Path=/; HttpOnly; SameSite=Lax",
                c.value()
            )
        );
        let secure = cookie_header(&c, true).unwrap();
        assert!(secure.to_str().unwrap().ends_with("; SameSite=Lax; Secure"));
        let mut h = HeaderMap::new();
        let sent = format!(
            "other=1; tollgate_consent=bad; tollgate_consent={}",
            c.value()
        );
        h.insert(header::COOKIE, HeaderValue::from_str(&sent).unwrap());
        assert_eq!(browser_cookies(&h), vec![c]);
    }
}
