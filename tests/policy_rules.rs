//! Method and path rules end to end, with real clients (curl, Python `requests`) through the
//! real binary: plain-http requests, requests inside a `CONNECT` that tollgate intercepts
//! because its rule limits methods or paths, path normalization (what is decided is what is
//! forwarded), and a reload that adds limits closing a live blind tunnel.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::tls::{test_ca, tls_upstream, write_ca, UPSTREAM_CA_CN};
use common::{assert_proxy_error, echo_upstream, proxy_connect, tcp_echo, wait_until, Tollgate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The host without limits.
const OPEN: &str = r#"
[[policy]]
name = "limited"
orgs = ["acme"]
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
  private = true
"#;

/// acme may read `/public/**` and `/user` on `localhost` (the rule of [`OPEN`], limited) and
/// POST to `/public/upload` (a second rule for the same host). Rule headers on lines 7 and 14.
fn limited() -> String {
    format!(
        "{OPEN}  read_only = true\n  paths = [\"/public/**\", \"/user\"]\n\n  [[policy.allow]]\n  \
         hosts = [\"localhost\"]\n  ports = [\"1024-65535\"]\n  private = true\n  \
         methods = [\"POST\"]\n  paths = [\"/public/upload\"]\n"
    )
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs curl through the proxy as acme's alice; `-w` appends the status on its own line.
async fn curl(tg: &Tollgate, extra: &[&str], url: &str) -> (u16, serde_json::Value) {
    let token = tg.token("acme", "alice");
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--proxy".into(),
        format!("http://127.0.0.1:{}", tg.proxy.port()),
        "--proxy-user".into(),
        format!("alice:{token}"),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.to_string());
    let out = tokio::task::spawn_blocking(move || Command::new("curl").args(args).output())
        .await
        .unwrap()
        .unwrap();
    parse_out(&out)
}

/// `BODY\nSTATUS` → (status, body as JSON or Null).
fn parse_out(out: &Output) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no status: {text} {}", String::from_utf8_lossy(&out.stderr)));
    let status = status.trim().parse().unwrap_or_else(|_| panic!("{text}"));
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// Python `requests` through the proxy: prints the body, then the status.
async fn python(
    tg: &Tollgate,
    method: &str,
    url: &str,
    ca: Option<&Path>,
) -> (u16, serde_json::Value) {
    let token = tg.token("acme", "alice");
    let proxy = format!("http://alice:{token}@127.0.0.1:{}", tg.proxy.port());
    let verify = ca.map_or("True".to_string(), |p| {
        format!("{:?}", p.display().to_string())
    });
    let script = format!(
        "import requests\n\
         r = requests.request({method:?}, {url:?}, proxies={{'http': {proxy:?}, 'https': {proxy:?}}}, verify={verify})\n\
         print(r.text)\nprint(r.status_code)\n"
    );
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg("-c").arg(script).output())
            .await
            .unwrap()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

/// The access lines (JSON) whose method is `method`.
fn access_lines(tg: &Tollgate, method: &str) -> Vec<serde_json::Value> {
    tg.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["method"] == method)
        .collect()
}

/// The last access line for `method`, once it is written.
async fn last_access_line(tg: &Tollgate, method: &str) -> serde_json::Value {
    let mut line = serde_json::Value::Null;
    let logged = wait_until(Duration::from_secs(5), async || {
        line = access_lines(tg, method).pop().unwrap_or_default();
        !line.is_null()
    })
    .await;
    assert!(logged, "no {method} access line: {}", tg.logs());
    line
}

#[tokio::test]
async fn plain_http_requests_are_decided_by_method_and_normalized_path() {
    if !have("curl", "--version") {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let up = echo_upstream().await;
    let tg = Tollgate::start(&limited(), &["--log-format", "json"]);
    let url = |path: &str| format!("http://localhost:{}{path}", up.port());

    let (status, body) = curl(&tg, &[], &url("/public/a/b?x=1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uri"], "/public/a/b?x=1");
    // Unreserved escapes are decoded, and the upstream gets the path that was decided on.
    let (status, body) = curl(&tg, &[], &url("/public/%7Ealice/%61")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uri"], "/public/~alice/a");
    let (status, body) = curl(&tg, &["--path-as-is"], &url("/public/x/../../public/y")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uri"], "/public/y");
    // The second rule for the host allows this POST.
    let (status, body) = curl(&tg, &["-X", "POST", "-d", "x"], &url("/public/upload")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["method"], "POST");

    // Dot-segments cannot climb out of an allowed prefix.
    let (status, body) = curl(&tg, &["--path-as-is"], &url("/public/../secret")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "destination_denied");
    assert_eq!(body["reason"], "path_not_allowed");
    assert_eq!(body["rule"], "10-test.toml:7");
    assert_eq!(body["policy"], "limited");
    // No rule for the host allows DELETE.
    let (status, body) = curl(&tg, &["-X", "DELETE"], &url("/public/a")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "method_not_allowed");
    assert_eq!(body["rule"], "10-test.toml:7");
    // POST is allowed by the second rule, but not on this path: it names that rule.
    let (status, body) = curl(&tg, &["-X", "POST", "-d", "x"], &url("/user")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "path_not_allowed");
    assert_eq!(body["rule"], "10-test.toml:14");
    // A path the origin could read differently is refused as malformed.
    for path in ["/public/a%2Fb", "/public/%2e%2e/secret", "/public//x"] {
        let (status, body) = curl(&tg, &["--path-as-is"], &url(path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "bad_request", "{path}");
    }

    // The denial as the client sees it: Proxy-Status and JSON (hyper client).
    let r = common::proxy_request(
        tg.proxy,
        "PUT",
        &url("/user"),
        &[("proxy-authorization", &tg.bearer("acme", "alice"))],
        "",
    )
    .await;
    assert_proxy_error(&r, 403, "destination_denied");

    // The access line names the reason and the rule.
    let line = last_access_line(&tg, "DELETE").await;
    assert_eq!(line["decision"], "denied", "{line}");
    assert_eq!(line["reason"], "method_not_allowed", "{line}");
    assert_eq!(line["rule"], "10-test.toml:7", "{line}");
    assert_eq!(line["status"], 403, "{line}");

    // Python requests: the same decisions.
    if have("python3", "--version") {
        let (status, body) = python(&tg, "GET", &url("/user"), None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = python(&tg, "PATCH", &url("/user"), None).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["reason"], "method_not_allowed");
    }
}

#[tokio::test]
async fn a_connect_to_a_limited_host_is_intercepted_and_each_request_decided() {
    if !have("curl", "--version") {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let files = tempfile::tempdir().unwrap();
    let (up_ca_file, _) = write_ca(files.path(), "upstream", &up_ca);
    let tg = Tollgate::start(
        &limited(),
        &[
            "--log-format",
            "json",
            "--upstream-ca-file",
            up_ca_file.to_str().unwrap(),
        ],
    );
    let ca = tg.data.join("ca/ca.pem");
    let cacert = ca.to_str().unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", up.addr.port());

    for version in ["--http1.1", "--http2"] {
        let (status, body) = curl(&tg, &[version, "--cacert", cacert], &url("/public/x")).await;
        assert_eq!(status, 200, "{version}: {body}");
        assert_eq!(body["uri"], url("/public/x"), "{version}");
        let (status, body) = curl(
            &tg,
            &[version, "--cacert", cacert, "-X", "DELETE"],
            &url("/public/x"),
        )
        .await;
        assert_eq!(status, 403, "{version}: {body}");
        assert_eq!(body["reason"], "method_not_allowed", "{version}");
        let (status, body) = curl(
            &tg,
            &[version, "--cacert", cacert, "--path-as-is"],
            &url("/public/%2e%2e/secret"),
        )
        .await;
        assert_eq!(status, 400, "{version}: {body}");
    }
    // The tunnel was intercepted: a client that does not trust the tollgate CA fails.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--proxy",
            &format!("http://127.0.0.1:{}", tg.proxy.port()),
        ])
        .args([
            "--proxy-user",
            &format!("alice:{}", tg.token("acme", "alice")),
        ])
        .args(["--cacert", up_ca_file.to_str().unwrap()])
        .arg(url("/public/x"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl trusted a blind tunnel");

    if have("python3", "--version") {
        let (status, body) = python(&tg, "GET", &url("/user"), Some(&ca)).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = python(&tg, "POST", &url("/public/upload"), Some(&ca)).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = python(&tg, "POST", &url("/public/other"), Some(&ca)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["reason"], "path_not_allowed");
    }
}

#[tokio::test]
async fn a_reload_that_adds_limits_closes_blind_tunnels_to_the_host() {
    let tg = Tollgate::start(OPEN, &["--log-format", "json"]);
    let up = tcp_echo().await;
    let target = format!("localhost:{}", up.port());
    let auth = tg.bearer("acme", "alice");
    let (r, tunnel) = proxy_connect(tg.proxy, &target, &[("proxy-authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut tunnel = tunnel.unwrap();
    tunnel.write_all(b"blind").await.unwrap();
    let mut buf = [0u8; 5];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"blind");

    let generation = tg.policy_generation().await;
    tg.write_policy("10-test.toml", &limited());
    let mut rest = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the blind tunnel was not closed within 5 s of the edit: {read:?}"
    );
    assert!(tg.policy_generation().await > generation);
    let line = last_access_line(&tg, "CONNECT").await;
    assert_eq!(line["reason"], "policy_revoked", "{line}");
}

/// acme rolls out a policy in report mode: GET only on loopback addresses (rule line 8).
/// `127.0.0.99` is denied to everyone.
const REPORTING: &str = r#"
[[policy]]
name = "rollout"
orgs = ["acme"]
route = "direct"
mode = "report"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]
  methods = ["GET"]

[[deny]]
cidrs = ["127.0.0.99/32"]
"#;

#[tokio::test]
async fn report_mode_allows_and_logs_what_it_would_deny() {
    if !have("curl", "--version") {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let up = echo_upstream().await;
    let tg = Tollgate::start(REPORTING, &["--log-format", "json"]);
    let url = format!("http://127.0.0.1:{}/x", up.port());

    // Its rule allows GET; a DELETE it would deny goes through, logged as would_deny.
    let (status, body) = curl(&tg, &[], &url).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(&tg, &["-X", "DELETE"], &url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["method"], "DELETE");
    let line = last_access_line(&tg, "DELETE").await;
    assert_eq!(line["decision"], "would_deny", "{line}");
    assert_eq!(line["reason"], "method_not_allowed", "{line}");
    assert_eq!(line["rule"], "10-test.toml:8", "{line}");
    assert_eq!(line["policy"], "rollout", "{line}");
    assert_eq!(line["status"], 200, "{line}");

    // A destination no rule allows is let through too, but the address guard still applies:
    // the IPv6 loopback (outside the rule's CIDR) is refused.
    let (status, body) = curl(&tg, &["-g"], &format!("http://[::1]:{}/x", up.port())).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "destination_ip_prohibited", "{body}");
    // A name is matched against the CIDR rule by its resolved addresses: `localhost` is
    // inside 127.0.0.0/8, so its GET is allowed outright.
    let (status, body) = curl(&tg, &[], &format!("http://localhost:{}/x", up.port())).await;
    assert_eq!(status, 200, "{body}");
    // Deny rules apply in full.
    let (status, body) = curl(&tg, &[], &format!("http://127.0.0.99:{}/x", up.port())).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "deny_rule", "{body}");
    // Other orgs are not in report mode: the policy is not even visible to them.
    let r = common::proxy_request(
        tg.proxy,
        "DELETE",
        &url,
        &[("proxy-authorization", &tg.bearer("beta", "bob"))],
        "",
    )
    .await;
    let body = assert_proxy_error(&r, 403, "destination_denied");
    assert_eq!(body["reason"], "no_matching_rule");

    // Counted per policy and reason.
    let mut metrics = String::new();
    let counted = wait_until(Duration::from_secs(5), async || {
        metrics = tg.operator_get("/metrics").await.text();
        metrics.contains(
            "tollgate_policy_would_deny_total{policy=\"rollout\",reason=\"method_not_allowed\"} 1",
        )
    })
    .await;
    assert!(counted, "{metrics}");
}
