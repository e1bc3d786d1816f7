//! The whole product in one command: `cargo run --example demo`.
//!
//! On loopback it starts a small OAuth provider, a protected API that only accepts the
//! provider's tokens, and tollgate (in-process, on 127.0.0.1:0 with a temporary data dir).
//! Then it plays the three people involved:
//!
//! 1. the admin registers the API as an outbound application;
//! 2. a runner calls the API through the proxy and gets `401 authorization_required` with a
//!    consent URL;
//! 3. the user opens the consent URL "in a browser" (the demo follows the pages and redirects
//!    exactly as a browser would) and authorizes;
//! 4. the runner calls again: tollgate injects the user's token; once it nears expiry,
//!    tollgate refreshes it without the runner noticing.

#[path = "../tests/common/provider/mod.rs"]
mod provider;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tollgate::config::{Config, ServeOverrides};

const POLICY: &str = r#"
[[policy]]
name = "demo"
description = "The demo's API (by name) and provider (loopback)"
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1-65535"]
  private = true

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1-65535"]
"#;

struct Resp {
    status: u16,
    location: Option<String>,
    /// The `name=value` of a `Set-Cookie`, as a browser would send it back.
    cookie: Option<String>,
    body: String,
}

/// A request body.
enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// `application/x-www-form-urlencoded`.
    Form(String),
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request on a new connection to `addr`, with `target` as written (origin-form
/// for servers, absolute-form for the proxy).
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Body<'_>,
) -> Result<Resp> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = match body {
        Body::Json(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        Body::Form(f) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            Bytes::from(f)
        }
        Body::Empty => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(bytes))?).await?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Resp {
        status,
        location,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `http://host:port/path?query` → (address, `/path?query`).
fn split(url: &str) -> Result<(SocketAddr, String)> {
    let uri: hyper::Uri = url.parse()?;
    let addr = uri.authority().context("no authority")?.as_str().parse()?;
    let path = uri.path_and_query().context("no path")?.to_string();
    Ok((addr, path))
}

/// What the API saw, as a fingerprint (the first bytes of its SHA-256), so the demo shows
/// that the token changed without printing one.
fn seen(r: &Resp) -> String {
    match r.json()["authorization"].as_str() {
        None => "(no Authorization)".to_string(),
        Some(auth) => {
            let d = ring::digest::digest(&ring::digest::SHA256, auth.as_bytes());
            let hex: String = d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!("a bearer token with fingerprint {hex}")
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    // The outside world: an OAuth provider and the API it protects.
    let provider = provider::Provider::start().await;
    // Short-lived tokens, so the demo can show a refresh.
    provider.with(|s| s.access_ttl = Some(4));
    println!("provider     {}", provider.issuer());
    println!("API          http://localhost:{}", provider.api.port());

    // tollgate, in-process.
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("policies"))?;
    std::fs::write(dir.path().join("policies/demo.toml"), POLICY)?;
    let config = Config::resolve(&ServeOverrides {
        data: Some(dir.path().join("data")),
        policies: Some(dir.path().join("policies")),
        proxy_listen: Some("127.0.0.1:0".into()),
        web_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    })?;
    let server = tollgate::server::Server::bind(config).await?;
    let (proxy, web) = (server.proxy_addr, server.web_addr);
    println!("tollgate     proxy {proxy}, web {}", server.public_url);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));

    let key = tollgate::identity::load_key_file(dir.path().join("data/keys/identity.key"))?;
    let hour = Duration::from_secs(3600);
    let admin = tollgate::identity::mint(&key, "acme", "root", &["admin".into()], hour)?;
    let runner = tollgate::identity::mint(&key, "acme", "alice", &[], hour)?;

    // 1. The admin registers the API as an outbound application.
    let app = json!({
        "id": "crm",
        "name": "Acme CRM",
        "description": "Customer records",
        "approval_prompt": "Let your workflows read and update your CRM records?",
        "authorize_url": format!("{}/authorize", provider.issuer()),
        "token_url": format!("{}/token", provider.issuer()),
        "revocation_url": format!("{}/revoke", provider.issuer()),
        "issuer": provider.issuer(),
        "client_id": "client-1",
        "client_secret": "sk-CLIENT-SECRET",
        "scopes": ["read", "write"],
        "egress_policy": "demo",
        "domains": ["localhost"],
        "upstream_tls": false,
    });
    let auth = format!("Bearer {admin}");
    let r = send(
        web,
        "POST",
        "/v1/apps",
        &[("authorization", &auth)],
        Body::Json(&app),
    )
    .await?;
    if r.status != 201 {
        bail!("creating the app: {} {}", r.status, r.body);
    }
    println!(
        "\n1. admin created app \"crm\" for localhost (redirect URI {})",
        r.json()["redirect_uri"]
    );

    // 2. The runner calls the API through the proxy.
    let target = format!("http://localhost:{}/records", provider.api.port());
    let proxy_auth = format!("Bearer {runner}");
    let runner_headers = [("proxy-authorization", proxy_auth.as_str())];
    let call = || send(proxy, "GET", &target, &runner_headers, Body::Empty);
    let r = call().await?;
    println!("\n2. runner: GET {target} → {}", r.status);
    println!("   {}", r.body);
    let consent_url = r.json()["consent_url"]
        .as_str()
        .context("no consent_url")?
        .to_string();

    // 3. The user opens the consent URL.
    println!("\n3. user opens {consent_url}");
    let (at, path) = split(&consent_url)?;
    let page = send(at, "GET", &path, &[], Body::Empty).await?;
    println!(
        "   consent page → {} ({} bytes of HTML)",
        page.status,
        page.body.len()
    );
    // The browser keeps the consent cookie and posts the form's csrf field with it.
    let cookie = page.cookie.context("no consent cookie")?;
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .context("no csrf field")?;
    let browser = [("cookie", cookie.as_str())];
    let form = Body::Form(format!("csrf={csrf}"));
    let post = send(at, "POST", &path, &browser, form).await?;
    let to_provider = post.location.context("no redirect to the provider")?;
    println!(
        "   Authorize → {} to {}",
        post.status,
        to_provider.split('?').next().unwrap_or("")
    );
    let (idp, authorize) = split(&to_provider)?;
    let back = send(idp, "GET", &authorize, &[], Body::Empty).await?;
    let callback = back.location.context("no redirect back")?;
    let (cb_at, cb_path) = split(&callback)?;
    let done = send(cb_at, "GET", &cb_path, &browser, Body::Empty).await?;
    println!(
        "   provider approved; callback → {}: \"return to your workflow\"",
        done.status
    );

    // 4. The runner calls again: the token is injected.
    let r = call().await?;
    println!(
        "\n4. runner: GET {target} → {}; the API saw {}",
        r.status,
        seen(&r)
    );

    // 5. Near expiry, tollgate refreshes before forwarding.
    println!("\n5. waiting for the 4-second token to near expiry…");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call().await?;
        if provider.refresh_calls() > 0 {
            println!(
                "   runner: GET → {}; tollgate refreshed the token first (refresh calls at the provider: {}); the API saw {}",
                r.status,
                provider.refresh_calls(),
                seen(&r)
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("no refresh happened");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    shutdown.cancel();
    running.await??;
    println!("\ndone.");
    Ok(())
}
