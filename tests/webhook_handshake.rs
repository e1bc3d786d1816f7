//! The legacy webhook handshake (`handshake = "webhook"`), end to end: consent through the
//! provider's non-standard endpoints (an API key header, JSON in and out, nested outputs, the
//! lifetime as a string), refresh through the refresh template, and expiry without one. The
//! agent-routed exchange is in `agent_netns.rs`.

mod common;

use common::consent::browse;
use common::provider::{Canned, RefreshMode};
use common::webhook::*;
use common::*;
use serde_json::json;

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
    let expires_at = common::unix_time(&a["expires_at"]).unwrap();
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
