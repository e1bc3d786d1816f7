//! TEST-GRADE OAuth 2.0 provider and protected API for `tollgate demo`. Not for real use:
//! one user (`alice`), one client, state in memory, no sign-in. It exists so the demo needs
//! no network and no account anywhere.
//!
//! - `GET /authorize`: a page with an Approve button (the user "consents" by clicking it);
//! - `POST /authorize`: issues a single-use code bound to the redirect URI and the PKCE S256
//!   challenge, and redirects back to tollgate's callback with `code`, `state` and `iss`;
//! - `POST /token`: client authentication (HTTP Basic or form), the `authorization_code` grant
//!   (PKCE required) and the `refresh_token` grant (rotating);
//! - the API (its own listener): any path, `200` with who called when the bearer token is one
//!   this provider issued, `401` with `WWW-Authenticate: Bearer error="invalid_token"` otherwise.
//!
//! Every map is bounded ([`MAX_ENTRIES`]); past the bound the oldest half is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::web::listener::{serve, WebSettings};

/// The one user of the demo provider.
pub const USER: &str = "alice";

/// The client tollgate is registered as.
pub const CLIENT_ID: &str = "tollgate-demo";

/// Codes, access tokens and refresh tokens kept at most (each).
const MAX_ENTRIES: usize = 1024;

/// Lifetime of issued access tokens, in seconds.
const ACCESS_TTL: u64 = 3600;

/// A code issued by `POST /authorize`, waiting for its exchange.
struct Code {
    /// The redirect URI the code was issued for (the exchange must name it again).
    redirect_uri: String,
    /// The PKCE S256 challenge the exchange's verifier must match.
    challenge: String,
    /// Order of issue, to drop the oldest when full.
    serial: u64,
}

/// What the provider remembers.
#[derive(Default)]
struct Books {
    /// Issued codes, by code.
    codes: HashMap<String, Code>,
    /// Valid access tokens → order of issue.
    access: HashMap<String, u64>,
    /// Valid refresh tokens → order of issue.
    refresh: HashMap<String, u64>,
    /// Counter for the order of issue.
    serial: u64,
}

/// The provider's shared state.
struct Inner {
    /// `http://127.0.0.1:PORT`: the issuer, sent as `iss` on the redirect.
    issuer: String,
    /// The client secret tollgate must present at `/token`.
    client_secret: String,
    /// The only redirect URI accepted (tollgate's callback), known once tollgate is bound.
    redirect_uri: OnceLock<String>,
    /// Codes and tokens.
    books: Mutex<Books>,
}

/// A running demo provider and API.
pub struct DemoProvider {
    /// Base URL and issuer: `/authorize`, `/token`.
    pub issuer: String,
    /// The protected API's address (plain HTTP).
    pub api: SocketAddr,
    /// The client secret tollgate is configured with.
    pub client_secret: String,
    /// Shared with the handlers (the redirect URI is set after start).
    inner: Arc<Inner>,
}

/// Limits of the demo's two small listeners.
fn settings() -> WebSettings {
    WebSettings {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 64,
        shutdown_grace: Duration::from_secs(1),
        open: Default::default(),
    }
}

impl DemoProvider {
    /// Binds the provider and the API on 127.0.0.1:0 and serves them until `shutdown`.
    /// Authorization requests are refused until [`DemoProvider::accept_redirect`] names
    /// tollgate's callback.
    pub async fn start(shutdown: CancellationToken) -> std::io::Result<DemoProvider> {
        let provider = TcpListener::bind("127.0.0.1:0").await?;
        let api = TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", provider.local_addr()?);
        let api_addr = api.local_addr()?;
        let client_secret = random().map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            client_secret: client_secret.clone(),
            redirect_uri: OnceLock::new(),
            books: Mutex::new(Books::default()),
        });
        let provider_routes = Router::new()
            .route("/authorize", get(authorize_page).post(approve))
            .route("/token", axum::routing::post(token))
            .with_state(inner.clone());
        let api_routes = Router::new().fallback(api_call).with_state(inner.clone());
        tokio::spawn(serve(
            provider,
            provider_routes,
            settings(),
            shutdown.clone(),
        ));
        tokio::spawn(serve(api, api_routes, settings(), shutdown));
        Ok(DemoProvider {
            issuer,
            api: api_addr,
            client_secret,
            inner,
        })
    }

    /// Sets tollgate's OAuth callback as the one redirect URI accepted (once).
    pub fn accept_redirect(&self, uri: String) {
        let _ = self.inner.redirect_uri.set(uri);
    }
}

/// 256 random bits, base64url: codes, tokens, the client secret.
fn random() -> Result<String, String> {
    crate::store::random_id().map_err(|e| e.to_string())
}

/// Minimal HTML escaping for the values echoed into the approve page.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A JSON error answer.
fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({ "error": code }))).into_response()
}

/// The authorization request's parameters, as the page receives and re-posts them.
#[derive(serde::Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
}

impl Inner {
    /// The request's problem, if any: what a strict provider checks before showing a page.
    fn check(&self, p: &AuthorizeParams) -> Option<&'static str> {
        if p.response_type.as_deref() != Some("code") {
            return Some("unsupported_response_type");
        }
        if p.client_id.as_deref() != Some(CLIENT_ID) {
            return Some("unauthorized_client");
        }
        if p.redirect_uri.is_none()
            || p.redirect_uri.as_ref() != self.redirect_uri.get()
            || p.state.is_none()
        {
            return Some("invalid_request");
        }
        if p.code_challenge.is_none() || p.code_challenge_method.as_deref() != Some("S256") {
            return Some("invalid_request: PKCE S256 is required");
        }
        None
    }
}

/// `GET /authorize`: the approve page. The hidden fields carry the request to `POST`.
async fn authorize_page(State(p): State<Arc<Inner>>, Query(q): Query<AuthorizeParams>) -> Response {
    if let Some(problem) = p.check(&q) {
        return error(StatusCode::BAD_REQUEST, problem);
    }
    let hidden = |name: &str, v: &Option<String>| {
        format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape(v.as_deref().unwrap_or(""))
        )
    };
    let fields = [
        hidden("response_type", &q.response_type),
        hidden("client_id", &q.client_id),
        hidden("redirect_uri", &q.redirect_uri),
        hidden("state", &q.state),
        hidden("code_challenge", &q.code_challenge),
        hidden("code_challenge_method", &q.code_challenge_method),
        hidden("scope", &q.scope),
    ]
    .concat();
    let scope = escape(q.scope.as_deref().unwrap_or("(none)"));
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Demo provider (test-grade)</title></head>
<body><p><strong>tollgate demo provider: TEST-GRADE, not a real identity provider.</strong></p>
<h1>Approve access?</h1>
<p>You are <b>{USER}</b>. The application <b>{CLIENT_ID}</b> (tollgate) asks to call the demo API as you, with scope <code>{scope}</code>.</p>
<form method="post" action="/authorize">{fields}<button type="submit" id="approve">Approve</button></form>
</body></html>"#
    ))
    .into_response()
}

/// `POST /authorize`: the user clicked Approve; issue a code and go back to tollgate.
async fn approve(State(p): State<Arc<Inner>>, Form(q): Form<AuthorizeParams>) -> Response {
    if let Some(problem) = p.check(&q) {
        return error(StatusCode::BAD_REQUEST, problem);
    }
    let (Some(redirect_uri), Some(state), Some(challenge)) =
        (q.redirect_uri, q.state, q.code_challenge)
    else {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let Ok(code) = random() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    {
        let Ok(mut books) = p.books.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
        };
        books.serial += 1;
        let serial = books.serial;
        if books.codes.len() >= MAX_ENTRIES {
            books
                .codes
                .retain(|_, c| c.serial + (MAX_ENTRIES as u64) / 2 > serial);
        }
        books.codes.insert(
            code.clone(),
            Code {
                redirect_uri: redirect_uri.clone(),
                challenge,
                serial,
            },
        );
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", &state)
        .append_pair("iss", &p.issuer)
        .finish();
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("{redirect_uri}?{query}"))],
    )
        .into_response()
}

/// The client id and secret from HTTP Basic, or else from the form.
fn client_auth(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    match basic {
        Some(pair) => {
            let (id, secret) = pair.split_once(':').unwrap_or((&pair, ""));
            (decode(id), decode(secret))
        }
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    }
}

/// Remembers a fresh access token and refresh token; drops the oldest half of a full map.
fn issue(books: &mut Books) -> Result<(String, String), String> {
    let (at, rt) = (random()?, random()?);
    books.serial += 1;
    let serial = books.serial;
    for map in [&mut books.access, &mut books.refresh] {
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, s| *s + (MAX_ENTRIES as u64) / 2 > serial);
        }
    }
    books.access.insert(at.clone(), serial);
    books.refresh.insert(rt.clone(), serial);
    Ok((at, rt))
}

/// `POST /token`: the code and refresh grants.
async fn token(
    State(p): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (id, secret) = client_auth(&headers, &form);
    if id != CLIENT_ID || secret != p.client_secret {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let Ok(mut books) = p.books.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    match get("grant_type") {
        "authorization_code" => {
            let Some(code) = books.codes.remove(get("code")) else {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let digest =
                ring::digest::digest(&ring::digest::SHA256, get("code_verifier").as_bytes());
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
            if code.redirect_uri != get("redirect_uri") || computed != code.challenge {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
        }
        "refresh_token" => {
            if books.refresh.remove(get("refresh_token")).is_none() {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
        }
        _ => return error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
    let Ok((at, rt)) = issue(&mut books) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    Json(json!({
        "access_token": at, "token_type": "Bearer", "refresh_token": rt,
        "expires_in": ACCESS_TTL, "scope": "demo:read",
    }))
    .into_response()
}

/// The protected API: who called, when the bearer token is one the provider issued.
async fn api_call(
    State(p): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = match (token, p.books.lock()) {
        (Some(t), Ok(books)) => books.access.contains_key(t),
        _ => false,
    };
    if !valid {
        let mut r = error(StatusCode::UNAUTHORIZED, "invalid_token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(r#"Bearer realm="demo-api", error="invalid_token""#),
        );
        return r;
    }
    Json(json!({
        "api": "tollgate demo API (test-grade)",
        "caller": USER,
        "authenticated_by": "a bearer token tollgate injected (the runner never saw it)",
        "method": method.as_str(),
        "path": uri.path(),
    }))
    .into_response()
}
