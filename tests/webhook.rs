//! The legacy webhook handshake (`handshake = "webhook"`), end to end: the real `tollgate`
//! binary on 127.0.0.1:0 and the in-process provider's non-standard endpoints
//! (`/handshake/token`, `/handshake/refresh`: an API key header, JSON in and out, nested
//! outputs, the lifetime as a string). The agent-routed exchange is in `agent_netns.rs`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::consent::{browse, Browsed};
use common::provider::{Canned, Provider, RefreshMode};
use common::*;
use serde_json::{json, Value};

use common::provider::LOCAL_POLICY as POLICY;

const API_KEY: &str = "k-HOOK-SECRET";

const DEADLINE: Duration = Duration::from_secs(15);

/// Where the provider's legacy answer keeps each output.
fn outputs() -> Value {
    json!({
        "access_token": "/result/token",
        "scope": "/result/scopes",
        "refresh_token": "/result/renew",
        "expires_in": "/result/ttl",
    })
}

/// A webhook app whose token and refresh requests match the provider's legacy endpoints.
/// `{{legacy}}` is a literal `{legacy}`; `webhook.egress_policy` is left to its default (the
/// app's own policy).
fn app_spec(p: &Provider) -> Value {
    json!({
        "id": "legacy",
        "name": "Legacy CRM",
        "description": "Records kept by the legacy CRM",
        "approval_prompt": "Allow the runner to use the legacy CRM?",
        "handshake": "webhook",
        "authorize_url": format!("{}/authorize", p.issuer()),
        "issuer": p.issuer(),
        "client_id": "client-1",
        "scopes": ["read", "write"],
        "egress_policy": "local",
        "domains": ["localhost"],
        "upstream_tls": false,
        "webhook": {
            "token": {
                "method": "POST",
                "url": format!("{}/handshake/token", p.issuer()),
                "headers": {"X-Api-Key": API_KEY, "X-Client": "{client_id}"},
                "json": {
                    "grant": {"code": "{authorization_code}", "verifier": "{code_verifier}"},
                    "client": "{client_id}",
                    "redirect": "{redirect_uri}",
                    "tag": "{{legacy}}",
                },
                "outputs": outputs(),
            },
            "refresh": {
                "url": format!("{}/handshake/refresh", p.issuer()),
                "headers": {"X-Api-Key": API_KEY},
                "json": {"renew": "{refresh_token}"},
                "outputs": outputs(),
            },
        },
    })
}

struct Env {
    tg: Tollgate,
    p: Provider,
    admin: String,
}

async fn setup(tweak: impl FnOnce(&mut Value, &Provider)) -> Env {
    let p = Provider::start().await;
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let mut spec = app_spec(&p);
    tweak(&mut spec, &p);
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    Env { tg, p, admin }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bearer_of(r: &Resp) -> String {
    r.json()["authorization"].as_str().unwrap_or("").to_string()
}

/// The single access token the provider has issued and not revoked.
fn only_access_token(p: &Provider) -> String {
    let issued: Vec<String> = p.with(|s| s.access_tokens.iter().cloned().collect());
    assert_eq!(issued.len(), 1, "{issued:?}");
    issued[0].clone()
}

/// Seconds between `obtained_at` and `expires_at` of an authorization.
fn lifetime(a: &Value) -> u64 {
    a["expires_at"].as_u64().unwrap() - a["obtained_at"].as_u64().unwrap()
}

impl Env {
    /// A runner's request to the API through the proxy.
    async fn call(&self, user: &str) -> Resp {
        let pa = self.tg.bearer("acme", user);
        proxy_request(
            self.tg.proxy,
            "GET",
            &format!("http://localhost:{}/records", self.p.api.port()),
            &[
                ("proxy-authorization", &pa),
                ("authorization", "Bearer client-own-token"),
            ],
            "",
        )
        .await
    }

    /// A call that must answer `401 authorization_required`; returns the consent URL.
    async fn consent_url(&self, user: &str) -> String {
        let r = self.call(user).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "authorization_required", "{}", r.text());
        r.json()["consent_url"].as_str().unwrap().to_string()
    }

    /// Runs the consent of `user` in a browser; returns what it saw.
    async fn browse(&self, user: &str) -> Browsed {
        let url = self.consent_url(user).await;
        browse(self.tg.web, self.p.addr, &url).await
    }

    /// The whole consent for `user`; asserts success.
    async fn consent(&self, user: &str) {
        let b = self.browse(user).await;
        assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    }

    async fn authorizations(&self) -> Vec<Value> {
        let r = web_request(
            self.tg.web,
            "GET",
            "/v1/apps/legacy/authorizations",
            Some(&self.admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["authorizations"].as_array().unwrap().clone()
    }

    async fn authorization(&self, user: &str) -> Option<Value> {
        self.authorizations()
            .await
            .into_iter()
            .find(|a| a["user"] == user)
    }

    /// Polls until every one of `users`' tokens is past its `expires_at` (so certainly due
    /// for refresh, whatever the rounding of the margin).
    async fn wait_expired(&self, users: &[&str]) {
        let ok = wait_until(DEADLINE, async || {
            let list = self.authorizations().await;
            users.iter().all(|u| {
                list.iter()
                    .find(|a| a["user"] == *u)
                    .and_then(|a| a["expires_at"].as_u64())
                    .is_some_and(|exp| now() >= exp)
            })
        })
        .await;
        assert!(ok, "tokens of {users:?} never expired");
    }

    async fn app(&self) -> Value {
        let r = web_request(
            self.tg.web,
            "GET",
            "/v1/apps/legacy",
            Some(&self.admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    async fn patch(&self, body: &Value) -> Resp {
        web_request(
            self.tg.web,
            "PATCH",
            "/v1/apps/legacy",
            Some(&self.admin),
            Some(body),
        )
        .await
    }

    fn violations(&self) -> Vec<String> {
        self.p.with(|s| s.violations.clone())
    }

    fn assert_no_secrets_logged(&self) {
        let logs = self.tg.logs();
        for s in [API_KEY, "AT-secret", "RT-secret", "sk-CLIENT-SECRET"] {
            assert!(!logs.contains(s), "{s} logged:\n{logs}");
        }
    }
}

/// The value of header `name` in a JSON object of headers, whatever the case of its name.
fn header_entry<'a>(headers: &'a Value, name: &str) -> Option<&'a Value> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[tokio::test]
async fn consent_through_the_webhook_then_injected_call() {
    let env = setup(|spec, _| {
        spec["client_secret"] = json!("sk-CLIENT-SECRET");
        spec["webhook"]["token"]["headers"]["X-Client-Secret"] = json!("{client_secret}");
    })
    .await;
    let b = env.browse("alice").await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    assert!(
        b.callback.text().contains("return to your workflow"),
        "{}",
        b.callback.text()
    );

    // The provider's legacy endpoint got the template, filled in.
    let seen = env
        .p
        .with(|s| s.last_hook_token.clone())
        .expect("the handshake token endpoint was not called");
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert_eq!(seen.header("x-client"), Some("client-1"));
    assert_eq!(seen.header("x-client-secret"), Some("sk-CLIENT-SECRET"));
    assert!(
        seen.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        seen.headers
    );
    let body = &seen.body;
    assert_eq!(body["grant"]["code"], b.code.as_str(), "{body}");
    let verifier = body["grant"]["verifier"].as_str().unwrap_or_default();
    assert!(
        (43..=128).contains(&verifier.len()),
        "verifier {verifier:?}"
    );
    assert_eq!(body["client"], "client-1");
    assert_eq!(
        body["redirect"],
        format!("http://{}/oauth/callback", env.tg.web)
    );
    assert_eq!(body["tag"], "{legacy}", "escaped braces not literal");
    // The code, the redirect and the PKCE verifier all checked out at the provider; the
    // standard token endpoint was never used.
    assert!(env.violations().is_empty(), "{:?}", env.violations());
    assert_eq!(env.p.hook_token_calls(), 1);
    assert_eq!(env.p.with(|s| s.code_calls), 0);

    // Stored with the outputs the pointers selected: scopes from an array, lifetime "3600".
    let list = env.authorizations().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["user"], "alice");
    assert_eq!(list[0]["scopes"], json!(["read", "write"]));
    assert_eq!(lifetime(&list[0]), 3600);

    // Injected like a standard app's token, replacing the client's own.
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        bearer_of(&r),
        format!("Bearer {}", only_access_token(&env.p))
    );
    assert!(bearer_of(&r).starts_with("Bearer AT-secret-"));
    assert_eq!(env.p.hook_refresh_calls(), 0);

    // The state is single-use here too.
    let replay = web_request(env.tg.web, "GET", &b.callback_path, None, None).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    assert_eq!(env.p.hook_token_calls(), 1, "replay reached the provider");
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn string_ttl_is_honoured_and_refresh_uses_the_refresh_template() {
    let env = setup(|_, _| {}).await;
    let refresh_tokens =
        || -> Vec<String> { env.p.with(|s| s.refresh_tokens.iter().cloned().collect()) };
    env.p.with(|s| s.hook_ttl = Some("3".into()));
    env.consent("alice").await;
    let a = env.authorization("alice").await.expect("stored");
    assert_eq!(lifetime(&a), 3, "ttl \"3\" not honoured: {a}");
    let first = format!("Bearer {}", only_access_token(&env.p));
    let rt1 = refresh_tokens();
    assert_eq!(rt1.len(), 1);

    // Expired: the next request refreshes through the refresh template first.
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = bearer_of(&r);
    assert!(second.starts_with("Bearer AT-secret-"), "{second}");
    assert_ne!(second, first, "expired token injected");
    assert_eq!(env.p.hook_refresh_calls(), 1);
    assert_eq!(env.p.refresh_calls(), 0, "standard token endpoint used");
    assert_eq!(env.p.hook_token_calls(), 1);
    let seen = env.p.with(|s| s.last_hook_refresh.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert_eq!(seen.body, json!({"renew": rt1[0]}));
    let a = env.authorization("alice").await.expect("still stored");
    assert_eq!(lifetime(&a), 3, "refreshed ttl not honoured");

    // The provider rotated the refresh token: the next refresh must present the new one
    // (the old one is dead at the provider).
    let rt2 = refresh_tokens();
    assert_eq!(rt2.len(), 1);
    assert_ne!(rt2, rt1);
    env.p.with(|s| s.hook_ttl = Some("3600".into()));
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let third = bearer_of(&r);
    assert_ne!(third, second, "expired token injected");
    assert_eq!(env.p.hook_refresh_calls(), 2);
    assert_eq!(
        env.p.with(|s| s.refresh_tokens_used.clone()),
        vec![rt1[0].clone(), rt2[0].clone()]
    );
    assert!(env.violations().is_empty(), "{:?}", env.violations());

    // Fresh now (3600 s): no further refresh.
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bearer_of(&r), third);
    assert_eq!(env.p.hook_refresh_calls(), 2, "fresh token refreshed again");
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn refresh_invalid_grant_deletes_the_token() {
    let env = setup(|_, _| {}).await;
    env.p.with(|s| s.hook_ttl = Some("3".into()));
    env.consent("alice").await;
    env.consent("bob").await;
    env.wait_expired(&["alice", "bob"]).await;

    // invalid_grant with 401 instead of 400: still the refresh token's death.
    env.p.with(|s| {
        s.next_hook_response = Some(Canned {
            status: 401,
            content_type: Some("application/json"),
            body: r#"{"error":"invalid_grant"}"#.into(),
        })
    });
    let r = env.call("bob").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    assert!(r.json()["consent_url"].as_str().is_some());
    assert!(env.authorization("bob").await.is_none(), "bob's token kept");

    env.p.with(|s| s.refresh_mode = RefreshMode::InvalidGrant);
    let r = env.call("alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    assert!(env.authorizations().await.is_empty(), "alice's token kept");
    assert_eq!(env.p.hook_refresh_calls(), 2);

    // A new consent starts over.
    env.p.with(|s| {
        s.refresh_mode = RefreshMode::Normal;
        s.hook_ttl = Some("3600".into());
    });
    let url = r.json()["consent_url"].as_str().unwrap().to_string();
    let b = browse(env.tg.web, env.p.addr, &url).await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    assert_eq!(env.call("alice").await.status, 200);
}

#[tokio::test]
async fn other_refresh_failures_are_502_and_keep_the_token() {
    let env = setup(|_, _| {}).await;
    env.p.with(|s| s.hook_ttl = Some("3".into()));
    let users = ["u-500", "u-missing", "u-unavailable", "u-key"];
    for u in users {
        env.consent(u).await;
    }
    env.wait_expired(&users).await;
    env.p.with(|s| s.hook_ttl = Some("3600".into()));

    struct Case {
        user: &'static str,
        arrange: fn(&mut common::provider::ProviderState),
    }
    let cases = [
        Case {
            user: "u-500",
            arrange: |s| s.refresh_mode = RefreshMode::ServerError,
        },
        Case {
            user: "u-missing",
            arrange: |s| {
                s.next_hook_response = Some(Canned {
                    status: 200,
                    content_type: Some("application/json"),
                    body: r#"{"result":{"scopes":["read"]}}"#.into(),
                })
            },
        },
        Case {
            user: "u-unavailable",
            arrange: |s| {
                s.next_hook_response = Some(Canned {
                    status: 400,
                    content_type: Some("application/json"),
                    body: r#"{"error":"temporarily_unavailable"}"#.into(),
                })
            },
        },
        Case {
            user: "u-key",
            arrange: |s| s.hook_api_key = "k-ROTATED-AT-THE-PROVIDER".into(),
        },
    ];
    for c in &cases {
        env.p.with(|s| (c.arrange)(s));
        let r = env.call(c.user).await;
        assert_eq!(r.status, 502, "{}: {}", c.user, r.text());
        assert_eq!(r.json()["error"], "token_refresh_failed", "{}", c.user);
        let ps = r.header("proxy-status").unwrap_or_default();
        assert!(ps.starts_with("tollgate; error="), "{}: {ps}", c.user);
        assert!(
            env.authorization(c.user).await.is_some(),
            "{}: token dropped",
            c.user
        );
        // Back to normal for the next case.
        env.p.with(|s| {
            s.refresh_mode = RefreshMode::Normal;
            s.next_hook_response = None;
            s.hook_api_key = API_KEY.into();
        });
    }
    assert_eq!(env.p.hook_refresh_calls(), cases.len());

    // The provider recovers: the kept refresh token works.
    let r = env.call("u-500").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.hook_refresh_calls(), cases.len() + 1);
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn callback_failures_name_the_cause_and_store_nothing() {
    let env = setup(|_, _| {}).await;
    struct Case {
        name: &'static str,
        status: u16,
        content_type: Option<&'static str>,
        body: &'static str,
        /// Set the provider's expected API key to something the app does not send.
        wrong_key: bool,
        /// Text the error page must contain.
        says: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "missing access_token output",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"result":{}}"#,
            wrong_key: false,
            says: &["/result/token"],
        },
        Case {
            name: "missing scope output",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"result":{"token":"{at}","renew":"{rt}"}}"#,
            wrong_key: false,
            says: &["/result/scopes"],
        },
        Case {
            name: "provider error with a code",
            status: 400,
            content_type: Some("application/json"),
            body: r#"{"error":"access_denied"}"#,
            wrong_key: false,
            says: &["provider error", "access_denied"],
        },
        Case {
            name: "provider error without a code",
            status: 403,
            content_type: Some("text/plain"),
            body: "forbidden",
            wrong_key: false,
            says: &["http_403"],
        },
        Case {
            name: "provider down",
            status: 500,
            content_type: Some("text/plain"),
            body: "internal error",
            wrong_key: false,
            says: &["unreachable", "HTTP 500"],
        },
        Case {
            name: "redirect",
            status: 302,
            content_type: Some("text/plain"),
            body: "moved",
            wrong_key: false,
            says: &["http_302"],
        },
        Case {
            name: "not JSON",
            status: 200,
            content_type: Some("text/html"),
            body: "<html>login</html>",
            wrong_key: false,
            says: &[],
        },
        Case {
            name: "wrong API key",
            status: 0,
            content_type: None,
            body: "",
            wrong_key: true,
            says: &["bad_api_key"],
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let user = format!("user{i}");
        env.p.with(|s| {
            s.next_hook_response = (!c.wrong_key).then(|| Canned {
                status: c.status,
                content_type: c.content_type,
                body: c.body.to_string(),
            });
            s.hook_api_key = if c.wrong_key {
                "k-SOMETHING-ELSE".into()
            } else {
                API_KEY.into()
            };
        });
        let b = env.browse(&user).await;
        let page = b.callback.text();
        assert_eq!(b.callback.status, 502, "{}: {page}", c.name);
        assert!(
            b.callback
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("text/html")),
            "{}",
            c.name
        );
        for want in c.says {
            assert!(page.contains(want), "{}: {want:?} missing:\n{page}", c.name);
        }
        assert!(page.contains("Nothing was stored"), "{}: {page}", c.name);
        assert!(!page.contains(API_KEY), "{}: API key on the page", c.name);
        assert!(
            env.authorization(&user).await.is_none(),
            "{}: stored",
            c.name
        );
        let r = env.call(&user).await;
        assert_eq!(r.status, 401, "{}: {}", c.name, r.text());
        assert_eq!(env.p.hook_token_calls(), i + 1, "{}", c.name);
    }
    assert!(env.authorizations().await.is_empty());
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn output_variants_are_accepted() {
    let env = setup(|spec, _| spec["access_token_ttl"] = json!(1234)).await;
    struct Case {
        name: &'static str,
        body: &'static str,
        scopes: Value,
        lifetime: u64,
    }
    let cases = [
        Case {
            name: "space-separated scope, numeric ttl",
            body: r#"{"result":{"token":"{at}","scopes":"read write","renew":"{rt}","ttl":60}}"#,
            scopes: json!(["read", "write"]),
            lifetime: 60,
        },
        Case {
            name: "array of one scope, ttl as a numeric string",
            body: r#"{"result":{"token":"{at}","scopes":["read"],"ttl":"120"}}"#,
            scopes: json!(["read"]),
            lifetime: 120,
        },
        Case {
            name: "no ttl: the app's access_token_ttl",
            body: r#"{"result":{"token":"{at}","scopes":["write"]}}"#,
            scopes: json!(["write"]),
            lifetime: 1234,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let user = format!("user{i}");
        env.p.with(|s| {
            s.next_hook_response = Some(Canned {
                status: 200,
                content_type: Some("application/json"),
                body: c.body.to_string(),
            })
        });
        let b = env.browse(&user).await;
        assert_eq!(b.callback.status, 200, "{}: {}", c.name, b.callback.text());
        let a = env
            .authorization(&user)
            .await
            .unwrap_or_else(|| panic!("{}: not stored", c.name));
        assert_eq!(a["scopes"], c.scopes, "{}", c.name);
        assert_eq!(lifetime(&a), c.lifetime, "{}", c.name);
        let r = env.call(&user).await;
        assert_eq!(r.status, 200, "{}: {}", c.name, r.text());
        assert!(bearer_of(&r).starts_with("Bearer AT-secret-"), "{}", c.name);
    }
}

#[tokio::test]
async fn without_a_refresh_template_expiry_asks_for_consent_again() {
    let env = setup(|spec, _| {
        spec["webhook"].as_object_mut().unwrap().remove("refresh");
    })
    .await;
    // The answer carries a refresh token ("renew"), which tollgate captures but cannot use.
    env.p.with(|s| s.hook_ttl = Some("3".into()));
    env.consent("alice").await;
    assert_eq!(env.p.with(|s| s.refresh_tokens.len()), 1);
    env.wait_expired(&["alice"]).await;
    let api_before = env.p.with(|s| s.api_calls);

    let r = env.call("alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    let url = r.json()["consent_url"].as_str().unwrap().to_string();
    assert_eq!(env.p.hook_refresh_calls(), 0, "refresh endpoint called");
    assert_eq!(env.p.refresh_calls(), 0, "standard token endpoint called");
    assert_eq!(
        env.p.with(|s| s.api_calls),
        api_before,
        "expired token sent upstream"
    );

    env.p.with(|s| s.hook_ttl = Some("3600".into()));
    let b = browse(env.tg.web, env.p.addr, &url).await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.hook_token_calls(), 2);
}

/// Without a way to refresh, the early-refresh margin (min(60 s, lifetime/2)) does not apply:
/// the token serves until it really expires.
#[tokio::test]
async fn without_a_refresh_template_the_token_serves_until_it_expires() {
    let env = setup(|spec, _| {
        spec["webhook"].as_object_mut().unwrap().remove("refresh");
    })
    .await;
    // 12 s: stale for refreshing after 6 s, expired after 12 s; the test calls in between.
    env.p.with(|s| s.hook_ttl = Some("12".into()));
    env.consent("alice").await;
    let first = bearer_of(&env.call("alice").await);
    let a = env.authorization("alice").await.expect("stored");
    let expires_at = a["expires_at"].as_u64().unwrap();
    let stale = wait_until(DEADLINE, async || now() > expires_at - 6).await;
    assert!(stale, "never reached the refresh margin");
    let r = env.call("alice").await;
    if now() < expires_at {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(bearer_of(&r), first, "a usable token was not injected");
    }
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    assert_eq!(env.p.hook_refresh_calls(), 0);
}

/// Switching the handshake by PATCH drops what only the old one used (unless the PATCH sends
/// it), and a standard app switched to the webhook handshake runs the webhook exchange.
#[tokio::test]
async fn patch_switches_the_handshake_both_ways() {
    let env = setup(|_, _| {}).await;
    let hook = env.app().await["webhook"].clone();
    // To standard: a token_url and a secret are needed; the templates go.
    let r = env
        .patch(&json!({
            "handshake": "standard",
            "token_url": format!("{}/token", env.p.issuer()),
            "client_secret": "sk-CLIENT-SECRET",
        }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["webhook"], Value::Null);
    env.consent("alice").await;
    assert_eq!(
        env.p.with(|s| s.code_calls),
        1,
        "standard token endpoint not used"
    );
    assert_eq!(env.p.hook_token_calls(), 0);

    // Back to webhook, sending the templates as GET showed them (header values null cannot
    // be kept: the standard app stores none, so the key is sent again).
    let mut hook = hook;
    hook["token"]["headers"] = json!({"X-Api-Key": API_KEY, "X-Client": "{client_id}"});
    hook["refresh"]["headers"] = json!({"X-Api-Key": API_KEY});
    let r = env
        .patch(&json!({"handshake": "webhook", "webhook": hook}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_url"], Value::Null);
    env.consent("bob").await;
    assert_eq!(env.p.hook_token_calls(), 1, "webhook exchange not used");
    assert!(env.violations().is_empty(), "{:?}", env.violations());
}

#[tokio::test]
async fn invalid_webhook_specs_name_the_field() {
    let p = Provider::start().await;
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    type Tweak = fn(&mut Value);
    // A field key is matched exactly, or as a prefix when it ends with '*'.
    let cases: [(&str, Tweak, &str, &str); 14] = [
        (
            "unknown placeholder in the token JSON",
            |s| s["webhook"]["token"]["json"]["grant"]["code"] = json!("{nope}"),
            "webhook.token.json",
            "nope",
        ),
        (
            "unknown placeholder in a token header",
            |s| s["webhook"]["token"]["headers"]["X-Client"] = json!("id={nope}"),
            "webhook.token.headers",
            "nope",
        ),
        (
            "refresh token in the token request",
            |s| s["webhook"]["token"]["json"]["client"] = json!("{refresh_token}"),
            "webhook.token.json",
            "refresh_token",
        ),
        (
            "authorization code in the refresh request",
            |s| s["webhook"]["refresh"]["json"]["code"] = json!("{authorization_code}"),
            "webhook.refresh.json",
            "authorization_code",
        ),
        (
            "code verifier in a refresh header",
            |s| s["webhook"]["refresh"]["headers"]["X-V"] = json!("{code_verifier}"),
            "webhook.refresh.headers",
            "code_verifier",
        ),
        (
            "code verifier without PKCE",
            |s| s["pkce"] = json!(false),
            "webhook.token.json",
            "code_verifier",
        ),
        (
            "client secret when the app has none",
            |s| s["webhook"]["token"]["json"]["secret"] = json!("{client_secret}"),
            "webhook.token.json",
            "client_secret",
        ),
        (
            "unknown placeholder in a form",
            |s| {
                let t = &mut s["webhook"]["token"];
                t.as_object_mut().unwrap().remove("json");
                t["form"] = json!({"code": "{authorization_code}", "x": "{nope}"});
            },
            "webhook.token.form",
            "nope",
        ),
        (
            "json and form together",
            |s| s["webhook"]["token"]["form"] = json!({"code": "{authorization_code}"}),
            "webhook.token*",
            "",
        ),
        (
            "no access_token output",
            |s| {
                s["webhook"]["token"]["outputs"]
                    .as_object_mut()
                    .unwrap()
                    .remove("access_token");
            },
            "webhook.token*",
            "access_token",
        ),
        (
            "no scope output",
            |s| {
                s["webhook"]["refresh"]["outputs"]
                    .as_object_mut()
                    .unwrap()
                    .remove("scope");
            },
            "webhook.refresh*",
            "scope",
        ),
        (
            "an output that is not a JSON pointer",
            |s| s["webhook"]["token"]["outputs"]["access_token"] = json!("result.token"),
            "webhook.token*",
            "",
        ),
        (
            "token_url on a webhook app",
            |s| s["token_url"] = json!("http://127.0.0.1:1/token"),
            "token_url",
            "",
        ),
        (
            "no webhook object",
            |s| {
                s.as_object_mut().unwrap().remove("webhook");
            },
            "webhook",
            "",
        ),
    ];
    for (name, tweak, field, mention) in cases {
        let mut spec = app_spec(&p);
        tweak(&mut spec);
        let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let fields = r.json()["fields"].clone();
        let fields = fields
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no fields in {}", r.text()));
        let hit = match field.strip_suffix('*') {
            Some(prefix) => fields.iter().find(|(k, _)| k.starts_with(prefix)),
            None => fields.iter().find(|(k, _)| k.as_str() == field),
        };
        let (key, msg) = hit.unwrap_or_else(|| panic!("{name}: {field} not named in {fields:?}"));
        let msg = msg.as_str().unwrap_or_default();
        assert!(
            msg.contains(mention) || key.contains(mention),
            "{name}: {key}: {msg:?} does not mention {mention:?}"
        );
        assert!(!r.text().contains(API_KEY), "{name}: API key echoed");
    }
    // Doubled braces are literal braces, not placeholders.
    let mut spec = app_spec(&p);
    spec["webhook"]["token"]["headers"]["X-Literal"] = json!("{{nope}}");
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&admin), None).await;
    assert_eq!(
        r.json()["apps"].as_array().unwrap().len(),
        1,
        "{}",
        r.text()
    );
}

/// Every file under `dir`, recursively.
#[tokio::test]
async fn header_values_are_write_only_and_sealed_at_rest() {
    let env = setup(|_, _| {}).await;
    env.consent("alice").await;

    let app = env.app().await;
    assert_eq!(app["handshake"], "webhook");
    let hook = &app["webhook"];
    for t in ["token", "refresh"] {
        let headers = &hook[t]["headers"];
        let v = header_entry(headers, "X-Api-Key")
            .unwrap_or_else(|| panic!("{t}: header name not shown: {app}"));
        assert!(v.is_null(), "{t}: header value shown: {v}");
    }
    assert!(header_entry(&hook["token"]["headers"], "X-Client").is_some_and(Value::is_null));
    assert_eq!(
        hook["token"]["url"],
        format!("{}/handshake/token", env.p.issuer())
    );
    assert_eq!(hook["token"]["outputs"], outputs());
    for r in [
        web_request(env.tg.web, "GET", "/v1/apps", Some(&env.admin), None).await,
        web_request(env.tg.web, "GET", "/v1/apps/legacy", Some(&env.admin), None).await,
    ] {
        assert!(!r.text().contains(API_KEY), "{}", r.text());
    }

    // On disk: the app is there (its description, in the clear), the API key is not.
    let stored = wait_until(DEADLINE, async || {
        env.tg.data_contains(b"Records kept by the legacy CRM")
    })
    .await;
    assert!(
        stored,
        "the walk found no trace of the app in {:?}",
        env.tg.data
    );
    assert!(
        !env.tg.data_contains(API_KEY.as_bytes()),
        "API key in plaintext on disk"
    );
    env.assert_no_secrets_logged();

    // Still in force after a restart: the sealed value is read back.
    let tg = env.tg.restart(false, &[]);
    let env = Env {
        admin: tg.admin_token("acme", "root"),
        tg,
        p: env.p,
    };
    env.consent("bob").await;
    assert!(env.violations().is_empty(), "{:?}", env.violations());
}

#[tokio::test]
async fn patch_with_null_header_values_keeps_the_stored_ones() {
    let env = setup(|_, _| {}).await;
    let mut hook = env.app().await["webhook"].clone();
    assert!(hook.is_object(), "no webhook in GET");
    // Sent back as shown (values null), a header name in another case, and one real change.
    let headers = hook["token"]["headers"].as_object_mut().unwrap();
    let name = headers
        .keys()
        .find(|k| k.eq_ignore_ascii_case("x-api-key"))
        .unwrap()
        .clone();
    headers.remove(&name);
    headers.insert("x-API-key".into(), Value::Null);
    hook["token"]["json"]["note"] = json!("patched");
    let r = env.patch(&json!({ "webhook": hook })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(API_KEY));
    let shown = env.app().await;
    assert_eq!(shown["webhook"]["token"]["json"]["note"], "patched");
    assert!(
        header_entry(&shown["webhook"]["token"]["headers"], "x-api-key")
            .is_some_and(Value::is_null)
    );

    // The token request still carries the kept key (and the patched body); so does the
    // refresh request, whose template was sent back with its null too.
    env.p.with(|s| s.hook_ttl = Some("3".into()));
    env.consent("alice").await;
    let seen = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert_eq!(seen.body["note"], "patched");
    env.p.with(|s| s.hook_ttl = Some("3600".into()));
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.hook_refresh_calls(), 1);
    let seen = env.p.with(|s| s.last_hook_refresh.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert!(env.violations().is_empty(), "{:?}", env.violations());

    // A new header has no stored value to keep.
    let mut bad = env.app().await["webhook"].clone();
    bad["token"]["headers"]["X-New"] = Value::Null;
    let r = env.patch(&json!({ "webhook": bad })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let fields = r.json()["fields"].clone();
    let (key, msg) = fields
        .as_object()
        .and_then(|f| {
            f.iter()
                .find(|(k, _)| k.starts_with("webhook.token.headers"))
        })
        .unwrap_or_else(|| panic!("webhook.token.headers not named: {}", r.text()));
    assert!(
        msg.as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("x-new")
            || key.to_lowercase().contains("x-new"),
        "{key}: {msg}"
    );
    // The refused PATCH changed nothing.
    env.consent("bob").await;

    // A value that is sent replaces the stored one.
    let mut rotated = env.app().await["webhook"].clone();
    for (k, v) in rotated["token"]["headers"].as_object_mut().unwrap() {
        if k.eq_ignore_ascii_case("x-api-key") {
            *v = json!("k-ROTATED");
        }
    }
    let r = env.patch(&json!({ "webhook": rotated })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    env.p.with(|s| s.hook_api_key = "k-ROTATED".into());
    env.consent("carol").await;
    assert!(env.violations().is_empty(), "{:?}", env.violations());
    assert!(!env.tg.data_contains(b"k-ROTATED"), "new key on disk");
}

#[tokio::test]
async fn form_templates_are_url_encoded() {
    let env = setup(|spec, _| {
        let forms = [
            (
                "token",
                json!({
                    "code": "{authorization_code}", "verifier": "{code_verifier}",
                    "client": "{client_id}", "redirect": "{redirect_uri}",
                    "note": "a&b=c d+e%",
                }),
            ),
            ("refresh", json!({"renew": "{refresh_token}"})),
        ];
        for (step, form) in forms {
            let t = &mut spec["webhook"][step];
            t.as_object_mut().unwrap().remove("json");
            t["form"] = form;
        }
    })
    .await;
    env.p.with(|s| {
        s.hook_accepts_form = true;
        s.hook_ttl = Some("3".into());
    });
    let b = env.browse("alice").await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    let seen = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert!(
        seen.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.body["grant"]["code"], b.code.as_str());
    assert_eq!(seen.body["client"], "client-1");
    assert_eq!(
        seen.body["redirect"],
        format!("http://{}/oauth/callback", env.tg.web)
    );
    assert_eq!(seen.body["note"], "a&b=c d+e%", "form value not encoded");
    let rt: Vec<String> = env.p.with(|s| s.refresh_tokens.iter().cloned().collect());

    env.p.with(|s| s.hook_ttl = Some("3600".into()));
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.hook_refresh_calls(), 1);
    let seen = env.p.with(|s| s.last_hook_refresh.clone()).unwrap();
    assert_eq!(seen.body, json!({"renew": rt[0]}));
    assert!(env.violations().is_empty(), "{:?}", env.violations());
}

#[tokio::test]
async fn app_apply_from_a_file_takes_the_api_key_from_the_environment() {
    let p = Provider::start().await;
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let file = tg.dir.path().join("legacy.toml");
    let issuer = p.issuer();
    std::fs::write(
        &file,
        format!(
            r#"
id = "legacy"
name = "Legacy CRM"
approval_prompt = "Allow the runner to use the legacy CRM?"
handshake = "webhook"
authorize_url = "{issuer}/authorize"
client_id = "client-1"
scopes = ["read", "write"]
egress_policy = "local"
domains = ["localhost"]
upstream_tls = false

[webhook.token]
url = "{issuer}/handshake/token"
headers = {{ "X-Api-Key" = {{ env = "HOOK_KEY" }} }}
json = {{ client = "{{client_id}}", redirect = "{{redirect_uri}}", grant = {{ code = "{{authorization_code}}", verifier = "{{code_verifier}}" }} }}
outputs = {{ access_token = "/result/token", scope = "/result/scopes", refresh_token = "/result/renew", expires_in = "/result/ttl" }}
"#
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("app")
            .args(args)
            .env("TOLLGATE_URL", format!("http://{}", tg.web))
            .env("TOLLGATE_TOKEN", &admin)
            .env("HOOK_KEY", API_KEY)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(API_KEY), "API key printed:\n{text}");
        (out.status.code(), text)
    };
    let (code, out) = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("created app legacy"), "{out}");
    let (code, out) = cli(&["show", "legacy"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("webhook"), "{out}");
    let (code, out) = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("updated app legacy"), "{out}");

    let env = Env { tg, p, admin };
    env.consent("alice").await;
    let seen = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert!(env.violations().is_empty(), "{:?}", env.violations());
    assert_eq!(env.call("alice").await.status, 200);
}

#[tokio::test]
async fn a_policy_that_no_longer_allows_the_endpoint_stops_the_exchange() {
    let env = setup(|_, _| {}).await;
    let url = env.consent_url("alice").await;
    let (web, path) = common::consent::split(&url);
    let post = web_request(web, "POST", &path, None, None).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = common::consent::split(&post.header("location").unwrap());
    let at_idp = web_request(idp, "GET", &authorize, None, None).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    // The admins narrow the policy: the handshake endpoint (a loopback address) is no
    // longer allowed; the API (by name) still is.
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
    let (back, callback) = common::consent::split(&at_idp.header("location").unwrap());
    let r = web_request(back, "GET", &callback, None, None).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("does not allow"), "{}", r.text());
    assert_eq!(env.p.hook_token_calls(), 0, "handshake endpoint reached");
    assert!(env.authorizations().await.is_empty());
    // The app is reported as broken, naming the refusal.
    let app = env.app().await;
    assert_eq!(app["status"], "broken", "{app}");
    assert!(
        app["problems"].to_string().contains("does not allow"),
        "{app}"
    );
}

#[tokio::test]
async fn the_address_guard_applies_to_the_exchange() {
    // `hooks` allows the name `localhost` but not private addresses: the handshake URL is
    // valid for the policy, and the address it resolves to is refused when dialing.
    let policy = format!(
        "{POLICY}
[[policy]]
name = \"hooks\"
route = \"direct\"
  [[policy.allow]]
  hosts = [\"localhost\"]
  ports = [\"1-65535\"]
"
    );
    let p = Provider::start().await;
    let tg = Tollgate::start(&policy, &[]);
    let admin = tg.admin_token("acme", "root");
    let mut spec = app_spec(&p);
    spec["webhook"]["egress_policy"] = json!("hooks");
    for step in ["token", "refresh"] {
        spec["webhook"][step]["url"] = json!(format!(
            "http://localhost:{}/handshake/{step}",
            p.addr.port()
        ));
    }
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let env = Env { tg, p, admin };
    let b = env.browse("alice").await;
    assert_eq!(b.callback.status, 502, "{}", b.callback.text());
    for want in ["prohibited", "Nothing was stored"] {
        assert!(
            b.callback.text().contains(want),
            "{want:?} missing: {}",
            b.callback.text()
        );
    }
    assert_eq!(env.p.hook_token_calls(), 0, "loopback dialed");
    assert!(env.authorizations().await.is_empty());
}
