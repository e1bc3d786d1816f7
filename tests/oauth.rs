//! Token injection, the consent flow and refresh, end to end: the real `tollgate` binary on
//! 127.0.0.1:0, an in-process OAuth provider and a protected API (`common::provider`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::provider::{Canned, Provider, RefreshMode};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use common::provider::LOCAL_POLICY as POLICY;

/// What a runner sends as its own `Authorization`; tollgate must replace it.
const CLIENT_AUTH: &str = "Bearer client-own-token";

const DEADLINE: Duration = Duration::from_secs(15);

fn app_spec(p: &Provider) -> Value {
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

struct Env {
    tg: Tollgate,
    p: Provider,
    admin: String,
}

async fn setup(flags: &[&str], tweak: impl FnOnce(&mut Value, &Provider)) -> Env {
    let p = Provider::start().await;
    let tg = Tollgate::start(POLICY, flags);
    let admin = tg.admin_token("acme", "root");
    let mut spec = app_spec(&p);
    tweak(&mut spec, &p);
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    Env { tg, p, admin }
}

/// One request to `addr` (origin-form) with headers.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// `http://127.0.0.1:port/path?q` → (address, `/path?q`).
fn split(url: &str) -> (SocketAddr, String) {
    let uri: hyper::Uri = url.parse().unwrap();
    let addr = uri.authority().unwrap().as_str().parse().unwrap();
    (addr, uri.path_and_query().unwrap().to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Env {
    /// A runner's request to the API through the proxy.
    async fn call_port(&self, org: &str, user: &str, port: u16, method: &str, body: &str) -> Resp {
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

    async fn call(&self, org: &str, user: &str) -> Resp {
        self.call_port(org, user, self.p.api.port(), "GET", "")
            .await
    }

    /// First call → 401 with a consent URL.
    async fn consent_url(&self, org: &str, user: &str) -> String {
        let r = self.call(org, user).await;
        assert_eq!(r.status, 401, "{}", r.text());
        r.json()["consent_url"].as_str().unwrap().to_string()
    }

    /// GET the consent page, POST it, follow the provider's redirect to the callback, as a
    /// browser would. Returns the callback's response and its path.
    async fn complete(&self, consent_url: &str, headers: &[(&str, &str)]) -> (Resp, String) {
        let (web, path) = split(consent_url);
        assert_eq!(web, self.tg.web);
        let page = http(web, "GET", &path, headers).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let post = http(web, "POST", &path, headers).await;
        assert_eq!(post.status, 303, "{}", post.text());
        let (idp, authorize) = split(&post.header("location").unwrap());
        assert_eq!(idp, self.p.addr);
        let at_idp = http(idp, "GET", &authorize, &[]).await;
        assert_eq!(at_idp.status, 302, "{}", at_idp.text());
        let (back, callback) = split(&at_idp.header("location").unwrap());
        assert_eq!(back, self.tg.web);
        (http(back, "GET", &callback, &[]).await, callback)
    }

    /// The whole consent for `user`; asserts success.
    async fn consent(&self, org: &str, user: &str) {
        let url = self.consent_url(org, user).await;
        let (r, _) = self.complete(&url, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    async fn authorizations(&self, app: &str) -> Vec<Value> {
        let r = web_request(
            self.tg.web,
            "GET",
            &format!("/v1/apps/{app}/authorizations"),
            Some(&self.admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["authorizations"].as_array().unwrap().clone()
    }

    /// Polls until `user`'s token is due for refresh (less than min(60 s, lifetime/2) left).
    async fn wait_stale(&self, user: &str) {
        let ok = wait_until(DEADLINE, async || {
            let list = self.authorizations("crm").await;
            let Some(a) = list.iter().find(|a| a["user"] == user) else {
                return false;
            };
            let exp = a["expires_at"].as_u64().unwrap();
            let lifetime = exp - a["obtained_at"].as_u64().unwrap();
            now() + 60.min(lifetime / 2) >= exp
        })
        .await;
        assert!(ok, "token of {user} never became stale");
    }

    async fn metrics(&self) -> String {
        web_get(self.tg.web, "/metrics").await.text()
    }

    fn assert_no_secrets_logged(&self) {
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
fn strip_ansi(s: &str) -> String {
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

fn bearer_of(r: &Resp) -> String {
    r.json()["authorization"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn consent_flow_then_injected_call() {
    let env = setup(&[], |_, _| {}).await;

    // 1. No token yet: 401 authorization_required exactly as DESIGN shows.
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("proxy-status").unwrap(),
        "tollgate; error=http_request_denied; details=\"authorization required\""
    );
    assert_eq!(r.header("content-type").unwrap(), "application/json");
    let body = r.json();
    assert_eq!(body["error"], "authorization_required");
    assert_eq!(body["org"], "acme");
    assert_eq!(body["app"], "crm");
    assert_eq!(body["app_name"], "Acme CRM");
    assert_eq!(body["expires_in"], 900);
    let consent_url = body["consent_url"].as_str().unwrap().to_string();
    let prefix = format!("http://{}/consent/", env.tg.web);
    assert!(consent_url.starts_with(&prefix), "{consent_url}");
    assert!(consent_url.len() - prefix.len() >= 43, "ticket too short");
    assert_eq!(env.p.with(|s| s.api_calls), 0, "request reached the API");

    // 2. The consent page: content escaped, hardened headers.
    let (web, path) = split(&consent_url);
    let page = http(web, "GET", &path, &[]).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    for want in [
        "Acme CRM",
        "Customer records &lt;b&gt;and&lt;/b&gt; deals",
        "Allow the runner to read &amp; write your CRM records?",
        "acme",
        "alice",
        "<form method=\"post\">",
        "Authorize",
    ] {
        assert!(html.contains(want), "{want:?} missing:\n{html}");
    }
    assert!(!html.contains("<b>and"), "unescaped description");
    assert!(!html.contains("<script"), "no script needed");
    assert_eq!(page.header("cache-control").unwrap(), "no-store");
    assert_eq!(page.header("x-frame-options").unwrap(), "DENY");
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "content type"
    );

    // 3. POST: 303 to the provider with every parameter.
    let post = http(web, "POST", &path, &[]).await;
    assert_eq!(post.status, 303, "{}", post.text());
    assert_eq!(post.header("cache-control").unwrap(), "no-store");
    let location = post.header("location").unwrap();
    assert!(location.starts_with(&format!("{}/authorize?", env.p.issuer())));
    let (idp, authorize) = split(&location);
    let at_idp = http(idp, "GET", &authorize, &[]).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let q = env.p.with(|s| s.last_authorize.clone());
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} missing in {q:?}"))
    };
    assert_eq!(get("response_type"), "code");
    assert_eq!(get("client_id"), "client-1");
    assert_eq!(
        get("redirect_uri"),
        format!("http://{}/oauth/callback", env.tg.web)
    );
    assert_eq!(get("scope"), "read write");
    assert_eq!(get("access_type"), "offline");
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("code_challenge").len(), 43);
    assert!(get("state").len() >= 22, "state under 128 bits");
    // The ticket is single-use.
    let again = http(web, "GET", &path, &[]).await;
    assert_eq!(again.status, 404);

    // 4. Callback: token exchange (PKCE verified by the provider), success page.
    let (back, callback) = split(&at_idp.header("location").unwrap());
    let done = http(back, "GET", &callback, &[]).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(
        done.text().contains("return to your workflow"),
        "{}",
        done.text()
    );
    assert_eq!(done.header("cache-control").unwrap(), "no-store");
    assert!(
        env.p.with(|s| s.violations.is_empty()),
        "{:?}",
        env.p.with(|s| s.violations.clone())
    );
    assert_eq!(env.p.with(|s| s.last_client_auth), "basic");
    let list = env.authorizations("crm").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["user"], "alice");
    assert_eq!(list[0]["scopes"], json!(["read", "write"]));
    assert!(!serde_json::to_string(&list).unwrap().contains("secret"));

    // 5. The injected call: the client's own Authorization is replaced.
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = bearer_of(&r);
    assert!(auth.starts_with("Bearer AT-secret-"), "{auth}");
    assert_ne!(auth, CLIENT_AUTH);

    // 6. State replay: the same callback again is refused, nothing changes.
    let replay = http(back, "GET", &callback, &[]).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    assert!(replay.text().contains("cannot be completed"));
    assert_eq!(env.p.with(|s| s.code_calls), 1);

    // The log line names the app and the injection; no token, secret or verifier anywhere.
    // (The access log is written by a buffered writer: poll for the line.)
    let logged = wait_until(DEADLINE, async || {
        strip_ansi(&env.tg.logs())
            .lines()
            .any(|l| l.contains("app=\"crm\"") && l.contains("injected=true"))
    })
    .await;
    assert!(logged, "{}", env.tg.logs());
    env.assert_no_secrets_logged();
    let metrics = env.metrics().await;
    assert!(!metrics.contains("AT-secret"));
}

#[tokio::test]
async fn state_replay_and_unknown_state_are_refused() {
    let env = setup(&[], |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (r, callback) = env.complete(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let replay = http(env.tg.web, "GET", &callback, &[]).await;
    assert_eq!(replay.status, 400);
    assert!(replay.text().contains("cannot be completed"));
    let unknown = http(env.tg.web, "GET", "/oauth/callback?code=x&state=nope", &[]).await;
    assert_eq!(unknown.status, 400);
    let missing = http(env.tg.web, "GET", "/oauth/callback?code=x", &[]).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        env.p.with(|s| s.code_calls),
        1,
        "replay reached the provider"
    );
}

#[tokio::test]
async fn denied_consent_consumes_state_and_stores_nothing() {
    let env = setup(&[], |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let post = http(web, "POST", &path, &[]).await;
    let location = post.header("location").unwrap();
    let state = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let cb =
        format!("/oauth/callback?error=access_denied&error_description=User+said+no&state={state}");
    let r = http(env.tg.web, "GET", &cb, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("not granted"), "{}", r.text());
    assert!(r.text().contains("User said no"));
    // The state is gone: a code for it now fails too.
    let r = http(
        env.tg.web,
        "GET",
        &format!("/oauth/callback?code=c&state={state}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(env.authorizations("crm").await.is_empty());
}

#[tokio::test]
async fn malformed_token_responses() {
    let env = setup(&[], |_, _| {}).await;
    struct Case {
        name: &'static str,
        status: u16,
        content_type: Option<&'static str>,
        body: &'static str,
        ok: bool,
        expires: Option<u64>,
    }
    let cases = [
        Case {
            name: "expires_in as string",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"access_token":"{at}","token_type":"Bearer","expires_in":"3600","refresh_token":"{rt}"}"#,
            ok: true,
            expires: Some(3600),
        },
        Case {
            name: "missing token_type",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"access_token":"{at}","expires_in":3600}"#,
            ok: true,
            expires: Some(3600),
        },
        Case {
            name: "uppercase token_type",
            status: 200,
            content_type: Some("application/json; charset=utf-8"),
            body: r#"{"access_token":"{at}","token_type":"BEARER","expires_in":3600}"#,
            ok: true,
            expires: Some(3600),
        },
        Case {
            name: "JSON sent as text/plain",
            status: 200,
            content_type: Some("text/plain"),
            body: r#"{"access_token":"{at}","token_type":"bearer","expires_in":3600}"#,
            ok: true,
            expires: Some(3600),
        },
        Case {
            name: "no expires_in: unknown lifetime",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"access_token":"{at}","token_type":"bearer"}"#,
            ok: true,
            expires: None,
        },
        Case {
            name: "error with status 200",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"error":"invalid_grant","error_description":"code expired"}"#,
            ok: false,
            expires: None,
        },
        Case {
            name: "missing access_token",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"token_type":"bearer","expires_in":3600}"#,
            ok: false,
            expires: None,
        },
        Case {
            name: "not JSON at all",
            status: 200,
            content_type: Some("text/html"),
            body: "<html>login</html>",
            ok: false,
            expires: None,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let user = format!("user{i}");
        env.p.with(|s| {
            s.next_code_response = Some(Canned {
                status: c.status,
                content_type: c.content_type,
                body: c.body.to_string(),
            })
        });
        let url = env.consent_url("acme", &user).await;
        let (r, _) = env.complete(&url, &[]).await;
        let stored = env
            .authorizations("crm")
            .await
            .into_iter()
            .find(|a| a["user"] == user.as_str());
        if c.ok {
            assert_eq!(r.status, 200, "{}: {}", c.name, r.text());
            let a = stored.unwrap_or_else(|| panic!("{}: not stored", c.name));
            assert_eq!(a["scopes"], json!(["read", "write"]), "{}", c.name);
            match c.expires {
                Some(ttl) => {
                    let got =
                        a["expires_at"].as_u64().unwrap() - a["obtained_at"].as_u64().unwrap();
                    assert_eq!(got, ttl, "{}", c.name);
                }
                None => assert!(a["expires_at"].is_null(), "{}", c.name),
            }
            let call = env.call("acme", &user).await;
            assert_eq!(call.status, 200, "{}: {}", c.name, call.text());
            assert!(
                bearer_of(&call).starts_with("Bearer AT-secret-"),
                "{}",
                c.name
            );
        } else {
            assert_eq!(r.status, 502, "{}: {}", c.name, r.text());
            assert!(r.text().contains("Nothing was stored"), "{}", c.name);
            assert!(stored.is_none(), "{}: stored", c.name);
            let call = env.call("acme", &user).await;
            assert_eq!(call.status, 401, "{}", c.name);
        }
    }
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn access_token_ttl_applies_when_provider_sends_no_expiry() {
    let env = setup(&[], |spec, _| spec["access_token_ttl"] = json!(1234)).await;
    env.p.with(|s| s.access_ttl = None);
    env.consent("acme", "alice").await;
    let a = &env.authorizations("crm").await[0];
    assert_eq!(
        a["expires_at"].as_u64().unwrap() - a["obtained_at"].as_u64().unwrap(),
        1234
    );
}

#[tokio::test]
async fn client_auth_post_without_pkce_or_scopes() {
    let env = setup(&[], |spec, _| {
        spec["client_auth"] = json!("post");
        spec["pkce"] = json!(false);
        spec["scopes"] = json!([]);
    })
    .await;
    env.consent("acme", "alice").await;
    let q = env.p.with(|s| s.last_authorize.clone());
    for absent in ["code_challenge", "code_challenge_method", "scope"] {
        assert!(q.iter().all(|(k, _)| k != absent), "{absent} sent: {q:?}");
    }
    assert_eq!(env.p.with(|s| s.last_client_auth), "post");
    assert!(env.p.with(|s| s.violations.is_empty()));
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn proactive_refresh_before_expiry() {
    let env = setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    let issued: Vec<String> = env.p.with(|s| s.access_tokens.iter().cloned().collect());
    assert_eq!(issued.len(), 1);
    let first = format!("Bearer {}", issued[0]);
    // No call before the token is due, so the only refresh is the proactive one below.
    env.p.with(|s| s.access_ttl = Some(3600));
    env.wait_stale("alice").await;
    // The token has not expired at the provider yet; tollgate refreshes ahead of time.
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(bearer_of(&r), first);
    assert_eq!(env.p.refresh_calls(), 1);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(env.p.refresh_calls(), 1, "fresh token refreshed again");
    assert!(env
        .metrics()
        .await
        .contains("tollgate_token_refreshes_total{outcome=\"success\"} 1"));
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn concurrent_requests_at_expiry_refresh_once() {
    let env = setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.p.with(|s| {
        s.access_ttl = Some(3600);
        // Keeps the refresh in flight while the other requests arrive.
        s.refresh_delay = Duration::from_millis(300);
    });
    env.wait_stale("alice").await;
    let calls = (0..20).map(|_| env.call("acme", "alice"));
    let results = futures_util::future::join_all(calls).await;
    let tokens: std::collections::BTreeSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            bearer_of(r)
        })
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(
        env.p.refresh_calls(),
        1,
        "exactly one refresh at the provider"
    );
}

#[tokio::test]
async fn refresh_keeps_old_refresh_token_when_none_returned() {
    let env = setup(&[], |_, _| {}).await;
    env.p.with(|s| {
        s.access_ttl = Some(2);
        s.rotate_refresh = false;
    });
    env.consent("acme", "alice").await;
    let original: Vec<String> = env.p.with(|s| s.refresh_tokens.iter().cloned().collect());
    assert_eq!(original.len(), 1);
    for round in 1..=2 {
        env.wait_stale("alice").await;
        let r = env.call("acme", "alice").await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_eq!(env.p.refresh_calls(), round);
    }
    let used = env.p.with(|s| s.refresh_tokens_used.clone());
    assert_eq!(used, vec![original[0].clone(), original[0].clone()]);
}

#[tokio::test]
async fn invalid_grant_deletes_token_and_asks_for_consent() {
    let env = setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.p.with(|s| s.refresh_mode = RefreshMode::InvalidGrant);
    env.wait_stale("alice").await;
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    assert!(r.json()["consent_url"].as_str().is_some());
    assert!(env.authorizations("crm").await.is_empty(), "token kept");
    assert!(env
        .metrics()
        .await
        .contains("tollgate_token_refreshes_total{outcome=\"invalid_grant\"} 1"));
}

#[tokio::test]
async fn server_error_at_refresh_keeps_token() {
    let env = setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.p.with(|s| s.refresh_mode = RefreshMode::ServerError);
    env.wait_stale("alice").await;
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "token_refresh_failed");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .starts_with("tollgate; error="));
    assert_eq!(env.authorizations("crm").await.len(), 1, "token dropped");
    // The provider recovers: the kept refresh token works.
    env.p.with(|s| s.refresh_mode = RefreshMode::Normal);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.refresh_calls(), 2);
}

/// `invalid_client` and `temporarily_unavailable` at refresh: 502, token kept; an
/// `invalid_client` is logged loudly and counted.
#[tokio::test]
async fn invalid_client_and_temporarily_unavailable_at_refresh_keep_the_token() {
    let env = setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.wait_stale("alice").await;
    for mode in [RefreshMode::InvalidClient, RefreshMode::Unavailable] {
        env.p.with(|s| s.refresh_mode = mode);
        let r = env.call("acme", "alice").await;
        assert_proxy_error(&r, 502, "token_refresh_failed");
        assert_eq!(
            env.authorizations("crm").await.len(),
            1,
            "{mode:?}: token dropped"
        );
    }
    assert!(
        env.metrics()
            .await
            .contains("tollgate_token_refreshes_total{outcome=\"invalid_client\"} 1"),
        "{}",
        env.metrics().await
    );
    let logged = wait_until(DEADLINE, async || {
        env.tg
            .logs()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("invalid_client"))
    })
    .await;
    assert!(
        logged,
        "invalid_client not logged as an error:\n{}",
        env.tg.logs()
    );
    env.p.with(|s| s.refresh_mode = RefreshMode::Normal);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Token sets are flushed before the callback answers and sealed at rest: a SIGKILL right
/// after the consent loses nothing, and no token is on disk in plaintext.
#[tokio::test]
async fn token_sets_survive_sigkill_after_consent_and_are_sealed_on_disk() {
    let env = setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    let Env { tg, p, admin } = env;
    let tg = tg.restart(true, &[]);
    let env = Env { tg, p, admin };
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "token lost by the SIGKILL: {}", r.text());
    assert!(bearer_of(&r).starts_with("Bearer AT-secret-"));
    assert!(env.tg.data_contains(b"crm"), "the scan reads no real data");
    for secret in [&b"AT-secret"[..], b"RT-secret", b"sk-CLIENT-SECRET"] {
        assert!(
            !env.tg.data_contains(secret),
            "{} in plaintext on disk",
            String::from_utf8_lossy(secret)
        );
    }
}

/// A reset makes pending consents invalid: a ticket issued before it no longer opens, and a
/// consent in progress at the provider stores nothing.
#[tokio::test]
async fn reset_invalidates_tickets_and_consents_in_progress() {
    let env = setup(&[], |_, _| {}).await;
    let reset = || async {
        let r = web_request(
            env.tg.web,
            "POST",
            "/v1/apps/crm/reset",
            Some(&env.admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let ticket = env.consent_url("acme", "alice").await;
    reset().await;
    let (web, path) = split(&ticket);
    let page = http(web, "GET", &path, &[]).await;
    assert_eq!(page.status, 404, "{}", page.text());

    // At the provider when the reset lands: the callback refuses to store the grant.
    let ticket = env.consent_url("acme", "alice").await;
    let (web, path) = split(&ticket);
    let post = http(web, "POST", &path, &[]).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = split(&post.header("location").unwrap());
    let at_idp = http(idp, "GET", &authorize, &[]).await;
    reset().await;
    let (back, callback) = split(&at_idp.header("location").unwrap());
    let done = http(back, "GET", &callback, &[]).await;
    assert!(
        matches!(done.status, 400 | 409),
        "{}: {}",
        done.status,
        done.text()
    );
    assert!(
        env.authorizations("crm").await.is_empty(),
        "grant stored after a reset"
    );
    assert_eq!(env.call("acme", "alice").await.status, 401);
}

#[tokio::test]
async fn reset_during_refresh_wins() {
    // No revocation endpoint, so the refresh token stays valid at the provider and the race
    // is decided by the store's compare-and-swap alone.
    let env = setup(&[], |spec, _| {
        spec.as_object_mut().unwrap().remove("revocation_url");
    })
    .await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.p.with(|s| {
        s.access_ttl = Some(3600);
        s.refresh_mode = RefreshMode::Hold;
    });
    env.wait_stale("alice").await;
    let in_flight = {
        let proxy = env.tg.proxy;
        let pa = format!("Bearer {}", env.tg.token("acme", "alice"));
        let target = format!("http://localhost:{}/records", env.p.api.port());
        tokio::spawn(async move {
            proxy_request(proxy, "GET", &target, &[("proxy-authorization", &pa)], "").await
        })
    };
    assert!(
        wait_until(DEADLINE, async || env.p.refresh_calls() == 1).await,
        "refresh never started"
    );
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/apps/crm/reset",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    env.p.release();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    assert!(
        env.authorizations("crm").await.is_empty(),
        "refresh resurrected a reset token"
    );
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 401);
    assert!(env
        .metrics()
        .await
        .contains("tollgate_token_refreshes_total{outcome=\"superseded\"} 1"));
    // The new consent link works under the new generation.
    env.p.with(|s| s.refresh_mode = RefreshMode::Normal);
    let (done, _) = env
        .complete(r.json()["consent_url"].as_str().unwrap(), &[])
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(env.call("acme", "alice").await.status, 200);
}

#[tokio::test]
async fn disabled_app_refuses_injection_and_consent() {
    let env = setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    let bob_url = env.consent_url("acme", "bob").await;
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/apps/crm/disable",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "app_disabled");
    assert_eq!(r.json()["app"], "crm");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=http_request_denied"));
    assert_eq!(env.call("acme", "bob").await.status, 403);
    let (web, path) = split(&bob_url);
    let page = http(web, "GET", &path, &[]).await;
    assert_eq!(page.status, 403, "{}", page.text());
    assert!(page.text().contains("disabled"));
    let post = http(web, "POST", &path, &[]).await;
    assert_eq!(post.status, 403);
    assert!(post.header("location").is_none());
    // Enabled again: the kept token is used.
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/apps/crm/enable",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn revoke_reset_delete_take_effect_and_revoke_at_provider() {
    let env = setup(&[], |_, _| {}).await;
    let mut access = std::collections::HashMap::new();
    for user in ["ann", "ben", "cid"] {
        env.consent("acme", user).await;
        let r = env.call("acme", user).await;
        assert_eq!(r.status, 200);
        access.insert(
            user,
            bearer_of(&r).trim_start_matches("Bearer ").to_string(),
        );
    }
    let revoked = |tok: String| {
        let p = env.p.clone();
        async move { wait_until(DEADLINE, async || p.with(|s| s.revoked.contains(&tok))).await }
    };

    // Revoke one user's authorization.
    let r = web_request(
        env.tg.web,
        "DELETE",
        "/v1/apps/crm/authorizations/ann",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(env.call("acme", "ann").await.status, 401);
    assert!(
        revoked(access["ann"].clone()).await,
        "ann's token not revoked",
    );
    assert_eq!(env.call("acme", "ben").await.status, 200);

    // Reset: every user.
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/apps/crm/reset",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = env.call("acme", "ben").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "authorization_required");
    assert!(
        revoked(access["ben"].clone()).await,
        "ben's token not revoked"
    );
    assert!(
        revoked(access["cid"].clone()).await,
        "cid's token not revoked"
    );

    // Delete: the domain is no longer bound; the request goes out untouched.
    env.consent("acme", "cid").await;
    let r = env.call("acme", "cid").await;
    assert_eq!(r.status, 200);
    let cid_new = bearer_of(&r).trim_start_matches("Bearer ").to_string();
    let r = web_request(env.tg.web, "DELETE", "/v1/apps/crm", Some(&env.admin), None).await;
    assert_eq!(r.status, 204);
    let r = env.call("acme", "cid").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(bearer_of(&r), CLIENT_AUTH, "token injected after delete");
    assert!(revoked(cid_new).await, "token not revoked on delete");
    // Irreversible: the same app created again starts with no authorizations.
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/apps",
        Some(&env.admin),
        Some(&app_spec(&env.p)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(env.authorizations("crm").await.is_empty());
    let r = env.call("acme", "cid").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn iss_mismatch_is_refused() {
    let env = setup(&[], |_, _| {}).await;
    // Another issuer, and none at all while the app expects one (RFC 9207).
    for iss in ["https://evil.example", ""] {
        env.p.with(|s| s.iss_override = Some(iss.into()));
        let url = env.consent_url("acme", "alice").await;
        let (r, _) = env.complete(&url, &[]).await;
        assert_eq!(r.status, 400, "iss {iss:?}: {}", r.text());
        assert!(r.text().contains("Unexpected authorization server"));
        assert_eq!(
            env.p.with(|s| s.code_calls),
            0,
            "code exchanged despite iss {iss:?}"
        );
        assert!(env.authorizations("crm").await.is_empty());
    }
}

/// A CONNECT to an app's domain is intercepted only for callers of the app's org; for another
/// org it is a blind tunnel: the client talks TLS with the upstream itself and nothing is
/// injected.
#[tokio::test]
async fn connect_to_another_orgs_app_domain_is_a_blind_tunnel() {
    use rustls::pki_types::pem::PemObject;
    let env = setup(&[], |_, _| {}).await;
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let port = env.p.serve_api_tls(server).await.port();
    let pa = format!("Bearer {}", env.tg.token("globex", "alice"));
    let (r, tunnel) = proxy_connect(
        env.tg.proxy,
        &format!("localhost:{port}"),
        &[("proxy-authorization", &pa)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Only the upstream's own CA is trusted: the handshake succeeds only end to end.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tunnel.unwrap(),
        )
        .await
        .expect("the upstream's own certificate, not a tollgate leaf");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/records")
        .header("host", format!("localhost:{port}"))
        .header("authorization", CLIENT_AUTH)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        v["authorization"], CLIENT_AUTH,
        "another org's token injected: {v}"
    );
}

#[tokio::test]
async fn cross_org_isolation() {
    let env = setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    // Same user name, other org: no app of theirs is bound to the host, so nothing is injected.
    let r = env.call("globex", "alice").await;
    assert_eq!(bearer_of(&r), CLIENT_AUTH, "acme's token went to globex");
    // globex binds the same domain to its own app: its callers get their own consent flow.
    let admin = env.tg.admin_token("globex", "root");
    let mut spec = app_spec(&env.p);
    spec["id"] = json!("crm-globex");
    let r = web_request(env.tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = env.call("globex", "alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["org"], "globex");
    assert_eq!(r.json()["app"], "crm-globex");
    // acme is unaffected.
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200);
    // An acme admin cannot see globex's app.
    let r = web_request(
        env.tg.web,
        "GET",
        "/v1/apps/crm-globex",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn upstream_invalid_token_refreshes_and_replays_once() {
    let env = setup(&[], |_, _| {}).await;
    // Unknown lifetime: only the upstream can say the token is dead.
    env.p.with(|s| s.access_ttl = None);
    env.consent("acme", "alice").await;
    let first = bearer_of(&env.call("acme", "alice").await);
    let kill = |bearer: &str| {
        let t = bearer.trim_start_matches("Bearer ").to_string();
        env.p.with(|s| s.access_tokens.remove(&t));
    };
    kill(&first);
    let api_before = env.p.with(|s| s.api_calls);
    let r = env
        .call_port("acme", "alice", env.p.api.port(), "POST", "small body")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], 10, "body lost in the replay");
    let second = bearer_of(&r);
    assert_ne!(second, first);
    assert_eq!(env.p.refresh_calls(), 1);
    assert_eq!(
        env.p.with(|s| s.api_calls) - api_before,
        2,
        "one send, one replay"
    );

    // A body over 64 KiB is not replayed: the 401 passes through, the token is refreshed.
    kill(&second);
    let big = "x".repeat(70 * 1024);
    let r = env
        .call_port("acme", "alice", env.p.api.port(), "POST", &big)
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["body_len"], 70 * 1024);
    assert_eq!(env.p.refresh_calls(), 2);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(env.p.refresh_calls(), 2);
}

#[tokio::test]
async fn consent_user_header_is_enforced() {
    let env = setup(&["--consent-user-header", "X-Forwarded-User"], |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    for headers in [&[][..], &[("x-forwarded-user", "mallory")][..]] {
        let r = http(web, "GET", &path, headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
        let r = http(web, "POST", &path, headers).await;
        assert_eq!(r.status, 403, "{headers:?}");
    }
    // The refused POSTs did not consume the ticket.
    let (r, _) = env.complete(&url, &[("x-forwarded-user", "alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.call("acme", "alice").await.status, 200);
}

#[tokio::test]
async fn tls_origination_to_app_domains_with_test_ca() {
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |spec, _| {
        spec["upstream_tls"] = json!(true);
    })
    .await;
    let tls_api = env.p.serve_api_tls(server).await;
    env.consent("acme", "alice").await;
    // The runner speaks plain HTTP to the proxy; tollgate speaks TLS to the API.
    let r = env
        .call_port("acme", "alice", tls_api.port(), "GET", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(bearer_of(&r).starts_with("Bearer AT-secret-"));
    // The plain-HTTP API port does not speak TLS: origination is really happening.
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 502, "{}", r.text());

    // Without --upstream-ca-file the test CA is not trusted: 502, and the token never
    // reaches the upstream.
    let untrusting = setup(&[], |spec, _| spec["upstream_tls"] = json!(true)).await;
    let (_, server) = common::provider::test_ca_and_server();
    let tls_api = untrusting.p.serve_api_tls(server).await;
    untrusting.consent("acme", "alice").await;
    let r = untrusting
        .call_port("acme", "alice", tls_api.port(), "GET", "")
        .await;
    assert_proxy_error(&r, 502, "tls_certificate_error");
    assert_eq!(
        untrusting.p.with(|s| s.api_calls),
        0,
        "request reached the API"
    );
}

/// TLS origination (plain http from the runner) and interception (CONNECT) of the same
/// origin share one pooled upstream connection, HTTP/2 when the upstream offers it, with
/// `:authority` and `Host` naming the same authority.
#[tokio::test]
async fn originated_and_intercepted_requests_share_an_http2_upstream_connection() {
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let mut server = (*server).clone();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |spec, _| {
        spec["upstream_tls"] = json!(true);
    })
    .await;
    let port = env
        .p
        .serve_api_tls(std::sync::Arc::new(server))
        .await
        .port();
    env.consent("acme", "alice").await;

    let r = env.call_port("acme", "alice", port, "GET", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    let authority = format!("localhost:{port}");
    assert_eq!(v["authority"], authority.as_str(), "{v}");
    if !v["host"].is_null() {
        assert_eq!(
            v["host"],
            authority.as_str(),
            "Host differs from :authority: {v}"
        );
    }

    let tls = intercepted_tls(&env, port, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/records")
        .header("host", authority.as_str())
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer AT-secret-"));
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_eq!(
        env.p.with(|s| s.tls_handshakes),
        1,
        "the intercepted request did not reuse the originated request's connection"
    );
}

#[tokio::test]
async fn token_calls_follow_the_apps_egress_policy() {
    let env = setup(&[], |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let post = http(web, "POST", &path, &[]).await;
    assert_eq!(post.status, 303);
    let (idp, authorize) = split(&post.header("location").unwrap());
    let at_idp = http(idp, "GET", &authorize, &[]).await;
    assert_eq!(at_idp.status, 302);
    // The admins narrow the policy: the token endpoint (a loopback address) is no longer
    // allowed. The code exchange must not reach the provider.
    env.tg.write_policy(
        "10-test.toml",
        r#"
[[policy]]
name = "local"
route = "direct"
  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1-65535"]
  private = true
"#,
    );
    let reloaded = wait_until(DEADLINE, async || {
        web_get(env.tg.web, "/readyz").await.json()["policies"]["generation"] == 2
    })
    .await;
    assert!(reloaded, "policy not reloaded");
    let (back, callback) = split(&at_idp.header("location").unwrap());
    let r = http(back, "GET", &callback, &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("does not allow"), "{}", r.text());
    assert_eq!(env.p.with(|s| s.code_calls), 0, "token endpoint reached");
    assert!(env.authorizations("crm").await.is_empty());
}

/// A TLS client stream through `CONNECT localhost:port` as acme/alice.
async fn intercepted_tls(
    env: &Env,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let pa = format!("Bearer {}", env.tg.token("acme", "alice"));
    common::intercepted_tls(&env.tg, &pa, port, alpn).await
}

#[tokio::test]
async fn connect_to_an_app_domain_is_intercepted_and_injected_over_h1_and_h2() {
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |_, _| {}).await;
    let tls_api = env.p.serve_api_tls(server).await;
    let port = tls_api.port();
    let req = || {
        hyper::Request::get(format!("https://localhost:{port}/records"))
            .header("authorization", CLIENT_AUTH)
            .body(Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    // Before consent: authorization_required answered inside the TLS tunnel (HTTP/1.1).
    let tls = intercepted_tls(&env, port, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut r1 = req();
    *r1.uri_mut() = "/records".parse().unwrap();
    r1.headers_mut()
        .insert("host", format!("localhost:{port}").parse().unwrap());
    let resp = send.send_request(r1).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=http_request_denied"));
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "authorization_required");
    assert!(body["consent_url"].as_str().unwrap().contains("/consent/"));

    env.consent("acme", "alice").await;

    // After consent, HTTP/1.1 inside: the token replaces the client's Authorization.
    let tls = intercepted_tls(&env, port, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut r1 = req();
    *r1.uri_mut() = "/records".parse().unwrap();
    r1.headers_mut()
        .insert("host", format!("localhost:{port}").parse().unwrap());
    let resp = send.send_request(r1).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        v["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer AT-secret-"),
        "{v}"
    );

    // HTTP/2 inside.
    let tls = intercepted_tls(&env, port, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        v["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer AT-secret-"),
        "{v}"
    );

    // An inner request naming another host than the CONNECT: 421, nothing forwarded.
    let tls = intercepted_tls(&env, port, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut wrong = req();
    *wrong.uri_mut() = "/records".parse().unwrap();
    wrong
        .headers_mut()
        .insert("host", "elsewhere.example".parse().unwrap());
    let resp = send.send_request(wrong).await.unwrap();
    assert_eq!(resp.status(), 421);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "misdirected_request");

    // The admins disable the app: inside TLS the same request now gets 403 app_disabled.
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/apps/crm/disable",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let tls = intercepted_tls(&env, port, b"h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req()).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=http_request_denied"));
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "app_disabled");
}

#[tokio::test]
async fn intercepted_invalid_token_refreshes_and_replays_once() {
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |_, _| {}).await;
    // Unknown lifetime: only the upstream can say the token is dead.
    env.p.with(|s| s.access_ttl = None);
    let port = env.p.serve_api_tls(server).await.port();
    env.consent("acme", "alice").await;
    let first = bearer_of(&env.call("acme", "alice").await);
    env.p
        .with(|s| s.access_tokens.remove(first.trim_start_matches("Bearer ")));
    let api_before = env.p.with(|s| s.api_calls);

    let tls = intercepted_tls(&env, port, b"h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("https://localhost:{port}/records"))
        .body(Full::new(bytes::Bytes::from_static(b"small body")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the rejected token was not refreshed and replayed"
    );
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["body_len"], 10, "body lost in the replay");
    let second = v["authorization"].as_str().unwrap().to_string();
    assert!(second.starts_with("Bearer AT-secret-"), "{v}");
    assert_ne!(second, first);
    assert_eq!(env.p.refresh_calls(), 1);
    assert_eq!(
        env.p.with(|s| s.api_calls) - api_before,
        2,
        "one send, one replay"
    );
}
