//! Security tests of issue 13, "live tunnels" and "at rest": what a tunnel opened under one
//! caller token and one policy set may still do after the token expired or the policies
//! changed, and what the data directory lets other local users read.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::inproc::{always, start, Running};
use common::policies::LOOPBACK;
use common::tls::*;
use common::{assert_proxy_error, proxy_connect, tcp_echo_at, wait_until, Resp, Tollgate};

/// Every path under `root` (itself included) with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// The paths under `root` that another local user could read or enter.
fn not_private(root: &Path) -> Vec<String> {
    modes(root)
        .into_iter()
        .filter(|(_, mode, dir)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, mode, _)| format!("{} {mode:o}", p.display()))
        .collect()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Before: sled created `data/store/` 0755 and its files 0644, so any local user could copy
/// the sealed tokens (and, with a key leak later, read them); a data dir loosened by hand
/// stayed loose.
#[tokio::test]
async fn data_dir_and_store_are_private_and_loosened_modes_are_fixed_at_start() {
    let tg = Tollgate::start(LOOPBACK, &[]);
    let store = tg.data.join("store");
    assert!(store.is_dir(), "the store lives in data/store");
    let files = modes(&tg.data).iter().filter(|(_, _, d)| !d).count();
    assert!(
        files >= 5,
        "keys, CA and sled's files: {:?}",
        modes(&tg.data)
    );
    assert_eq!(not_private(&tg.data), Vec::<String>::new());

    // Loosened by hand (or by an older build): fixed at the next start, and logged.
    chmod(&tg.data, 0o755);
    chmod(&store, 0o755);
    chmod(&tg.data.join("keys/identity.key"), 0o644);
    let sled_conf = store.join("conf");
    chmod(&sled_conf, 0o666);
    let tg = tg.restart(false, &[]);
    assert_eq!(not_private(&tg.data), Vec::<String>::new());
    let logged = wait_until(Duration::from_secs(5), async || {
        let logs = tg.logs();
        logs.contains("tightened permissions") && logs.contains("identity.key")
    })
    .await;
    assert!(logged, "{}", tg.logs());
}

/// `LOOPBACK` plus a deny of `localhost` (the intercepted tests' upstream).
fn loopback_denying_localhost() -> String {
    format!("{LOOPBACK}\n[[deny]]\nhosts = [\"localhost\"]\n")
}

/// An intercepting tollgate in front of a TLS echo upstream; a sender inside a tunnel opened
/// with `auth(tg)`.
async fn intercepted(
    auth: impl FnOnce(&Running) -> String,
) -> (
    Running,
    Upstream,
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    String,
) {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let target = format!("localhost:{}", up.addr.port());
    let tls = connect_tls(
        tg.proxy,
        &target,
        &auth(&tg),
        &tg.exported_ca(),
        "localhost",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let send = h1(tls).await;
    (tg, up, send, target)
}

/// Before: the caller identified at `CONNECT` stayed valid for the tunnel's life; inner
/// requests kept getting the upstream's 200 long after the token expired.
#[tokio::test]
async fn an_expired_caller_token_is_refused_inside_an_intercepted_tunnel() {
    let (_tg, _up, mut send, target) =
        intercepted(|tg| tg.auth_ttl("acme", "alice", Duration::from_secs(1))).await;
    let first = read(
        send.send_request(get("/", &[("host", &target)]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    // The token expires after 1 s, plus the verifier's 5 s of leeway.
    let mut last: Option<Resp> = None;
    let refused = wait_until(Duration::from_secs(15), async || {
        let r = read(
            send.send_request(get("/", &[("host", &target)]))
                .await
                .unwrap(),
        )
        .await;
        let done = r.status != 200;
        last = Some(r);
        done
    })
    .await;
    let r = last.unwrap();
    assert!(refused, "still {} after expiry: {}", r.status, r.text());
    assert_proxy_error(&r, 407, "proxy_auth_required");
}

/// Before: a policy reload was never applied to the inner requests of a tunnel intercepted
/// under the old set; a destination denied by the new set stayed reachable through it.
#[tokio::test]
async fn a_policy_reload_that_denies_applies_to_the_next_inner_request() {
    let (tg, _up, mut send, target) = intercepted(|tg| tg.auth("acme", "alice")).await;
    let first = read(
        send.send_request(get("/", &[("host", &target)]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    tg.write_policy(&loopback_denying_localhost());
    let mut last: Option<Resp> = None;
    let denied = wait_until(Duration::from_secs(5), async || {
        let r = read(
            send.send_request(get("/", &[("host", &target)]))
                .await
                .unwrap(),
        )
        .await;
        let done = r.status != 200;
        last = Some(r);
        done
    })
    .await;
    let r = last.unwrap();
    assert!(denied, "still {} after the reload: {}", r.status, r.text());
    assert_proxy_error(&r, 403, "destination_denied");
}

/// Sends `msg` through `s` and reads the echo.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0; msg.len()];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

/// Before: a blind tunnel lived until a side closed it or it idled out (15 min), whatever the
/// policies said meanwhile.
#[tokio::test]
async fn a_blind_tunnel_the_new_policy_denies_is_closed_and_logged_as_policy_revoked() {
    let tg = Tollgate::start(LOOPBACK, &["--log-format", "json"]);
    let auth = tg.bearer("acme", "alice");
    let (revoked_up, kept_up) = (
        tcp_echo_at("127.0.0.1").await,
        tcp_echo_at("127.0.0.2").await,
    );
    let open = |up: std::net::SocketAddr| {
        let auth = auth.clone();
        async move {
            let (r, tunnel) =
                proxy_connect(tg.proxy, &up.to_string(), &[("proxy-authorization", &auth)]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            tunnel.unwrap()
        }
    };
    let mut revoked = open(revoked_up).await;
    let mut kept = open(kept_up).await;
    echo(&mut revoked, b"before").await;
    echo(&mut kept, b"before").await;

    let generation = tg.policy_generation().await;
    tg.write_policy(
        "10-test.toml",
        &format!("{LOOPBACK}\n[[deny]]\ncidrs = [\"127.0.0.1/32\"]\n"),
    );
    let edited = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), revoked.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the tunnel was not closed within 5 s of the edit: {read:?}"
    );
    assert!(edited.elapsed() < Duration::from_secs(5));
    assert!(
        tg.policy_generation().await > generation,
        "the edit was loaded"
    );

    // The tunnel whose destination is still allowed is untouched.
    echo(&mut kept, b"after").await;

    let port = revoked_up.port();
    let mut line = serde_json::Value::Null;
    let logged = wait_until(Duration::from_secs(5), async || {
        let logs = tg.logs();
        let found = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["method"] == "CONNECT" && v["port"] == port);
        line = found.unwrap_or_default();
        !line.is_null()
    })
    .await;
    assert!(logged, "no access line for the tunnel: {}", tg.logs());
    assert_eq!(line["reason"], "policy_revoked", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["bytes_up"].as_u64().unwrap() >= 6, "{line}");
}
