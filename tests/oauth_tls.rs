//! Injection over TLS: origination to app domains (HTTP/2 shared with interception),
//! interception of `CONNECT` to an app domain, and blind tunnels to other orgs' domains.

mod common;

use common::oauth::*;
use common::tls::{h1, h2};
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// A CONNECT to an app's domain is intercepted only for callers of the app's org; for another
/// org it is a blind tunnel: the client talks TLS with the upstream itself and nothing is
/// injected.
#[tokio::test]
async fn connect_to_another_orgs_app_domain_is_a_blind_tunnel() {
    use rustls::pki_types::pem::PemObject;
    let env = setup(&[], |_, _| {}).await;
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let port = env.p.serve_api_tls(server).await.port();
    let pa = format!("Bearer {}", env.tg.token("globex", "alice"));
    let (r, tunnel) = proxy_connect(
        env.tg.proxy,
        &format!("localhost:{port}"),
        &[("proxy-authorization", &pa)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Only the upstream's own CA is trusted: the handshake succeeds only end to end.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tunnel.unwrap(),
        )
        .await
        .expect("the upstream's own certificate, not a tollgate leaf");
    let mut send = h1(tls).await;
    let req = hyper::Request::get("/records")
        .header("host", format!("localhost:{port}"))
        .header("authorization", CLIENT_AUTH)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        v["authorization"], CLIENT_AUTH,
        "another org's token injected: {v}"
    );
}

#[tokio::test]
async fn tls_origination_to_app_domains_with_test_ca() {
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |spec, _| {
        spec["upstream_tls"] = json!(true);
    })
    .await;
    let tls_api = env.p.serve_api_tls(server).await;
    env.consent("acme", "alice").await;
    // The runner speaks plain HTTP to the proxy; tollgate speaks TLS to the API.
    let r = env
        .call_port("acme", "alice", tls_api.port(), "GET", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(bearer_of(&r).starts_with("Bearer AT-secret-"));
    // The plain-HTTP API port does not speak TLS: origination is really happening.
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 502, "{}", r.text());

    // Without --upstream-ca-file the test CA is not trusted: 502, and the token never
    // reaches the upstream.
    let untrusting = setup(&[], |spec, _| spec["upstream_tls"] = json!(true)).await;
    let (_, server) = common::provider::test_ca_and_server();
    let tls_api = untrusting.p.serve_api_tls(server).await;
    untrusting.consent("acme", "alice").await;
    let r = untrusting
        .call_port("acme", "alice", tls_api.port(), "GET", "")
        .await;
    assert_proxy_error(&r, 502, "tls_certificate_error");
    assert_eq!(
        untrusting.p.with(|s| s.api_calls),
        0,
        "request reached the API"
    );
}

/// TLS origination (plain http from the runner) and interception (CONNECT) of the same
/// origin share one pooled upstream connection, HTTP/2 when the upstream offers it, with
/// `:authority` and `Host` naming the same authority.
#[tokio::test]
async fn originated_and_intercepted_requests_share_an_http2_upstream_connection() {
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let mut server = (*server).clone();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |spec, _| {
        spec["upstream_tls"] = json!(true);
    })
    .await;
    let port = env
        .p
        .serve_api_tls(std::sync::Arc::new(server))
        .await
        .port();
    env.consent("acme", "alice").await;

    let r = env.call_port("acme", "alice", port, "GET", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    let authority = format!("localhost:{port}");
    assert_eq!(v["authority"], authority.as_str(), "{v}");
    if !v["host"].is_null() {
        assert_eq!(
            v["host"],
            authority.as_str(),
            "Host differs from :authority: {v}"
        );
    }

    let tls = intercepted_tls(&env, port, b"http/1.1").await;
    let mut send = h1(tls).await;
    let req = hyper::Request::get("/records")
        .header("host", authority.as_str())
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer AT-secret-"));
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_eq!(
        env.p.with(|s| s.tls_handshakes),
        1,
        "the intercepted request did not reuse the originated request's connection"
    );
}

/// A TLS client stream through `CONNECT localhost:port` as acme/alice.
async fn intercepted_tls(
    env: &Env,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let pa = format!("Bearer {}", env.tg.token("acme", "alice"));
    common::intercepted_tls(&env.tg, &pa, port, alpn).await
}

/// `GET /records` in origin-form with `Host: host` and the client's Authorization, on a new
/// intercepted HTTP/1.1 tunnel to `localhost:port` as acme/alice.
async fn records_over_h1(env: &Env, port: u16, host: &str) -> Resp {
    let tls = intercepted_tls(env, port, b"http/1.1").await;
    let mut send = h1(tls).await;
    let req = hyper::Request::get("/records")
        .header("host", host)
        .header("authorization", CLIENT_AUTH)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    read_response(send.send_request(req).await.unwrap()).await
}

#[tokio::test]
async fn connect_to_an_app_domain_is_intercepted_and_injected_over_h1_and_h2() {
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |_, _| {}).await;
    let tls_api = env.p.serve_api_tls(server).await;
    let port = tls_api.port();
    let req = || {
        hyper::Request::get(format!("https://localhost:{port}/records"))
            .header("authorization", CLIENT_AUTH)
            .body(Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    // Before consent: authorization_required answered inside the TLS tunnel (HTTP/1.1).
    let r = records_over_h1(&env, port, &format!("localhost:{port}")).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=http_request_denied"));
    let body = r.json();
    assert_eq!(body["error"], "authorization_required");
    assert!(body["consent_url"].as_str().unwrap().contains("/consent/"));

    env.consent("acme", "alice").await;

    // After consent, HTTP/1.1 inside: the token replaces the client's Authorization.
    let r = records_over_h1(&env, port, &format!("localhost:{port}")).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(
        v["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer AT-secret-"),
        "{v}"
    );

    // HTTP/2 inside.
    let tls = intercepted_tls(&env, port, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(tls).await;
    let resp = send.send_request(req()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        v["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer AT-secret-"),
        "{v}"
    );

    // An inner request naming another host than the CONNECT: 421, nothing forwarded.
    let r = records_over_h1(&env, port, "elsewhere.example").await;
    assert_eq!(r.status, 421);
    let body = r.json();
    assert_eq!(body["error"], "misdirected_request");

    // The admins disable the app: inside TLS the same request now gets 403 app_disabled.
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
    assert_eq!(r.status, 200);
    let tls = intercepted_tls(&env, port, b"h2").await;
    let mut send = h2(tls).await;
    let resp = send.send_request(req()).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=http_request_denied"));
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "app_disabled");
}

#[tokio::test]
async fn intercepted_invalid_token_refreshes_and_replays_once() {
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |_, _| {}).await;
    // Unknown lifetime: only the upstream can say the token is dead.
    env.p.with(|s| s.access_ttl = None);
    let port = env.p.serve_api_tls(server).await.port();
    env.consent("acme", "alice").await;
    let first = bearer_of(&env.call("acme", "alice").await);
    env.p
        .with(|s| s.access_tokens.remove(first.trim_start_matches("Bearer ")));
    let api_before = env.p.with(|s| s.api_calls);

    let tls = intercepted_tls(&env, port, b"h2").await;
    let mut send = h2(tls).await;
    let req = hyper::Request::post(format!("https://localhost:{port}/records"))
        .body(Full::new(bytes::Bytes::from_static(b"small body")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the rejected token was not refreshed and replayed"
    );
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["body_len"], 10, "body lost in the replay");
    let second = v["authorization"].as_str().unwrap().to_string();
    assert!(second.starts_with("Bearer AT-secret-"), "{v}");
    assert_ne!(second, first);
    assert_eq!(env.p.refresh_calls(), 1);
    assert_eq!(
        env.p.with(|s| s.api_calls) - api_before,
        2,
        "one send, one replay"
    );
}

/// The real binary: an inner request in an intercepted tunnel whose Host names port 0 or one
/// above 65535 is `400 bad_request` (it used to be read as 443), before any app or upstream.
#[tokio::test]
async fn intercepted_inner_host_port_out_of_range_is_400_bad_request() {
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let env = setup(&["--upstream-ca-file", path_str(&ca_file)], |_, _| {}).await;
    let port = env.p.serve_api_tls(server).await.port();
    let api_before = env.p.with(|s| s.api_calls);
    for host in ["localhost:0", "localhost:99999", "localhost:65536"] {
        let r = records_over_h1(&env, port, host).await;
        assert_proxy_error(&r, 400, "bad_request");
    }
    assert_eq!(
        env.p.with(|s| s.api_calls),
        api_before,
        "an upstream was reached"
    );
}
