//! WebSockets through tollgate with a real client and server (Python `websockets`): plain
//! `ws://` through plain-http forwarding (absolute-form handshake) and through a `CONNECT`
//! (as `websockets` does for `HTTP_PROXY`), token injection on the handshake (plain, with TLS
//! origination, and inside an intercepted `wss://` tunnel), a policy denial of the
//! handshake, the idle timeout, and the bytes in the access line.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::websocket::{self, Server};
use common::*;
use serde_json::{json, Value};

const JSON_LOGS: &[&str] = &["--log-format", "json"];

/// The access line (JSON logs) matching `pred`, once written (WebSocket lines are written
/// when the connection ends).
async fn access_line(tg: &Tollgate, pred: impl Fn(&Value) -> bool) -> Value {
    let find = || {
        tg.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v.get("decision").is_some() && pred(v))
    };
    let found = wait_until(Duration::from_secs(15), async || find().is_some()).await;
    assert!(found, "no such access line:\n{}", tg.logs());
    find().unwrap()
}

fn is_ws_line(v: &Value, port: u16) -> bool {
    v["method"] == "GET" && v["port"] == port && v["status"] == 101
}

/// Basic credentials in a proxy URL for `websockets`' own proxy support (`CONNECT`).
fn proxy_url(tg: &Tollgate, org: &str, user: &str) -> String {
    format!("http://{user}:{}@{}", tg.token(org, user), tg.proxy)
}

/// The client's handshake in absolute form through `tg`'s proxy as `org`'s `user`, with
/// `extra` client arguments.
async fn absolute(tg: &Tollgate, url: &str, org: &str, user: &str, extra: &[&str]) -> Value {
    let (proxy, pa) = (tg.proxy.to_string(), tg.bearer(org, user));
    let args = [&[url, "--absolute", &proxy, "--proxy-auth", &pa][..], extra].concat();
    websocket::client(&args).await
}

/// Asserts an open WebSocket whose handshake reached the server with the app's token and
/// whose messages came back.
fn assert_injected(v: &Value) {
    assert_eq!(v["status"], 101, "{v}");
    assert_eq!(v["echoed"], 3, "{v}");
    let seen = v["first"]["authorization"].as_str().unwrap_or_default();
    assert!(seen.starts_with("Bearer AT-secret-"), "{v}");
}

#[tokio::test]
async fn plain_websockets_through_forwarding_and_connect_with_bytes_in_the_access_line() {
    if !websocket::available() {
        return;
    }
    let server = Server::start();
    let tg = Tollgate::start(common::policies::LOCAL, JSON_LOGS);
    let url = format!("ws://127.0.0.1:{}/echo?x=1", server.port);
    let extra = ["--messages", "3", "--size", "1000"];
    let v = absolute(&tg, &url, "acme", "alice", &extra).await;
    assert_eq!(v["status"], 101, "{v}");
    assert_eq!(v["echoed"], 3, "{v}");
    assert_eq!(v["first"]["path"], "/echo?x=1", "{v}");
    assert_eq!(
        v["first"]["host"],
        format!("127.0.0.1:{}", server.port),
        "{v}"
    );
    assert_eq!(
        v["first"]["proxy_authorization"],
        Value::Null,
        "proxy credentials forwarded: {v}"
    );
    let line = access_line(&tg, |l| is_ws_line(l, server.port)).await;
    assert_eq!(line["org"], "acme", "{line}");
    assert_eq!(line["decision"], "allowed", "{line}");
    // Three 1000-byte messages each way, plus framing (and the server's first message).
    assert!(line["bytes_up"].as_u64().unwrap() >= 3000, "{line}");
    assert!(line["bytes_down"].as_u64().unwrap() >= 3000, "{line}");
    assert!(line["bytes_up"].as_u64().unwrap() < 3200, "{line}");

    // The server's own refusal of the handshake is passed through as a normal response.
    let reject = format!("ws://127.0.0.1:{}/reject", server.port);
    let v = absolute(&tg, &reject, "acme", "alice", &[]).await;
    assert_eq!(v["status"], 403, "{v}");
    assert_eq!(v["body"], "rejected by the server\n", "{v}");
    assert_eq!(v["proxy_status"], Value::Null, "{v}");

    // `websockets` itself with the proxy configured: it opens a CONNECT tunnel.
    let v = websocket::client(&[&url, "--proxy", &proxy_url(&tg, "acme", "alice")]).await;
    assert_eq!(v["status"], 101, "{v}");
    assert_eq!(v["echoed"], 3, "{v}");
}

#[tokio::test]
async fn the_handshake_is_denied_by_the_policy() {
    if !websocket::available() {
        return;
    }
    let server = Server::start();
    // `localhost` by name only: 127.0.0.1 is not allowed.
    let tg = Tollgate::start(common::policies::LOCAL_BY_NAME, JSON_LOGS);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let v = absolute(&tg, &url, "acme", "alice", &[]).await;
    assert_eq!(v["status"], 403, "{v}");
    assert_eq!(v["content_type"], "application/json", "{v}");
    assert!(
        v["proxy_status"]
            .as_str()
            .unwrap()
            .starts_with("tollgate; error="),
        "{v}"
    );
    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "destination_denied", "{body}");
    let line = access_line(&tg, |l| l["status"] == 403).await;
    assert_eq!(line["decision"], "denied", "{line}");
}

#[tokio::test]
async fn the_apps_token_is_injected_into_the_handshake() {
    if !websocket::available() {
        return;
    }
    let env = setup(JSON_LOGS, |_, _| {}).await;
    env.consent("acme", "alice").await;
    let server = Server::start();
    let url = format!("ws://localhost:{}/stream", server.port);
    let client_auth = format!("Authorization:{CLIENT_AUTH}");
    let v = absolute(&env.tg, &url, "acme", "alice", &["--header", &client_auth]).await;
    assert_injected(&v);
    let line = access_line(&env.tg, |l| is_ws_line(l, server.port)).await;
    assert_eq!(line["app"], "crm", "{line}");
    assert_eq!(line["injected"], true, "{line}");

    // A user who never consented: tollgate's own 401 with the consent URL, passed through as
    // the answer to the handshake.
    let v = absolute(&env.tg, &url, "acme", "bob", &[]).await;
    assert_eq!(v["status"], 401, "{v}");
    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "authorization_required", "{body}");
    env.assert_no_secrets_logged();
}

/// The app fixture (`upstream_tls` as given) with alice's consent, tollgate trusting a test
/// CA, and a `wss://` echo server whose certificate that CA signed (its files in the
/// returned directory).
async fn with_tls_server(upstream_tls: bool) -> (Env, Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::tls::test_ca(common::tls::UPSTREAM_CA_CN);
    let (ca_file, _) = common::tls::write_ca(dir.path(), "upstream-ca", &ca);
    let flags = ["--upstream-ca-file", path_str(&ca_file)];
    let flags = [&flags[..], JSON_LOGS].concat();
    let env = setup(&flags, |spec, _| spec["upstream_tls"] = json!(upstream_tls)).await;
    env.consent("acme", "alice").await;
    let server = Server::start_tls(&ca, dir.path());
    (env, server, dir)
}

/// `upstream_tls`: the runner speaks `ws://` to the proxy, tollgate speaks `wss://` to the
/// upstream (verified against `--upstream-ca-file`) and injects the token.
#[tokio::test]
async fn websockets_to_an_app_domain_are_originated_over_tls() {
    if !websocket::available() {
        return;
    }
    let (env, server, _dir) = with_tls_server(true).await;
    let url = format!("ws://localhost:{}/tls", server.port);
    assert_injected(&absolute(&env.tg, &url, "acme", "alice", &[]).await);
}

/// `wss://` through a `CONNECT` to an app domain: tollgate intercepts (the client trusts the
/// tollgate CA), injects the token into the inner handshake and pumps the frames.
#[tokio::test]
async fn wss_inside_an_intercepted_tunnel_gets_the_token() {
    if !websocket::available() {
        return;
    }
    let (env, server, _dir) = with_tls_server(false).await;
    let url = format!("wss://localhost:{}/inner", server.port);
    let tollgate_ca = env.tg.data.join("ca/ca.pem");
    let v = websocket::client(&[
        &url,
        "--proxy",
        &proxy_url(&env.tg, "acme", "alice"),
        "--ca",
        path_str(&tollgate_ca),
        "--header",
        &format!("Authorization:{CLIENT_AUTH}"),
        "--size",
        "5000",
    ])
    .await;
    assert_eq!(v["status"], 101, "{v}");
    assert_eq!(v["echoed"], 3, "{v}");
    assert_eq!(v["first"]["path"], "/inner", "{v}");
    let seen = v["first"]["authorization"].as_str().unwrap_or_default();
    assert!(seen.starts_with("Bearer AT-secret-"), "{v}");
    let line = access_line(&env.tg, |l| is_ws_line(l, server.port)).await;
    assert_eq!(line["injected"], true, "{line}");
    assert!(line["bytes_up"].as_u64().unwrap() >= 15000, "{line}");
    assert!(line["bytes_down"].as_u64().unwrap() >= 15000, "{line}");
    // The CONNECT's own line follows when the tunnel closes, after its WebSocket.
    let connect = access_line(&env.tg, |l| l["method"] == "CONNECT").await;
    assert!(connect["bytes_up"].as_u64().unwrap() >= 15000, "{connect}");
}

#[tokio::test]
async fn an_idle_websocket_is_closed_after_the_idle_timeout() {
    if !websocket::available() {
        return;
    }
    let server = Server::start();
    let flags = ["--idle-timeout", "2s", "--log-format", "json"];
    let tg = Tollgate::start(common::policies::LOCAL, &flags);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let v = absolute(&tg, &url, "acme", "alice", &["--wait-close", "30"]).await;
    assert_eq!(v["status"], 101, "{v}");
    let after = v["closed_after"].as_f64().expect("closed by tollgate");
    assert!((1.5..15.0).contains(&after), "{v}");
    let line = access_line(&tg, |l| is_ws_line(l, server.port)).await;
    assert!(line["duration_us"].as_u64().unwrap() >= 1_500_000, "{line}");
}

/// A raw handshake through the proxy on `stream`; returns the response head.
async fn raw_handshake(stream: &mut tokio::net::TcpStream, port: u16, pa: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nProxy-Authorization: {pa}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A live WebSocket holds its client connection's place under
/// `--max-connections-per-caller`, as a tunnel does, until it closes.
#[tokio::test]
async fn a_live_websocket_counts_against_the_callers_connections() {
    if !websocket::available() {
        return;
    }
    let server = Server::start();
    let flags = ["--max-connections-per-caller", "1"];
    let tg = Tollgate::start(common::policies::LOCAL, &flags);
    let pa = tg.bearer("acme", "alice");
    let mut ws = tokio::net::TcpStream::connect(tg.proxy).await.unwrap();
    let head = raw_handshake(&mut ws, server.port, &pa).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(lower.contains("\r\nsec-websocket-accept: "), "{head}");
    let url = format!("http://127.0.0.1:{}/", server.port);
    let r = proxy_request(tg.proxy, "GET", &url, &[("proxy-authorization", &pa)], "").await;
    assert_proxy_error(&r, 503, "overloaded");
    drop(ws);
    // Once the WebSocket is closed, the caller may connect again (the server answers a plain
    // GET with its own 426).
    let freed = wait_until(Duration::from_secs(10), async || {
        let r = proxy_request(tg.proxy, "GET", &url, &[("proxy-authorization", &pa)], "").await;
        r.status != 503
    })
    .await;
    assert!(
        freed,
        "the connection stayed counted after the WebSocket closed"
    );
}

/// On an agent route the handshake's connection is a tunnel through the agent, like a
/// `CONNECT`'s.
#[tokio::test]
async fn websockets_go_through_an_agent_route() {
    if !websocket::available() {
        return;
    }
    let server = Server::start();
    let (tg, _relay, _agent) = common::agent::setup(&[]).await;
    let url = format!("ws://127.0.0.1:{}/via-agent", server.port);
    let v = absolute(&tg, &url, "acme", "alice", &[]).await;
    assert_eq!(v["status"], 101, "{v}");
    assert_eq!(v["echoed"], 3, "{v}");
    assert_eq!(v["first"]["path"], "/via-agent", "{v}");
    // The access line, written when the WebSocket closed, names the agent route.
    let logged = wait_until(Duration::from_secs(10), async || {
        strip_ansi(&tg.logs())
            .lines()
            .any(|l| l.contains("status=101") && l.contains("route=agent:onprem-1"))
    })
    .await;
    assert!(logged, "{}", strip_ansi(&tg.logs()));
}

/// A policy reload that no longer allows the destination closes an open WebSocket, as it
/// closes a blind tunnel; the access line says `policy_revoked`.
#[tokio::test]
async fn a_reload_that_denies_the_destination_closes_the_websocket() {
    use tokio::io::AsyncReadExt;
    if !websocket::available() {
        return;
    }
    let server = Server::start();
    let tg = Tollgate::start(common::policies::LOCAL, JSON_LOGS);
    let pa = tg.bearer("acme", "alice");
    let mut ws = tokio::net::TcpStream::connect(tg.proxy).await.unwrap();
    let head = raw_handshake(&mut ws, server.port, &pa).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let before = tg.policy_generation().await;
    // `localhost` by name only: 127.0.0.1 is no longer allowed.
    tg.write_policy("10-test.toml", common::policies::LOCAL_BY_NAME);
    let reloaded = wait_until(Duration::from_secs(10), async || {
        tg.policy_generation().await > before
    })
    .await;
    assert!(reloaded, "{}", tg.logs());
    // The server's first message may still arrive; then the connection ends.
    let mut sink = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while ws.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket stayed open after the reload");
    let line = access_line(&tg, |l| is_ws_line(l, server.port)).await;
    assert_eq!(line["reason"], "policy_revoked", "{line}");
    assert_eq!(line["decision"], "denied", "{line}");
}
