//! Who is signing in at the pages: the one place the web handlers ask ([`visitor`]), and the
//! sign-in itself. `--login` chooses how:
//!
//! - `none` ([`Visitor::Anyone`]): nobody is asked; development only (see `config::login`);
//! - `header` ([`header`]): the platform's login proxy names the user, believed only from
//!   `--trusted-proxies`;
//! - `oidc` ([`oidc`]): tollgate signs the person in with the platform's IdP (`GET /login`,
//!   `GET /login/callback`, `POST /logout`) and keeps them signed in with the session cookie
//!   ([`session`]).
//!
//! Pages that need a signed-in person call [`sign_in`] when the visitor is
//! [`Visitor::Anonymous`]: with OIDC it sends the browser to `/login` and back.

pub mod header;
pub mod oidc;
pub mod session;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header as h, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::WebState;
use crate::clock::Clock;
use crate::config::login::{HeaderLogin, LoginConfig};
use oidc::Oidc;
use session::{LoginState, Purpose, Session, SessionKeys, LOGIN_COOKIE, SESSION_COOKIE};

/// Longest `return` path kept; a longer one returns to `/`.
const MAX_RETURN: usize = 2048;
/// The path of the sign-in-in-progress cookie (sent to `/login/callback` only).
const LOGIN_COOKIE_PATH: &str = "/login";

/// A person signed in at the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user, compared with a ticket's user.
    pub user: String,
    /// The org, when the login provides one; compared with a ticket's org.
    pub org: Option<String>,
    /// Roles, when the login provides them (for the admin pages).
    pub roles: Vec<String>,
}

/// Who is making a request to a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visitor {
    /// No login is configured (`--login none`): nobody is asked who they are.
    Anyone,
    /// Signed in.
    User(SignedIn),
    /// A login is configured, but this request carries no (trusted) sign-in.
    Anonymous,
}

impl Visitor {
    /// Whether this visitor may act for `user` of `org`: anyone without a login, else the
    /// signed-in user must be `user`, and of `org` when the login names an org.
    pub fn may_act_for(&self, org: &str, user: &str) -> bool {
        match self {
            Visitor::Anyone => true,
            Visitor::User(s) => s.user == user && s.org.as_deref().is_none_or(|o| o == org),
            Visitor::Anonymous => false,
        }
    }

    /// The signed-in user, for logs.
    pub fn user(&self) -> Option<&str> {
        match self {
            Visitor::User(s) => Some(&s.user),
            _ => None,
        }
    }
}

/// How people sign in, as the web handlers need it.
enum Mode {
    /// `--login none`: everyone is [`Visitor::Anyone`].
    None,
    /// `--login header`: the trusted proxy's headers.
    Header(HeaderLogin),
    /// `--login oidc`: the session cookie, minted by `/login/callback`.
    Oidc(Box<Oidc>),
}

/// The sign-in configured for the pages.
pub struct Login {
    /// `--login`.
    mode: Mode,
    /// Signs and verifies the session and login-state cookies; replaced when the session key
    /// ring changes (`set_keys`).
    keys: std::sync::RwLock<std::sync::Arc<SessionKeys>>,
    /// Cookies get `Secure` when the public URL is https.
    secure: bool,
    /// Session expiry.
    clock: Clock,
}

impl Login {
    /// The sign-in for `cfg`. `public_url` gives the OIDC redirect URI and whether cookies
    /// are `Secure`; `tls` is how the IdP is reached (platform roots plus
    /// `--upstream-ca-file`).
    pub fn new(
        cfg: &LoginConfig,
        keys: SessionKeys,
        public_url: &str,
        tls: rustls::ClientConfig,
        clock: Clock,
    ) -> Login {
        let mode = match cfg {
            LoginConfig::None { .. } => Mode::None,
            LoginConfig::Header(hl) => Mode::Header(hl.clone()),
            LoginConfig::Oidc(o) => Mode::Oidc(Box::new(Oidc::new(o.clone(), public_url, tls))),
        };
        Login {
            mode,
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            secure: public_url.starts_with("https://"),
            clock,
        }
    }

    /// Fetches the IdP's discovery document now, so a misconfiguration shows in the log at
    /// start rather than at the first sign-in. Does nothing without OIDC.
    pub async fn warm_up(&self) {
        if let Mode::Oidc(o) = &self.mode {
            match o.discover().await {
                Ok(_) => tracing::info!(issuer = %o.issuer(), "OIDC sign-in ready"),
                Err(e) => tracing::warn!(issuer = %o.issuer(), error = %e,
                    "OIDC discovery failed; sign-ins retry it"),
            }
        }
    }

    /// Signs and verifies with `keys` from now on (the session key ring changed).
    pub fn set_keys(&self, keys: SessionKeys) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(keys);
    }

    /// The keys now (also `web::csrf`'s).
    pub(crate) fn keys(&self) -> std::sync::Arc<SessionKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn now(&self) -> Option<u64> {
        self.clock.now().ok()
    }

    /// The session cookie's visitor: signed by a session key and not expired.
    fn session_visitor(&self, parts: &Parts) -> Visitor {
        let Some(now) = self.now() else {
            return Visitor::Anonymous;
        };
        let keys = self.keys();
        session::cookies(&parts.headers, SESSION_COOKIE)
            .filter_map(|c| keys.open::<Session>(Purpose::Session, c))
            .find(|s| s.exp > now)
            .map_or(Visitor::Anonymous, |s| {
                Visitor::User(SignedIn {
                    user: s.user,
                    org: s.org,
                    roles: s.roles,
                })
            })
    }
}

/// Who sent the request whose head is `parts`.
pub fn visitor(state: &WebState, parts: &Parts) -> Visitor {
    match &state.login.mode {
        Mode::None => Visitor::Anyone,
        Mode::Header(cfg) => header::visitor(cfg, parts),
        Mode::Oidc(_) => state.login.session_visitor(parts),
    }
}

/// For a page whose visitor is not signed in: with OIDC, a `303` to `/login` that comes back
/// to `return_to` (a same-origin path); otherwise `None` (nothing tollgate can do: the
/// platform's login proxy, or nobody, signs people in).
pub fn sign_in(state: &WebState, return_to: &str) -> Option<Response> {
    let Mode::Oidc(_) = state.login.mode else {
        return None;
    };
    let target: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return", &safe_return(Some(return_to)))
        .finish();
    Some(redirect(&format!("/login?{target}"), Vec::new()))
}

/// The sign-in routes (they answer `404` unless `--login oidc`).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/login", get(login))
        .route("/login/callback", get(callback))
        .route("/logout", post(logout))
}

/// `return` as a same-origin path (`/...`, not `//host` nor `/\host`, printable, bounded);
/// anything else is `/`.
pub fn safe_return(r: Option<&str>) -> String {
    let Some(r) = r else {
        return "/".into();
    };
    let ok = r.len() <= MAX_RETURN
        && r.starts_with('/')
        && !r.starts_with("//")
        && !r.contains('\\')
        && !r.chars().any(|c| c.is_control() || c.is_whitespace())
        && r.parse::<http::uri::PathAndQuery>().is_ok();
    if ok {
        r.to_string()
    } else {
        "/".into()
    }
}

/// The query parameter `name` of `parts`.
fn param(parts: &Parts, name: &str) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /login?return=/path`: starts a sign-in at the IdP.
async fn login(State(state): State<WebState>, parts: Parts) -> Response {
    let login = &state.login;
    let Mode::Oidc(oidc) = &login.mode else {
        return not_found();
    };
    let (Some(now), Some(st), Some(nonce), Some(verifier)) = (
        login.now(),
        session::random_token(),
        session::random_token(),
        session::random_token(),
    ) else {
        return refused(
            &parts,
            StatusCode::INTERNAL_SERVER_ERROR,
            "login_unavailable",
            "Sign-in is unavailable",
            "tollgate could not start a sign-in. Try again in a moment.",
        );
    };
    let pending = LoginState {
        state: st,
        nonce,
        verifier,
        return_to: safe_return(param(&parts, "return").as_deref()),
        exp: now + session::LOGIN_TTL,
    };
    let url = match oidc.authorize_url(&pending).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "OIDC sign-in cannot start");
            return refused(
                &parts,
                StatusCode::BAD_GATEWAY,
                "login_unavailable",
                "Sign-in is unavailable",
                "tollgate cannot reach the identity provider. Try again in a moment; if it \
                 persists, tell your administrators.",
            );
        }
    };
    let cookie = login.keys().seal(Purpose::Login, &pending).and_then(|v| {
        session::set_cookie(
            LOGIN_COOKIE,
            &v,
            LOGIN_COOKIE_PATH,
            Some(session::LOGIN_TTL),
            login.secure,
        )
    });
    match cookie {
        Some(c) => redirect(&url, vec![c]),
        None => refused(
            &parts,
            StatusCode::BAD_REQUEST,
            "login_unavailable",
            "Sign-in is unavailable",
            "The page to return to is too long. Start again from the link you followed.",
        ),
    }
}

/// `GET /login/callback`: the IdP sends the browser back with a code; tollgate exchanges
/// it, verifies the ID token and sets the session cookie.
async fn callback(State(state): State<WebState>, parts: Parts) -> Response {
    let login = &state.login;
    let Mode::Oidc(oidc) = &login.mode else {
        return not_found();
    };
    let now = login.now().unwrap_or(u64::MAX);
    let returned = param(&parts, "state");
    // The cookie whose state is the callback's: the sign-in this browser started. (A plain
    // comparison: the cookie is this browser's own, so its timing reveals nothing new.)
    let pending = session::cookies(&parts.headers, LOGIN_COOKIE)
        .filter_map(|c| login.keys().open::<LoginState>(Purpose::Login, c))
        .find(|p| p.exp > now && returned.as_deref() == Some(p.state.as_str()));
    let Some(pending) = pending else {
        return refused(
            &parts,
            StatusCode::BAD_REQUEST,
            "login_state_invalid",
            "This sign-in cannot be completed",
            "It was not started in this browser, took longer than 10 minutes, or was already \
             completed. Go back to the page you wanted and sign in again.",
        );
    };
    // Whatever happens next, this sign-in is over: its cookie is cleared.
    let mut resp = finish(login, oidc, &parts, &pending, now).await;
    if let Some(c) = session::set_cookie(LOGIN_COOKIE, "", LOGIN_COOKIE_PATH, Some(0), login.secure)
    {
        resp.headers_mut().append(h::SET_COOKIE, c);
    }
    resp
}

/// The callback of `pending`: the IdP's error, or the code exchanged and the ID token
/// verified into a session cookie and a redirect to where the person was going.
async fn finish(
    login: &Login,
    oidc: &Oidc,
    parts: &Parts,
    pending: &LoginState,
    now: u64,
) -> Response {
    if let Some(error) = param(parts, "error") {
        tracing::info!(error = %error, "the IdP did not sign the person in");
        return refused(
            parts,
            StatusCode::FORBIDDEN,
            "login_denied",
            "You were not signed in",
            "The identity provider did not sign you in. Go back to the page you wanted to try \
             again.",
        );
    }
    let Some(code) = param(parts, "code") else {
        return refused(
            parts,
            StatusCode::BAD_REQUEST,
            "login_failed",
            "Incomplete answer from the identity provider",
            "It sent you back without an authorization code. Sign in again.",
        );
    };
    let who = match oidc.finish(pending, &code).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC sign-in failed");
            return refused(
                parts,
                StatusCode::BAD_GATEWAY,
                "login_failed",
                "Sign-in failed",
                "tollgate could not confirm who you are with the identity provider. Sign in \
                 again; if it persists, tell your administrators.",
            );
        }
    };
    tracing::info!(user = %who.user, org = who.org.as_deref(), "signed in at the pages");
    let signed = Session {
        user: who.user,
        org: who.org,
        roles: who.roles,
        exp: now.saturating_add(session::SESSION_TTL),
    };
    let cookie = login.keys().seal(Purpose::Session, &signed).and_then(|v| {
        session::set_cookie(
            SESSION_COOKIE,
            &v,
            "/",
            Some(session::SESSION_TTL),
            login.secure,
        )
    });
    match cookie {
        Some(cookie) => redirect(&pending.return_to, vec![cookie]),
        None => refused(
            parts,
            StatusCode::BAD_GATEWAY,
            "login_failed",
            "Sign-in failed",
            "The identity provider's answer does not fit in a session. Tell your \
             administrators.",
        ),
    }
}

/// `POST /logout`: ends the session. Only from this site: a form on another site must not
/// sign the person out (browsers say where a request comes from in `Sec-Fetch-Site`).
async fn logout(State(state): State<WebState>, parts: Parts) -> Response {
    let site = parts
        .headers
        .get("sec-fetch-site")
        .map(HeaderValue::as_bytes);
    if matches!(site, Some(b"cross-site" | b"same-site")) {
        return refused(
            &parts,
            StatusCode::FORBIDDEN,
            "logout_cross_site",
            "Sign-out refused",
            "Another site asked to sign you out. Use the sign-out button on this site.",
        );
    }
    let mut resp = super::page::page(
        StatusCode::OK,
        "Signed out",
        "<h1>You are signed out</h1>\n<p>You can close this window.</p>",
        None,
    );
    if let Some(c) = session::set_cookie(SESSION_COOKIE, "", "/", Some(0), state.login.secure) {
        resp.headers_mut().append(h::SET_COOKIE, c);
    }
    resp
}

/// A `303` to `location` (an IdP URL or a same-origin path), setting `cookies`.
fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let headers = resp.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => headers.insert(h::LOCATION, v),
        Err(_) => headers.insert(h::LOCATION, HeaderValue::from_static("/")),
    };
    headers.insert(h::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(h::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    for c in cookies {
        headers.append(h::SET_COOKIE, c);
    }
    resp
}

/// A failed sign-in step: a page for browsers, JSON for clients that ask for it; both name
/// `code`, and carry `Proxy-Status`.
fn refused(parts: &Parts, status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    let wants_json = parts
        .headers
        .get(h::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let mut resp = if wants_json {
        (status, Json(json!({"error": code, "message": detail}))).into_response()
    } else {
        // Every text here is one of this module's literals: nothing to escape.
        let body = format!(
            "<h1>{title}</h1>\n<p class=\"error\">{detail}</p>\n<p>Error code: <code>{code}</code></p>"
        );
        super::page::page(status, title, &body, None)
    };
    let kind = if status.is_server_error() {
        "destination_unavailable"
    } else {
        "http_request_denied"
    };
    if let Ok(v) = HeaderValue::from_str(&format!("tollgate; error={kind}; details=\"{code}\"")) {
        resp.headers_mut().insert("proxy-status", v);
    }
    resp
}

fn not_found() -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": "no such endpoint"})),
    )
        .into_response();
    resp.headers_mut().insert(
        "proxy-status",
        HeaderValue::from_static("tollgate; error=http_request_denied; details=\"not_found\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_origin() {
        for (given, kept) in [
            (Some("/consent/abc?x=1"), "/consent/abc?x=1"),
            (Some("/"), "/"),
            (None, "/"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/x"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/\tx"), "/"),
            (Some("/a b"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some(""), "/"),
        ] {
            assert_eq!(safe_return(given), kept, "{given:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_RETURN));
        assert_eq!(safe_return(Some(&long)), "/");
    }

    #[test]
    fn cookies_are_secure_over_https_only() {
        let login = |url: &str| {
            Login::new(
                &LoginConfig::None { explicit: true },
                SessionKeys::from_bytes(b"k"),
                url,
                crate::tls::upstream_client_config(None).unwrap(),
                Clock::system(),
            )
        };
        assert!(login("https://tollgate.example").secure);
        assert!(!login("http://127.0.0.1:8080").secure);
    }

    #[test]
    fn visitors_may_act_for() {
        let alice = Visitor::User(SignedIn {
            user: "alice".into(),
            org: Some("acme".into()),
            roles: vec![],
        });
        assert!(alice.may_act_for("acme", "alice"));
        assert!(!alice.may_act_for("other", "alice"));
        assert!(!alice.may_act_for("acme", "bob"));
        assert!(Visitor::Anyone.may_act_for("acme", "bob"));
        assert!(!Visitor::Anonymous.may_act_for("acme", "alice"));
    }
}
