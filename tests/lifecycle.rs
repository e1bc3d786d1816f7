//! A replica's lifecycle as a balancer sees it: signals during startup do not kill the
//! process, and SIGTERM turns `/readyz` to `503` first, keeps accepting for
//! `--shutdown-delay`, drains what is in flight, then closes the listeners and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::policies::LOOPBACK as POLICY;
use common::*;

/// Whether `pid` catches `sig` (its bit in `SigCgt` of `/proc/PID/status`): the process got
/// as far as registering its handler.
fn catches(pid: u32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// `tollgate serve` with a fresh directory and `LOOPBACK`, spawned with piped output.
fn spawn_serve(extra: &[&str]) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/10-test.toml"), POLICY).unwrap();
    let child = serve_command(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, dir)
}

#[tokio::test]
async fn sighup_right_after_spawn_does_not_kill_the_server() {
    let (mut child, _dir) = spawn_serve(&[]);
    let pid = child.id();
    // As soon as the process has a handler (first thing in `serve`, before the data
    // directory, the store and the listeners), hang it up.
    let start = Instant::now();
    while !catches(pid, libc::SIGHUP) {
        assert!(child.try_wait().unwrap().is_none(), "exited during startup");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no SIGHUP handler"
        );
        std::thread::yield_now();
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    let stdout = child.stdout.take().unwrap();
    let banner = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("tollgate: web listening on"));
    // The banner's reader saw stdout close only if the process died.
    assert!(banner, "no banner after SIGHUP: {:?}", child.try_wait());
    assert!(child.try_wait().unwrap().is_none(), "died after SIGHUP");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sighup_while_the_store_opens_is_held_not_fatal() {
    // A "PostgreSQL" that accepts and says nothing: startup is stuck opening the store,
    // well past the signal handlers, when SIGHUP arrives.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://u@{}/db?sslmode=disable",
        fake.local_addr().unwrap()
    );
    let (child, _dir) = spawn_serve(&["--store", &url]);
    let (conn, _) = fake.accept().unwrap();
    assert!(catches(child.id(), libc::SIGHUP));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    // Now let the store fail: the process must end because of that, not the signal.
    drop(conn);
    drop(fake);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), None, "killed by a signal: {out:?}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_readyz_first_then_accepts_for_the_delay_then_drains_and_exits() {
    let (up, seen) = echo_upstream_counting().await;
    let tg = Tollgate::start(POLICY, &["--shutdown-delay", "2s"]);
    let a = auth(&tg, "acme");
    assert_eq!(web_get(tg.web, "/readyz").await.status, 200);

    // A slow request in flight when SIGTERM arrives finishes.
    let proxy = tg.proxy;
    let slow = {
        let a = a.clone();
        let uri = format!("http://{up}/slow?ms=2500");
        tokio::spawn(async move {
            proxy_request(proxy, "GET", &uri, &[("proxy-authorization", &a)], "").await
        })
    };
    assert!(wait_until(Duration::from_secs(10), async || seen.load(SeqCst) > 0).await);
    let sent = Instant::now();
    tg.signal(libc::SIGTERM);

    // /readyz turns 503 within a second, with the reason for operators.
    let turned = wait_until(Duration::from_secs(1), async || {
        web_get(tg.web, "/readyz").await.status == 503
    })
    .await;
    assert!(turned, "/readyz still 200 a second after SIGTERM");
    let detail = tg.operator_get("/readyz").await;
    assert_eq!(detail.status, 503);
    assert_eq!(detail.json()["status"], "draining", "{}", detail.text());
    println!(
        "lifecycle: readyz 503 after {} ms",
        sent.elapsed().as_millis()
    );

    // Within the delay, new connections are still accepted and served.
    let uri = format!("http://{up}/");
    let r = proxy_request(tg.proxy, "GET", &uri, &[("proxy-authorization", &a)], "").await;
    assert_eq!(
        r.status,
        200,
        "refused during the drain delay: {}",
        r.text()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "the check above ran after the delay; it proves nothing"
    );

    // The slow request finishes; the process exits 0 after the delay, listeners closed.
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request cut: {}", r.text());
    let mut tg = tg;
    let mut status = None;
    let exited = wait_until(Duration::from_secs(15), async || {
        status = tg.child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(exited, "did not exit; logs:\n{}", tg.logs());
    assert!(status.unwrap().success(), "{status:?}");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "exited before the delay"
    );
    assert!(tokio::net::TcpStream::connect(tg.proxy).await.is_err());
    println!(
        "lifecycle: exited {} ms after SIGTERM (delay 2 s)",
        sent.elapsed().as_millis()
    );
}

#[tokio::test]
async fn sigint_skips_the_delay() {
    let mut tg = Tollgate::start(POLICY, &["--shutdown-delay", "60s"]);
    tg.signal(libc::SIGINT);
    let exited = wait_until(Duration::from_secs(10), async || {
        tg.child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(exited, "SIGINT waited for the delay; logs:\n{}", tg.logs());
}
