//! How far a decision reaches on a direct route: `upstream_proxy = false` bypasses a real
//! Squid parent for its policy only, and a name allowed only through `cidrs` rules is
//! connected when every address it resolves to is inside them (`localhost` resolved by the
//! system resolver), refused with `destination_denied` otherwise; `policy explain` shows both.

mod common;

use std::process::Command;
use std::time::Duration;

use common::squid::{Squid, PASSWORD};
use common::*;
use serde_json::Value;

/// `localhost` by name through the parent; loopback addresses by CIDR without it.
const PARENT_AND_BYPASS: &str = r#"
[[policy]]
name = "via-parent"
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
  private = true

[[policy]]
name = "no-parent"
route = "direct"
upstream_proxy = false

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]
"#;

#[tokio::test]
async fn upstream_proxy_false_bypasses_the_parent_for_that_policy_only() {
    let Some(squid) = Squid::start().await else {
        return;
    };
    let url = squid.url(PASSWORD);
    let tg = Tollgate::start(PARENT_AND_BYPASS, &["--upstream-proxy", &url]);
    let a = auth(&tg, "acme");
    let via = echo_upstream().await;
    let direct = echo_upstream().await;
    let echo = tcp_echo().await;
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/via", via.port()),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://127.0.0.1:{}/direct", direct.port()),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A tunnel under the bypassing policy too.
    let (r, tunnel) =
        proxy_connect(tg.proxy, &echo.to_string(), &[("proxy-authorization", &a)]).await;
    let mut tunnel = tunnel.unwrap_or_else(|| panic!("{}: {}", r.status, r.text()));
    assert_echoes(&mut tunnel, b"no parent").await;

    // Squid logs a tunnel when it closes: stop tollgate, which closes its pooled connections.
    drop((tunnel, tg));
    let via_connect = format!("CONNECT 127.0.0.1:{}", via.port());
    let logged = wait_until(Duration::from_secs(10), async || {
        squid.access_log().contains(&via_connect)
    })
    .await;
    assert!(logged, "{via_connect}: {}", squid.access_log());
    let log = squid.access_log();
    for port in [direct.port(), echo.port()] {
        assert!(
            !log.contains(&format!(":{port} ")),
            "port {port} went through the parent: {log}"
        );
    }
}

/// acme: `localhost` through loopback CIDRs only (both families, whatever /etc/hosts says);
/// beta: `localhost` through a CIDR that does not hold it; gamma: a CIDR rule on another port.
const CIDR_NAMES: &str = r#"
[[policy]]
name = "loopback-nets"
orgs = ["acme"]
route = "direct"

  [[policy.allow]]
  cidrs = ["127.0.0.1/32", "::1/128"]
  ports = ["1024-65535"]

[[policy]]
name = "private-nets"
orgs = ["beta"]
route = "direct"

  [[policy.allow]]
  cidrs = ["10.0.0.0/8"]
  ports = ["1024-65535"]

[[policy]]
name = "ssh-only"
orgs = ["gamma"]
route = "direct"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = [22]
"#;

#[tokio::test]
async fn a_name_allowed_through_cidrs_connects_only_inside_them() {
    let tg = Tollgate::start(CIDR_NAMES, &[]);
    let up = echo_upstream().await;
    let target = format!("http://localhost:{}/x", up.port());
    let get = async |org: &str| {
        let a = auth(&tg, org);
        proxy_request(tg.proxy, "GET", &target, &[("proxy-authorization", &a)], "").await
    };
    let r = get("acme").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Resolved outside the rule's networks: refused before any connection.
    let body = assert_proxy_error(&get("beta").await, 403, "destination_denied");
    assert_eq!(body["address"], "127.0.0.1", "{body}");
    assert_eq!(body["rule"], "10-test.toml:16", "{body}");
    // No cidrs rule for the port: denied by the policy, the name never resolved for it.
    let body = assert_proxy_error(&get("gamma").await, 403, "destination_denied");
    assert_eq!(body["reason"], "no_matching_rule", "{body}");

    // A tunnel, the same way.
    let echo = tcp_echo().await;
    let to = format!("localhost:{}", echo.port());
    let a = auth(&tg, "acme");
    let (r, tunnel) = proxy_connect(tg.proxy, &to, &[("proxy-authorization", &a)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_echoes(&mut tunnel.unwrap(), b"inside").await;
    let b = auth(&tg, "beta");
    let (r, _) = proxy_connect(tg.proxy, &to, &[("proxy-authorization", &b)]).await;
    assert_proxy_error(&r, 403, "destination_denied");
}

fn explain(dir: &std::path::Path, org: &str, target: &str) -> Value {
    let out = Command::new(bin())
        .args(["policy", "explain", "--json", "--policies"])
        .arg(dir)
        .args(["--org", org, target])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn explain_shows_the_cidrs_condition_the_addresses_and_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-test.toml"), CIDR_NAMES).unwrap();
    let out = explain(dir.path(), "acme", "http://localhost:8080/");
    assert_eq!(out["decision"], "allowed", "{out}");
    assert_eq!(out["rule"], "10-test.toml:7", "{out}");
    assert_eq!(out["cidrs"]["rule"], "10-test.toml:7", "{out}");
    assert_eq!(out["cidrs"]["networks"][0], "127.0.0.1/32", "{out}");
    let addrs = out["addresses"].as_array().unwrap();
    assert!(!addrs.is_empty(), "{out}");
    assert!(addrs.iter().all(|a| a["cidrs"] == "inside"), "{out}");
    assert_eq!(out["upstream_proxy"], true, "{out}");

    let out = explain(dir.path(), "beta", "http://localhost:8080/");
    assert_eq!(out["decision"], "denied", "{out}");
    assert!(
        out["reason"]
            .as_str()
            .unwrap()
            .contains("outside the cidrs"),
        "{out}"
    );
    assert_eq!(out["addresses"][0]["cidrs"], "outside", "{out}");

    std::fs::write(dir.path().join("10-test.toml"), PARENT_AND_BYPASS).unwrap();
    let out = explain(dir.path(), "acme", "127.0.0.1:8080");
    assert_eq!(out["policy"], "no-parent", "{out}");
    assert_eq!(out["upstream_proxy"], false, "{out}");
    // The text form says so too.
    let text = Command::new(bin())
        .args(["policy", "explain", "--policies"])
        .arg(dir.path())
        .args(["--org", "acme", "127.0.0.1:8080"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("parent:   bypassed (upstream_proxy = false)"),
        "{text}"
    );
}
