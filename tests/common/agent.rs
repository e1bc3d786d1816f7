//! Helpers for agent relay tests: enroll, spawn `tollgate agent run` as a second process of
//! the same binary (optionally inside a network namespace), and read tollgate's metrics.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::policies::AGENT_LOOPBACK as POLICY;
use super::*;

/// A running `tollgate agent run`.
pub struct Agent {
    pub child: Child,
    /// stderr lines (logs).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Enrolls `id` with `tg`'s data dir and starts an agent dialing `relay`, allowing
    /// `allow`, with `extra` flags.
    pub fn start(
        tg: &Tollgate,
        relay: SocketAddr,
        id: &str,
        allow: &[&str],
        extra: &[&str],
    ) -> Agent {
        let (cred, ca) = credential_files(tg, id);
        Self::start_with_files(relay, id, &cred, &ca, allow, extra)
    }

    /// As [`Agent::start`], with the credential and CA files given (e.g. a CA that did not
    /// sign the relay's certificate).
    pub fn start_with_files(
        relay: SocketAddr,
        id: &str,
        cred: &Path,
        ca: &Path,
        allow: &[&str],
        extra: &[&str],
    ) -> Agent {
        let relay_url = format!("https://{relay}");
        let mut args: Vec<String> = vec![
            "agent".into(),
            "run".into(),
            "--relay".into(),
            relay_url,
            "--id".into(),
            id.into(),
            "--credential-file".into(),
            cred.display().to_string(),
            "--ca-file".into(),
            ca.display().to_string(),
        ];
        for a in allow {
            args.push("--allow".into());
            args.push((*a).into());
        }
        args.extend(["--log-format".to_string(), "json".to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&[], &args)
    }

    /// Runs `prefix... tollgate ARGS` (e.g. `ip netns exec NS`).
    pub fn spawn(prefix: &[&str], args: &[String]) -> Agent {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .args(args)
            .env("TOLLGATE_LOG", "info,tollgate::agent=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// The exit status once the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on the agent")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The per-tunnel log lines (JSON), parsed.
    pub fn tunnel_lines(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "tollgate::agent::tunnel")
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A stopped agent (SIGSTOP tests) must be continued to die cleanly.
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// Writes a fresh credential for `id` and the CA certificate next to `tg`'s data dir.
pub fn credential_files(tg: &Tollgate, id: &str) -> (PathBuf, PathBuf) {
    let cred = tg.dir.path().join(format!("agent-{id}.jwt"));
    std::fs::write(&cred, enroll(tg, id)).unwrap();
    let ca = tg.dir.path().join("relay-ca.pem");
    std::fs::copy(tg.data.join("ca/ca.pem"), &ca).unwrap();
    (cred, ca)
}

/// `tollgate agent enroll --id ID` with `tg`'s data dir.
pub fn enroll(tg: &Tollgate, id: &str) -> String {
    enroll_with(tg, id, &[])
}

/// `tollgate agent enroll --id ID EXTRA...` (e.g. `--ttl 20s`) with `tg`'s data dir.
pub fn enroll_with(tg: &Tollgate, id: &str, extra: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["agent", "enroll", "--data"])
        .arg(&tg.data)
        .args(["--id", id])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The value of a metric line (exact name with labels), or 0 when absent.
pub async fn metric(tg: &Tollgate, series: &str) -> f64 {
    let text = tg.operator_get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `tollgate_agent_connections{agent=ID}` reaches `n`.
pub async fn wait_connections(tg: &Tollgate, id: &str, n: usize, timeout: Duration) -> bool {
    let series = format!("tollgate_agent_connections{{agent=\"{id}\"}}");
    wait_until(timeout, async || metric(tg, &series).await as usize == n).await
}

/// A port on 127.0.0.1 nothing listens on now, for a relay listener that must keep its
/// address across restarts.
pub fn free_port() -> u16 {
    super::closed_port()
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Keep-alive on both sides in these tests: a dead relay connection is dropped within about
/// twice this.
pub const KEEPALIVE: &str = "1s";

pub fn start_tollgate(extra: &[&str]) -> (Tollgate, SocketAddr) {
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

pub fn start_agent(tg: &Tollgate, relay: SocketAddr, allow: &[&str], extra: &[&str]) -> Agent {
    let mut args = vec!["--keepalive", KEEPALIVE];
    args.extend_from_slice(extra);
    Agent::start(tg, relay, "onprem-1", allow, &args)
}

/// tollgate plus one agent allowing loopback, with both relay connections up.
pub async fn setup(agent_extra: &[&str]) -> (Tollgate, SocketAddr, Agent) {
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
pub async fn echo_through(
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

/// `CONNECT target` through tollgate as `auth`; asserts 200 and returns the open tunnel.
pub async fn tunnel_to(
    tg: &Tollgate,
    target: &str,
    auth: &str,
) -> TokioIo<hyper::upgrade::Upgraded> {
    let (r, tunnel) = proxy_connect(tg.proxy, target, &[("proxy-authorization", auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tunnel.unwrap()
}

/// Writes `msg` on an open tunnel to an echo server and reads it back.
pub async fn echo_on<S: AsyncRead + AsyncWrite + Unpin>(
    t: &mut S,
    msg: &[u8],
) -> Result<(), String> {
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
pub async fn time_to_failure<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Duration> {
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
