//! Errors and edges (issue 17): every error tollgate generates is JSON with `Proxy-Status`
//! — hyper's own answers to unparsable requests and axum's own rejections included — a `401
//! authorization_required` says how to authenticate (`WWW-Authenticate`), and a web listener
//! on every interface without `--public-url` refuses to start.

mod common;

use common::oauth::*;
use common::policies::LOOPBACK as POLICY;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `raw` on a new connection to `addr` and reads the answer until the server closes.
async fn raw_exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it read everything: a failed write is fine.
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status, the `Proxy-Status` header and the JSON body of a raw answer.
fn parse_raw(raw: &str) -> (u16, String, Value) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {raw:?}"));
    let status = head[9..12].parse().unwrap();
    let ps = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("proxy-status"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Proxy-Status in {head}"));
    let v = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    (status, ps, v)
}

#[tokio::test]
async fn hyper_parse_errors_are_json_with_proxy_status_on_both_listeners() {
    let tg = Tollgate::start(POLICY, &[]);
    for addr in [tg.proxy, tg.web] {
        // A header line without a colon.
        let raw = raw_exchange(
            addr,
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
        )
        .await;
        let (status, ps, v) = parse_raw(&raw);
        assert_eq!(status, 400, "{raw}");
        assert_eq!(v["error"], "bad_request", "{raw}");
        assert!(ps.starts_with("tollgate; error=http_request_error"), "{ps}");
    }
    // A head beyond hyper's buffers (the proxy's: four times --max-request-head; the web
    // listener's: hyper's default, about 400 KiB).
    let big = format!(
        "GET http://x/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    for addr in [tg.proxy, tg.web] {
        let raw = raw_exchange(addr, big.as_bytes()).await;
        let (status, ps, v) = parse_raw(&raw);
        assert_eq!(status, 431, "{raw}");
        assert_eq!(v["error"], "request_head_too_large");
        assert!(ps.starts_with("tollgate; error=http_request_error"), "{ps}");
    }
    // A well-formed exchange on the same kind of connection is untouched.
    let raw = raw_exchange(
        tg.web,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("proxy-status"), "{raw}");
}

#[tokio::test]
async fn web_rejections_are_json_with_proxy_status() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    // A body over axum's limit: 413, today's plain-text answer.
    let huge = Value::String("x".repeat(3 * 1024 * 1024));
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&huge)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "request_body_too_large");
    assert_eq!(r.header("content-type").unwrap(), "application/json");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .starts_with("tollgate; error=http_request_error"));
    // A method the route does not serve, and an unknown path.
    let r = web_request(tg.web, "DELETE", "/healthz", None, None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"], "method_not_allowed");
    assert!(r.header("proxy-status").is_some());
    let r = web_request(tg.web, "GET", "/no/such/thing", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert!(r.header("proxy-status").unwrap().contains("not_found"));
    // The admin API's own errors keep their code, and gain the header.
    let r = web_request(tg.web, "GET", "/v1/apps", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(
        r.header("proxy-status").unwrap(),
        "tollgate; error=http_request_denied; details=\"unauthorized\""
    );
    assert!(r.header("www-authenticate").is_some());
}

#[tokio::test]
async fn authorization_required_says_how_to_authenticate() {
    let env = setup(&[], |_, _| {}).await;
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let url = r.json()["consent_url"].as_str().unwrap().to_string();
    let challenge = r
        .header("www-authenticate")
        .expect("WWW-Authenticate on a 401");
    assert_eq!(
        challenge,
        format!(
            "Tollgate-Consent realm=\"tollgate\", error=\"authorization_required\", consent_url=\"{url}\""
        )
    );
}

#[test]
fn a_web_listener_on_every_interface_needs_a_public_url() {
    for any in ["0.0.0.0:0", "[::]:0"] {
        let dir = tempfile::tempdir().unwrap();
        let out = serve_on(dir.path(), "127.0.0.1:0", any).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{any}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--public-url"), "{err}");
        assert!(err.contains("every interface"), "{err}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing created before refusing"
        );
    }
    // With the URL users reach it at, it starts.
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_on(dir.path(), "127.0.0.1:0", "0.0.0.0:0")
        .args([
            "--public-url",
            "https://tollgate.example",
            "--login",
            "none",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let started = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .any(|l| l == "tollgate: web listening on https://tollgate.example");
    let _ = child.kill();
    let _ = child.wait();
    assert!(started);
}

/// Inside an intercepted tunnel too, hyper's own answer to an unparsable request is tollgate's
/// JSON error.
#[tokio::test]
async fn parse_errors_inside_intercepted_tunnels_are_json_with_proxy_status() {
    // A method limit makes tollgate decide each request, so the tunnel is intercepted.
    assert_eq!(POLICY.matches("  private = true\n").count(), 1);
    let policy = POLICY.replace(
        "  private = true\n",
        "  private = true\n  methods = [\"GET\"]\n",
    );
    let tg = Tollgate::start(&policy, &[]);
    let up = echo_upstream().await;
    let mut tls = intercepted_tls(&tg, &auth(&tg, "acme"), up.port(), b"http/1.1").await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut out),
    )
    .await;
    let raw = String::from_utf8_lossy(&out);
    let (status, ps, v) = parse_raw(&raw);
    assert_eq!(status, 400, "{raw}");
    assert_eq!(v["error"], "bad_request");
    assert!(ps.starts_with("tollgate; error=http_request_error"), "{ps}");
}
