//! Token injection through an agent: the token endpoint of an agent-routed policy is called
//! through the agent, and HTTPS to the app is originated and intercepted through it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::agent::*;
use common::tls::{h1, h2};
use common::*;

/// `http://host:port/path?query` → (address, origin-form path).
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = auth.replace("localhost", "127.0.0.1").parse().unwrap();
    (
        addr,
        if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    )
}

#[tokio::test]
async fn token_endpoint_calls_of_an_agent_routed_policy_go_through_the_agent() {
    let p = common::provider::Provider::start().await;
    let (tg, _relay, agent) = setup(&[]).await;
    // The provider is reachable only as the "onprem" policy allows: through the agent.
    create_onprem_app(&tg, &p, false).await;

    // The runner's first call (through the agent route): a consent URL; the user consents.
    let auth = tg.bearer("acme", "alice");
    let api = format!("http://localhost:{}/records", p.api.port());
    consent_through(&tg, &auth, &api).await;
    assert_eq!(p.with(|s| s.code_calls), 1);

    // The code exchange went through the agent: it logged a tunnel to the token endpoint.
    let provider_port = p.addr.port();
    let ok = wait_until(Duration::from_secs(3), async || {
        agent
            .tunnel_lines()
            .iter()
            .any(|l| l.to_string().contains(&format!(":{provider_port}")))
    })
    .await;
    assert!(
        ok,
        "no agent tunnel to the token endpoint:\n{}",
        agent.logs()
    );
    // tollgate closed it cleanly after the exchange (no reset the agent logs as an error).
    let lines = agent.tunnel_lines();
    let line = lines
        .iter()
        .find(|l| l.to_string().contains(&format!(":{provider_port}")))
        .unwrap();
    assert_eq!(line["reason"], "closed", "{line}\n{}", agent.logs());

    // And the API call now carries the token, through the agent too.
    let r = proxy_request(tg.proxy, "GET", &api, &[("proxy-authorization", &auth)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json()["authorization"].as_str().unwrap().to_string();
    assert!(first.starts_with("Bearer "), "{}", r.text());

    // The API rejects the token (401 invalid_token): tollgate refreshes it (through the agent)
    // and replays the request, body included, on the agent route too.
    p.with(|s| s.access_tokens.remove(first.trim_start_matches("Bearer ")));
    let api_before = p.with(|s| s.api_calls);
    let r = proxy_request(
        tg.proxy,
        "POST",
        &api,
        &[("proxy-authorization", &auth)],
        "small body",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], 10, "body lost in the replay");
    assert_ne!(r.json()["authorization"].as_str().unwrap(), first);
    assert_eq!(p.refresh_calls(), 1);
    assert_eq!(
        p.with(|s| s.api_calls) - api_before,
        2,
        "one send, one replay"
    );
}

/// Creates app "crm" of acme for `localhost` with `p` as its provider, all under the
/// agent-routed "onprem" policy.
async fn create_onprem_app(tg: &Tollgate, p: &common::provider::Provider, upstream_tls: bool) {
    let admin = tg.admin_token("acme", "root");
    let spec = serde_json::json!({
        "id": "crm",
        "name": "On-prem CRM",
        "approval_prompt": "Allow?",
        "authorize_url": format!("{}/authorize", p.issuer()),
        "token_url": format!("{}/token", p.issuer()),
        "client_id": "client-1",
        "client_secret": "sk-CLIENT-SECRET",
        "scopes": ["read"],
        "egress_policy": "onprem",
        "domains": ["localhost"],
        "upstream_tls": upstream_tls,
    });
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// The runner's call to `api` gets a consent URL; the user consents as a browser would (the
/// provider redirects back, tollgate exchanges the code).
async fn consent_through(tg: &Tollgate, auth: &str, api: &str) {
    let r = proxy_request(tg.proxy, "GET", api, &[("proxy-authorization", auth)], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let consent = r.json()["consent_url"].as_str().unwrap().to_string();
    let (web, path) = split_url(&consent);
    let mut browser = common::consent::Browser::default();
    let post = browser.consent(web, &path).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = split_url(&post.header("location").unwrap());
    let at_idp = web_request(idp, "GET", &authorize, None, None).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let (back, callback) = split_url(&at_idp.header("location").unwrap());
    let done = browser.get(back, &callback).await;
    assert_eq!(done.status, 200, "{}", done.text());
}

#[tokio::test]
async fn https_through_an_agent_is_originated_and_intercepted_with_injection() {
    use http_body_util::{BodyExt, Full};
    let (_ca_dir, ca_file, server) = common::provider::test_ca_file();
    let (tg, relay) = start_tollgate(&["--upstream-ca-file", path_str(&ca_file)]);
    let agent = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await,
        "agent did not connect\n{}",
        agent.logs()
    );
    let p = common::provider::Provider::start().await;
    let tls_api = p.serve_api_tls(server).await.port();
    // Plain-http requests to the app's domain are originated over TLS.
    create_onprem_app(&tg, &p, true).await;
    let auth = tg.bearer("acme", "alice");
    // The API only speaks TLS: the plain-http request works only if tollgate originates TLS
    // through the agent's tunnel and trusts the test CA.
    let api = format!("http://localhost:{tls_api}/records");
    consent_through(&tg, &auth, &api).await;
    let tunnels = "tollgate_agent_tunnels_total{agent=\"onprem-1\"}";
    let before = metric(&tg, tunnels).await;
    let r = proxy_request(tg.proxy, "GET", &api, &[("proxy-authorization", &auth)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer AT-secret-"),
        "{}",
        r.text()
    );
    assert!(
        metric(&tg, tunnels).await > before,
        "the API call opened no tunnel through the agent"
    );

    // HTTPS_PROXY style: CONNECT to the app's domain is intercepted on the agent route too.
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let tls = intercepted_tls(&tg, &auth, tls_api, alpn).await;
        let resp = if alpn == b"h2" {
            let mut send = h2(tls).await;
            let req = hyper::Request::get(format!("https://localhost:{tls_api}/records"))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap();
            send.send_request(req).await.unwrap()
        } else {
            let mut send = h1(tls).await;
            let req = hyper::Request::get("/records")
                .header("host", format!("localhost:{tls_api}"))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap();
            send.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200, "{alpn:?}");
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert!(
            v["authorization"]
                .as_str()
                .unwrap()
                .starts_with("Bearer AT-secret-"),
            "{alpn:?}: {v}"
        );
    }
    // The tunnel depends on the agent: without it, the CONNECT is refused at once.
    let mut agent = agent;
    agent.kill();
    assert!(
        wait_connections(&tg, "onprem-1", 0, Duration::from_secs(20)).await,
        "agent still counted as connected"
    );
    let (r, _) = proxy_connect(
        tg.proxy,
        &format!("localhost:{tls_api}"),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "agent_unavailable");
}
