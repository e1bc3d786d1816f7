//! Replicas on a shared PostgreSQL (`TOLLGATE_TEST_POSTGRES`; skipped with a notice without
//! it): a store outage degrades a replica instead of failing it, and it recovers; and the
//! HAProxy suite (skipped with a notice without `haproxy`), three `tollgate serve` processes
//! sharing one database and one keys directory behind the real HAProxy with the
//! configuration of `deploy/haproxy/`.
//!
//! Each case prints its measured figures (`replicas: …`) for the closing note.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::consent::Browser;
use common::haproxy::{Backend, Haproxy};
use common::oauth::{setup, Env};
use common::policies::LOCAL;
use common::postgres::{call, database_on, fresh_database, replica_dir, url_addr, Cluster, Cut};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The HAProxy cases run one at a time: each runs 3 replicas and HAProxy, and several
/// measure propagation times that a crowded machine would blur.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three replicas (A is `env.tg`) on one database, sharing A's keys, behind HAProxy.
struct Fleet {
    env: Env,
    b: Tollgate,
    c: Tollgate,
    lb: Haproxy,
    /// The database, for what only it can tell (versions, backends).
    db: tokio_postgres::Client,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Fleet {
    /// `None` (skipped, with a notice) without PostgreSQL or HAProxy.
    async fn start(test: &str) -> Option<Fleet> {
        if !std::path::Path::new("/usr/sbin/haproxy").exists() {
            eprintln!("skipped {test}: HAProxy is not installed (apt-get install haproxy)");
            return None;
        }
        let serial = SERIAL.lock().await;
        let (url, db) = fresh_database(test).await?;
        Some(Self::on(test, &url, db, serial).await)
    }

    /// The fleet on the database at `url`.
    async fn on(
        test: &str,
        url: &str,
        db: tokio_postgres::Client,
        serial: tokio::sync::MutexGuard<'static, ()>,
    ) -> Fleet {
        let flags = ["--store", url, "--proxy-protocol", "--shutdown-delay", "3s"];
        let env = setup(&flags, |_, _| {}).await;
        let b = Tollgate::start_in(replica_dir(&env.tg.data, LOCAL), &flags);
        let c = Tollgate::start_in(replica_dir(&env.tg.data, LOCAL), &flags);
        let backends = [Backend::of(&env.tg), Backend::of(&b), Backend::of(&c)];
        let lb = Haproxy::start(test, &backends).expect("HAProxy is installed");
        Fleet {
            env,
            b,
            c,
            lb,
            db,
            _serial: serial,
        }
    }

    fn api(&self) -> u16 {
        self.env.p.api.port()
    }

    /// alice's token cached (valid an hour), and 8 clients calling with it through HAProxy
    /// (retrying a failure once when `retry`), 100 requests in.
    async fn under_load(&self, retry: bool) -> Load {
        self.env.p.with(|s| s.access_ttl = Some(3600));
        self.env.consent("acme", "alice").await;
        let token = self.env.tg.token("acme", "alice");
        let load = Load::start(self.lb.proxy, token, self.api(), 8, retry);
        load.advance(100).await;
        load
    }

    /// Waits until HAProxy has taken one replica (B) out of the proxy's rotation.
    async fn wait_b_out(&self) {
        let out = wait_until(Duration::from_secs(10), async || {
            self.lb.up("tollgate_proxy") == 2
        })
        .await;
        let states = self.lb.states("tollgate_proxy");
        assert!(out, "HAProxy never took B out: {states:?}");
    }

    /// `user` (who has no grant yet) consents, B and C cache the token, A revokes it: how
    /// long until both B and C answer 401 (asserted within `within`).
    async fn revocation_seen_within(&self, user: &str, within: Duration) -> Duration {
        let api = self.api();
        self.env.consent("acme", user).await;
        for tg in [&self.b, &self.c] {
            assert_eq!(call(tg, api, user).await.status, 200);
        }
        let r = self
            .env
            .admin_call(
                "DELETE",
                &format!("/v1/apps/crm/authorizations/{user}"),
                None,
            )
            .await;
        assert!(r.status < 300, "{} {}", r.status, r.text());
        let revoked = Instant::now();
        let mut worst = Duration::ZERO;
        for tg in [&self.b, &self.c] {
            let seen = wait_until(within, async || call(tg, api, user).await.status == 401).await;
            assert!(
                seen,
                "a replica still injected a revoked grant after {within:?}"
            );
            worst = worst.max(revoked.elapsed());
        }
        worst
    }

    /// alice's grant as the database has it: its version.
    async fn version(&self) -> i64 {
        self.db
            .query_one("SELECT version FROM tokens WHERE usr = 'alice'", &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// One request through `proxy` as acme's `user` (token from `tg`'s keys), on a new
/// connection; the status, or why there was none. Never panics: load generators count.
async fn try_call(proxy: SocketAddr, token: &str, api: u16) -> Result<u16, String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(proxy)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET http://localhost:{api}/records HTTP/1.1\r\nHost: localhost:{api}\r\n\
             Proxy-Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out);
        text.get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line: {text:?}"))
    };
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .unwrap_or(Err("no answer in 30 s".into()))
}

/// How long a client of the load waits before its one retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// Requests kept in flight through a balancer, counted.
struct Load {
    ok: Arc<AtomicUsize>,
    /// Requests that failed once (then retried, when `retry`).
    failed_once: Arc<AtomicUsize>,
    /// Requests that failed for good.
    failed: Arc<AtomicUsize>,
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// The first few failures, for the assertion message.
    errors: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Load {
    /// `workers` clients calling the API through `proxy` back to back; a failed request is
    /// sent once more when `retry`.
    fn start(proxy: SocketAddr, token: String, api: u16, workers: usize, retry: bool) -> Load {
        let load = Load {
            ok: Arc::default(),
            failed_once: Arc::default(),
            failed: Arc::default(),
            stop: CancellationToken::new(),
            workers: Vec::new(),
            errors: Arc::default(),
        };
        let workers = (0..workers)
            .map(|_| {
                let (ok, once, failed) = (
                    load.ok.clone(),
                    load.failed_once.clone(),
                    load.failed.clone(),
                );
                let (stop, errors, token) = (load.stop.clone(), load.errors.clone(), token.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let mut result = try_call(proxy, &token, api).await;
                        if result != Ok(200) && retry {
                            once.fetch_add(1, SeqCst);
                            // After a short backoff, as clients with a retry policy do: an
                            // immediate retry can still reach a replica that is in the middle
                            // of dying (its listen backlog accepted by the kernel, not yet
                            // reset), which no balancer in TCP mode can retry for it.
                            tokio::time::sleep(RETRY_BACKOFF).await;
                            result = try_call(proxy, &token, api).await;
                        }
                        match result {
                            Ok(200) => ok.fetch_add(1, SeqCst),
                            other => {
                                let mut e = errors.lock().unwrap();
                                if e.len() < 5 {
                                    e.push(format!("{other:?}"));
                                }
                                failed.fetch_add(1, SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Load { workers, ..load }
    }

    fn ok(&self) -> usize {
        self.ok.load(SeqCst)
    }

    /// Stops the workers; (succeeded, failed once, failed for good, first errors).
    async fn finish(self) -> (usize, usize, usize, Vec<String>) {
        self.stop.cancel();
        for w in self.workers {
            w.await.unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(SeqCst),
            self.failed_once.load(SeqCst),
            self.failed.load(SeqCst),
            errors,
        )
    }

    /// Waits until `n` more requests succeeded.
    async fn advance(&self, n: usize) {
        let from = self.ok();
        let moved = wait_until(Duration::from_secs(20), async || self.ok() >= from + n).await;
        assert!(moved, "the load stalled at {} requests", self.ok());
    }
}

/// Waits for `tg` to exit; its status.
async fn exited(tg: &mut Tollgate, within: Duration) -> std::process::ExitStatus {
    let mut status = None;
    let done = wait_until(within, async || {
        status = tg.child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(done, "did not exit; logs:\n{}", tg.logs());
    status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_degrades_the_replica_and_it_recovers() {
    let Some((url, _db)) = fresh_database("outage").await else {
        return;
    };
    // A reaches the database through a hop the test can cut; B directly.
    let cut = Cut::start(url_addr(&url)).await;
    let via = cut.url(&url);
    let env = setup(&["--store", &via], |_, _| {}).await;
    let b = Tollgate::start_in(replica_dir(&env.tg.data, LOCAL), &["--store", &url]);
    env.p.with(|s| s.access_ttl = Some(3600));
    env.consent("acme", "alice").await;
    let api = env.p.api.port();
    assert_eq!(call(&env.tg, api, "alice").await.status, 200);
    // bob's consent link, issued before the outage.
    let bob_consent = call(&env.tg, api, "bob").await;
    assert_eq!(bob_consent.status, 401, "{}", bob_consent.text());
    let bob_consent = bob_consent.json()["consent_url"]
        .as_str()
        .unwrap()
        .to_owned();

    cut.cut();
    let outage = Instant::now();
    // Cached: alice's token is injected as before.
    for _ in 0..5 {
        let r = call(&env.tg, api, "alice").await;
        assert_eq!(r.status, 200, "a cached request failed: {}", r.text());
    }
    // What needs the database answers 503 store_unavailable, promptly.
    let asked = Instant::now();
    let r = call(&env.tg, api, "carol").await;
    let miss_took = asked.elapsed();
    assert_proxy_error(&r, 503, "store_unavailable");
    assert!(miss_took < Duration::from_secs(12), "{miss_took:?}");
    let r = env.admin_call("POST", "/v1/apps/crm/disable", None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "store_unavailable");
    assert!(r.header("proxy-status").is_some());
    let (web, path) = common::consent::split(&bob_consent);
    let r = common::consent::Browser::with(&[]).get(web, &path).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("store_unavailable"), "{}", r.text());
    // /readyz: still in rotation, degraded for operators, with the reason.
    let r = web_get(env.tg.web, "/readyz").await;
    assert_eq!(
        r.status,
        200,
        "an outage took the replica out: {}",
        r.text()
    );
    let detail = env.tg.operator_get("/readyz").await.json();
    assert_eq!(detail["ready"], true, "{detail}");
    assert_eq!(detail["status"], "degraded", "{detail}");
    assert_eq!(detail["store"], "unreachable", "{detail}");
    assert!(detail["store_error"].is_string(), "{detail}");

    // The database returns: pools and the listener recover.
    cut.restore();
    let recovered = wait_until(Duration::from_secs(15), async || {
        env.tg.operator_get("/readyz").await.json()["status"] == "ready"
    })
    .await;
    assert!(
        recovered,
        "readyz never left degraded; logs:\n{}",
        env.tg.logs()
    );
    let r = call(&env.tg, api, "carol").await;
    assert_eq!(r.status, 401, "a miss after the outage: {}", r.text());
    println!(
        "replicas: store outage of {} ms: cached requests served, a miss answered \
         503 store_unavailable in {} ms, recovered after restore",
        outage.elapsed().as_millis(),
        miss_took.as_millis()
    );
    // A's listener is back: B's disable reaches it.
    let r = web_request(
        b.web,
        "POST",
        "/v1/apps/crm/disable",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let disabled = Instant::now();
    let seen = wait_until(Duration::from_secs(5), async || {
        call(&env.tg, api, "alice").await.status == 403
    })
    .await;
    assert!(seen, "A's change listener did not recover");
    println!(
        "replicas: after the outage, B's disable held on A after {} ms",
        disabled.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_refresh_once_per_expiry_over_30_rounds_with_reuse_detection() {
    let Some(f) = Fleet::start("haproxy_refresh").await else {
        return;
    };
    // Tokens live 2 s; every refresh rotates the refresh token, and presenting a rotated one
    // again makes the provider revoke everything.
    f.env.p.with(|s| {
        s.access_ttl = Some(2);
        s.rotate_refresh = true;
        s.revoke_on_reuse = true;
    });
    f.env.consent("acme", "alice").await;
    f.env
        .p
        .with(|s| s.refresh_delay = Duration::from_millis(200));
    let token = f.env.tg.token("acme", "alice");
    const ROUNDS: usize = 30;
    let mut latencies = Vec::new();
    for round in 1..=ROUNDS {
        let due = f.env.wait_due("alice").await;
        assert!(due, "round {round}: the grant never became due");
        let before = f.version().await;
        let started = Instant::now();
        // 8 parallel requests through HAProxy, round-robin over the 3 replicas.
        let calls = (0..8).map(|_| try_call(f.lb.proxy, &token, f.api()));
        let results = futures_util::future::join_all(calls).await;
        latencies.push(started.elapsed());
        for r in &results {
            assert_eq!(r, &Ok(200), "round {round}");
        }
        assert_eq!(f.env.p.refresh_calls(), round, "round {round}: refreshes");
        assert_eq!(f.version().await, before + 1, "round {round}: version");
    }
    let reused = f.env.p.with(|s| s.reuse_detected);
    assert_eq!(reused, 0, "a refresh token was presented twice");
    latencies.sort();
    println!(
        "replicas: through HAProxy, {ROUNDS} rounds of 8 parallel requests at expiry over 3 \
         replicas: {} refreshes, {reused} reuses detected, version +1 per round, round latency \
         median {} ms, max {} ms (provider delay 200 ms)",
        f.env.p.refresh_calls(),
        latencies[ROUNDS / 2].as_millis(),
        latencies[ROUNDS - 1].as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_lease_holder_killed_while_the_provider_is_slow() {
    let Some(mut f) = Fleet::start("haproxy_lease").await else {
        return;
    };
    f.env.p.with(|s| s.access_ttl = Some(2));
    f.env.consent("acme", "alice").await;
    f.env.wait_stale("alice").await;
    // A's refresh hangs at the provider: A holds the lease.
    f.env
        .p
        .with(|s| s.refresh_mode = common::provider::RefreshMode::Hold);
    let token = f.env.tg.token("acme", "alice");
    let (a_proxy, api) = (f.env.tg.proxy, f.api());
    let hung = {
        let token = token.clone();
        tokio::spawn(async move { try_call(a_proxy, &token, api).await })
    };
    let p = f.env.p.clone();
    assert!(
        wait_until(Duration::from_secs(10), async || p.refresh_calls() == 1).await,
        "A never called the provider"
    );
    let _ = f.env.tg.child.kill();
    let _ = f.env.tg.child.wait();
    let _ = hung.await;
    f.env.p.with(|s| {
        s.refresh_mode = common::provider::RefreshMode::Normal;
        s.access_ttl = Some(3600);
    });
    // Through HAProxy (A's refused connections go to B or C): a replica waits out A's lease.
    let started = Instant::now();
    let r = try_call(f.lb.proxy, &token, api).await;
    let took = started.elapsed();
    assert_eq!(r, Ok(200));
    assert_eq!(f.env.p.refresh_calls(), 2);
    assert!(took < Duration::from_secs(20), "{took:?}");
    println!(
        "replicas: lease holder SIGKILLed mid-refresh: another replica refreshed through \
         HAProxy after {} ms (lease 15 s), refreshes 2",
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_revocation_reaches_the_other_replicas_also_after_their_listener_is_killed() {
    let Some(f) = Fleet::start("haproxy_revoke").await else {
        return;
    };
    f.env.p.with(|s| s.access_ttl = Some(3600));
    let first = f
        .revocation_seen_within("alice", Duration::from_secs(1))
        .await;
    // Kill every replica's listener connection, then revoke again at once.
    let killed: i64 =
        f.db.query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'tollgate-listen' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 3, "one listener connection per replica");
    let second = f
        .revocation_seen_within("alice", Duration::from_secs(30))
        .await;
    println!(
        "replicas: a revocation on A held on B and C after {} ms; after pg_terminate_backend \
         of the listener connections, after {} ms",
        first.as_millis(),
        second.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_one_ticket_redeemed_on_three_replicas_at_once_succeeds_once() {
    let Some(f) = Fleet::start("haproxy_ticket").await else {
        return;
    };
    // The consent link, from whichever replica HAProxy chose.
    let token = f.env.tg.token("acme", "bob");
    let pa = format!("Bearer {token}");
    let r = proxy_request(
        f.lb.proxy,
        "GET",
        &format!("http://localhost:{}/records", f.api()),
        &[("proxy-authorization", &pa)],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let url = r.json()["consent_url"].as_str().unwrap().to_owned();
    let (_, path) = common::consent::split(&url);
    let mut browser = Browser::with(&[]);
    let (page, csrf) = browser.open(f.env.tg.web, &path).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let webs = [f.env.tg.web, f.b.web, f.c.web];
    let posts = webs
        .iter()
        .map(|w| browser.authorize(*w, &path, csrf.as_deref()));
    let answers = futures_util::future::join_all(posts).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let won = statuses.iter().filter(|s| **s == 303).count();
    assert_eq!(won, 1, "{statuses:?}");
    for r in answers.iter().filter(|r| r.status != 303) {
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.text().contains("consent_link_unusable"), "{}", r.text());
    }
    println!("replicas: one ticket redeemed on 3 replicas at once: {statuses:?} (1 success)");

    // HAProxy's PROXY v2 header names this very connection: its port is in an access line.
    let mut s = tokio::net::TcpStream::connect(f.lb.proxy).await.unwrap();
    let me = s.local_addr().unwrap();
    let req = format!(
        "GET http://localhost:{}/records HTTP/1.1\r\nHost: localhost\r\n\
         Proxy-Authorization: {pa}\r\nConnection: close\r\n\r\n",
        f.api()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let named = wait_until(Duration::from_secs(5), async || {
        [&f.env.tg, &f.b, &f.c]
            .iter()
            .any(|tg| tg.logs().contains(&me.to_string()))
    })
    .await;
    assert!(named, "no access line names the client {me} HAProxy sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_sigterm_under_load_fails_nothing() {
    let Some(mut f) = Fleet::start("haproxy_sigterm").await else {
        return;
    };
    let load = f.under_load(false).await;
    let sent = Instant::now();
    f.b.signal(libc::SIGTERM);
    f.wait_b_out().await;
    let out_after = sent.elapsed();
    let status = exited(&mut f.b, Duration::from_secs(40)).await;
    assert!(status.success(), "{status:?}");
    let exit_after = sent.elapsed();
    load.advance(100).await;
    let (ok, _, failed, errors) = load.finish().await;
    assert_eq!(failed, 0, "requests failed during a SIGTERM: {errors:?}");
    println!(
        "replicas: SIGTERM of one of 3 replicas under load through HAProxy (8 clients): \
         {ok} requests, {failed} failed; out of rotation after {} ms, exited after {} ms \
         (drain delay 3 s)",
        out_after.as_millis(),
        exit_after.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_sigkill_under_load_fails_only_requests_retried_once() {
    let Some(mut f) = Fleet::start("haproxy_sigkill").await else {
        return;
    };
    let load = f.under_load(true).await;
    let _ = f.b.child.kill();
    let _ = f.b.child.wait();
    let killed = Instant::now();
    f.wait_b_out().await;
    let out_after = killed.elapsed();
    load.advance(100).await;
    let (ok, once, failed, errors) = load.finish().await;
    assert_eq!(
        failed, 0,
        "requests failed even when retried once: {errors:?}"
    );
    // The requests B was serving, and connections it had not refused yet when it died.
    assert!(once < ok / 10, "{once} first failures of {ok}");
    println!(
        "replicas: SIGKILL of one of 3 replicas under load through HAProxy (8 clients): \
         {ok} requests, {once} failed once and succeeded when retried, {failed} failed; \
         marked down after {} ms",
        out_after.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_postgres_restarted_under_load_pools_and_listeners_recover() {
    if !std::path::Path::new("/usr/sbin/haproxy").exists() {
        eprintln!("skipped haproxy_pg_restart: HAProxy is not installed");
        return;
    }
    if std::env::var("TOLLGATE_TEST_POSTGRES").is_err() {
        eprintln!("skipped haproxy_pg_restart: set TOLLGATE_TEST_POSTGRES=postgres://… to run it");
        return;
    }
    let serial = SERIAL.lock().await;
    // A cluster of its own: restarting the shared one would disturb other tests.
    let Some(cluster) = Cluster::start("haproxy_pg_restart") else {
        return;
    };
    let (url, db) = database_on(&cluster.url, "restart").await;
    let f = Fleet::on("haproxy_pg_restart", &url, db, serial).await;
    f.env.p.with(|s| s.access_ttl = Some(3600));
    f.env.consent("acme", "alice").await;
    let load = Load::start(
        f.lb.proxy,
        f.env.tg.token("acme", "alice"),
        f.api(),
        8,
        false,
    );
    load.advance(100).await;
    let restarted = Instant::now();
    cluster.restart();
    let restart_took = restarted.elapsed();
    load.advance(100).await;
    // Every replica is ready again, and answers a request that needs the database.
    let api = f.api();
    for tg in [&f.env.tg, &f.b, &f.c] {
        let back = wait_until(Duration::from_secs(15), async || {
            let ready = tg.operator_get("/readyz").await.json()["status"] == "ready";
            ready && call(tg, api, "carol").await.status == 401
        })
        .await;
        assert!(back, "a replica did not recover; logs:\n{}", tg.logs());
    }
    let recovered = restarted.elapsed();
    let (ok, _, failed, errors) = load.finish().await;
    assert_eq!(
        failed, 0,
        "cached requests failed while PostgreSQL restarted: {errors:?}"
    );
    // The listeners are back: a revocation on A reaches B and C within a second.
    let revocation = f
        .revocation_seen_within("dave", Duration::from_secs(1))
        .await;
    println!(
        "replicas: PostgreSQL restarted ({} ms) under load through HAProxy: {ok} cached \
         requests, {failed} failed; every replica ready and reading the database after \
         {} ms; a revocation then held on the others after {} ms",
        restart_took.as_millis(),
        recovered.as_millis(),
        revocation.as_millis()
    );
}
