//! The metrics an operator needs (issue 17), each seen to move on a real server: build
//! info, policy reloads by outcome with the last success and the generation, injections by
//! app and outcome, the consent funnel, store latency by operation, open connections per
//! listener. docs/metrics.md is checked to name every series the server exports.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::policies::LOOPBACK as POLICY;
use common::*;

/// The value of the sample `series` (name with labels, exactly as exported), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

async fn scrape(tg: &Tollgate) -> String {
    let r = tg.operator_get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[tokio::test]
async fn build_info_policy_reloads_and_open_connections_move() {
    let tg = Tollgate::start(POLICY, &[]);
    let m = scrape(&tg).await;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&m, &format!("tollgate_build_info{{version=\"{version}\"}}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "tollgate_policy_generation"), Some(1.0), "{m}");
    let ok = "tollgate_policy_reloads_total{outcome=\"success\"}";
    let failed = "tollgate_policy_reloads_total{outcome=\"failure\"}";
    assert_eq!(sample(&m, ok), Some(1.0), "{m}");
    assert_eq!(sample(&m, failed), Some(0.0), "{m}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = sample(&m, "tollgate_policy_last_reload_success_timestamp_seconds").unwrap();
    assert!((now - at).abs() < 300.0, "{at} vs {now}");

    // A broken edit counts as a failure and keeps the generation.
    tg.write_policy("20-broken.toml", "[[policy]]\nbogus = 1\n");
    let seen = wait_until(Duration::from_secs(10), async || {
        sample(&scrape(&tg).await, failed) == Some(1.0)
    })
    .await;
    assert!(seen, "{}", scrape(&tg).await);
    assert_eq!(
        sample(&scrape(&tg).await, "tollgate_policy_generation"),
        Some(1.0)
    );
    // Removing it loads a new set.
    std::fs::remove_file(tg.policies.join("20-broken.toml")).unwrap();
    let seen = wait_until(Duration::from_secs(10), async || {
        let m = scrape(&tg).await;
        sample(&m, "tollgate_policy_generation") == Some(2.0) && sample(&m, ok) == Some(2.0)
    })
    .await;
    assert!(seen, "{}", scrape(&tg).await);

    // Open connections per listener: two idle ones held on each.
    let proxy = "tollgate_open_connections{listener=\"proxy\"}";
    let web = "tollgate_open_connections{listener=\"web\"}";
    let _held: Vec<_> = futures_util::future::join_all(
        [tg.proxy, tg.proxy, tg.web, tg.web].map(tokio::net::TcpStream::connect),
    )
    .await;
    let seen = wait_until(Duration::from_secs(10), async || {
        let m = scrape(&tg).await;
        // The scrape's own connection is the web listener's third.
        sample(&m, proxy) == Some(2.0) && sample(&m, web) == Some(3.0)
    })
    .await;
    assert!(seen, "{}", scrape(&tg).await);
    drop(_held);
    let seen = wait_until(Duration::from_secs(10), async || {
        let m = scrape(&tg).await;
        sample(&m, proxy) == Some(0.0) && sample(&m, web) == Some(1.0)
    })
    .await;
    assert!(seen, "{}", scrape(&tg).await);
}

#[tokio::test]
async fn injections_consent_funnel_and_store_latency_move() {
    let env = setup(&[], |_, _| {}).await;
    let series = |outcome: &str| {
        format!("tollgate_injections_total{{org=\"acme\",app=\"crm\",outcome=\"{outcome}\"}}")
    };
    let ticket = |event: &str| format!("tollgate_consent_tickets_total{{event=\"{event}\"}}");

    let url = env.consent_url("acme", "alice").await;
    // The same user asking again gets the same link: issued once.
    let again = env.consent_url("acme", "alice").await;
    assert_eq!(url, again);
    let m = env.metrics().await;
    assert_eq!(
        sample(&m, &series("authorization_required")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(sample(&m, &ticket("issued")), Some(1.0), "{m}");

    let (r, _) = env.complete(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The used link again: unusable.
    let (web, path) = split(&url);
    let reopened = http(web, "GET", &path, &[]).await;
    assert_ne!(reopened.status, 200);

    let m = env.metrics().await;
    assert_eq!(sample(&m, &series("injected")), Some(1.0), "{m}");
    assert_eq!(sample(&m, &ticket("used")), Some(1.0), "{m}");
    assert_eq!(sample(&m, &ticket("unusable")), Some(1.0), "{m}");
    for op in [
        "issue_ticket",
        "take_ticket",
        "get_app",
        "put_token_if_current",
    ] {
        let count =
            format!("tollgate_store_operation_duration_seconds_count{{operation=\"{op}\"}}");
        assert!(sample(&m, &count).unwrap_or(0.0) >= 1.0, "{op}: {m}");
    }

    // Disabled: the outcome says so.
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = wait_until(Duration::from_secs(10), async || {
        env.call("acme", "alice").await.status == 403
    })
    .await;
    assert!(seen);
    let m = env.metrics().await;
    assert!(
        sample(&m, &series("app_disabled")).unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

/// docs/metrics.md names every series the server exports, and nothing it does not.
#[tokio::test]
async fn the_metric_reference_lists_every_series() {
    let tg = Tollgate::start(POLICY, &[]);
    let m = scrape(&tg).await;
    let exported: std::collections::BTreeSet<String> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert!(exported.len() >= 15, "{exported:?}");
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `tollgate_"))
        .map(|l| format!("tollgate_{}", l.split('`').next().unwrap()))
        .map(|n| {
            // Counters are exported under their family name (without `_total`).
            n.strip_suffix("_total").map_or(n.clone(), str::to_string)
        })
        .collect();
    let missing: Vec<_> = exported.difference(&documented).collect();
    assert!(missing.is_empty(), "undocumented: {missing:?}");
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(stale.is_empty(), "documented but not exported: {stale:?}");
}
