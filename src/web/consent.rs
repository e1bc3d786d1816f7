//! The consent flow a user runs once per application, in a browser, without JavaScript:
//!
//! - `GET /consent/{ticket}`: what is being authorized (app, description, approval prompt,
//!   org, user) and an Authorize button;
//! - `POST /consent/{ticket}`: consumes the ticket, stores a pending authorization (`state`,
//!   PKCE verifier, redirect URI; single-use, 10 minutes) and redirects (303) to the provider;
//! - `GET /oauth/callback`: consumes the pending authorization (also on `error=`), checks
//!   `iss` (RFC 9207), exchanges the code through tollgate's egress path and stores the
//!   token set with the store's compare-and-swap, so a reset during the consent wins.
//!
//! Every page is server-rendered with every dynamic value HTML-escaped, and is sent with
//! `Cache-Control: no-store`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` (the
//! URLs carry tickets and codes) and a CSP that allows no script at all. Errors are pages
//! with a proper status, and store nothing.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::json;

use super::WebState;
use crate::store::{
    random_id, App, AuditEvent, ConsentTicket, PendingAuthorization, Secret, PENDING_TTL_SECS,
};

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
fn page(status: StatusCode, title: &str, body: &str, form_target: Option<&str>) -> Response {
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
fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
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

fn store_failed(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "store failed in the consent flow");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "tollgate could not read or write its store. Try again in a moment; if it persists, \
         tell your administrators.",
    )
}

fn link_unusable() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "This consent link cannot be used",
        "The link is unknown, has expired (links are valid for 15 minutes), was already used, \
         or the application was reset since. Run your workflow again to get a new link.",
    )
}

/// With `--consent-user-header`, the trusted login header must name the ticket's user.
fn check_user(state: &WebState, headers: &HeaderMap, ticket: &ConsentTicket) -> Option<Response> {
    let name = state.oauth.consent_user_header.as_ref()?;
    let who = headers.get(name).and_then(|v| v.to_str().ok());
    if who == Some(ticket.user.as_str()) {
        return None;
    }
    tracing::warn!(
        org = %ticket.org, app = %ticket.app, ticket_user = %ticket.user,
        signed_in = who.unwrap_or("-"),
        "consent refused: the signed-in user is not the ticket's user"
    );
    Some(error_page(
        StatusCode::FORBIDDEN,
        "This consent link is for another user",
        "Sign in as the user the link was issued for, or run your workflow again as yourself.",
    ))
}

async fn load_app(state: &WebState, org: &str, id: &str) -> Result<App, Response> {
    match state.oauth.store.get_app(org, id).await {
        Err(e) => Err(store_failed(e)),
        Ok(None) => Err(link_unusable()),
        Ok(Some(app)) if !app.enabled => Err(error_page(
            StatusCode::FORBIDDEN,
            "This application is disabled",
            &format!(
                "The administrators of {} have disabled {}. No new authorization can start \
                 until they enable it again.",
                app.org, app.name
            ),
        )),
        Ok(Some(app)) => Ok(app),
    }
}

async fn show(
    State(state): State<WebState>,
    Path(ticket_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ticket = match state.oauth.store.get_ticket(&ticket_id).await {
        Err(e) => return store_failed(e),
        Ok(None) => return link_unusable(),
        Ok(Some(t)) => t,
    };
    if let Some(refused) = check_user(&state, &headers, &ticket) {
        return refused;
    }
    let app = match load_app(&state, &ticket.org, &ticket.app).await {
        Ok(a) => a,
        Err(page) => return page,
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
    headers: HeaderMap,
) -> Response {
    let store = &state.oauth.store;
    // Check the user before consuming, so a wrong browser does not burn the link.
    if state.oauth.consent_user_header.is_some() {
        match store.get_ticket(&ticket_id).await {
            Err(e) => return store_failed(e),
            Ok(None) => return link_unusable(),
            Ok(Some(t)) => {
                if let Some(refused) = check_user(&state, &headers, &t) {
                    return refused;
                }
            }
        }
    }
    let ticket = match store.take_ticket(&ticket_id).await {
        Err(e) => return store_failed(e),
        Ok(None) => return link_unusable(),
        Ok(Some(t)) => t,
    };
    let app = match load_app(&state, &ticket.org, &ticket.app).await {
        Ok(a) => a,
        Err(page) => return page,
    };
    let verifier = if app.pkce {
        match random_id() {
            Ok(v) => Some(Secret::new(v)),
            Err(e) => return store_failed(e),
        }
    } else {
        None
    };
    let now = match state.oauth.clock.now() {
        Ok(now) => now,
        Err(e) => return store_failed(e.into()),
    };
    let pending = match PendingAuthorization::new(
        &ticket.org,
        &ticket.user,
        &ticket.app,
        ticket.generation,
        ticket.incarnation,
        verifier,
        state.oauth.tokens.redirect_uri(),
        now + PENDING_TTL_SECS,
    ) {
        Ok(p) => p,
        Err(e) => return store_failed(e),
    };
    let url = match state.oauth.tokens.authorize_url(
        &app,
        &pending.state,
        pending.pkce_verifier.as_ref(),
    ) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(org = %app.org, app = %app.id, error = %e, "cannot build the authorization URL");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "This application is misconfigured",
                "The authorization URL could not be built. Tell your administrators.",
            );
        }
    };
    if let Err(e) = store.put_pending(pending).await {
        return store_failed(e);
    }
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
    let store = &state.oauth.store;
    let Some(state_param) = params.get("state") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Incomplete response from the provider",
            "The provider sent you back without a state parameter. Start again from your \
             workflow.",
        );
    };
    let pending =
        match store.take_pending(state_param).await {
            Err(e) => return store_failed(e),
            Ok(None) => return error_page(
                StatusCode::BAD_REQUEST,
                "This authorization cannot be completed",
                "The authorization is unknown, has expired (10 minutes), was already completed, \
                 or the application was reset since. Run your workflow again to start over.",
            ),
            Ok(Some(p)) => p,
        };
    if let Some(error) = params.get("error") {
        let denied = error == "access_denied";
        let detail = match params.get("error_description") {
            Some(d) => format!("The provider answered {error}: {d}."),
            None => format!("The provider answered {error}."),
        };
        tracing::info!(org = %pending.org, app = %pending.app, user = %pending.user, error = %error, "consent not granted");
        return error_page(
            if denied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            },
            if denied {
                "Access was not granted"
            } else {
                "The provider reported an error"
            },
            &format!("{detail} Nothing was stored. Run your workflow again to retry."),
        );
    }
    let app = match load_app(&state, &pending.org, &pending.app).await {
        Ok(a) => a,
        Err(page) => return page,
    };
    if let Some(expected) = &app.issuer {
        if params.get("iss") != Some(expected) {
            tracing::warn!(
                org = %app.org, app = %app.id, expected = %expected,
                got = params.get("iss").map(String::as_str).unwrap_or("-"),
                "callback issuer mismatch (RFC 9207): possible mix-up attack"
            );
            return error_page(
                StatusCode::BAD_REQUEST,
                "Unexpected authorization server",
                "The response did not come from the authorization server this application \
                 is configured for. Nothing was stored.",
            );
        }
    }
    let Some(code) = params.get("code") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Incomplete response from the provider",
            "The provider sent you back without an authorization code. Nothing was stored.",
        );
    };
    let grant = match state
        .oauth
        .tokens
        .exchange_code(
            &app,
            code,
            pending.pkce_verifier.as_ref(),
            &pending.redirect_uri,
        )
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(org = %app.org, app = %app.id, user = %pending.user, error = %e, "code exchange failed");
            return error_page(
                StatusCode::BAD_GATEWAY,
                "The token exchange failed",
                &format!("{e}. Nothing was stored. Run your workflow again to retry."),
            );
        }
    };
    let now = match state.oauth.clock.now() {
        Ok(now) => now,
        Err(e) => return store_failed(e.into()),
    };
    let mut token = grant.into_token_set(&app, &pending.user, now, None);
    // Bound to the generation the consent started under: a reset since makes the write fail.
    token.generation = pending.generation;
    let scopes = token.scopes.clone();
    match store.put_token_if_current(token, pending.incarnation).await {
        Err(e) => return store_failed(e),
        Ok(false) => {
            return error_page(
                StatusCode::CONFLICT,
                "The application changed during your authorization",
                "It was reset or deleted while you were at the provider. Nothing was stored. \
                 Run your workflow again to start over.",
            )
        }
        Ok(true) => {}
    }
    let event = AuditEvent::new(
        &app.org,
        &pending.user,
        "authorization.grant",
        &app.id,
        json!({"scopes": scopes}),
    );
    if let Err(e) = store.append_audit(event).await {
        tracing::error!(error = %e, "could not append an audit event");
    }
    tracing::info!(org = %app.org, app = %app.id, user = %pending.user, "authorization granted");
    page(
        StatusCode::OK,
        &format!("{} authorized", app.name),
        &format!(
            "<h1>{name} is authorized</h1>\n<p>{user} in {org} has authorized {name}. You can \
             close this window and return to your workflow: its requests to {name} now carry \
             your authorization.</p>",
            name = esc(&app.name),
            user = esc(&pending.user),
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
