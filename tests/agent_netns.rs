//! Agent relay across network namespaces (`common::netns`): a private upstream that tollgate
//! cannot reach, and an agent that can reach both. Skipped, with the reason printed, when not
//! root or when `ip netns` is unavailable.

mod common;

use std::time::{Duration, Instant};

use common::agent::*;
use common::netns::*;
use common::*;
use tokio::io::AsyncReadExt;

/// The topology, or a skip (return) with the reason printed.
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

    let ok = wait_until(Duration::from_secs(5), async || {
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
    let mut tunnel = tunnel_to(&tg, &upstream.to_string(), &auth).await;

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
    let clean = wait_until(Duration::from_secs(5), async || {
        metric(&tg, "tollgate_agent_connections{agent=\"edge-1\"}").await == 0.0
            && metric(&tg, "tollgate_agent_open_tunnels{agent=\"edge-1\"}").await == 0.0
            && metric(&tg, "tollgate_open_tunnels").await == 0.0
    })
    .await;
    assert!(clean, "{}", tg.operator_get("/metrics").await.text());

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
        r#"{agent}{local}
[[policy]]
name = "hook-direct"
orgs = ["acme"]
route = "direct"
  [[policy.allow]]
  cidrs = ["{cidr}"]
  ports = ["1024-65535"]
"#,
        agent = policy(t),
        local = common::policies::LOCAL,
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
    let ok = wait_until(Duration::from_secs(5), async || {
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

/// The private API's name. It resolves to the private address for the agent and for tollgate
/// alike (split-horizon DNS made of hosts files); only the agent has a route to it.
const CRM: &str = "crm.private.test";

/// The CRM app's egress policy for `acme`, routed by `route`: the API by name, its token
/// endpoint by address.
fn crm_policy(t: &Topology, route: &str) -> String {
    format!(
        r#"
[[policy]]
name = "crm"
orgs = ["acme"]
route = "{route}"
  [[policy.allow]]
  hosts = ["{CRM}"]
  ports = ["1024-65535"]
  private = true
  [[policy.allow]]
  cidrs = ["{cidr}"]
  ports = ["1024-65535"]
"#,
        cidr = t.private_cidr(),
    )
}

/// What `curl` saw.
#[derive(Debug)]
struct Curl {
    /// curl's exit code (0 = a response was received inside the tunnel).
    exit: i32,
    /// Status of the proxy's answer to `CONNECT` (`%{http_connect}`).
    connect: u16,
    /// Status of the response inside the tunnel (`%{http_code}`; 0 = none).
    status: u16,
    body: String,
    /// `--verbose` output, to show when an assertion fails.
    verbose: String,
}

impl Curl {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// `curl URL` through tollgate as `HTTPS_PROXY` makes it: `CONNECT` with Basic proxy
/// credentials `user:<caller token>`, trusting only tollgate's CA.
async fn curl(tg: &Tollgate, user: &str, token: &str, url: &str) -> Curl {
    let out = tokio::process::Command::new("curl")
        .arg("-q") // first: no ~/.curlrc
        .args(["--silent", "--show-error", "--verbose"])
        // A safety net against a hang, not a measurement.
        .args(["--max-time", "30"])
        // A NO_PROXY in the environment must not send the request around the proxy.
        .args(["--noproxy", ""])
        .arg("--proxy")
        .arg(format!("http://{}", tg.proxy))
        .arg("--proxy-user")
        .arg(format!("{user}:{token}"))
        .arg("--cacert")
        .arg(tg.data.join("ca/ca.pem"))
        .args(["--write-out", "\n%{http_connect} %{http_code}"])
        .arg(url)
        .output()
        .await
        .expect("run curl (this test needs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (connect, status) = codes.split_once(' ').unwrap_or(("0", "0"));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        connect: connect.trim().parse().unwrap_or(0),
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
        verbose: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn curl_over_https_proxy_reaches_a_private_tls_api_with_the_token_only_through_the_agent() {
    use common::provider::{test_ca_and_server_for, Provider};

    let mut t = topology_or_skip!();
    let hosts = t.name_private_host(CRM);
    // The provider's /authorize for the browser on loopback; its /token (same state) and the
    // TLS-only API inside the private namespace, where only the agent reaches them.
    let p = Provider::start().await;
    let token_endpoint = p.serve_provider_on(t.listen_in_private());
    let (test_ca, server) = test_ca_and_server_for(&[CRM]);
    let api_listener = tokio::net::TcpListener::from_std(t.listen_in_private()).unwrap();
    let api = p.serve_api_tls_on(api_listener, server);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, test_ca).unwrap();
    // tollgate resolves CRM from the same hosts file, in a mount namespace of its own, so a
    // direct route fails for want of a route, not of a name.
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        hosts.to_str().unwrap(),
    ];
    let (tg, mut agent) = start_with(
        &t,
        "10s",
        &crm_policy(&t, "agent:edge-1"),
        &wrapper,
        &["--upstream-ca-file", ca_file.to_str().unwrap()],
    )
    .await;

    let admin = tg.admin_token("acme", "root");
    let spec = serde_json::json!({
        "id": "crm",
        "name": "Private CRM",
        "approval_prompt": "Allow?",
        "authorize_url": format!("{}/authorize", p.issuer()),
        "token_url": format!("http://{token_endpoint}/token"),
        "client_id": "client-1",
        "client_secret": "sk-CLIENT-SECRET",
        "scopes": ["read"],
        "egress_policy": "crm",
        "domains": [CRM],
    });
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let token = tg.token("acme", "alice");
    let url = format!("https://{CRM}:{}/records", api.port());

    // Before consent: the CONNECT is intercepted (curl trusts tollgate's CA only) and the
    // request inside it answered by tollgate, without reaching the API.
    let c = curl(&tg, "alice", &token, &url).await;
    assert_eq!((c.exit, c.connect, c.status), (0, 200, 401), "{c:?}");
    let v = c.json();
    assert_eq!(v["error"], "authorization_required", "{c:?}");
    assert_eq!(v["app"], "crm", "{c:?}");
    assert_eq!(p.with(|s| s.api_calls), 0);

    // Consent; the code is exchanged at the private token endpoint, through the agent.
    let consent_url = v["consent_url"].as_str().unwrap();
    let b = common::consent::browse(tg.web, p.addr, consent_url).await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    assert_eq!(p.with(|s| s.code_calls), 1);
    assert!(
        p.with(|s| s.violations.is_empty()),
        "{:?}",
        p.with(|s| s.violations.clone())
    );

    // Now the request carries the token, over TLS from tollgate through the agent to the
    // private API.
    let tunnels = "tollgate_agent_tunnels_total{agent=\"edge-1\"}";
    let before = metric(&tg, tunnels).await;
    let c = curl(&tg, "alice", &token, &url).await;
    assert_eq!((c.exit, c.connect, c.status), (0, 200, 200), "{c:?}");
    let v = c.json();
    assert!(
        v["authorization"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Bearer AT-secret-"),
        "{c:?}"
    );
    assert_eq!(v["path"], "/records", "{c:?}");
    assert_eq!(p.with(|s| s.api_calls), 1);
    assert!(p.with(|s| s.tls_handshakes) >= 1);
    assert!(
        metric(&tg, tunnels).await > before,
        "the API call opened no tunnel through the agent"
    );

    // The same host, caller and app on a direct route: tollgate resolves the name but has no
    // route to it, so the CONNECT fails and the API sees nothing.
    tg.write_policy("10-test.toml", &crm_policy(&t, "direct"));
    let switched = wait_until(Duration::from_secs(10), async || {
        curl(&tg, "alice", &token, &url).await.connect != 200
    })
    .await;
    assert!(
        switched,
        "still intercepted on the direct route:\n{}",
        tg.logs()
    );
    let calls = p.with(|s| s.api_calls);
    let c = curl(&tg, "alice", &token, &url).await;
    assert_eq!((c.connect, c.status), (502, 0), "{c:?}");
    assert_ne!(c.exit, 0, "{c:?}");
    assert!(c.verbose.contains("< HTTP/1.1 502"), "{c:?}");
    let bearer = format!("Bearer {token}");
    let target = format!("{CRM}:{}", api.port());
    let (r, _) = proxy_connect(tg.proxy, &target, &[("proxy-authorization", &bearer)]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    // EHOSTUNREACH from the `unreachable` route, for the address the name resolved to.
    assert_eq!(r.json()["error"], "connection_refused", "{}", r.text());
    let resolved = format!("{}:{}", t.private_ip(), api.port());
    assert!(
        r.json()["message"].as_str().unwrap().contains(&resolved),
        "{}",
        r.text()
    );
    assert_eq!(p.with(|s| s.api_calls), calls);

    // Back on the agent route, it works again.
    tg.write_policy("10-test.toml", &crm_policy(&t, "agent:edge-1"));
    let back = wait_until(Duration::from_secs(10), async || {
        curl(&tg, "alice", &token, &url).await.status == 200
    })
    .await;
    assert!(back, "{}", tg.logs());

    // Without the agent, the CONNECT is refused at once.
    agent.kill();
    assert!(
        wait_connections(&tg, "edge-1", 0, Duration::from_secs(20)).await,
        "agent still counted as connected"
    );
    let c = curl(&tg, "alice", &token, &url).await;
    assert_eq!((c.connect, c.status), (502, 0), "{c:?}");
    assert_ne!(c.exit, 0, "{c:?}");
    assert!(c.verbose.contains("< HTTP/1.1 502"), "{c:?}");
    let (r, _) = proxy_connect(tg.proxy, &target, &[("proxy-authorization", &bearer)]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "agent_unavailable", "{}", r.text());
}
