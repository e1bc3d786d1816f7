//! A person's own connections: `/v1/me/connections` (list, connect, disconnect that revokes
//! at the provider), tokens for code (`/v1/me/tokens/{app}`, `tollgate token get`), and the
//! `/connections` page, against the real binary and the in-process provider.

mod common;

use serde_json::{json, Value};

use common::oauth::*;
use common::*;

/// Connect to `crm`, the app of the fixture.
const CONNECT: &str = "/v1/me/connections/crm/connect";
/// Disconnect from `crm`.
const DISCONNECT: &str = "/v1/me/connections/crm";

/// `GET path` (or another method) on the web listener with `user`'s caller token of `org`.
async fn me(env: &Env, org: &str, user: &str, method: &str, path: &str) -> Resp {
    let token = env.tg.token(org, user);
    web_request(env.tg.web, method, path, Some(&token), None).await
}

/// The caller's connection to `app` in `GET /v1/me/connections`.
async fn connection(env: &Env, user: &str, app: &str) -> Value {
    let r = me(env, "acme", user, "GET", "/v1/me/connections").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    r.json()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["app"] == app)
        .cloned()
        .unwrap_or_else(|| panic!("no {app} in {}", r.text()))
}

/// The org's audit events with `action`, newest first.
async fn audit(env: &Env, action: &str) -> Vec<Value> {
    let r = env.admin_call("GET", "/v1/audit?limit=1000", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// Asserts a JSON error with `Proxy-Status` naming `code`.
fn assert_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    let ps = r.header("proxy-status").unwrap_or_default();
    assert!(ps.contains(code), "Proxy-Status {ps:?}");
    v
}

#[tokio::test]
async fn connect_use_and_disconnect_through_the_json_api() {
    let env = setup(&[], |_, _| {}).await;
    // Not signed: 401 with Proxy-Status.
    let r = web_request(env.tg.web, "GET", "/v1/me/connections", None, None).await;
    assert_error(&r, 401, "unauthorized");

    let c = connection(&env, "alice", "crm").await;
    assert_eq!(c["state"], "needs_consent", "{c}");
    assert_eq!(c["name"], "Acme CRM");
    assert_eq!(c["revocable"], true);

    // Connect gives the ticket a 401 would carry: one live ticket per (org, user, app).
    let r = me(&env, "acme", "alice", "POST", CONNECT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["consent_url"].as_str().unwrap().to_string();
    assert!(r.json()["expires_in"].as_u64().unwrap() <= 900);
    assert_eq!(env.consent_url("acme", "alice").await, url);
    let again = me(&env, "acme", "alice", "POST", CONNECT).await;
    assert_eq!(again.json()["consent_url"], url.as_str());

    let (done, _) = env.complete(&url, &[]).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let c = connection(&env, "alice", "crm").await;
    assert_eq!(c["state"], "connected", "{c}");
    assert_eq!(c["scopes"], json!(["read", "write"]));
    assert!(c["expires_at"].is_string(), "RFC 3339 times: {c}");
    assert!(c["obtained_at"].is_string(), "{c}");
    assert!(!c.to_string().contains("AT-secret"), "no token value: {c}");
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Another org sees none of acme's apps and cannot act on them.
    let r = me(&env, "globex", "alice", "GET", "/v1/me/connections").await;
    assert_eq!(r.json()["connections"], json!([]), "{}", r.text());
    let r = me(&env, "globex", "alice", "POST", CONNECT).await;
    assert_error(&r, 404, "not_found");
    let r = me(&env, "globex", "alice", "DELETE", DISCONNECT).await;
    assert_error(&r, 404, "not_found");
    // Bob's disconnect does not touch alice's grant.
    let r = me(&env, "acme", "bob", "DELETE", DISCONNECT).await;
    assert_error(&r, 404, "not_connected");

    // Disconnect: revoked at the provider (both tokens), then deleted.
    let issued: Vec<String> = env.p.with(|s| s.access_tokens.iter().cloned().collect());
    let r = me(&env, "acme", "alice", "DELETE", DISCONNECT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked_at_provider"], "confirmed", "{}", r.text());
    let revoked = env.p.with(|s| s.revoked.clone());
    assert_eq!(revoked.len(), 2, "refresh and access token: {revoked:?}");
    assert!(revoked.contains(&issued[0]), "{revoked:?}");
    assert_eq!(
        connection(&env, "alice", "crm").await["state"],
        "needs_consent"
    );
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 401, "the grant is gone: {}", r.text());
    let events = audit(&env, "connection.disconnect").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "alice");
    assert_eq!(events[0]["target"], "crm");
    assert_eq!(events[0]["detail"]["revoked_at_provider"], "confirmed");
    let r = me(&env, "acme", "alice", "DELETE", DISCONNECT).await;
    assert_error(&r, 404, "not_connected");

    // Disabled: shown as such, and no consent can start.
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        connection(&env, "alice", "crm").await["state"],
        "app_disabled"
    );
    let r = me(&env, "acme", "alice", "POST", CONNECT).await;
    assert_error(&r, 403, "app_disabled");
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn disconnect_says_when_the_provider_refused_and_admins_share_it() {
    let env = setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    env.p.with(|s| s.revoke_status = 503);
    let r = me(&env, "acme", "alice", "DELETE", DISCONNECT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked_at_provider"], "refused", "{}", r.text());
    assert_eq!(r.json()["provider_status"], 503);
    // The grant is deleted all the same.
    assert_eq!(
        connection(&env, "alice", "crm").await["state"],
        "needs_consent"
    );

    // The admin's revoke is the same function: revoked at the provider before it answers,
    // audited as authorization.revoke by the admin.
    env.p.with(|s| s.revoke_status = 200);
    env.consent("acme", "bob").await;
    let r = env
        .admin_call("DELETE", "/v1/apps/crm/authorizations/bob", None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(env.p.with(|s| s.revoked.len()), 2, "revoked before the 204");
    let events = audit(&env, "authorization.revoke").await;
    assert_eq!(events[0]["actor"], "root");
    assert_eq!(events[0]["detail"]["user"], "bob");
    assert_eq!(events[0]["detail"]["revoked_at_provider"], "confirmed");

    // No revocation endpoint: not_supported.
    let r = env
        .admin_call(
            "PATCH",
            "/v1/apps/crm",
            Some(&json!({"revocation_url": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    env.consent("acme", "carol").await;
    let r = me(&env, "acme", "carol", "DELETE", DISCONNECT).await;
    assert_eq!(
        r.json()["revoked_at_provider"],
        "not_supported",
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn tokens_for_code_are_exposed_only_when_the_app_says_so() {
    let env = setup(&[], |_, _| {}).await;
    let path = "/v1/me/tokens/crm";
    let r = me(&env, "acme", "alice", "GET", path).await;
    assert_error(&r, 403, "token_not_exposed");
    let r = me(&env, "acme", "alice", "GET", "/v1/me/tokens/nope").await;
    assert_error(&r, 404, "not_found");
    let r = web_request(env.tg.web, "GET", path, None, None).await;
    assert_error(&r, 401, "unauthorized");

    let r = env
        .admin_call(
            "PATCH",
            "/v1/apps/crm",
            Some(&json!({"expose_token": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["expose_token"], true);
    let r = env
        .admin_call(
            "PATCH",
            "/v1/apps/crm",
            Some(&json!({"expose_token": "yes"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // No grant yet: 401 with the consent URL, the same one the proxy gives.
    let r = me(&env, "acme", "alice", "GET", path).await;
    let v = assert_error(&r, 401, "authorization_required");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let url = v["consent_url"].as_str().unwrap().to_string();
    assert_eq!(env.consent_url("acme", "alice").await, url);
    let (done, _) = env.complete(&url, &[]).await;
    assert_eq!(done.status, 200, "{}", done.text());

    let r = me(&env, "acme", "alice", "GET", path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let v = r.json();
    let first = v["access_token"].as_str().unwrap().to_string();
    assert!(env.p.with(|s| s.access_tokens.contains(&first)), "{v}");
    assert_eq!(v["scopes"], json!(["read", "write"]));
    assert!(v["expires_at"].is_string(), "{v}");
    assert_eq!(env.p.refresh_calls(), 0);

    // Stale: refreshed through the injector's path, once.
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "bob").await;
    env.p.with(|s| s.access_ttl = Some(3600));
    env.wait_stale("bob").await;
    let r = me(&env, "acme", "bob", "GET", path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refreshed = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(env.p.refresh_calls(), 1);
    assert!(env.p.with(|s| s.access_tokens.contains(&refreshed)));
    let r = me(&env, "acme", "bob", "GET", path).await;
    assert_eq!(r.json()["access_token"], refreshed.as_str());
    assert_eq!(
        env.p.refresh_calls(),
        1,
        "a fresh token is not refreshed again"
    );
    // The proxy uses the refreshed token too: one grant, one refresh implementation.
    let r = env.call("acme", "bob").await;
    assert_eq!(bearer_of(&r), format!("Bearer {refreshed}"));

    // Every read is audited, without the value.
    let events = audit(&env, "token.read").await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["actor"], "bob");
    assert_eq!(events[0]["target"], "crm");
    assert_eq!(events[1]["detail"]["refreshed"], true);
    let all = env
        .admin_call("GET", "/v1/audit?limit=1000", None)
        .await
        .text();
    assert!(!all.contains("AT-secret"), "token value in the audit log");

    // The CLI: the token alone on stdout, or the JSON.
    let cli = |extra: &[&str]| {
        let token = env.tg.token("acme", "alice");
        let server = format!("http://{}", env.tg.web);
        let mut args = vec![
            "token", "get", "--app", "crm", "--server", &server, "--token", &token,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(bin())
            .args(&args)
            .output()
            .unwrap()
    };
    let out = cli(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
    let out = cli(&["--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["access_token"], first.as_str());

    // Disabled: 403 app_disabled, and the CLI says so on stderr with a failing status.
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
    assert_eq!(r.status, 200);
    let r = me(&env, "acme", "alice", "GET", path).await;
    assert_error(&r, 403, "app_disabled");
    let out = cli(&[]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("disabled"));
    env.assert_no_secrets_logged();
}

/// `--login header` with the user and org headers [`signed`] sends.
const HEADER_LOGIN: [&str; 6] = [
    "--login",
    "header",
    "--login-user-header",
    "X-Forwarded-User",
    "--login-org-header",
    "X-Forwarded-Org",
];

/// The login headers of a platform proxy naming `user` of `org`.
fn signed(user: &str, org: &str) -> Vec<(String, String)> {
    vec![
        ("x-forwarded-user".into(), user.into()),
        ("x-forwarded-org".into(), org.into()),
    ]
}

/// A browser at the page: its headers (login header or session cookie) and a consent cookie
/// if one is set (the page sets none: its forms' token is the person's).
struct PageBrowser {
    headers: Vec<(String, String)>,
    session: Option<String>,
    consent: Option<String>,
}

impl PageBrowser {
    fn new(headers: Vec<(String, String)>) -> Self {
        PageBrowser {
            headers,
            session: None,
            consent: None,
        }
    }

    async fn send(&mut self, env: &Env, method: &str, path: &str, form: Option<&str>) -> Resp {
        let mut h: Vec<(String, String)> = self.headers.clone();
        let mut cookies = Vec::new();
        if let Some(s) = &self.session {
            cookies.push(format!("tollgate_session={s}"));
        }
        if let Some(c) = &self.consent {
            cookies.push(format!("tollgate_consent={c}"));
        }
        if !cookies.is_empty() {
            h.push(("cookie".into(), cookies.join("; ")));
        }
        if form.is_some() {
            h.push((
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
        }
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", env.tg.web.to_string());
        for (k, v) in &h {
            req = req.header(k.as_str(), v.as_str());
        }
        let body = bytes::Bytes::from(form.unwrap_or_default().to_string());
        let r = send_one(
            env.tg.web,
            req.body(http_body_util::Full::new(body)).unwrap(),
        )
        .await;
        for v in r.headers.get_all("set-cookie") {
            if let Some(rest) = v.to_str().unwrap().strip_prefix("tollgate_consent=") {
                self.consent = Some(rest.split(';').next().unwrap().to_string());
            }
        }
        r
    }

    /// POSTs the urlencoded `form` to `path`.
    async fn post(&mut self, env: &Env, path: &str, form: &str) -> Resp {
        self.send(env, "POST", path, Some(form)).await
    }

    /// `GET /connections` (200 asserted) and its csrf field.
    async fn page(&mut self, env: &Env) -> (String, String) {
        let r = self.send(env, "GET", "/connections", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let html = r.text();
        let csrf = common::consent::csrf_of(&html).unwrap_or_default();
        (html, csrf)
    }
}

/// The page's hardening: no script, the one CSP, no-store.
fn assert_hardened(r: &Resp) {
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(!r.text().contains("<script"));
}

#[tokio::test]
async fn the_page_connects_and_disconnects_with_forms() {
    let env = setup(&HEADER_LOGIN, |_, _| {}).await;
    // Not signed in: told to sign in, with the code and Proxy-Status.
    let mut anonymous = PageBrowser::new(Vec::new());
    let r = anonymous.send(&env, "GET", "/connections", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("login_required"));
    assert!(r.header("proxy-status").unwrap().contains("login_required"));

    let mut alice = PageBrowser::new(signed("alice", "acme"));
    let (html, csrf) = alice.page(&env).await;
    assert!(html.contains("Acme CRM"), "{html}");
    assert!(html.contains("data-state=\"needs_consent\""), "{html}");
    assert!(
        html.contains("Not connected: needs your consent"),
        "status in words: {html}"
    );
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("<h2 id=\"app-crm\">"), "{html}");
    assert!(
        alice.consent.is_none(),
        "the forms' token is the person's, not the consent cookie's"
    );
    assert!(!csrf.is_empty(), "{html}");
    let r = alice.send(&env, "GET", "/connections", None).await;
    assert_hardened(&r);

    // Forms without alice's token (another site's, or bob's) change nothing.
    let mut bob = PageBrowser::new(signed("bob", "acme"));
    let (_, bob_csrf) = bob.page(&env).await;
    assert!(!bob_csrf.is_empty() && bob_csrf != csrf);
    for bad in ["", "csrf=forged", &format!("csrf={bob_csrf}")] {
        let r = alice.post(&env, "/connections/crm/connect", bad).await;
        assert_eq!(r.status, 403, "{bad}: {}", r.text());
        assert!(r.header("proxy-status").unwrap().contains("csrf_invalid"));
        assert!(r.text().contains("csrf_invalid"));
    }
    // No GET changes anything.
    let r = alice
        .send(&env, "GET", "/connections/crm/connect", None)
        .await;
    assert_eq!(r.status, 405, "{}", r.text());

    // Connect: to the consent page of the ticket a 401 would carry.
    let form = format!("csrf={csrf}");
    let r = alice.post(&env, "/connections/crm/connect", &form).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let consent_url = r.header("location").unwrap();
    assert_eq!(env.consent_url("acme", "alice").await, consent_url);
    let login = [("x-forwarded-user", "alice"), ("x-forwarded-org", "acme")];
    let (done, _) = env.complete(&consent_url, &login).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(env.call("acme", "alice").await.status, 200);

    let (html, csrf) = alice.page(&env).await;
    assert!(html.contains("data-state=\"connected\""), "{html}");
    assert!(html.contains("read write"), "scopes: {html}");
    assert!(html.contains("Disconnect Acme CRM"), "{html}");
    assert!(!html.contains("AT-secret"));

    // Disconnect: revoked at the provider, and the page says the provider confirmed.
    let form = format!("csrf={csrf}");
    let r = alice.post(&env, "/connections/crm/disconnect", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(
        html.contains("The provider confirmed the revocation"),
        "{html}"
    );
    assert!(html.contains("role=\"status\""), "{html}");
    assert!(html.contains("data-state=\"needs_consent\""), "{html}");
    assert_eq!(env.p.with(|s| s.revoked.len()), 2);
    let r = alice.post(&env, "/connections/crm/disconnect", &form).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("not_connected"));
}

#[tokio::test]
async fn login_headers_count_only_from_trusted_proxies() {
    let mut flags = HEADER_LOGIN.to_vec();
    flags.extend(["--trusted-proxies", "192.0.2.0/24"]);
    let env = setup(&flags, |_, _| {}).await;
    let mut forged = PageBrowser::new(signed("alice", "acme"));
    let r = forged.send(&env, "GET", "/connections", None).await;
    assert_eq!(
        r.status,
        401,
        "loopback is not a trusted proxy here: {}",
        r.text()
    );
    assert!(!r.text().contains("Acme CRM"));
}

#[tokio::test]
async fn oidc_sign_in_guards_the_page() {
    let idp = common::idp::Idp::start().await;
    let (env, _secret) = common::login::start_oidc(&idp, &[]).await;
    let mut anonymous = PageBrowser::new(Vec::new());
    let r = anonymous.send(&env, "GET", "/connections", None).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/login?return=%2Fconnections")
    );
    let later = now() + 3600;
    let mut alice = PageBrowser::new(Vec::new());
    alice.session = Some(common::login::mint_session(
        &env.tg.data,
        "alice",
        Some("acme"),
        later,
    ));
    let (html, csrf) = alice.page(&env).await;
    assert!(
        html.contains("Signed in as <strong>alice</strong> of <strong>acme</strong>"),
        "{html}"
    );
    // The csrf is bound to the person: another session in the same browser cannot use it.
    let mut bob = PageBrowser::new(Vec::new());
    bob.session = Some(common::login::mint_session(
        &env.tg.data,
        "bob",
        Some("acme"),
        later,
    ));
    let r = bob
        .post(&env, "/connections/crm/connect", &format!("csrf={csrf}"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = alice
        .post(&env, "/connections/crm/connect", &format!("csrf={csrf}"))
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    // A session that names no org cannot be shown an org's apps.
    let mut no_org = PageBrowser::new(Vec::new());
    no_org.session = Some(common::login::mint_session(
        &env.tg.data,
        "alice",
        None,
        later,
    ));
    let r = no_org.send(&env, "GET", "/connections", None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("login_org_missing"));
}

#[tokio::test]
async fn without_login_the_page_asks_whose_connections() {
    let env = setup(&[], |_, _| {}).await;
    let mut dev = PageBrowser::new(Vec::new());
    let (html, _) = dev.page(&env).await;
    assert!(html.contains("<label for=\"user\">"), "{html}");
    assert!(!html.contains("Acme CRM"));
    let r = dev
        .send(&env, "GET", "/connections?org=acme&user=alice", None)
        .await;
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("Acme CRM"), "{html}");
    let csrf = common::consent::csrf_of(&html).unwrap();
    let form = format!("csrf={csrf}&org=acme&user=alice");
    let r = dev.post(&env, "/connections/crm/connect", &form).await;
    assert_eq!(r.status, 303, "{}", r.text());
    // The token names the person: the same field for another user (or org) is refused, and
    // so is a forged or absent one; nothing is asked of the browser but the form.
    assert!(dev.consent.is_none(), "no consent cookie needed");
    for bad in [
        format!("csrf={csrf}&org=acme&user=bob"),
        format!("csrf={csrf}&org=globex&user=alice"),
        "csrf=forged&org=acme&user=alice".to_string(),
        "org=acme&user=alice".to_string(),
    ] {
        let r = dev.post(&env, "/connections/crm/connect", &bad).await;
        assert_eq!(r.status, 403, "{bad}: {}", r.text());
        assert!(r.header("proxy-status").unwrap().contains("csrf_invalid"));
    }
}
