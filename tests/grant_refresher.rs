//! The background refresher (`--refresh-ahead`): grants are refreshed ahead of expiry with
//! no request, counted by state; on PostgreSQL two replicas refresh each grant exactly once
//! per round (the provider sees each rotated refresh token once, and the versions moved by
//! exactly the provider's refresh count).

mod common;

use std::time::Duration;

use common::oauth::*;
use common::policies::LOCAL;
use common::postgres::{fresh_database, replica_dir};
use common::*;

/// The series' value in a Prometheus text exposition (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_with_no_request() {
    let env = setup(&["--refresh-ahead", "8s"], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(10));
    env.consent("acme", "alice").await;
    env.p.with(|s| s.access_ttl = Some(3600));
    let refreshed = wait_until(Duration::from_secs(20), async || env.p.refresh_calls() == 1).await;
    assert!(refreshed, "no background refresh:\n{}", env.tg.logs());
    // The next scan publishes the counts; the grant is fresh now, so nothing more happens.
    let scans = metric(&env.metrics().await, "tollgate_refresher_scans_total");
    let scanned = wait_until(Duration::from_secs(10), async || {
        metric(&env.metrics().await, "tollgate_refresher_scans_total") > scans
    })
    .await;
    assert!(scanned);
    let m = env.metrics().await;
    assert_eq!(
        metric(&m, "tollgate_grants{org=\"acme\",app=\"crm\",state=\"ok\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tollgate_refresher_grants_total{outcome=\"refreshed\"}"),
        1,
        "{m}"
    );
    assert_eq!(env.p.refresh_calls(), 1, "refreshed again while fresh");
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.refresh_calls(), 1, "the request refreshed too");
}

#[tokio::test]
async fn two_replicas_refresh_each_grant_once_per_round() {
    let Some((url, db)) = fresh_database("refresher_two").await else {
        return;
    };
    let flags = ["--store", url.as_str(), "--refresh-ahead", "4s"];
    let env = setup(&flags, |_, _| {}).await;
    let b = Tollgate::start_in(replica_dir(&env.tg.data, LOCAL), &flags);
    // Tokens live 5 s and are due 1 s after each refresh; every refresh rotates the refresh
    // token, and presenting a rotated one again makes the provider revoke everything.
    env.p.with(|s| {
        s.access_ttl = Some(5);
        s.rotate_refresh = true;
        s.revoke_on_reuse = true;
    });
    let users = ["alice", "bob", "carol"];
    for user in users {
        env.consent("acme", user).await;
    }
    let enough = wait_until(Duration::from_secs(30), async || {
        env.p.refresh_calls() >= 3 * users.len()
    })
    .await;
    assert!(
        enough,
        "only {} background refreshes",
        env.p.refresh_calls()
    );
    // Stop both refreshers before counting.
    let (mut a, mut b) = (env.tg, b);
    assert!(a.stop().await.success());
    assert!(b.stop().await.success());
    let calls = env.p.refresh_calls();
    let reused = env.p.with(|s| s.reuse_detected);
    let used = env.p.with(|s| s.refresh_tokens_used.clone());
    let distinct: std::collections::BTreeSet<_> = used.iter().collect();
    let moved: i64 = db
        .query_one(
            "SELECT coalesce(sum(version - 1), 0)::bigint FROM tokens",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!(
        "refresher: 2 replicas, {} grants: {calls} refreshes at the provider, {} distinct \
         refresh tokens, versions moved {moved}, {reused} reuses",
        users.len(),
        distinct.len()
    );
    assert_eq!(reused, 0, "a refresh token was presented twice");
    assert_eq!(distinct.len(), used.len(), "a refresh token was used twice");
    assert_eq!(
        moved as usize, calls,
        "each provider refresh is one stored version"
    );
    let live: i64 = db
        .query_one(
            "SELECT count(*) FROM tokens WHERE rec NOT LIKE '%needs_consent%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 3, "every grant is still usable");
}
