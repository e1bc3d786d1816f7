//! Agent relay, end to end on loopback: the real `tollgate serve` with `--relay-listen`, and
//! `tollgate agent run` as a second process of the same binary.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::agent::*;
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const POLICY: &str = r#"
[[policy]]
name = "onprem"
orgs = ["acme"]
route = "agent:onprem-1"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
"#;

/// Keep-alive on both sides in these tests: a dead relay connection is dropped within about
/// twice this.
const KEEPALIVE: &str = "1s";

fn start_tollgate(extra: &[&str]) -> (Tollgate, SocketAddr) {
    let relay: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut args = vec![
        "--relay-listen".to_string(),
        relay.to_string(),
        "--relay-keepalive".to_string(),
        KEEPALIVE.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Tollgate::start(POLICY, &args), relay)
}

fn start_agent(tg: &Tollgate, relay: SocketAddr, allow: &[&str], extra: &[&str]) -> Agent {
    let mut args = vec!["--keepalive", KEEPALIVE];
    args.extend_from_slice(extra);
    Agent::start(tg, relay, "onprem-1", allow, &args)
}

/// tollgate plus one agent allowing loopback, with both relay connections up.
async fn setup(agent_extra: &[&str]) -> (Tollgate, SocketAddr, Agent) {
    let (tg, relay) = start_tollgate(&[]);
    let agent = start_agent(&tg, relay, &["127.0.0.0/8"], agent_extra);
    let n = if agent_extra.contains(&"--connections") {
        1
    } else {
        2
    };
    assert!(
        wait_connections(&tg, "onprem-1", n, Duration::from_secs(20)).await,
        "agent did not connect\ntollgate:\n{}\nagent:\n{}",
        tg.logs(),
        agent.logs()
    );
    (tg, relay, agent)
}

/// CONNECT through the proxy, write `msg`, read it back from an echo server.
async fn echo_through(
    proxy: SocketAddr,
    auth: &str,
    target: &str,
    msg: &[u8],
) -> Result<(), String> {
    let (r, tunnel) = proxy_connect(proxy, target, &[("proxy-authorization", auth)]).await;
    if r.status != 200 {
        return Err(format!("CONNECT answered {}: {}", r.status, r.text()));
    }
    let mut t = tunnel.ok_or("no tunnel")?;
    echo_on(&mut t, msg).await
}

/// Writes `msg` on an open tunnel to an echo server and reads it back.
async fn echo_on<S: AsyncRead + AsyncWrite + Unpin>(t: &mut S, msg: &[u8]) -> Result<(), String> {
    t.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), t.read_exact(&mut back))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| format!("tunnel broke: {e}"))?;
    if back != msg {
        return Err("echo mismatch".into());
    }
    Ok(())
}

/// How long until `s` reports EOF or an error (reading and discarding whatever arrives).
async fn time_to_failure<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

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
    assert_eq!(body["agent"], "onprem-1");

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
        assert_eq!(r.json()["agent"], "onprem-1");
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

#[tokio::test]
async fn agent_killed_mid_stream_fails_the_tunnel_and_nothing_leaks() {
    let echo = tcp_echo().await;
    let (tg, _relay, mut agent) = setup(&[]).await;
    let auth = tg.bearer("acme", "alice");
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &echo.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    let mut t = tunnel.unwrap();
    t.write_all(b"before").await.unwrap();
    let mut b = [0u8; 6];
    t.read_exact(&mut b).await.unwrap();
    assert_eq!(
        metric(&tg, "tollgate_agent_open_tunnels{agent=\"onprem-1\"}").await,
        1.0
    );

    agent.kill();
    let failed = time_to_failure(&mut t, Duration::from_secs(10)).await;
    // Killing the process closes its sockets, so this is quicker than the keep-alive deadline.
    assert!(
        failed.is_some_and(|d| d < Duration::from_secs(3)),
        "{failed:?}"
    );
    drop(t);
    let clean = wait_until(Duration::from_secs(5), async || {
        metric(&tg, "tollgate_open_tunnels").await == 0.0
            && metric(&tg, "tollgate_agent_open_tunnels{agent=\"onprem-1\"}").await == 0.0
            && metric(&tg, "tollgate_agent_connections{agent=\"onprem-1\"}").await == 0.0
            && metric(&tg, "tollgate_client_connections").await == 0.0
    })
    .await;
    assert!(clean, "{}", web_get(tg.web, "/metrics").await.text());
}

#[tokio::test]
async fn frozen_agent_is_dropped_within_the_keepalive_deadline() {
    let echo = tcp_echo().await;
    let (tg, _relay, agent) = setup(&[]).await;
    let auth = tg.bearer("acme", "alice");
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &echo.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    let mut t = tunnel.unwrap();
    t.write_all(b"hi").await.unwrap();
    let mut b = [0u8; 2];
    t.read_exact(&mut b).await.unwrap();

    // SIGSTOP keeps the agent's sockets open (the kernel still ACKs) but nothing answers
    // HTTP/2 pings: only the keep-alive can notice. Deadline: interval + timeout = 2 s.
    agent.signal(libc::SIGSTOP);
    let failed = time_to_failure(&mut t, Duration::from_secs(15)).await;
    assert!(
        failed.is_some_and(|d| d < Duration::from_secs(5)),
        "tunnel still open after {failed:?}"
    );
    drop(t);
    let clean = wait_until(Duration::from_secs(5), async || {
        metric(&tg, "tollgate_open_tunnels").await == 0.0
            && metric(&tg, "tollgate_agent_open_tunnels{agent=\"onprem-1\"}").await == 0.0
            && metric(&tg, "tollgate_agent_connections{agent=\"onprem-1\"}").await == 0.0
    })
    .await;
    assert!(clean, "{}", web_get(tg.web, "/metrics").await.text());
    let logged = wait_until(Duration::from_secs(5), async || {
        tg.logs().contains("agent disconnected")
    })
    .await;
    assert!(logged, "{}", tg.logs());
}

#[tokio::test]
async fn agent_reconnects_after_tollgate_restarts() {
    let up = echo_upstream().await;
    let (tg, relay, agent) = setup(&[]).await;
    let args = [
        "--relay-listen".to_string(),
        relay.to_string(),
        "--relay-keepalive".to_string(),
        KEEPALIVE.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tg = tg.restart(false, &args);
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(40)).await,
        "agent did not come back:\n{}",
        agent.logs()
    );
    let auth = tg.bearer("acme", "alice");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{up}/after-restart"),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn two_agents_with_one_id_share_the_load_and_survive_losing_one() {
    let up = echo_upstream().await;
    let echo = tcp_echo().await;
    let (tg, relay) = start_tollgate(&[]);
    let mut a = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    let b = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    assert!(wait_connections(&tg, "onprem-1", 4, Duration::from_secs(20)).await);
    let auth = tg.bearer("acme", "alice");

    let stop = tokio_util::sync::CancellationToken::new();
    // Requests made by all workers so far, to wait for traffic instead of a fixed time.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let requests = || done.load(std::sync::atomic::Ordering::SeqCst);
    let mut workers = Vec::new();
    for w in 0..6 {
        let (auth, stop, done) = (auth.clone(), stop.clone(), done.clone());
        let proxy = tg.proxy;
        workers.push(tokio::spawn(async move {
            // (requests, failed requests, tunnels broken after a successful CONNECT)
            let (mut n, mut failed, mut broken) = (0u32, Vec::new(), 0u32);
            while !stop.is_cancelled() {
                n += 1;
                if w % 2 == 0 {
                    let r = proxy_request(
                        proxy,
                        "GET",
                        &format!("http://{up}/w{w}"),
                        &[("proxy-authorization", &auth)],
                        "",
                    )
                    .await;
                    if r.status != 200 {
                        failed.push(format!("GET {}: {}", r.status, r.text()));
                    }
                } else {
                    match echo_through(proxy, &auth, &echo.to_string(), b"ping").await {
                        Ok(()) => {}
                        Err(e) if e.starts_with("CONNECT") => failed.push(e),
                        // The tunnel was open through the agent being killed.
                        Err(_) => broken += 1,
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Pacing, not synchronization: six workers flat out would starve the two
                // processes under test on a small machine.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (n, failed, broken)
        }));
    }
    let served = |agent: &Agent| agent.tunnel_lines().len();
    let shared = wait_until(Duration::from_secs(20), async || {
        served(&a) > 0 && served(&b) > 0 && requests() >= 30
    })
    .await;
    assert!(shared, "load not shared: {} / {}", served(&a), served(&b));
    a.kill();
    // The traffic goes on through the survivor: enough requests after the kill to cover the
    // in-flight ones and plenty of new ones (each would be a failure if it were lost).
    let after_kill = requests();
    let survived = wait_until(Duration::from_secs(30), async || {
        requests() >= after_kill + 60
    })
    .await;
    assert!(survived, "traffic stalled after losing an agent");
    stop.cancel();
    let (mut total, mut failures, mut broken) = (0, Vec::new(), 0);
    for w in workers {
        let (n, f, b) = w.await.expect("worker panicked (a request failed hard)");
        total += n;
        failures.extend(f);
        broken += b;
    }
    assert!(total > 50, "only {total} requests");
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {failures:?}",
        failures.len()
    );
    eprintln!("{total} requests, 0 failed; {broken} tunnels were open through the killed agent");
    assert!(wait_connections(&tg, "onprem-1", 2, Duration::from_secs(5)).await);
}

/// Generous, so that an agent exiting within the tests' deadlines did so because its tunnels
/// ended, not because the drain timeout ran out.
const DRAIN_TIMEOUT: &str = "120s";

#[tokio::test]
async fn a_draining_agent_finishes_open_tunnels_while_new_ones_go_to_another_agent() {
    let echo = tcp_echo().await;
    let (tg, relay) = start_tollgate(&[]);
    let mut a = start_agent(
        &tg,
        relay,
        &["127.0.0.0/8"],
        &["--drain-timeout", DRAIN_TIMEOUT],
    );
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await,
        "agent A did not connect\n{}",
        a.logs()
    );
    let auth = tg.bearer("acme", "alice");

    // Only A is connected: this tunnel goes through A.
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &echo.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut tunnel = tunnel.unwrap();
    echo_on(&mut tunnel, b"before SIGTERM").await.unwrap();

    // B shares A's ID.
    let b = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    assert!(
        wait_connections(&tg, "onprem-1", 4, Duration::from_secs(20)).await,
        "agent B did not connect\n{}",
        b.logs()
    );

    a.signal(libc::SIGTERM);
    let draining = wait_until(Duration::from_secs(20), async || {
        a.logs().contains("SIGTERM: draining")
    })
    .await;
    assert!(draining, "A did not start draining:\n{}", a.logs());
    // A's idle relay connection closes after its GOAWAY; the one carrying the tunnel stays
    // while the tunnel is open.
    assert!(
        wait_connections(&tg, "onprem-1", 3, Duration::from_secs(20)).await,
        "expected B's 2 connections plus A's busy one\ntollgate:\n{}\nA:\n{}",
        tg.logs(),
        a.logs()
    );

    // The tunnel opened before SIGTERM still works, both ways.
    echo_on(&mut tunnel, b"after SIGTERM").await.unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    echo_on(&mut tunnel, &big).await.unwrap();
    assert!(
        a.exited().is_none(),
        "A exited with a tunnel open:\n{}",
        a.logs()
    );

    // New tunnels still open, through B (A sent GOAWAY on every connection).
    const NEW: usize = 10;
    for i in 0..NEW {
        echo_through(
            tg.proxy,
            &auth,
            &echo.to_string(),
            format!("new {i}").as_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("new tunnel {i} while A drains: {e}\n{}", a.logs()));
    }
    let via_b = wait_until(Duration::from_secs(10), async || {
        b.tunnel_lines().len() >= NEW
    })
    .await;
    assert!(
        via_b,
        "B served {} of the new tunnels:\n{}",
        b.tunnel_lines().len(),
        b.logs()
    );
    echo_on(&mut tunnel, b"still open").await.unwrap();

    // Closing the last tunnel lets A finish draining and exit cleanly.
    drop(tunnel);
    let mut status = None;
    let exited = wait_until(Duration::from_secs(30), async || {
        status = a.exited();
        status.is_some()
    })
    .await;
    assert!(
        exited,
        "A still running after its last tunnel closed:\n{}",
        a.logs()
    );
    let status = status.unwrap();
    assert!(status.success(), "A exited with {status}:\n{}", a.logs());
    let logs = a.logs();
    assert!(logs.contains("agent stopped"), "{logs}");
    assert!(!logs.contains("drain timeout"), "{logs}");
    // A served exactly the one tunnel, which ended because it was closed, not cut.
    let lines = a.tunnel_lines();
    assert_eq!(lines.len(), 1, "{logs}");
    assert_eq!(lines[0]["port"], echo.port(), "{}", lines[0]);
    assert_eq!(lines[0]["reason"], "closed", "{}", lines[0]);

    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await,
        "A's connections still counted:\n{}",
        tg.logs()
    );
    echo_through(tg.proxy, &auth, &echo.to_string(), b"after A left")
        .await
        .unwrap();
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

/// Accepts connections and writes to each as fast as the reader allows, forever.
/// Also returns the bytes written so far (to all connections).
async fn firehose() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::Ordering::SeqCst;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = sent.clone();
    tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (chunk, count) = (chunk.clone(), count.clone());
            tokio::spawn(async move {
                while s.write_all(&chunk).await.is_ok() {
                    count.fetch_add(chunk.len() as u64, SeqCst);
                }
            });
        }
    });
    (addr, sent)
}

#[tokio::test]
async fn a_slow_reader_does_not_stall_other_tunnels_and_memory_stays_bounded() {
    let (hose, hose_sent) = firehose().await;
    let echo = tcp_echo().await;
    // One relay connection, so every tunnel shares it.
    let (tg, _relay, agent) = setup(&["--connections", "1"]).await;
    let auth = tg.bearer("acme", "alice");
    let (tg_rss, agent_rss) = (rss_kib(tg.child.id()), rss_kib(agent.child.id()));

    // Tunnel A: the upstream sends without end, the client never reads.
    let (r, stalled) = proxy_connect(
        tg.proxy,
        &hose.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    // Measure once the stalled tunnel is full: back-pressure has reached the upstream, whose
    // writes then block (its byte count stops moving).
    let mut last = (0, Instant::now());
    let blocked = wait_until(Duration::from_secs(20), async || {
        let now = hose_sent.load(std::sync::atomic::Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
            return false;
        }
        now > 0 && last.1.elapsed() >= Duration::from_millis(500)
    })
    .await;
    assert!(blocked, "the firehose never blocked");
    let grown = |before: u64, now: u64| now.saturating_sub(before);
    let tg_growth = grown(tg_rss, rss_kib(tg.child.id()));
    let agent_growth = grown(agent_rss, rss_kib(agent.child.id()));
    // Bounded by the 1 MiB stream window (plus a copy buffer), not by what the upstream sent.
    assert!(tg_growth < 16 * 1024, "tollgate grew {tg_growth} KiB");
    assert!(agent_growth < 16 * 1024, "agent grew {agent_growth} KiB");

    // Tunnel B on the same relay connection moves 32 MiB meanwhile.
    let started = Instant::now();
    let (r, fast) = proxy_connect(
        tg.proxy,
        &hose.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    let mut fast = fast.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    while got < 32 << 20 {
        let n = tokio::time::timeout(Duration::from_secs(5), fast.read(&mut buf))
            .await
            .expect("fast tunnel stalled")
            .unwrap();
        assert!(n > 0);
        got += n;
    }
    // And an interactive tunnel still answers promptly.
    echo_through(tg.proxy, &auth, &echo.to_string(), b"still here")
        .await
        .unwrap();
    eprintln!("32 MiB beside a stalled tunnel in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(stalled);
}

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
    let post = web_request(web, "POST", &path, None, None).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = split_url(&post.header("location").unwrap());
    let at_idp = web_request(idp, "GET", &authorize, None, None).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let (back, callback) = split_url(&at_idp.header("location").unwrap());
    let done = web_request(back, "GET", &callback, None, None).await;
    assert_eq!(done.status, 200, "{}", done.text());
}

#[tokio::test]
async fn https_through_an_agent_is_originated_and_intercepted_with_injection() {
    use http_body_util::{BodyExt, Full};
    let (ca_pem, server) = common::provider::test_ca_and_server();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
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
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::get(format!("https://localhost:{tls_api}/records"))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap();
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
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
