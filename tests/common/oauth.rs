//! The token-injection fixture: the real `tollgate` with the `LOCAL` policy, the in-process
//! provider ([`super::provider`]) and an app `crm` for it, and what a runner and a browser do
//! with them (call the API through the proxy, walk the consent flow).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::policies::LOCAL as POLICY;
use super::provider::Provider;
use super::*;

/// What a runner sends as its own `Authorization`; tollgate must replace it.
pub const CLIENT_AUTH: &str = "Bearer client-own-token";

pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn app_spec(p: &Provider) -> Value {
    json!({
        "id": "crm",
        "name": "Acme CRM",
        "description": "Customer records <b>and</b> deals",
        "approval_prompt": "Allow the runner to read & write your CRM records?",
        "authorize_url": format!("{}/authorize", p.issuer()),
        "token_url": format!("{}/token", p.issuer()),
        "revocation_url": format!("{}/revoke", p.issuer()),
        "issuer": p.issuer(),
        "client_id": "client-1",
        "client_secret": "sk-CLIENT-SECRET",
        "scopes": ["read", "write"],
        "egress_policy": "local",
        "domains": ["localhost"],
        "upstream_tls": false,
        "authorize_params": {"access_type": "offline"},
    })
}

pub struct Env {
    pub tg: Tollgate,
    pub p: Provider,
    pub admin: String,
}

pub async fn setup(flags: &[&str], tweak: impl FnOnce(&mut Value, &Provider)) -> Env {
    let (tg, p, admin) = start_with_app(flags, app_spec, tweak).await;
    Env { tg, p, admin }
}

/// A provider, tollgate under [`POLICY`] with `flags`, acme's admin token, and acme's app
/// `spec(provider)` (after `tweak`) created through the admin API. Shared by the OAuth and the
/// webhook harnesses.
pub async fn start_with_app(
    flags: &[&str],
    spec: fn(&Provider) -> Value,
    tweak: impl FnOnce(&mut Value, &Provider),
) -> (Tollgate, Provider, String) {
    start_with_app_env(flags, &[], spec, tweak).await
}

/// As [`setup`], with environment variables for the server.
pub async fn setup_env(
    flags: &[&str],
    env: &[(&str, &str)],
    tweak: impl FnOnce(&mut Value, &Provider),
) -> Env {
    let (tg, p, admin) = start_with_app_env(flags, env, app_spec, tweak).await;
    Env { tg, p, admin }
}

/// As [`start_with_app`], with environment variables for the server.
pub async fn start_with_app_env(
    flags: &[&str],
    env: &[(&str, &str)],
    spec: fn(&Provider) -> Value,
    tweak: impl FnOnce(&mut Value, &Provider),
) -> (Tollgate, Provider, String) {
    let p = Provider::start().await;
    let tg = Tollgate::start_env(POLICY, flags, env);
    let admin = tg.admin_token("acme", "root");
    let mut spec = spec(&p);
    tweak(&mut spec, &p);
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    (tg, p, admin)
}

/// One request to `addr` (origin-form) with headers.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send_one(addr, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// `http://127.0.0.1:port/path?q` → (address, `/path?q`).
pub fn split(url: &str) -> (SocketAddr, String) {
    let uri: hyper::Uri = url.parse().unwrap();
    let addr = uri.authority().unwrap().as_str().parse().unwrap();
    (addr, uri.path_and_query().unwrap().to_string())
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Env {
    /// A runner's request to the API through the proxy.
    pub async fn call_port(
        &self,
        org: &str,
        user: &str,
        port: u16,
        method: &str,
        body: &str,
    ) -> Resp {
        let pa = format!("Bearer {}", self.tg.token(org, user));
        proxy_request(
            self.tg.proxy,
            method,
            &format!("http://localhost:{port}/records"),
            &[("proxy-authorization", &pa), ("authorization", CLIENT_AUTH)],
            body,
        )
        .await
    }

    pub async fn call(&self, org: &str, user: &str) -> Resp {
        self.call_port(org, user, self.p.api.port(), "GET", "")
            .await
    }

    /// First call → 401 with a consent URL.
    pub async fn consent_url(&self, org: &str, user: &str) -> String {
        let r = self.call(org, user).await;
        assert_eq!(r.status, 401, "{}", r.text());
        r.json()["consent_url"].as_str().unwrap().to_string()
    }

    /// GET the consent page, POST it, follow the provider's redirect to the callback, as a
    /// browser would. Returns the callback's response and its path.
    pub async fn complete(&self, consent_url: &str, headers: &[(&str, &str)]) -> (Resp, String) {
        let mut browser = super::consent::Browser::with(headers);
        let callback = self.to_callback(&mut browser, consent_url).await;
        (browser.get(self.tg.web, &callback).await, callback)
    }

    /// `browser` opens the consent page, clicks Authorize and signs in at the provider:
    /// returns the callback path (with `code` and `state`) the provider sent it back to.
    pub async fn to_callback(
        &self,
        browser: &mut super::consent::Browser,
        consent_url: &str,
    ) -> String {
        let (web, path) = split(consent_url);
        assert_eq!(web, self.tg.web);
        let post = browser.consent(web, &path).await;
        assert_eq!(post.status, 303, "{}", post.text());
        let (idp, authorize) = split(&post.header("location").unwrap());
        assert_eq!(idp, self.p.addr);
        let at_idp = http(idp, "GET", &authorize, &[]).await;
        assert_eq!(at_idp.status, 302, "{}", at_idp.text());
        let (back, callback) = split(&at_idp.header("location").unwrap());
        assert_eq!(back, self.tg.web);
        callback
    }

    /// The whole consent for `user`; asserts success.
    pub async fn consent(&self, org: &str, user: &str) {
        let url = self.consent_url(org, user).await;
        let (r, _) = self.complete(&url, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// A request to the admin API as acme's admin.
    pub async fn admin_call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        web_request(self.tg.web, method, path, Some(&self.admin), body).await
    }

    pub async fn authorizations(&self, app: &str) -> Vec<Value> {
        let r = self
            .admin_call("GET", &format!("/v1/apps/{app}/authorizations"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["authorizations"].as_array().unwrap().clone()
    }

    /// Polls until `user`'s grant expires within a second (the list reads the store).
    pub async fn wait_due(&self, user: &str) -> bool {
        wait_until(Duration::from_secs(10), async || {
            let list = self.authorizations("crm").await;
            list.iter()
                .find(|a| a["user"] == user)
                .and_then(|a| super::unix_time(&a["expires_at"]))
                .is_some_and(|exp| now() + 1 >= exp)
        })
        .await
    }

    /// Polls until `user`'s token is due for refresh (less than min(60 s, lifetime/2) left).
    pub async fn wait_stale(&self, user: &str) {
        let ok = wait_until(DEADLINE, async || {
            let list = self.authorizations("crm").await;
            let Some(a) = list.iter().find(|a| a["user"] == user) else {
                return false;
            };
            let exp = super::unix_time(&a["expires_at"]).unwrap();
            let lifetime = exp - super::unix_time(&a["obtained_at"]).unwrap();
            now() + 60.min(lifetime / 2) >= exp
        })
        .await;
        assert!(ok, "token of {user} never became stale");
    }

    pub async fn metrics(&self) -> String {
        self.tg.operator_get("/metrics").await.text()
    }

    pub fn assert_no_secrets_logged(&self) {
        let logs = self.tg.logs();
        for s in [
            "AT-secret",
            "RT-secret",
            "sk-CLIENT-SECRET",
            "code_verifier",
        ] {
            assert!(!logs.contains(s), "{s} logged:\n{logs}");
        }
    }
}

/// The log lines without terminal colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn bearer_of(r: &Resp) -> String {
    r.json()["authorization"].as_str().unwrap_or("").to_string()
}
