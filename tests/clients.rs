//! The claims of docs/clients.md, checked with the real clients: which proxy settings curl,
//! Python `requests`, Node `fetch` (and undici's `EnvHttpProxyAgent`), git, wget and Java
//! read. Each client calls a loopback upstream that answers `200` with every proxy variable
//! but the one under test removed from its environment. tollgate's policy allows nothing, so
//! a request that went through tollgate (with the caller token from the proxy URL) is
//! refused `403`, and one that went directly gets the upstream's `200`. A client that is not
//! installed is skipped with a printed notice.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use common::Tollgate;

/// Every proxy setting a client might read from the environment.
const PROXY_VARS: [&str; 9] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "NODE_USE_ENV_PROXY",
];

/// tollgate, an upstream, and the proxy URL carrying a caller token.
struct Setup {
    tg: Tollgate,
    /// The upstream's plain-HTTP URL (`http://127.0.0.1:PORT/x`).
    http: String,
    /// The same address as an `https://` URL (no TLS there: only the CONNECT matters).
    https: String,
    /// `http://alice:TOKEN@127.0.0.1:PORT`.
    proxy_url: String,
}

async fn setup() -> Setup {
    let upstream: SocketAddr = common::echo_upstream().await;
    // `localhost` by name only: the calls here, to 127.0.0.1 by address, are refused.
    let tg = Tollgate::start(common::policies::LOCAL_BY_NAME, &[]);
    let token = tg.token("acme", "alice");
    let proxy_url = format!("http://alice:{token}@{}", tg.proxy);
    Setup {
        http: format!("http://{upstream}/x"),
        https: format!("https://{upstream}/x"),
        proxy_url,
        tg,
    }
}

/// [`setup`] when `program args...` runs successfully (the client is installed); `None`
/// with the skip notice printed otherwise.
async fn setup_if(program: &str, args: &[&str]) -> Option<Setup> {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: {program} is not installed; its rows of docs/clients.md are unchecked");
        return None;
    }
    Some(setup().await)
}

/// Runs `cmd` with no proxy variable but `env`, off the runtime's threads (the upstream is
/// served by this test's runtime).
async fn run(mut cmd: Command, env: &[(&str, &str)]) -> Output {
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("the client runs"))
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// curl: the HTTP status (`%{http_code}`) of `url`; for https, the proxy's answer to the
/// CONNECT (`%{http_connect}`, `000` when no proxy was asked).
async fn curl(url: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("curl");
    let what = if url.starts_with("https") {
        "%{http_connect}"
    } else {
        "%{http_code}"
    };
    cmd.args(["-s", "-o", "/dev/null", "-w", what, "--max-time", "20", url]);
    stdout(&run(cmd, env).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_lowercase_http_proxy_only_and_both_https_proxy_spellings() {
    let Some(s) = setup_if("curl", &["--version"]).await else {
        return;
    };
    let p = s.proxy_url.as_str();
    assert_eq!(curl(&s.http, &[]).await, "200", "no proxy variable: direct");
    assert_eq!(curl(&s.http, &[("http_proxy", p)]).await, "403");
    assert_eq!(
        curl(&s.http, &[("HTTP_PROXY", p)]).await,
        "200",
        "curl ignores uppercase HTTP_PROXY"
    );
    assert_eq!(curl(&s.https, &[("HTTPS_PROXY", p)]).await, "403");
    assert_eq!(curl(&s.https, &[("https_proxy", p)]).await, "403");
    assert_eq!(
        curl(&s.https, &[("http_proxy", p)]).await,
        "000",
        "http_proxy does not cover https"
    );
    assert_eq!(curl(&s.http, &[("ALL_PROXY", p)]).await, "403");
    let no = [("http_proxy", p), ("NO_PROXY", "127.0.0.1")];
    assert_eq!(curl(&s.http, &no).await, "200", "NO_PROXY bypasses");
    drop(s.tg);
}

/// Python `requests`: the status, or `proxy-refused: ...` when the proxy refused a CONNECT.
async fn requests(url: &str, env: &[(&str, &str)]) -> String {
    const SCRIPT: &str = r#"
import sys, requests
try:
    print(requests.get(sys.argv[1], timeout=20).status_code)
except requests.exceptions.ProxyError as e:
    print("proxy-refused:", e)
except Exception as e:
    print("direct-failed:", type(e).__name__)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SCRIPT, url]);
    stdout(&run(cmd, env).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_reads_both_spellings_of_http_proxy_and_https_proxy() {
    let Some(s) = setup_if("python3", &["-c", "import requests"]).await else {
        return;
    };
    let p = s.proxy_url.as_str();
    assert_eq!(requests(&s.http, &[]).await, "200");
    assert_eq!(requests(&s.http, &[("http_proxy", p)]).await, "403");
    assert_eq!(requests(&s.http, &[("HTTP_PROXY", p)]).await, "403");
    for var in ["HTTPS_PROXY", "https_proxy"] {
        let out = requests(&s.https, &[(var, p)]).await;
        assert!(
            out.starts_with("proxy-refused:") && out.contains("403"),
            "{var}: {out}"
        );
    }
    let no = [("HTTP_PROXY", p), ("NO_PROXY", "127.0.0.1")];
    assert_eq!(requests(&s.http, &no).await, "200", "NO_PROXY bypasses");
    drop(s.tg);
}

/// Node: `fetch(url)` (global) or undici's `fetch` with an `EnvHttpProxyAgent`; prints the
/// status. `url` may carry a second argument after a space. Runs in `dir` so `undici`
/// resolves from its `node_modules`.
async fn node(dir: &Path, script: &str, url: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("node");
    cmd.current_dir(dir)
        .args(["--input-type=module", "-e", script])
        .args(url.split(' '));
    let out = run(cmd, env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_ignores_proxy_variables_unless_told() {
    let Some(s) = setup_if("node", &["--version"]).await else {
        return;
    };
    let version = Command::new("node").arg("--version").output().unwrap();
    let major: u32 = stdout(&version)
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let p = s.proxy_url.as_str();
    let here = std::env::temp_dir();
    const FETCH: &str = "const r = await fetch(process.argv[1]); console.log(r.status);";
    let both = [("HTTP_PROXY", p), ("http_proxy", p)];
    assert_eq!(
        node(&here, FETCH, &s.http, &both).await,
        "200",
        "fetch ignores HTTP_PROXY"
    );
    // NODE_USE_ENV_PROXY=1: honoured from Node 24; Node 20 ignores it.
    let env = [("HTTP_PROXY", p), ("NODE_USE_ENV_PROXY", "1")];
    let expected = if major >= 24 { "403" } else { "200" };
    assert_eq!(
        node(&here, FETCH, &s.http, &env).await,
        expected,
        "NODE_USE_ENV_PROXY on Node {major}"
    );
    println!("node {major}: NODE_USE_ENV_PROXY=1 gives {expected}");
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    if interop.join("node_modules/undici").is_dir() {
        // undici's proxy agents tunnel plain http:// through CONNECT as well (`proxyTunnel`,
        // default true): tollgate's refusal comes back as the CONNECT's 403.
        const UNDICI: &str = "import { fetch, EnvHttpProxyAgent } from 'undici';
const proxyTunnel = process.argv[2] === 'tunnel';
try {
  const r = await fetch(process.argv[1], { dispatcher: new EnvHttpProxyAgent({ proxyTunnel }) });
  console.log(r.status);
} catch (e) { console.log('refused: ' + (e.cause?.cause?.message ?? e.cause?.message)); }";
        let env = [("HTTP_PROXY", p)];
        let tunnel = format!("{} tunnel", s.http);
        let out = node(&interop, UNDICI, &tunnel, &env).await;
        assert!(out.contains("Proxy response (403)"), "{out}");
        let forward = format!("{} forward", s.http);
        assert_eq!(node(&interop, UNDICI, &forward, &env).await, "403");
    } else {
        println!("SKIPPED: undici is not installed (npm ci in tests/interop); EnvHttpProxyAgent unchecked");
    }
    drop(s.tg);
}

/// git: `ls-remote` of a repository on the upstream, with `args` before it; its stderr.
async fn git(home: &Path, args: &[&str], url: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("git");
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(args)
        .args(["ls-remote", &format!("{url}/repo.git")]);
    stderr(&run(cmd, env).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_reads_http_proxy_config_and_the_variables() {
    let Some(s) = setup_if("git", &["--version"]).await else {
        return;
    };
    let p = s.proxy_url.as_str();
    let home = tempfile::tempdir().unwrap();
    let proxied = |e: &str| e.contains("403");
    let direct = git(home.path(), &[], &s.http, &[]).await;
    assert!(!proxied(&direct), "no proxy: {direct}");
    let config = format!("http.proxy={p}");
    let e = git(home.path(), &["-c", &config], &s.http, &[]).await;
    assert!(proxied(&e), "http.proxy: {e}");
    let e = git(home.path(), &[], &s.http, &[("http_proxy", p)]).await;
    assert!(proxied(&e), "http_proxy: {e}");
    let e = git(home.path(), &[], &s.http, &[("HTTP_PROXY", p)]).await;
    assert!(!proxied(&e), "git (libcurl) ignores HTTP_PROXY: {e}");
    let e = git(home.path(), &[], &s.https, &[("HTTPS_PROXY", p)]).await;
    assert!(proxied(&e), "HTTPS_PROXY: {e}");
    drop(s.tg);
}

/// wget: the status line of the answer (`-S`), from its stderr.
async fn wget(url: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("wget");
    cmd.args(["-S", "-O", "/dev/null", "--tries=1", "--timeout=20", url]);
    let e = stderr(&run(cmd, env).await);
    e.lines()
        .find_map(|l| l.trim().strip_prefix("HTTP/1.1 "))
        .map(|l| l[..3].to_string())
        .unwrap_or_else(|| e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_reads_the_lowercase_variables() {
    let Some(s) = setup_if("wget", &["--version"]).await else {
        return;
    };
    let p = s.proxy_url.as_str();
    assert_eq!(wget(&s.http, &[]).await, "200");
    assert_eq!(wget(&s.http, &[("http_proxy", p)]).await, "403");
    assert_eq!(
        wget(&s.http, &[("HTTP_PROXY", p)]).await,
        "200",
        "wget ignores HTTP_PROXY"
    );
    drop(s.tg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_reads_system_properties_not_the_environment() {
    let Some(s) = setup_if("java", &["-version"]).await else {
        return;
    };
    let p = s.proxy_url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Get.java");
    std::fs::write(
        &src,
        "public class Get { public static void main(String[] a) throws Exception {
  var c = (java.net.HttpURLConnection) new java.net.URI(a[0]).toURL().openConnection();
  System.out.println(c.getResponseCode()); } }",
    )
    .unwrap();
    let java = |props: Vec<String>, env: Vec<(&'static str, String)>| {
        let mut cmd = Command::new("java");
        cmd.args(&props).arg(&src).arg(&s.http);
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            stdout(&run(cmd, &env).await)
        }
    };
    let env_only = vec![("HTTP_PROXY", p.to_string()), ("http_proxy", p.to_string())];
    assert_eq!(
        java(vec![], env_only).await,
        "200",
        "Java ignores the variables"
    );
    // The default http.nonProxyHosts skips localhost and 127.*: emptied here.
    let props = vec![
        "-Dhttp.nonProxyHosts=".to_string(),
        "-Dhttp.proxyHost=127.0.0.1".to_string(),
        format!("-Dhttp.proxyPort={}", s.tg.proxy.port()),
    ];
    // HttpURLConnection sends no proxy credentials without an Authenticator: 407.
    assert_eq!(java(props, vec![]).await, "407", "http.proxyHost/Port");
    drop(s.tg);
}
