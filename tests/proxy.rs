//! The forward proxy end to end: forwarding, refusals (policy, guard, identity), CONNECT
//! tunnels, malformed requests, and a real curl.

mod common;

use std::process::Command;
use std::time::Duration;

use common::policies::{loopback_deny_line as deny_line, LOOPBACK as POLICY};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn allowed_request_is_forwarded_cleanly() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &[]);
    let a = auth(&tg, "acme");
    let uri = format!("http://{up}/hello?x=1");
    let r = proxy_request(
        tg.proxy,
        "POST",
        &uri,
        &[
            ("proxy-authorization", &a),
            ("host", "evil.example"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "drop me"),
            ("x-keep", "keep me"),
        ],
        "payload",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/hello?x=1", "origin-form upstream");
    assert_eq!(echo["body"], "payload");
    let h = &echo["headers"];
    assert!(
        h.get("proxy-authorization").is_none(),
        "credentials leaked: {h}"
    );
    assert!(
        h.get("x-hop").is_none(),
        "connection-named header forwarded"
    );
    assert_eq!(h["x-keep"], "keep me");
    assert_eq!(h["host"], up.to_string(), "Host comes from the target");
    assert!(
        r.header("proxy-status").is_none(),
        "upstream Proxy-Status must not pass"
    );

    // By name, with Basic credentials (user:token), as curl and requests send them.
    let basic = format!(
        "Basic {}",
        base64_encode(&format!("alice:{}", tg.token("acme", "alice")))
    );
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/by-name", up.port()),
        &[("proxy-authorization", &basic)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn denied_destinations_get_403_with_proxy_status() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &[]);
    let a = auth(&tg, "acme");

    // A host no rule allows.
    let r = proxy_request(
        tg.proxy,
        "GET",
        "http://api.unknown.example/",
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    let b = assert_proxy_error(&r, 403, "destination_denied");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=http_request_denied"));
    assert!(b.get("policy").is_none());

    // A port outside the rule's ports.
    let r = proxy_request(
        tg.proxy,
        "GET",
        "http://127.0.0.1:80/",
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_proxy_error(&r, 403, "destination_denied");

    // A deny rule names itself.
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://127.0.0.99:{}/", up.port()),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    let b = assert_proxy_error(&r, 403, "destination_denied");
    assert_eq!(b["rule"], format!("10-test.toml:{}", deny_line()));

    // The same address written as a decimal integer is still denied.
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://2130706531:{}/", up.port()),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_proxy_error(&r, 403, "destination_denied");

    // Another org's policy does not apply.
    let b = auth(&tg, "other");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{up}/"),
        &[("proxy-authorization", &b)],
        "",
    )
    .await;
    assert_proxy_error(&r, 403, "destination_denied");
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_guarded() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &[]);
    // beta's rule for localhost is not `private = true`: 127.0.0.1 is refused after DNS.
    let b = auth(&tg, "beta");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/", up.port()),
        &[("proxy-authorization", &b)],
        "",
    )
    .await;
    let body = assert_proxy_error(&r, 403, "destination_ip_prohibited");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=destination_ip_prohibited"));
    assert!(body["address"].as_str().unwrap().starts_with("127.") || body["address"] == "::1");

    // The proxy's own listener is refused even where private addresses are allowed.
    let a = auth(&tg, "acme");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{}/", tg.proxy),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_proxy_error(&r, 403, "destination_ip_prohibited");
}

#[tokio::test]
async fn missing_expired_forged_or_mismatched_identity_gets_407() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &[]);
    let uri = format!("http://{up}/");
    let other_key = tollgate::identity::IdentityKey::from_bytes(b"not-the-key");
    let forged =
        tollgate::identity::mint(&other_key, "acme", "alice", &[], Duration::from_secs(600))
            .expect("clock");
    let expired = tg.expired_token("acme", "alice");
    let mismatched = format!(
        "Basic {}",
        base64_encode(&format!("mallory:{}", tg.token("acme", "alice")))
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("basic user mismatch", Some(mismatched)),
        ("unknown scheme", Some("Digest abc".into())),
    ];
    for (name, header) in cases {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("proxy-authorization", h)])
            .unwrap_or_default();
        let r = proxy_request(tg.proxy, "GET", &uri, &headers, "").await;
        assert_proxy_error(&r, 407, "proxy_auth_required");
        assert_eq!(
            r.header("proxy-authenticate").as_deref(),
            Some("Basic realm=\"tollgate\""),
            "{name}"
        );
        let text = r.text();
        if let Some(h) = &header {
            let token = h.split_whitespace().last().unwrap();
            assert!(!text.contains(token), "{name}: token echoed back");
        }
    }
}

#[tokio::test]
async fn connect_tunnels_allowed_and_denied() {
    let echo = tcp_echo().await;
    let tg = Tollgate::start(POLICY, &[]);
    let a = auth(&tg, "acme");
    let (r, tunnel) =
        proxy_connect(tg.proxy, &echo.to_string(), &[("proxy-authorization", &a)]).await;
    assert_eq!(r.status, 200);
    let mut t = tunnel.unwrap();
    t.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
    // Half-close: our EOF reaches the echo server, whose EOF comes back.
    t.shutdown().await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), read_all(&mut t))
        .await
        .unwrap();
    assert!(rest.is_empty());

    let (r, tunnel) = proxy_connect(
        tg.proxy,
        "api.blocked.example:443",
        &[("proxy-authorization", &a)],
    )
    .await;
    assert!(tunnel.is_none());
    assert_proxy_error(&r, 403, "destination_denied");

    let (r, _) = proxy_connect(tg.proxy, &echo.to_string(), &[]).await;
    assert_proxy_error(&r, 407, "proxy_auth_required");

    // Agent routes answer at once when no agent is connected.
    let started = std::time::Instant::now();
    let (r, _) = proxy_connect(
        tg.proxy,
        "git.corp.example:443",
        &[("proxy-authorization", &a)],
    )
    .await;
    assert_proxy_error(&r, 502, "agent_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn upstream_refused_and_silent() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &["--upstream-timeout", "1s"]);
    let a = auth(&tg, "acme");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://127.0.0.1:{}/", closed_port()),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_proxy_error(&r, 502, "connection_refused");
    let (r, _) = proxy_connect(
        tg.proxy,
        &format!("127.0.0.1:{}", closed_port()),
        &[("proxy-authorization", &a)],
    )
    .await;
    assert_proxy_error(&r, 502, "connection_refused");

    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{up}/silent"),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_proxy_error(&r, 504, "connection_timeout");
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let tg = Tollgate::start(POLICY, &[]);
    let a = auth(&tg, "acme");
    let r = proxy_request(
        tg.proxy,
        "GET",
        "/not-absolute",
        &[("proxy-authorization", &a), ("host", "x")],
        "",
    )
    .await;
    assert_proxy_error(&r, 400, "bad_request");
    let r = proxy_request(
        tg.proxy,
        "GET",
        "https://api.github.com/",
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    assert_proxy_error(&r, 400, "bad_request");
    let (r, _) = proxy_connect(tg.proxy, "bad_host!:443", &[("proxy-authorization", &a)]).await;
    assert_proxy_error(&r, 400, "bad_request");
    // A head over the 64 KiB limit gets a JSON error, not a bare one from the HTTP library.
    let big = "x".repeat(70 * 1024);
    let r = proxy_request(
        tg.proxy,
        "GET",
        "http://api.example/",
        &[("proxy-authorization", &a), ("x-big", &big)],
        "",
    )
    .await;
    assert_proxy_error(&r, 431, "request_head_too_large");
    // More header fields than the count limit (100, Envoy's default too) get the same JSON 431.
    let names: Vec<String> = (0..120).map(|i| format!("x-field-{i}")).collect();
    let mut many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    many.push(("proxy-authorization", &a));
    let r = proxy_request(tg.proxy, "GET", "http://api.example/", &many, "").await;
    assert_proxy_error(&r, 431, "request_head_too_large");
}

#[tokio::test]
async fn deny_cidrs_hold_for_resolved_addresses_of_names() {
    let up = echo_upstream().await;
    let policy = r#"
[[policy]]
name = "names"
route = "direct"
  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
  private = true

[[deny]]
cidrs = ["127.0.0.0/8", "::1/128"]
"#;
    let tg = Tollgate::start(policy, &[]);
    let a = auth(&tg, "acme");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/", up.port()),
        &[("proxy-authorization", &a)],
        "",
    )
    .await;
    let b = assert_proxy_error(&r, 403, "destination_denied");
    assert!(
        b["rule"].as_str().unwrap().starts_with("10-test.toml:"),
        "{b}"
    );
}

#[tokio::test]
async fn real_curl_through_the_proxy_and_a_connect_tunnel() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &[]);
    let token = tg.token("acme", "alice");
    let proxy = format!("http://127.0.0.1:{}", tg.proxy.port());
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || Command::new("curl").args(args).output().unwrap())
    };
    let base = vec![
        "-sS".to_string(),
        "-x".into(),
        proxy.clone(),
        "--proxy-user".into(),
        format!("alice:{token}"),
    ];
    // Plain HTTP with -x.
    let mut args = base.clone();
    args.push(format!("http://{up}/via-curl"));
    let out = run(args).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uri"], "/via-curl");
    assert!(v["headers"].get("proxy-authorization").is_none());
    // CONNECT with -p (proxytunnel).
    let mut args = base.clone();
    args.push("-p".into());
    args.push(format!("http://{up}/via-tunnel"));
    let out = run(args).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uri"], "/via-tunnel");
    // Denied through curl: 403 with the JSON body.
    let mut args = base.clone();
    args.extend([
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
    ]);
    args.push("http://denied.example/".into());
    let out = run(args).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
}

/// A port of 0 or above 65535 is `400 bad_request`, never silently another port (it used to
/// read as 80 in an absolute-form URI).
#[tokio::test]
async fn ports_out_of_range_are_bad_requests() {
    let tg = Tollgate::start(POLICY, &[]);
    let a = auth(&tg, "acme");
    let h = [("proxy-authorization", a.as_str())];
    for uri in [
        "http://127.0.0.1:99999/",
        "http://localhost:65536/",
        "http://127.0.0.1:0/",
    ] {
        let r = proxy_request(tg.proxy, "GET", uri, &h, "").await;
        assert_eq!(r.status, 400, "GET {uri}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request", "GET {uri}: {}", r.text());
    }
    for target in ["127.0.0.1:0", "localhost:99999"] {
        let (r, _) = proxy_connect(tg.proxy, target, &h).await;
        assert_eq!(r.status, 400, "CONNECT {target}: {}", r.text());
        assert_eq!(
            r.json()["error"],
            "bad_request",
            "CONNECT {target}: {}",
            r.text()
        );
    }
}
