//! `[[limit]]` blocks: beyond a limit the proxy answers `429 rate_limited` with `Retry-After`,
//! `Proxy-Status`, a JSON body naming the limit, an access line and a metric; keys are per
//! user or per org as written; blind tunnels count once; `policy explain` lists the limits.

mod common;

use std::process::Command;

use common::*;

/// acme and beta may reach `localhost` and loopback addresses; acme's users get 2 requests
/// to `localhost` per hour each (rule line 15); beta gets one tunnel per hour (line 22).
const LIMITED: &str = r#"
[[policy]]
name = "local"
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
  private = true

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]

[[limit]]
name = "per-user"
key = "user"
rate = "1/h"
burst = 2
orgs = ["acme"]
hosts = ["localhost"]

[[limit]]
name = "beta-org"
key = "org"
rate = "1/h"
burst = 1
orgs = ["beta"]
"#;

#[tokio::test]
async fn beyond_a_limit_requests_get_429_with_retry_after() {
    let tg = Tollgate::start(LIMITED, &["--log-format", "json"]);
    let up = echo_upstream().await;
    let url = format!("http://localhost:{}/x", up.port());
    let get = async |user: &str| {
        let a = format!("Bearer {}", tg.token("acme", user));
        proxy_request(tg.proxy, "GET", &url, &[("proxy-authorization", &a)], "").await
    };
    for _ in 0..2 {
        let r = get("alice").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = get("alice").await;
    let body = assert_proxy_error(&r, 429, "rate_limited");
    assert_eq!(body["limit"], "per-user", "{body}");
    assert_eq!(body["rule"], "10-test.toml:15", "{body}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (3500..=3600).contains(&retry),
        "an hour for 1/h after the burst: {retry}"
    );
    assert_eq!(body["retry_after"], retry, "{body}");
    assert!(
        r.header("proxy-status").unwrap().contains("per-user"),
        "{:?}",
        r.header("proxy-status")
    );
    // Per user: bob has his own counter; other hosts are out of the limit's scope.
    assert_eq!(get("bob").await.status, 200);
    let a = format!("Bearer {}", tg.token("acme", "alice"));
    let other = format!("http://127.0.0.1:{}/x", up.port());
    let r = proxy_request(tg.proxy, "GET", &other, &[("proxy-authorization", &a)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Blind tunnels count once each, per org.
    let echo = tcp_echo().await;
    let b = format!("Bearer {}", tg.token("beta", "carol"));
    let (r, _t) = proxy_connect(tg.proxy, &echo.to_string(), &[("proxy-authorization", &b)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = format!("Bearer {}", tg.token("beta", "dave"));
    let (r, t) = proxy_connect(tg.proxy, &echo.to_string(), &[("proxy-authorization", &b)]).await;
    assert!(t.is_none());
    let body = assert_proxy_error(&r, 429, "rate_limited");
    assert_eq!(body["limit"], "beta-org", "{body}");

    let logged = wait_until(std::time::Duration::from_secs(5), async || {
        tg.logs().lines().any(|l| {
            l.contains("\"reason\":\"rate_limited\"") && l.contains("\"rule\":\"10-test.toml:15\"")
        })
    })
    .await;
    assert!(logged, "{}", tg.logs());
    let m = tg.operator_get("/metrics").await.text();
    assert!(
        m.contains("tollgate_rate_limited_total{limit=\"per-user\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_rate_limited_total{limit=\"beta-org\"} 1"),
        "{m}"
    );
}

#[test]
fn explain_lists_the_limits_that_count_a_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-test.toml"), LIMITED).unwrap();
    let out = Command::new(bin())
        .args(["policy", "explain", "--no-resolve", "--policies"])
        .arg(dir.path())
        .args(["--org", "acme", "http://localhost:8080/"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "limit:    per-user (1/h, burst 2, per user) at 10-test.toml:15: 429 rate_limited beyond it"
        ),
        "{text}"
    );
    let out = Command::new(bin())
        .args(["policy", "explain", "--no-resolve", "--policies"])
        .arg(dir.path())
        .args(["--org", "acme", "http://127.0.0.1:8080/"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("limit:"));
}
