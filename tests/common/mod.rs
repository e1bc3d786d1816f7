//! The one harness of the integration tests. Here: the real `tollgate` binary on
//! `127.0.0.1:0` with a temporary data dir ([`Tollgate`]: start, restart, signal, logs, caller
//! and admin tokens), loopback upstreams (HTTP echo, TCP echo), a minimal proxy client built on
//! hyper's connection API (so requests are sent exactly as written: absolute-form or CONNECT),
//! and [`wait_until`], which tests use to await an event instead of sleeping.
//!
//! Beside it: [`policies`] (every policy the tests use, written once), [`provider`] (an
//! in-process OAuth provider and protected API), [`consent`] (the consent flow as a browser
//! walks it), [`oauth`] and [`webhook`] (the token-injection fixtures), [`agent`] (agent
//! processes and the relay), [`netns`] (network namespaces for agents), [`tls`] (test CAs, a TLS
//! upstream, clients inside tunnels), [`inproc`] (tollgate in-process, for interception with a
//! forced predicate or a request hook), [`guard`] (the address guard's dialer with a static
//! resolver), [`idp`] with [`login`] (an OpenID Provider, and signing in at the pages),
//! [`postgres`] (a fresh database per test, replica data directories), [`squid`] (a real
//! Squid as the parent proxy) and [`websocket`] (a real WebSocket server and
//! client, Python `websockets`), [`workload`] (an OIDC issuer's JWKS and its CI tokens) and
//! [`otlp`] (an OTLP/HTTP collector for `--otlp-endpoint`).

#![allow(dead_code)]

pub mod agent;
pub mod consent;
pub mod events;
pub mod guard;
pub mod haproxy;
pub mod idp;
pub mod inproc;
pub mod login;
pub mod netns;
pub mod oauth;
pub mod otlp;
pub mod policies;
pub mod postgres;
pub mod provider;
pub mod squid;
pub mod tls;
pub mod webhook;
pub mod websocket;
pub mod workload;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running `tollgate serve`.
pub struct Tollgate {
    pub child: Child,
    pub proxy: SocketAddr,
    pub web: SocketAddr,
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub policies: PathBuf,
    /// stderr lines (logs), collected by a thread.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// stdout lines (the banner), as printed, collected by a thread.
    pub stdout: Arc<Mutex<Vec<String>>>,
}

/// Unix seconds of an RFC 3339 timestamp in an API answer (`None` for null or a non-time).
pub fn unix_time(v: &serde_json::Value) -> Option<u64> {
    let t = humantime::parse_rfc3339(v.as_str()?).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// A banner line's text: the line itself, or with `--log-format json` its `message`.
pub fn banner_text(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if line.starts_with('{') => v["message"].as_str().unwrap_or_default().to_string(),
        _ => line.to_string(),
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// `tollgate serve` with data and policies under `dir` and both listeners on port 0, for
/// tests that watch the process itself (its exit code, its stderr).
pub fn serve_command(dir: &Path) -> Command {
    serve_on(dir, "127.0.0.1:0", "127.0.0.1:0")
}

/// As [`serve_command`], with the proxy and web listeners on `proxy` and `web`.
pub fn serve_on(dir: &Path, proxy: &str, web: &str) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--policies")
        .arg(dir.join("policies"))
        .args(["--proxy-listen", proxy])
        .args(["--web-listen", web])
        .env("TOLLGATE_SHUTDOWN_DELAY", "0s");
    cmd
}

impl Tollgate {
    /// Starts tollgate with `policy` as `policies/10-test.toml` and extra flags.
    pub fn start(policy: &str, extra: &[&str]) -> Tollgate {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("10-test.toml"), policy).unwrap();
        Self::start_in(dir, extra)
    }

    /// As [`Tollgate::start`], with extra environment variables for the server (settings a
    /// test must pass without depending on a flag existing).
    pub fn start_env(policy: &str, extra: &[&str], env: &[(&str, &str)]) -> Tollgate {
        Self::start_env_under(&[], policy, extra, env)
    }

    /// As [`Tollgate::start_env`], run under `prefix` (see [`Tollgate::start_with_prefix`]).
    pub fn start_env_under(
        prefix: &[&str],
        policy: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Tollgate {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("10-test.toml"), policy).unwrap();
        Self::start_under(prefix, dir, extra, env)
    }

    /// Starts tollgate in an existing temp dir (with `policies/` and maybe `data/`).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Tollgate {
        Self::start_in_env(dir, extra, &[])
    }

    /// As [`Tollgate::start_in`], with extra environment variables for the server.
    pub fn start_in_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Tollgate {
        Self::start_under(&[], dir, extra, env)
    }

    /// As [`Tollgate::start`], run as `prefix... tollgate serve ...` (e.g. a wrapper that
    /// gives tollgate its own `/etc/hosts`); the wrapper must `exec` tollgate, so that the
    /// child's pid is tollgate's.
    pub fn start_with_prefix(prefix: &[&str], policy: &str, extra: &[&str]) -> Tollgate {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("10-test.toml"), policy).unwrap();
        Self::start_under(prefix, dir, extra, &[])
    }

    fn start_under(
        prefix: &[&str],
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Tollgate {
        let data = dir.path().join("data");
        let policies = dir.path().join("policies");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .arg("serve")
            .arg("--data")
            .arg(&data)
            .arg("--policies")
            .arg(&policies)
            .args([
                "--proxy-listen",
                "127.0.0.1:0",
                "--web-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("TOLLGATE_LOG", "info")
            // Nothing balances test instances: stop at once on SIGTERM (a test of the delay
            // passes --shutdown-delay, which wins over the variable).
            .env("TOLLGATE_SHUTDOWN_DELAY", "0s")
            // The background refresher would refresh the suites' short-lived tokens behind
            // their backs; tests of it pass --refresh-ahead.
            .env("TOLLGATE_REFRESH_AHEAD", "off")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let out_sink = printed.clone();
        std::thread::spawn(move || {
            let mut proxy = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out_sink.lock().unwrap().push(line.clone());
                let line = banner_text(&line);
                if let Some(a) = line.strip_prefix("tollgate: proxy listening on ") {
                    proxy = Some(a.trim().to_string());
                }
                if let Some(a) = line.strip_prefix("tollgate: web listening on http://") {
                    let _ = tx.send((proxy.clone(), a.trim().to_string()));
                }
            }
        });
        let (proxy, web) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "tollgate did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Tollgate {
            child,
            proxy: proxy.expect("proxy line before web line").parse().unwrap(),
            web: web.parse().unwrap(),
            dir,
            data,
            policies,
            logs,
            stdout: printed,
        }
    }

    /// Mints a caller token with the instance's identity key.
    pub fn token(&self, org: &str, user: &str) -> String {
        self.token_ttl(org, user, Duration::from_secs(3600))
    }

    pub fn token_ttl(&self, org: &str, user: &str, ttl: Duration) -> String {
        let key = std::fs::read_to_string(self.data.join("keys/identity.key")).unwrap();
        tollgate::identity::mint(
            &tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes()),
            org,
            user,
            &[],
            ttl,
        )
        .expect("clock")
    }

    /// A caller token that expired a minute ago, beyond the verifier's few seconds of leeway
    /// (so a test need not wait the leeway out).
    pub fn expired_token(&self, org: &str, user: &str) -> String {
        let key = std::fs::read_to_string(self.data.join("keys/identity.key")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims =
            serde_json::json!({"sub": user, "org": org, "iat": now - 3600, "exp": now - 60});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.trim().as_bytes()),
        )
        .unwrap()
    }

    /// A token with the admin role.
    pub fn admin_token(&self, org: &str, user: &str) -> String {
        self.role_token(org, user, "admin")
    }

    /// A token with one role (`admin`, `operator`).
    pub fn role_token(&self, org: &str, user: &str, role: &str) -> String {
        let key = std::fs::read_to_string(self.data.join("keys/identity.key")).unwrap();
        tollgate::identity::mint(
            &tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes()),
            org,
            user,
            &[role.to_string()],
            Duration::from_secs(3600),
        )
        .expect("clock")
    }

    /// A token with the operator role (the deployment's health: `/metrics`, `/readyz`
    /// detail, `/v1/agents`).
    pub fn operator_token(&self) -> String {
        self.role_token("ops", "operator", "operator")
    }

    /// A GET to the web listener as the operator.
    pub async fn operator_get(&self, path: &str) -> Resp {
        web_request(self.web, "GET", path, Some(&self.operator_token()), None).await
    }

    /// Stops this instance (SIGKILL when `kill`, else SIGTERM and wait) and starts a new one
    /// on the same data and policies directories.
    pub fn restart(mut self, kill: bool, extra: &[&str]) -> Tollgate {
        if kill {
            let _ = self.child.kill();
        } else {
            self.signal(libc::SIGTERM);
        }
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        Tollgate::start_in(dir, extra)
    }

    /// Stops this instance (SIGTERM and wait), runs `between` on its directory while nothing
    /// runs there (e.g. `tollgate store copy`), and starts a new one with `extra`.
    pub fn restart_after(self, between: impl FnOnce(&Path), extra: &[&str]) -> Tollgate {
        let dir = self.stop_keep_dir();
        between(dir.path());
        Tollgate::start_in(dir, extra)
    }

    /// Stops this instance (SIGTERM, then waits) and hands back its directory, for offline
    /// commands on its data and a later [`Tollgate::start_in`].
    pub fn stop_keep_dir(mut self) -> tempfile::TempDir {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Whether any file under the data directory contains `needle` (to prove a secret is
    /// sealed at rest; check a known plaintext too, so the scan is shown to read real data).
    pub fn data_contains(&self, needle: &[u8]) -> bool {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.data, &mut files);
        files.iter().any(|f| {
            std::fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    }

    pub fn bearer(&self, org: &str, user: &str) -> String {
        format!("Bearer {}", self.token(org, user))
    }

    /// Replaces the test policy file.
    /// The policy set's generation on `/readyz` (one more per applied reload).
    pub async fn policy_generation(&self) -> u64 {
        self.operator_get("/readyz").await.json()["policies"]["generation"]
            .as_u64()
            .unwrap()
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        let tmp = self.policies.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.policies.join(name)).unwrap();
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Stops the server with SIGTERM and waits for it to exit (and its stderr to be read to
    /// the end), so `logs` holds every line it wrote. Returns the exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut status = None;
        wait_until(Duration::from_secs(20), async || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        let status = status.expect("tollgate did not exit on SIGTERM");
        // The stderr reader thread drops its handle on the lines at EOF.
        let read = wait_until(Duration::from_secs(10), async || {
            Arc::strong_count(&self.logs) == 1
        })
        .await;
        assert!(read, "stderr not read to the end");
        status
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tollgate ARGS... --data DATA EXTRA...` offline (without an inherited
/// `TOLLGATE_TOKEN`, which would send it to a server instead).
pub fn offline(args: &[&str], data: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap()
}

/// `(kid, state)` of every key of `kind` (`identity`, `session`) that `keys list --json` or
/// `GET /v1/keys` shows in `listed`.
pub fn key_states(listed: &serde_json::Value, kind: &str) -> Vec<(String, String)> {
    listed[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().into(),
                k["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// [`offline`], which must succeed; its stdout.
pub fn offline_ok(args: &[&str], data: &Path, extra: &[&str]) -> String {
    let out = offline(args, data, extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `cond` until it holds or `timeout` passes; whether it held. Tests wait for an
/// observable event this way instead of sleeping a fixed time.
pub async fn wait_until(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// How often [`wait_until`] checks its condition.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// A simple response: status, headers, body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request through the proxy at `proxy` with the target written as `uri`
/// (absolute-form for plain HTTP) and the given headers.
pub async fn proxy_request(
    proxy: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send_one(
        proxy,
        req.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
    )
    .await
}

/// The status of one `GET` through `tg`'s proxy to `http://localhost:PORT/` of `up` with
/// `token` as a Bearer caller token.
pub async fn status_as(tg: &Tollgate, up: SocketAddr, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    let uri = format!("http://localhost:{}/", up.port());
    proxy_request(tg.proxy, "GET", &uri, &[("proxy-authorization", &auth)], "")
        .await
        .status
}

/// Sends one request on a new connection to `addr` and reads the whole response.
pub async fn send_one(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    read_response(send.send_request(req).await.unwrap()).await
}

/// Reads a whole response.
pub async fn read_response(resp: Response<Incoming>) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends `CONNECT target` through the proxy. On 200 returns the tunnel stream.
pub async fn proxy_connect(
    proxy: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> (Resp, Option<TokioIo<hyper::upgrade::Upgraded>>) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::builder().method("CONNECT").uri(target);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if status == 200 {
        let up = hyper::upgrade::on(resp).await.unwrap();
        (
            Resp {
                status,
                headers,
                body: Vec::new(),
            },
            Some(TokioIo::new(up)),
        )
    } else {
        (read_response(resp).await, None)
    }
}

/// A request to the web listener.
pub async fn web_request(
    web: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", web.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    send_one(web, req.body(Full::new(bytes)).unwrap()).await
}

/// A plain GET to the web listener.
pub async fn web_get(web: SocketAddr, path: &str) -> Resp {
    web_request(web, "GET", path, None, None).await
}

/// An HTTP upstream on 127.0.0.1:0 that echoes what it received as JSON:
/// `{"method","uri","headers":{..},"body"}`. `/slow?ms=N` waits first; `/silent` never answers.
pub async fn echo_upstream() -> SocketAddr {
    echo_upstream_counting().await.0
}

/// [`echo_upstream`], with a count of the requests it has received (before answering them), so
/// a test can wait until a request is in flight.
pub async fn echo_upstream_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    echo(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // `/silent` and `/slow` simulate upstreams that hang or are slow: the sleeps are the
    // behaviour under test, not synchronization.
    if path == "/silent" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path == "/slow" {
        let ms: u64 = query
            .strip_prefix("ms=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(k.as_str().to_string(), v.to_str().unwrap_or("").to_string());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let out = serde_json::json!({
        "method": method,
        "uri": uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("proxy-status", "upstream-lies; error=none".parse().unwrap());
    Ok(resp)
}

/// A TCP echo server on 127.0.0.1:0.
pub async fn tcp_echo() -> SocketAddr {
    tcp_echo_at("127.0.0.1").await
}

/// A TCP echo server on `ip`, port 0 (any loopback address: 127.0.0.2 is a second host).
pub async fn tcp_echo_at(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Reads until EOF.
pub async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

/// Path helper.
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A TLS client stream through `CONNECT localhost:port` with `proxy_auth`, trusting tollgate's
/// CA (so the handshake succeeds only if tollgate intercepts), offering `alpn`.
pub async fn intercepted_tls(
    tg: &Tollgate,
    proxy_auth: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>> {
    use rustls::pki_types::pem::PemObject;
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &format!("localhost:{port}"),
        &[("proxy-authorization", proxy_auth)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(tg.data.join("ca/ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tunnel.unwrap())
        .await
        .expect("client trusts the certificate tollgate minted from its CA")
}

/// Writes `payload` into an open tunnel to a TCP echo server and asserts it comes back.
pub async fn assert_echoes<S>(tunnel: &mut S, payload: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tunnel.write_all(payload).await.unwrap();
    let mut buf = vec![0u8; payload.len()];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, payload);
}

/// Asserts an error tollgate generated: `status`, a `Proxy-Status` naming tollgate, a JSON
/// body with `error` = `code` and a `message`. Returns the body.
pub fn assert_proxy_error(r: &Resp, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.text());
    let ps = r.header("proxy-status").expect("Proxy-Status header");
    assert!(ps.starts_with("tollgate; error="), "{ps}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = r.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}

/// Standard base64 of `s` (for `Basic` credentials).
pub fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `Bearer TOKEN` of `org`'s alice, for `Proxy-Authorization`.
pub fn auth(tg: &Tollgate, org: &str) -> String {
    tg.bearer(org, "alice")
}
