//! An app's lifecycle seen from the token side: reset, disable, revoke, delete; isolation
//! between orgs; token calls under the app's egress policy.

mod common;

use common::oauth::*;
use common::provider::RefreshMode;
use common::*;
use serde_json::json;

/// A reset makes pending consents invalid: a ticket issued before it no longer opens, and a
/// consent in progress at the provider stores nothing.
#[tokio::test]
async fn reset_invalidates_tickets_and_consents_in_progress() {
    let env = setup(&[], |_, _| {}).await;
    let reset = || async {
        let r = env.admin_call("POST", "/v1/apps/crm/reset", None).await;
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
    let mut browser = common::consent::Browser::default();
    let post = browser.consent(web, &path).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = split(&post.header("location").unwrap());
    let at_idp = http(idp, "GET", &authorize, &[]).await;
    reset().await;
    let (back, callback) = split(&at_idp.header("location").unwrap());
    let done = browser.get(back, &callback).await;
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
    let r = env.admin_call("POST", "/v1/apps/crm/reset", None).await;
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
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
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
    let r = env.admin_call("POST", "/v1/apps/crm/enable", None).await;
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
    let r = env
        .admin_call("DELETE", "/v1/apps/crm/authorizations/ann", None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(env.call("acme", "ann").await.status, 401);
    assert!(
        revoked(access["ann"].clone()).await,
        "ann's token not revoked",
    );
    assert_eq!(env.call("acme", "ben").await.status, 200);

    // Reset: every user.
    let r = env.admin_call("POST", "/v1/apps/crm/reset", None).await;
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
    let r = env.admin_call("DELETE", "/v1/apps/crm", None).await;
    assert_eq!(r.status, 204);
    let r = env.call("acme", "cid").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(bearer_of(&r), CLIENT_AUTH, "token injected after delete");
    assert!(revoked(cid_new).await, "token not revoked on delete");
    // Irreversible: the same app created again starts with no authorizations.
    let r = env
        .admin_call("POST", "/v1/apps", Some(&app_spec(&env.p)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(env.authorizations("crm").await.is_empty());
    let r = env.call("acme", "cid").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "authorization_required");
    env.assert_no_secrets_logged();
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
    let r = env.admin_call("GET", "/v1/apps/crm-globex", None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn token_calls_follow_the_apps_egress_policy() {
    let env = setup(&[], |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let mut browser = common::consent::Browser::default();
    let post = browser.consent(web, &path).await;
    assert_eq!(post.status, 303);
    let (idp, authorize) = split(&post.header("location").unwrap());
    let at_idp = http(idp, "GET", &authorize, &[]).await;
    assert_eq!(at_idp.status, 302);
    // The admins narrow the policy: the token endpoint (a loopback address) is no longer
    // allowed. The code exchange must not reach the provider.
    env.tg
        .write_policy("10-test.toml", common::policies::LOCAL_BY_NAME);
    let reloaded = wait_until(DEADLINE, async || env.tg.policy_generation().await == 2).await;
    assert!(reloaded, "policy not reloaded");
    let (back, callback) = split(&at_idp.header("location").unwrap());
    let r = browser.get(back, &callback).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("does not allow"), "{}", r.text());
    assert_eq!(env.p.with(|s| s.code_calls), 0, "token endpoint reached");
    assert!(env.authorizations("crm").await.is_empty());
}
