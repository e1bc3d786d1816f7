//! The consent flow end to end: the real `tollgate`, an in-process OAuth provider and a
//! protected API; what the provider is sent, what it may answer, and what tollgate refuses.

mod common;

use common::oauth::*;
use common::provider::Canned;
use common::*;
use serde_json::json;

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
    let mut browser = common::consent::Browser::default();
    let (page, csrf) = browser.open(web, &path).await;
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
    let post = browser.authorize(web, &path, csrf.as_deref()).await;
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
    let done = browser.get(back, &callback).await;
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
    let mut browser = common::consent::Browser::default();
    let post = browser.consent(web, &path).await;
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
    let r = browser.get(env.tg.web, &cb).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("not granted"), "{}", r.text());
    assert!(r.text().contains("User said no"));
    // The state is gone: a code for it now fails too.
    let r = browser
        .get(env.tg.web, &format!("/oauth/callback?code=c&state={state}"))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("consent_pending_unusable"),
        "{}",
        r.text()
    );
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
                    let got = unix_time(&a["expires_at"]).unwrap()
                        - unix_time(&a["obtained_at"]).unwrap();
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
        unix_time(&a["expires_at"]).unwrap() - unix_time(&a["obtained_at"]).unwrap(),
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
