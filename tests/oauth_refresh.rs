//! Token refresh: ahead of expiry, once for concurrent callers, on an upstream 401, and what
//! each refresh failure does to the stored token.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::provider::RefreshMode;
use common::*;

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
