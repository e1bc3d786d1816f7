//! Agents failing and recovering: killed, frozen or draining agents, tollgate restarting, two
//! agents sharing one id, and a slow reader that must not stall the relay connection.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::agent::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn agent_killed_mid_stream_fails_the_tunnel_and_nothing_leaks() {
    let echo = tcp_echo().await;
    let (tg, _relay, mut agent) = setup(&[]).await;
    let auth = tg.bearer("acme", "alice");
    let mut t = tunnel_to(&tg, &echo.to_string(), &auth).await;
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
    assert!(clean, "{}", tg.operator_get("/metrics").await.text());
}

#[tokio::test]
async fn frozen_agent_is_dropped_within_the_keepalive_deadline() {
    let echo = tcp_echo().await;
    let (tg, _relay, agent) = setup(&[]).await;
    let auth = tg.bearer("acme", "alice");
    let mut t = tunnel_to(&tg, &echo.to_string(), &auth).await;
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
    assert!(clean, "{}", tg.operator_get("/metrics").await.text());
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
    let mut tunnel = tunnel_to(&tg, &echo.to_string(), &auth).await;
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
    // The exited agent's last lines may still be in the pipe to the reader thread.
    let stopped = wait_until(Duration::from_secs(10), async || {
        a.logs().contains("agent stopped")
    })
    .await;
    let logs = a.logs();
    assert!(stopped, "{logs}");
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
    let stalled = tunnel_to(&tg, &hose.to_string(), &auth).await;
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
    let mut fast = tunnel_to(&tg, &hose.to_string(), &auth).await;
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
