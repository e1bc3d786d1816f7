//! Agents end to end: `tollgate agent run` as a second process of the same binary, dialing
//! tollgate's relay; tunnels and plain HTTP through it, refusals passed on, revoked agents and
//! callers refused at the relay, and an agent that does not trust the relay's certificate.

mod common;

use std::time::{Duration, Instant};

use common::agent::*;
use common::policies::AGENT_LOOPBACK as POLICY;
use common::*;

#[tokio::test]
async fn connect_and_plain_http_reach_a_loopback_upstream_through_the_agent() {
    let up = echo_upstream().await;
    let echo = tcp_echo().await;
    let (tg, _relay, agent) = setup(&[]).await;
    let auth = tg.bearer("acme", "alice");

    let r = proxy_request(
        tg.proxy,
        "POST",
        &format!("http://{up}/via-agent?x=1"),
        &[("proxy-authorization", &auth)],
        "payload",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["uri"], "/via-agent?x=1");
    assert_eq!(body["body"], "payload");
    assert!(body["headers"].get("proxy-authorization").is_none());
    assert!(
        r.header("proxy-status").is_none(),
        "upstream Proxy-Status must not pass"
    );

    // By name: the agent resolves `localhost` itself (tollgate does not for agent routes).
    // Loopback is special at the agent, and 127.0.0.0/8 lists it, so this is allowed.
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/by-name", up.port()),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    echo_through(tg.proxy, &auth, &echo.to_string(), &payload)
        .await
        .unwrap();

    // Metrics: tunnels and bytes per agent.
    let tunnels = metric(&tg, "tollgate_agent_tunnels_total{agent=\"onprem-1\"}").await;
    assert!(tunnels >= 2.0, "tunnels {tunnels}");
    let up_bytes = metric(
        &tg,
        "tollgate_agent_bytes_total{agent=\"onprem-1\",direction=\"up\"}",
    )
    .await;
    assert!(up_bytes >= payload.len() as f64, "bytes up {up_bytes}");

    // The agent logs every tunnel with its decision.
    let ok = wait_until(Duration::from_secs(5), async || {
        agent.tunnel_lines().iter().any(|l| {
            l["decision"] == "allowed"
                && l["port"] == echo.port()
                && l["bytes_up"] == payload.len() as u64
        })
    })
    .await;
    assert!(ok, "tunnel log missing:\n{}", agent.logs());
    let logged = wait_until(Duration::from_secs(5), async || {
        tg.logs().contains("agent:onprem-1")
    })
    .await;
    assert!(logged, "{}", tg.logs());
}

#[tokio::test]
async fn agent_refusals_are_passed_on_with_proxy_status() {
    let up = echo_upstream().await;
    let (tg, relay) = start_tollgate(&[]);
    // Only one address is allowed; `localhost` is listed by name but resolves to loopback,
    // which the agent refuses unless a CIDR inside the loopback range lists it.
    let _agent = start_agent(&tg, relay, &["127.0.0.2", "localhost"], &[]);
    assert!(wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await);
    let auth = tg.bearer("acme", "alice");

    let (r, _) = proxy_connect(tg.proxy, &up.to_string(), &[("proxy-authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let ps = r.header("proxy-status").unwrap();
    assert!(
        ps.starts_with("tollgate; error=http_request_denied"),
        "{ps}"
    );
    assert!(ps.contains("not in the agent's allowlist"), "{ps}");
    let body = r.json();
    assert_eq!(body["error"], "destination_denied");
    // Callers are not told which agent (issue 13: agent IDs are for operators).
    assert!(body.get("agent").is_none(), "{body}");

    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/", up.port()),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "destination_ip_prohibited");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=destination_ip_prohibited"));

    // Allowed by the agent, but nothing listens: the dial error comes back as 502.
    let (r, _) = proxy_connect(
        tg.proxy,
        &format!("127.0.0.2:{}", closed_port()),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "connection_refused");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=connection_refused"));

    let denied = metric(
        &tg,
        "tollgate_agent_dial_failures_total{agent=\"onprem-1\",reason=\"destination_denied\"}",
    )
    .await;
    assert_eq!(denied, 1.0);
}

/// One refusal mapping on every route, the agent's included: a `[[deny]]` match on an
/// agent-routed policy is `403 destination_denied` (decided by tollgate, the agent never dials),
/// and a guard refusal at the agent is `destination_ip_prohibited` (see
/// `agent_refusals_are_passed_on_with_proxy_status`).
#[tokio::test]
async fn a_deny_rule_on_an_agent_route_is_destination_denied() {
    let up = echo_upstream().await;
    let (tg, _relay, _agent) = setup(&[]).await;
    let auth = tg.bearer("acme", "alice");
    let denied = format!("127.0.0.99:{}", up.port());

    let (r, tunnel) = proxy_connect(tg.proxy, &denied, &[("proxy-authorization", &auth)]).await;
    assert!(tunnel.is_none());
    assert_proxy_error(&r, 403, "destination_denied");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{denied}/"),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_proxy_error(&r, 403, "destination_denied");
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("error=http_request_denied"));

    // The allowed neighbour still goes through the agent.
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{up}/"),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn no_agent_connected_is_502_agent_unavailable_at_once() {
    let up = echo_upstream().await;
    for extra in [&[][..], &["--relay-listen", "127.0.0.1:0"][..]] {
        let tg = Tollgate::start(POLICY, extra);
        let auth = tg.bearer("acme", "alice");
        let started = Instant::now();
        let (r, _) =
            proxy_connect(tg.proxy, &up.to_string(), &[("proxy-authorization", &auth)]).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.json()["error"], "agent_unavailable");
        assert!(r.json().get("agent").is_none(), "{}", r.text());
        assert!(!r.text().contains("onprem-1"), "{}", r.text());
        assert!(r
            .header("proxy-status")
            .unwrap()
            .starts_with("tollgate; error=destination_unavailable"));
        let r = proxy_request(
            tg.proxy,
            "GET",
            &format!("http://{up}/"),
            &[("proxy-authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(r.status, 502);
        assert_eq!(r.json()["error"], "agent_unavailable");
        assert!(
            // "At once": no waiting for an agent; generous for a loaded CI machine.
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn revoked_agents_and_caller_tokens_are_refused_at_the_relay() {
    let up = echo_upstream().await;
    let (tg, relay) = start_tollgate(&["--revoked-agents", "onprem-1,other-2"]);
    let agent = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    let refused = wait_until(Duration::from_secs(20), async || {
        metric(
            &tg,
            "tollgate_agent_auth_failures_total{reason=\"revoked\"}",
        )
        .await
            >= 2.0
    })
    .await;
    assert!(refused, "tollgate:\n{}", tg.logs());
    let logged = wait_until(Duration::from_secs(5), async || {
        agent.logs().contains("revoked")
    })
    .await;
    assert!(logged, "{}", agent.logs());
    assert_eq!(
        metric(&tg, "tollgate_agent_connections{agent=\"onprem-1\"}").await,
        0.0
    );
    let auth = tg.bearer("acme", "alice");
    let (r, _) = proxy_connect(tg.proxy, &up.to_string(), &[("proxy-authorization", &auth)]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "agent_unavailable");

    // A caller token is not an agent credential.
    let (_, ca) = credential_files(&tg, "onprem-1");
    let cred = tg.dir.path().join("caller-token.jwt");
    std::fs::write(&cred, tg.token("acme", "onprem-1")).unwrap();
    let _impostor = Agent::spawn(
        &[],
        &[
            "agent",
            "run",
            "--relay",
            &format!("https://{relay}"),
            "--id",
            "impostor",
            "--credential-file",
            cred.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--allow",
            "127.0.0.0/8",
        ]
        .map(String::from),
    );
    let refused = wait_until(Duration::from_secs(20), async || {
        metric(
            &tg,
            "tollgate_agent_auth_failures_total{reason=\"invalid_credential\"}",
        )
        .await
            >= 1.0
    })
    .await;
    assert!(refused, "tollgate:\n{}", tg.logs());
}

/// Lines of `agent`'s logs that report a relay connection failing on the relay's
/// certificate.
fn certificate_failures(agent: &Agent) -> usize {
    agent
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("relay connection failed") && l.contains("certificate"))
        .count()
}

#[tokio::test]
async fn an_agent_refuses_a_relay_certificate_not_signed_by_its_ca() {
    let echo = tcp_echo().await;
    let (tg, relay) = start_tollgate(&[]);
    // A CA of its own, which did not sign tollgate's relay certificate.
    let (foreign_ca, _) = common::provider::test_ca_and_server();
    let foreign = tg.dir.path().join("foreign-ca.pem");
    std::fs::write(&foreign, foreign_ca).unwrap();
    let (cred, _) = credential_files(&tg, "onprem-1");
    let wrong = Agent::start_with_files(
        relay,
        "onprem-1",
        &cred,
        &foreign,
        &["127.0.0.0/8"],
        &["--keepalive", KEEPALIVE],
    );
    let failed = wait_until(Duration::from_secs(20), async || {
        certificate_failures(&wrong) >= 2
    })
    .await;
    assert!(failed, "no certificate failure logged:\n{}", wrong.logs());
    let series = "tollgate_agent_connections{agent=\"onprem-1\"}";
    assert_eq!(metric(&tg, series).await, 0.0, "{}", wrong.logs());
    assert!(wrong.tunnel_lines().is_empty());
    let auth = tg.bearer("acme", "alice");
    let (r, _) = proxy_connect(
        tg.proxy,
        &echo.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "agent_unavailable");

    // Positive control: the same credential with the tollgate CA connects.
    let right = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await,
        "the correctly configured agent did not connect:\n{}",
        right.logs()
    );
    echo_through(tg.proxy, &auth, &echo.to_string(), b"trusted")
        .await
        .unwrap();
    // The misconfigured agent keeps failing meanwhile, and never adds a connection.
    let before = certificate_failures(&wrong);
    let again = wait_until(Duration::from_secs(60), async || {
        certificate_failures(&wrong) > before
    })
    .await;
    assert!(
        again,
        "the misconfigured agent stopped retrying:\n{}",
        wrong.logs()
    );
    assert_eq!(metric(&tg, series).await, 2.0, "{}", wrong.logs());
    assert!(wrong.tunnel_lines().is_empty());
}
