//! Agent relay across network namespaces: a private upstream that tollgate cannot reach,
//! and an agent that can reach both.
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
//! between the namespaces made here. Skipped, with the reason printed, when not root or
//! when `ip netns` is unavailable. Namespaces, links and the route are removed on drop, also
//! when a test fails.

mod common;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::agent::*;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

/// The namespaces, links and route of one test.
struct Topology {
    edge: String,
    private: String,
    /// Root-side end of the root–edge veth pair.
    root_link: String,
    /// Edge-side end of the root–edge veth pair.
    edge_link: String,
    /// Third octet of 10.231.N.0/29.
    n: u8,
    route_added: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
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
    fn create() -> Result<Topology, String> {
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
        };
        t.build()
            .map_err(|e| format!("cannot build namespaces: {e}"))?;
        Ok(t)
    }

    fn build(&mut self) -> Result<(), String> {
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

    fn relay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.n, 1)
    }

    fn private_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.n, 6)
    }

    fn private_cidr(&self) -> String {
        format!("10.231.{}.4/30", self.n)
    }

    /// Binds a listener inside the private namespace (from a thread that enters it; the
    /// socket stays there).
    fn listen_in_private(&self) -> std::net::TcpListener {
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

    /// Cuts the wire between tollgate and the agent: packets are dropped silently.
    fn cut(&self) -> Result<(), String> {
        ip(&["-n", &self.edge, "link", "set", &self.edge_link, "down"])
    }

    fn mend(&self) -> Result<(), String> {
        ip(&["-n", &self.edge, "link", "set", &self.edge_link, "up"])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.route_added {
            let _ = ip(&["route", "del", "unreachable", &self.private_cidr()]);
        }
        // Deleting a namespace deletes the links in it, and with them their peers.
        let _ = ip(&["link", "del", &self.root_link]);
        let _ = ip(&["netns", "del", &self.edge]);
        let _ = ip(&["netns", "del", &self.private]);
    }
}

macro_rules! topology_or_skip {
    () => {
        match Topology::create() {
            Ok(t) => t,
            Err(why) => {
                eprintln!("skipping network-namespace test: {why}");
                return;
            }
        }
    };
}

/// A tiny HTTP server: answers every request with "private:PATH".
async fn serve_private(listener: std::net::TcpListener) -> SocketAddr {
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

fn policy(t: &Topology) -> String {
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
async fn start(t: &Topology, keepalive: &str) -> (Tollgate, Agent) {
    start_with_policy(t, keepalive, &policy(t)).await
}

/// As [`start`], with tollgate's policy file given.
async fn start_with_policy(t: &Topology, keepalive: &str, policy: &str) -> (Tollgate, Agent) {
    let relay = SocketAddr::new(t.relay_ip().into(), free_port());
    let tg = Tollgate::start(
        policy,
        &[
            "--relay-listen",
            &relay.to_string(),
            "--relay-keepalive",
            keepalive,
        ],
    );
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
async fn get_via_connect(tg: &Tollgate, auth: &str, target: &str) -> (u16, String) {
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

#[tokio::test]
async fn direct_egress_fails_where_the_agent_succeeds() {
    let t = topology_or_skip!();
    let upstream = serve_private(t.listen_in_private()).await;
    let (tg, agent) = start(&t, "10s").await;

    // Direct, from the root namespace: no route.
    let direct = tg.bearer("direct-org", "bob");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{upstream}/plain"),
        &[("proxy-authorization", &direct)],
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    let (status, body) = get_via_connect(&tg, &direct, &upstream.to_string()).await;
    assert_eq!(status, 502, "{body}");

    // Through the agent in the edge namespace: plain HTTP and CONNECT.
    let auth = tg.bearer("acme", "alice");
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{upstream}/plain"),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "private:/plain");
    let (status, body) = get_via_connect(&tg, &auth, &upstream.to_string()).await;
    assert_eq!((status, body.as_str()), (200, "private:/through-tunnel"));

    // The agent's allowlist has the last word: tollgate's side of the link is outside it.
    let (r, _) = proxy_connect(
        tg.proxy,
        &format!("10.231.{}.1:{}", t.n, upstream.port()),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r
        .header("proxy-status")
        .unwrap()
        .contains("not in the agent's allowlist"));

    let ok = Tollgate::wait_for(Duration::from_secs(5), async || {
        agent
            .tunnel_lines()
            .iter()
            .any(|l| l["decision"] == "allowed" && l["addr"] == upstream.to_string().as_str())
    })
    .await;
    assert!(ok, "{}", agent.logs());
}

#[tokio::test]
async fn cut_wire_drops_tunnels_within_the_keepalive_deadline_and_the_agent_comes_back() {
    let t = topology_or_skip!();
    let upstream = serve_private(t.listen_in_private()).await;
    let (tg, agent) = start(&t, "1s").await;
    let auth = tg.bearer("acme", "alice");
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &upstream.to_string(),
        &[("proxy-authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    let mut tunnel = tunnel.unwrap();

    // Packets now vanish: no FIN, no RST. Only HTTP/2 pings can tell (1 s + 1 s).
    t.cut().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(15), tunnel.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "{end:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("tunnel failed {took:?} after the wire was cut");
    drop(tunnel);
    let clean = Tollgate::wait_for(Duration::from_secs(5), async || {
        metric(&tg, "tollgate_agent_connections{agent=\"edge-1\"}").await == 0.0
            && metric(&tg, "tollgate_agent_open_tunnels{agent=\"edge-1\"}").await == 0.0
            && metric(&tg, "tollgate_open_tunnels").await == 0.0
    })
    .await;
    assert!(clean, "{}", web_get(tg.web, "/metrics").await.text());

    t.mend().unwrap();
    assert!(
        wait_connections(&tg, "edge-1", 2, Duration::from_secs(45)).await,
        "agent did not reconnect:\n{}",
        agent.logs()
    );
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{upstream}/again"),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// [`policy`] plus what a webhook app of `acme` needs: `local` (direct, loopback: the browser's
/// provider and the API) and `hook-direct` (direct to the private /30, which has no route).
fn webhook_policy(t: &Topology) -> String {
    format!(
        r#"{agent}
[[policy]]
name = "local"
orgs = ["acme"]
route = "direct"
  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1-65535"]
  private = true
  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1-65535"]

[[policy]]
name = "hook-direct"
orgs = ["acme"]
route = "direct"
  [[policy.allow]]
  cidrs = ["{cidr}"]
  ports = ["1024-65535"]
"#,
        agent = policy(t),
        cidr = t.private_cidr(),
    )
}

#[tokio::test]
async fn webhook_handshake_reaches_a_private_endpoint_only_through_the_agent() {
    use common::provider::Provider;
    use serde_json::json;

    let t = topology_or_skip!();
    // The browser reaches the provider's /authorize on loopback; its legacy handshake
    // endpoints are served (same state) inside the private namespace as well.
    let p = Provider::start().await;
    let hook = p.serve_provider_on(t.listen_in_private());
    let (tg, agent) = start_with_policy(&t, "10s", &webhook_policy(&t)).await;
    let admin = tg.admin_token("acme", "root");
    let outputs = json!({
        "access_token": "/result/token", "scope": "/result/scopes",
        "refresh_token": "/result/renew", "expires_in": "/result/ttl",
    });
    let spec = json!({
        "id": "legacy",
        "name": "Legacy CRM",
        "approval_prompt": "Allow?",
        "handshake": "webhook",
        "authorize_url": format!("{}/authorize", p.issuer()),
        "client_id": "client-1",
        "scopes": ["read", "write"],
        "egress_policy": "local",
        "domains": ["localhost"],
        "upstream_tls": false,
        "webhook": {
            "egress_policy": "hook-direct",
            "token": {
                "url": format!("http://{hook}/handshake/token"),
                "headers": {"X-Api-Key": "k-HOOK-SECRET"},
                "json": {
                    "grant": {"code": "{authorization_code}", "verifier": "{code_verifier}"},
                    "client": "{client_id}",
                    "redirect": "{redirect_uri}",
                },
                "outputs": outputs,
            },
        },
    });
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let auth = tg.bearer("acme", "alice");
    let api = format!("http://localhost:{}/records", p.api.port());
    let consent_url = async || {
        let r = proxy_request(tg.proxy, "GET", &api, &[("proxy-authorization", &auth)], "").await;
        assert_eq!(r.status, 401, "{}", r.text());
        r.json()["consent_url"].as_str().unwrap().to_string()
    };

    // Direct from the root namespace, the handshake endpoint cannot be reached: the
    // exchange fails and nothing is stored.
    let b = common::consent::browse(tg.web, p.addr, &consent_url().await).await;
    assert_eq!(b.callback.status, 502, "{}", b.callback.text());
    for want in ["unreachable", "Nothing was stored"] {
        assert!(
            b.callback.text().contains(want),
            "{want:?} missing: {}",
            b.callback.text()
        );
    }
    assert_eq!(p.hook_token_calls(), 0, "reached without the agent");

    // The admins route the handshake through the agent (header values sent back as null:
    // kept).
    let shown = web_request(tg.web, "GET", "/v1/apps/legacy", Some(&admin), None).await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    let mut webhook = shown.json()["webhook"].clone();
    webhook["egress_policy"] = json!("private-agent");
    let r = web_request(
        tg.web,
        "PATCH",
        "/v1/apps/legacy",
        Some(&admin),
        Some(&json!({ "webhook": webhook })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let b = common::consent::browse(tg.web, p.addr, &consent_url().await).await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    assert_eq!(p.hook_token_calls(), 1);
    let seen = p.with(|s| s.last_hook_token.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some("k-HOOK-SECRET"));
    assert_eq!(seen.body["grant"]["code"], b.code.as_str());
    assert!(
        p.with(|s| s.violations.is_empty()),
        "{:?}",
        p.with(|s| s.violations.clone())
    );
    // The agent dialed the handshake endpoint for it.
    let ok = Tollgate::wait_for(Duration::from_secs(5), async || {
        agent
            .tunnel_lines()
            .iter()
            .any(|l| l["decision"] == "allowed" && l["addr"] == hook.to_string().as_str())
    })
    .await;
    assert!(ok, "no agent tunnel to {hook}:\n{}", agent.logs());

    // The API call (direct, on loopback) carries the token.
    let r = proxy_request(tg.proxy, "GET", &api, &[("proxy-authorization", &auth)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["authorization"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Bearer AT-secret-"),
        "{}",
        r.text()
    );
}
