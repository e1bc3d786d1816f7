//! `tollgate demo`'s fixtures: a TEST-GRADE OAuth provider and API ([`provider`]), the policy
//! that lets the demo's caller reach them, the outbound application that binds the API to the
//! provider, and the instructions printed for the user. `cli::demo` runs them with a real
//! tollgate on loopback, in temporary directories. Nothing here is meant for real use.

pub mod provider;

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use provider::DemoProvider;

/// The org of the demo's caller and admin tokens.
pub const ORG: &str = "demo";

/// The id of the demo's outbound application.
pub const APP: &str = "demo-api";

/// The path the printed curl command calls on the demo API.
pub const API_PATH: &str = "/whoami";

/// The demo's one policy file: the API by name (a private, loopback address, so `private`),
/// and the provider's token endpoint by address, each on its own port only.
pub fn policy(provider: &DemoProvider) -> String {
    let provider_port = provider
        .issuer
        .rsplit(':')
        .next()
        .unwrap_or("0")
        .to_string();
    format!(
        r#"# Written by `tollgate demo`: the demo org may call the demo API and, for tollgate's own
# token calls, the demo provider. Both are loopback listeners of the demo process.
[[policy]]
name = "demo"
description = "tollgate demo: the demo API (by name) and the demo provider (loopback)"
route = "direct"
orgs = ["{ORG}"]

  [[policy.allow]]
  hosts = ["localhost"]
  ports = [{api}]
  private = true

  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [{provider_port}]
"#,
        api = provider.api.port(),
    )
}

/// The admin API's app document for the demo API (`POST /v1/apps`).
pub fn app_document(provider: &DemoProvider) -> Map<String, Value> {
    let issuer = &provider.issuer;
    let doc = json!({
        "id": APP,
        "name": "Demo API",
        "description": "tollgate demo: a test-grade API behind a test-grade OAuth provider",
        "approval_prompt": "Let your workflows call the demo API as you?",
        "authorize_url": format!("{issuer}/authorize"),
        "token_url": format!("{issuer}/token"),
        "issuer": issuer,
        "client_id": provider::CLIENT_ID,
        "client_secret": provider.client_secret,
        "scopes": ["demo:read"],
        "egress_policy": "demo",
        "domains": ["localhost"],
        "upstream_tls": false,
    });
    match doc {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Where everything of a running demo is.
pub struct Running<'a> {
    /// The temporary directory holding the data and policy directories.
    pub dir: &'a std::path::Path,
    /// tollgate's proxy listener.
    pub proxy: SocketAddr,
    /// tollgate's web listener (consent pages, admin API).
    pub web: &'a str,
    /// The demo provider and API.
    pub provider: &'a DemoProvider,
    /// The caller token printed for the user.
    pub caller_token: &'a str,
}

/// The curl command the user runs twice (no shell quoting needed: a caller token is
/// base64url and dots).
pub fn curl_command(r: &Running<'_>) -> String {
    format!(
        "curl -sS -x http://{} --proxy-user {}:{} http://localhost:{}{API_PATH}",
        r.proxy,
        provider::USER,
        r.caller_token,
        r.provider.api.port()
    )
}

/// What `tollgate demo` prints once everything runs.
pub fn instructions(r: &Running<'_>) -> Vec<String> {
    let user = provider::USER;
    vec![
        "tollgate demo: everything below runs on loopback in this process; no network needed.".into(),
        format!("  temporary data and policies  {} (removed on Ctrl-C)", r.dir.display()),
        format!("  tollgate proxy               {}", r.proxy),
        format!("  tollgate web (consent, API)  {}", r.web),
        format!(
            "  demo OAuth provider          {}   TEST-GRADE, built into the demo, not for real use",
            r.provider.issuer
        ),
        format!(
            "  demo API                     http://localhost:{}   TEST-GRADE: answers who called",
            r.provider.api.port()
        ),
        format!(
            "  policy \"demo\" lets org {ORG} reach both; app \"{APP}\" binds localhost to the provider"
        ),
        String::new(),
        format!("caller token (org {ORG}, user {user}): {}", r.caller_token),
        String::new(),
        "1. Run this; tollgate answers 401 authorization_required with a consent_url:".into(),
        String::new(),
        curl_command(r),
        String::new(),
        "2. Open the consent_url in a browser, click Authorize, then Approve at the demo provider.".into(),
        "3. Run the same curl again: tollgate injects the user's token and the API answers who called.".into(),
        String::new(),
        "Ctrl-C stops the demo and removes its temporary directories.".into(),
    ]
}
