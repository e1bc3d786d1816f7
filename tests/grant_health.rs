//! Grant health end to end: "last used" written coalesced, and what refresh outcomes leave
//! on the stored grant (`refresh_failing`, `ok` again, `needs_consent` kept with its 401).
//! The stored health is read from the sled store once tollgate stopped.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::provider::RefreshMode;
use common::*;
use tollgate::store::{GrantState, SledStore, Store, StoreKey, TokenSet};

/// The series' value in a Prometheus text exposition (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Stops tollgate and reads the users' stored grants of `crm`.
async fn stored_grants(env: &mut Env, users: &[&str]) -> Vec<Option<TokenSet>> {
    let status = env.tg.stop().await;
    assert!(status.success(), "{status:?}");
    let key = StoreKey::load(&env.tg.data.join("keys/store.key")).unwrap();
    let store = SledStore::open(&env.tg.data.join("store"), key).unwrap();
    let app = store.get_app("acme", "crm").await.unwrap().unwrap();
    let mut out = Vec::new();
    for user in users {
        out.push(
            store
                .get_token("acme", "crm", app.incarnation, app.generation, user)
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn last_used_is_written_once_for_many_requests() {
    let mut env = setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    let before = now();
    for _ in 0..10 {
        let calls = (0..50).map(|_| env.call("acme", "alice"));
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let series = "tollgate_grant_last_used_writes_total";
    let written = wait_until(Duration::from_secs(15), async || {
        metric(&env.metrics().await, series) >= 1
    })
    .await;
    assert!(written, "no last-use write:\n{}", env.metrics().await);
    let writes = metric(&env.metrics().await, series);
    println!("last-use store writes for 500 requests: {writes}");
    assert!(writes <= 2, "{writes} writes for 500 requests");
    let grant = stored_grants(&mut env, &["alice"]).await.remove(0).unwrap();
    let used = grant.health.last_used_at.expect("last use stored");
    assert!(
        used >= before && used <= now(),
        "{used} not in [{before}, now]"
    );
    assert_eq!(grant.health.state, GrantState::Ok);
}

#[tokio::test]
async fn refresh_outcomes_set_the_grant_state() {
    let mut env = setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    for user in ["alice", "bob", "carol"] {
        env.consent("acme", user).await;
    }
    env.p.with(|s| s.access_ttl = Some(3600));
    for user in ["alice", "bob", "carol"] {
        env.wait_stale(user).await;
    }
    // A provider 500: the grants stay, failing.
    env.p.with(|s| s.refresh_mode = RefreshMode::ServerError);
    for user in ["alice", "carol"] {
        assert_proxy_error(&env.call("acme", user).await, 502, "token_refresh_failed");
    }
    // carol recovers; bob's refresh token is refused for good.
    env.p.with(|s| s.refresh_mode = RefreshMode::Normal);
    assert_eq!(env.call("acme", "carol").await.status, 200);
    env.p.with(|s| s.refresh_mode = RefreshMode::InvalidGrant);
    let r = env.call("acme", "bob").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    let calls = env.p.refresh_calls();
    // The kept grant is never injected nor refreshed again: still a consent answer.
    let r = env.call("acme", "bob").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    assert_eq!(
        env.p.refresh_calls(),
        calls,
        "a needs-consent grant was refreshed"
    );
    let users: Vec<_> = env.authorizations("crm").await;
    let users: Vec<_> = users.iter().map(|a| a["user"].clone()).collect();
    assert_eq!(
        users,
        ["alice", "carol"],
        "bob's refused grant is not an authorization"
    );
    let [alice, bob, carol] =
        <[_; 3]>::try_from(stored_grants(&mut env, &["alice", "bob", "carol"]).await)
            .unwrap()
            .map(Option::unwrap);
    assert_eq!(bob.health.state, GrantState::NeedsConsent);
    let why = bob.health.last_error.unwrap();
    assert!(why.contains("invalid_grant"), "{why}");
    assert_eq!(bob.refresh_token, None, "the refused tokens are not kept");
    assert!(bob.access_token.expose().is_empty());
    assert!(bob.health.failing_since.is_some());
    assert_eq!(carol.health.state, GrantState::Ok);
    assert_eq!(carol.health.last_error, None);
    assert!(carol.health.last_refreshed_at.is_some());
    assert_eq!(alice.health.state, GrantState::RefreshFailing);
    let error = alice.health.last_error.unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert!(alice.health.failing_since.is_some());
    env.assert_no_secrets_logged();
}
