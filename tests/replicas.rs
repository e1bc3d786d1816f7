//! Replicas on a shared PostgreSQL (`TOLLGATE_TEST_POSTGRES`; skipped with a notice without
//! it): a store outage degrades a replica instead of failing it, and it recovers; and the
//! HAProxy suite (skipped with a notice without `haproxy`), three `tollgate serve` processes
//! sharing one database and one keys directory behind the real HAProxy with the
//! configuration of `deploy/haproxy/`.
//!
//! Each case prints its measured figures (`replicas: …`) for the closing note.

mod common;

use std::time::{Duration, Instant};

use common::oauth::setup;
use common::policies::LOCAL;
use common::postgres::{call, fresh_database, replica_dir, url_addr, Cut};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_degrades_the_replica_and_it_recovers() {
    let Some((url, _db)) = fresh_database("outage").await else {
        return;
    };
    // A reaches the database through a hop the test can cut; B directly.
    let cut = Cut::start(url_addr(&url)).await;
    let via = cut.url(&url);
    let env = setup(&["--store", &via], |_, _| {}).await;
    let b = Tollgate::start_in(replica_dir(&env.tg.data, LOCAL), &["--store", &url]);
    env.p.with(|s| s.access_ttl = Some(3600));
    env.consent("acme", "alice").await;
    let api = env.p.api.port();
    assert_eq!(call(&env.tg, api, "alice").await.status, 200);
    // bob's consent link, issued before the outage.
    let bob_consent = call(&env.tg, api, "bob").await;
    assert_eq!(bob_consent.status, 401, "{}", bob_consent.text());
    let bob_consent = bob_consent.json()["consent_url"]
        .as_str()
        .unwrap()
        .to_owned();

    cut.cut();
    let outage = Instant::now();
    // Cached: alice's token is injected as before.
    for _ in 0..5 {
        let r = call(&env.tg, api, "alice").await;
        assert_eq!(r.status, 200, "a cached request failed: {}", r.text());
    }
    // What needs the database answers 503 store_unavailable, promptly.
    let asked = Instant::now();
    let r = call(&env.tg, api, "carol").await;
    let miss_took = asked.elapsed();
    assert_proxy_error(&r, 503, "store_unavailable");
    assert!(miss_took < Duration::from_secs(12), "{miss_took:?}");
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "store_unavailable");
    assert!(r.header("proxy-status").is_some());
    let (web, path) = common::consent::split(&bob_consent);
    let r = common::consent::Browser::with(&[]).get(web, &path).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("store_unavailable"), "{}", r.text());
    // /readyz: still in rotation, degraded for operators, with the reason.
    let r = web_get(env.tg.web, "/readyz").await;
    assert_eq!(
        r.status,
        200,
        "an outage took the replica out: {}",
        r.text()
    );
    let detail = env.tg.operator_get("/readyz").await.json();
    assert_eq!(detail["ready"], true, "{detail}");
    assert_eq!(detail["status"], "degraded", "{detail}");
    assert_eq!(detail["store"], "unreachable", "{detail}");
    assert!(detail["store_error"].is_string(), "{detail}");

    // The database returns: pools and the listener recover.
    cut.restore();
    let recovered = wait_until(Duration::from_secs(15), async || {
        env.tg.operator_get("/readyz").await.json()["status"] == "ready"
    })
    .await;
    assert!(
        recovered,
        "readyz never left degraded; logs:\n{}",
        env.tg.logs()
    );
    let r = call(&env.tg, api, "carol").await;
    assert_eq!(r.status, 401, "a miss after the outage: {}", r.text());
    println!(
        "replicas: store outage of {} ms: cached requests served, a miss answered \
         503 store_unavailable in {} ms, recovered after restore",
        outage.elapsed().as_millis(),
        miss_took.as_millis()
    );
    // A's listener is back: B's disable reaches it.
    let r = web_request(
        b.web,
        "POST",
        "/v1/apps/crm/disable",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let disabled = Instant::now();
    let seen = wait_until(Duration::from_secs(5), async || {
        call(&env.tg, api, "alice").await.status == 403
    })
    .await;
    assert!(seen, "A's change listener did not recover");
    println!(
        "replicas: after the outage, B's disable held on A after {} ms",
        disabled.elapsed().as_millis()
    );
}
