//! `--upstream-proxy`: direct routes through a real Squid. tollgate resolves and checks the
//! address itself and asks the parent to `CONNECT` to the checked IP (never the name, never an
//! absolute-form request); the address guard still refuses what it refuses; an injected
//! request goes inside the `CONNECT` with TLS to the origin; the password never shows.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::squid::{Squid, PASSWORD};
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits until Squid's access log contains `needle`.
async fn squid_logged(squid: &Squid, needle: &str) -> bool {
    wait_until(Duration::from_secs(10), async || {
        squid.access_log().contains(needle)
    })
    .await
}

#[tokio::test]
async fn direct_routes_go_through_the_parent_to_the_checked_address() {
    let Some(squid) = Squid::start().await else {
        return;
    };
    let url = squid.url(PASSWORD);
    let tg = Tollgate::start(common::policies::LOCAL, &["--upstream-proxy", &url]);
    let a = auth(&tg, "acme");

    // Plain http to a name: tollgate resolves `localhost`, and Squid is asked for the address.
    let up = echo_upstream().await;
    let target = format!("http://localhost:{}/x", up.port());
    let r = proxy_request(tg.proxy, "GET", &target, &[("proxy-authorization", &a)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A tunnel.
    let echo = tcp_echo().await;
    let (r, tunnel) =
        proxy_connect(tg.proxy, &echo.to_string(), &[("proxy-authorization", &a)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut tunnel = tunnel.unwrap();
    tunnel.write_all(b"through squid").await.unwrap();
    let mut buf = [0u8; 13];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"through squid");
    assert!(!tg.logs().contains(PASSWORD), "password logged");

    // Squid logs a tunnel when it closes: stop tollgate, which closes its pooled connection.
    drop((tunnel, tg));
    for connect in [
        format!("CONNECT 127.0.0.1:{}", up.port()),
        format!("CONNECT {echo}"),
    ] {
        let logged = squid_logged(&squid, &connect).await;
        assert!(logged, "{connect}: {}", squid.access_log());
    }
    let log = squid.access_log();
    assert!(!log.contains("localhost"), "the parent saw a name: {log}");
    assert!(!log.contains(" GET "), "an absolute-form request: {log}");
}

/// The guard decides before the parent is asked: a loopback address under a rule without
/// `private` is refused and never reaches Squid.
#[tokio::test]
async fn the_address_guard_applies_before_the_parent() {
    let Some(squid) = Squid::start().await else {
        return;
    };
    let url = squid.url(PASSWORD);
    // `localhost` by name, without `private = true`.
    let policy = common::policies::LOCAL_BY_NAME.replace("private = true", "");
    let tg = Tollgate::start(&policy, &["--upstream-proxy", &url]);
    let up = echo_upstream().await;
    let target = format!("http://localhost:{}/", up.port());
    let a = auth(&tg, "acme");
    let r = proxy_request(tg.proxy, "GET", &target, &[("proxy-authorization", &a)], "").await;
    assert_proxy_error(&r, 403, "destination_ip_prohibited");
    assert!(
        !squid.access_log().contains(&up.port().to_string()),
        "{}",
        squid.access_log()
    );
}

#[tokio::test]
async fn a_parent_refusal_is_a_bad_gateway_and_the_password_never_shows() {
    let Some(squid) = Squid::start().await else {
        return;
    };
    let wrong = "wrong-pass-9Zq";
    let url = squid.url(wrong);
    let tg = Tollgate::start(common::policies::LOCAL, &["--upstream-proxy", &url]);
    let up = echo_upstream().await;
    let target = format!("http://127.0.0.1:{}/", up.port());
    let a = auth(&tg, "acme");
    let r = proxy_request(tg.proxy, "GET", &target, &[("proxy-authorization", &a)], "").await;
    let body = assert_proxy_error(&r, 502, "connection_refused");
    assert!(body["message"].as_str().unwrap().contains("407"), "{body}");
    assert!(!r.text().contains(wrong), "{}", r.text());
    assert!(!tg.logs().contains(wrong), "password logged");

    // Nor does `--help`, when the URL is in the environment.
    let help = std::process::Command::new(bin())
        .args(["serve", "--help"])
        .env("TOLLGATE_UPSTREAM_PROXY", &url)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--upstream-proxy"), "{help}");
    assert!(!help.contains(wrong), "{help}");
}

/// A request that gets an injected token travels inside the `CONNECT`, with TLS to the origin
/// (`upstream_tls`): Squid sees a CONNECT to the address, never the request.
#[tokio::test]
async fn injected_requests_go_inside_connect_with_tls_to_the_origin() {
    let Some(squid) = Squid::start().await else {
        return;
    };
    let url = squid.url(PASSWORD);
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let flags = [
        "--upstream-ca-file",
        path_str(&ca_file),
        "--upstream-proxy",
        &url,
    ];
    let env = setup(&flags, |spec, _| spec["upstream_tls"] = json!(true)).await;
    env.consent("acme", "alice").await;
    let port = env.p.serve_api_tls(server).await.port();
    let r = env.call_port("acme", "alice", port, "GET", "").await;
    let injected = bearer_of(&r);
    assert!(injected.starts_with("Bearer AT-secret-"), "{}", r.text());
    // Squid logs a tunnel when it closes: stop tollgate, which closes its pooled connection.
    drop(env);
    let connect = format!("CONNECT 127.0.0.1:{port}");
    assert!(
        squid_logged(&squid, &connect).await,
        "{}",
        squid.access_log()
    );
    let log = squid.access_log();
    assert!(
        !log.contains("/records"),
        "the parent saw the request: {log}"
    );
}
