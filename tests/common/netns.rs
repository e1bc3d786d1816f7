//! The network-namespace topology of the agent tests: a private upstream that tollgate cannot
//! reach, and an agent that can reach both.
//!
//! ```text
//!  root namespace (tollgate)        edge namespace (agent)        private namespace
//!  10.231.N.1/30  ── veth ──  10.231.N.2/30
//!                             10.231.N.5/30  ── veth ──  10.231.N.6/30 (upstream)
//!  route 10.231.N.4/30: unreachable
//! ```
//!
//! The root namespace gets an `unreachable` route for the private /30, so a direct dial fails
//! at once instead of leaving through the host's default route; no packet goes anywhere but
//! between the namespaces made here. A test that needs a name for the private address writes
//! it to `/etc/netns/EDGE/hosts` (which `ip netns exec` mounts over the agent's `/etc/hosts`),
//! so no lookup leaves the host either. Skipped, with the reason printed, when not root or
//! when `ip netns` is unavailable. Namespaces, links and the route are removed on drop, also
//! when a test fails.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::agent::*;
use super::*;

/// The namespaces, links and route of one test.
pub struct Topology {
    pub edge: String,
    pub private: String,
    /// Root-side end of the root–edge veth pair.
    pub root_link: String,
    /// Edge-side end of the root–edge veth pair.
    pub edge_link: String,
    /// Third octet of 10.231.N.0/29.
    pub n: u8,
    pub route_added: bool,
    /// `/etc/netns/EDGE`, when [`Topology::name_private_host`] made it.
    pub hosts_dir: Option<PathBuf>,
}

pub static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Topology {
    /// Builds the topology, or says why it cannot (the caller skips the test).
    pub fn create() -> Result<Topology, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("the `ip` command is missing".into());
        }
        let id = std::process::id() % 100_000;
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A third octet not used on this host yet (other test processes may be running).
        let used = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "-4", "addr"])
                .output()
                .map_err(|e| e.to_string())?
                .stdout,
        )
        .into_owned();
        let n = (0..250u32)
            .map(|i| ((id + k * 17 + i) % 250 + 1) as u8)
            .find(|n| !used.contains(&format!("10.231.{n}.")))
            .ok_or("no free 10.231.N.0/29 block")?;
        let mut t = Topology {
            edge: format!("tg-edge-{id}-{k}"),
            private: format!("tg-priv-{id}-{k}"),
            root_link: format!("tgr{id}x{k}"),
            edge_link: format!("tge{id}x{k}"),
            n,
            route_added: false,
            hosts_dir: None,
        };
        t.build()
            .map_err(|e| format!("cannot build namespaces: {e}"))?;
        Ok(t)
    }

    pub fn build(&mut self) -> Result<(), String> {
        let n = self.n;
        let (edge, private) = (self.edge.clone(), self.private.clone());
        let (root_link, edge_link) = (self.root_link.clone(), self.edge_link.clone());
        let (ep, pe) = (format!("{edge_link}p"), format!("{root_link}p"));
        ip(&["netns", "add", &edge])?;
        ip(&["netns", "add", &private])?;
        // root <-> edge
        ip(&[
            "link", "add", &root_link, "type", "veth", "peer", "name", &edge_link,
        ])?;
        ip(&["link", "set", &edge_link, "netns", &edge])?;
        ip(&[
            "addr",
            "add",
            &format!("10.231.{n}.1/30"),
            "dev",
            &root_link,
        ])?;
        ip(&["link", "set", &root_link, "up"])?;
        ip(&[
            "-n",
            &edge,
            "addr",
            "add",
            &format!("10.231.{n}.2/30"),
            "dev",
            &edge_link,
        ])?;
        ip(&["-n", &edge, "link", "set", &edge_link, "up"])?;
        ip(&["-n", &edge, "link", "set", "lo", "up"])?;
        // edge <-> private
        ip(&["link", "add", &ep, "type", "veth", "peer", "name", &pe])?;
        ip(&["link", "set", &ep, "netns", &edge])?;
        ip(&["link", "set", &pe, "netns", &private])?;
        ip(&[
            "-n",
            &edge,
            "addr",
            "add",
            &format!("10.231.{n}.5/30"),
            "dev",
            &ep,
        ])?;
        ip(&["-n", &edge, "link", "set", &ep, "up"])?;
        ip(&[
            "-n",
            &private,
            "addr",
            "add",
            &format!("10.231.{n}.6/30"),
            "dev",
            &pe,
        ])?;
        ip(&["-n", &private, "link", "set", &pe, "up"])?;
        ip(&["-n", &private, "link", "set", "lo", "up"])?;
        // The root namespace has no way to the private /30, and says so at once.
        ip(&["route", "add", "unreachable", &format!("10.231.{n}.4/30")])?;
        self.route_added = true;
        Ok(())
    }

    pub fn relay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.n, 1)
    }

    pub fn private_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.n, 6)
    }

    pub fn private_cidr(&self) -> String {
        format!("10.231.{}.4/30", self.n)
    }

    /// Binds a listener inside the private namespace (from a thread that enters it; the
    /// socket stays there).
    pub fn listen_in_private(&self) -> std::net::TcpListener {
        let path = format!("/var/run/netns/{}", self.private);
        let addr = SocketAddr::new(self.private_ip().into(), 0);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let l = std::net::TcpListener::bind(addr).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .join()
        .unwrap()
    }

    /// Makes `name` resolve to the private address in processes started with
    /// `ip netns exec EDGE`, which bind-mounts `/etc/netns/EDGE/hosts` over `/etc/hosts`.
    /// Returns that hosts file, for other processes that should resolve the name alike.
    pub fn name_private_host(&mut self, name: &str) -> PathBuf {
        let dir = PathBuf::from(format!("/etc/netns/{}", self.edge));
        std::fs::create_dir_all(&dir).unwrap();
        self.hosts_dir = Some(dir.clone());
        let hosts = dir.join("hosts");
        let text = format!("127.0.0.1 localhost\n{} {name}\n", self.private_ip());
        std::fs::write(&hosts, text).unwrap();
        hosts
    }

    /// Cuts the wire between tollgate and the agent: packets are dropped silently.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["-n", &self.edge, "link", "set", &self.edge_link, "down"])
    }

    pub fn mend(&self) -> Result<(), String> {
        ip(&["-n", &self.edge, "link", "set", &self.edge_link, "up"])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(dir) = &self.hosts_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.route_added {
            let _ = ip(&["route", "del", "unreachable", &self.private_cidr()]);
        }
        // Deleting a namespace deletes the links in it, and with them their peers.
        let _ = ip(&["link", "del", &self.root_link]);
        let _ = ip(&["netns", "del", &self.edge]);
        let _ = ip(&["netns", "del", &self.private]);
    }
}

/// A tiny HTTP server: answers every request with "private:PATH".
pub async fn serve_private(listener: std::net::TcpListener) -> SocketAddr {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("private:{}", req.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

pub fn policy(t: &Topology) -> String {
    format!(
        r#"
[[policy]]
name = "private-direct"
orgs = ["direct-org"]
route = "direct"
  [[policy.allow]]
  cidrs = ["{cidr}"]
  ports = ["1024-65535"]

[[policy]]
name = "private-agent"
orgs = ["acme"]
route = "agent:edge-1"
  [[policy.allow]]
  cidrs = ["{cidr}", "10.231.{n}.0/29"]
  ports = ["1024-65535"]
"#,
        cidr = t.private_cidr(),
        n = t.n
    )
}

/// tollgate in the root namespace with its relay on the root–edge link, and an agent in the
/// edge namespace allowing only the private /30.
pub async fn start(t: &Topology, keepalive: &str) -> (Tollgate, Agent) {
    start_with_policy(t, keepalive, &policy(t)).await
}

/// As [`start`], with tollgate's policy file given.
pub async fn start_with_policy(t: &Topology, keepalive: &str, policy: &str) -> (Tollgate, Agent) {
    start_with(t, keepalive, policy, &[], &[]).await
}

/// As [`start_with_policy`], with tollgate run as `prefix... tollgate serve` and given
/// `extra` flags.
pub async fn start_with(
    t: &Topology,
    keepalive: &str,
    policy: &str,
    prefix: &[&str],
    extra: &[&str],
) -> (Tollgate, Agent) {
    let relay = SocketAddr::new(t.relay_ip().into(), free_port()).to_string();
    let mut flags = vec!["--relay-listen", &relay, "--relay-keepalive", keepalive];
    flags.extend_from_slice(extra);
    let tg = Tollgate::start_with_prefix(prefix, policy, &flags);
    let (cred, ca) = credential_files(&tg, "edge-1");
    let args: Vec<String> = [
        "agent",
        "run",
        "--relay",
        &format!("https://{relay}"),
        "--id",
        "edge-1",
        "--credential-file",
        cred.to_str().unwrap(),
        "--ca-file",
        ca.to_str().unwrap(),
        "--allow",
        &t.private_cidr(),
        "--keepalive",
        keepalive,
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = Agent::spawn(&["ip", "netns", "exec", &t.edge], &args);
    assert!(
        wait_connections(&tg, "edge-1", 2, Duration::from_secs(20)).await,
        "agent did not connect\ntollgate:\n{}\nagent:\n{}",
        tg.logs(),
        agent.logs()
    );
    (tg, agent)
}

/// GET over a CONNECT tunnel.
pub async fn get_via_connect(tg: &Tollgate, auth: &str, target: &str) -> (u16, String) {
    let (r, tunnel) = proxy_connect(tg.proxy, target, &[("proxy-authorization", auth)]).await;
    if r.status != 200 {
        return (r.status, r.text());
    }
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel.unwrap()))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/through-tunnel")
                .header("host", target)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
