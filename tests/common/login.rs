//! Signing in at the pages as a browser would (`--login oidc`): `GET /login`, the IdP's
//! `/authorize`, `GET /login/callback` with the cookie tollgate set, and the session cookie
//! that results. Also session cookies minted with the data dir's session key, written from
//! the cookie format documented in `web::login::session` (so the tests pin that format).

use std::net::SocketAddr;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::json;

use super::idp::{Idp, CLIENT_ID, CLIENT_SECRET};
use super::oauth::{http, setup_env, split, Env};
use super::Resp;

/// Every `Set-Cookie` of a response.
pub fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The value `r` sets for cookie `name` (`Some("")` when it clears it).
pub fn cookie_value(r: &Resp, name: &str) -> Option<String> {
    set_cookies(r).iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The whole `Set-Cookie` line for `name`.
pub fn cookie_line(r: &Resp, name: &str) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// What a browser saw signing in.
pub struct SignIn {
    /// tollgate's answer to `GET /login?return=...`.
    pub login: Resp,
    /// tollgate's answer to the callback.
    pub callback: Resp,
    /// The session cookie's value, when one was set.
    pub session: Option<String>,
}

/// Signs in at `web` through `idp` (as whoever the IdP is set to sign in), asking to return
/// to `return_to` (sent as is, URL-encoded).
pub async fn sign_in(web: SocketAddr, idp: &Idp, return_to: &str) -> SignIn {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return", return_to)
        .finish();
    let login = http(web, "GET", &format!("/login?{q}"), &[]).await;
    assert_eq!(login.status, 303, "{}", login.text());
    let login_cookie = cookie_value(&login, "tollgate_login").expect("login-state cookie");
    let (at, authorize) = split(&login.header("location").unwrap());
    assert_eq!(
        at, idp.addr,
        "/login sent the browser elsewhere than the IdP"
    );
    let at_idp = http(idp.addr, "GET", &authorize, &[]).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let (back, callback_path) = split(&at_idp.header("location").unwrap());
    assert_eq!(
        back, web,
        "the IdP sent the browser elsewhere than tollgate"
    );
    let cookie = format!("tollgate_login={login_cookie}");
    let callback = http(web, "GET", &callback_path, &[("cookie", &cookie)]).await;
    let session = cookie_value(&callback, "tollgate_session").filter(|v| !v.is_empty());
    SignIn {
        login,
        callback,
        session,
    }
}

/// `GET path` carrying the session cookie `value`.
pub async fn get_signed_in(web: SocketAddr, path: &str, value: &str) -> Resp {
    let cookie = format!("tollgate_session={value}");
    http(web, "GET", path, &[("cookie", &cookie)]).await
}

/// A session cookie for `user` (of `org`) expiring at `exp`, signed with the session key of
/// the data dir `data`.
pub fn mint_session(data: &Path, user: &str, org: Option<&str>, exp: u64) -> String {
    let key = std::fs::read(data.join("keys/session.key")).expect("data/keys/session.key");
    let key = key.trim_ascii();
    let id = ring::digest::digest(
        &ring::digest::SHA256,
        &[b"tollgate session key id\0", key].concat(),
    );
    let mut claims = json!({"u": user, "exp": exp});
    if let Some(o) = org {
        claims["o"] = json!(o);
    }
    let signed = format!(
        "v1.{}.{}",
        B64.encode(&id.as_ref()[..6]),
        B64.encode(claims.to_string())
    );
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        &[b"tollgate/session\0", signed.as_bytes()].concat(),
    );
    format!("{signed}.{}", B64.encode(mac.as_ref()))
}

/// tollgate with `--login oidc` at `idp`, given as environment variables, and `flags` (with
/// a provider and acme's app, as [`setup_env`]). Keep the directory: it holds the client
/// secret file.
pub async fn start_oidc(idp: &Idp, flags: &[&str]) -> (Env, tempfile::TempDir) {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    let issuer = idp.issuer();
    let env = setup_env(
        flags,
        &[
            ("TOLLGATE_LOGIN", "oidc"),
            ("TOLLGATE_LOGIN_OIDC_ISSUER", &issuer),
            ("TOLLGATE_LOGIN_OIDC_CLIENT_ID", CLIENT_ID),
            (
                "TOLLGATE_LOGIN_OIDC_CLIENT_SECRET_FILE",
                secret.to_str().unwrap(),
            ),
        ],
        |_, _| {},
    )
    .await;
    (env, secret_dir)
}
