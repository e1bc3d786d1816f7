//! Issue 13, "Roles and surfaces", "Admin API" and agent revocation: what each public surface
//! shows to whom, and what an admin can and cannot redirect. Each test reproduces a hole that
//! the build before the fix had (see the test's comment).

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use common::agent::{self as agents, Agent, KEEPALIVE};
use common::provider::{Provider, RefreshMode};
use common::*;

const DEADLINE: Duration = Duration::from_secs(15);

/// Before: `/readyz` showed every org's app ids and problems (token endpoints) to anyone.
/// Now: without an operator token, only `{"ready": bool}`; an operator gets the detail.
#[tokio::test]
async fn readyz_shows_detail_only_to_operators() {
    let env = common::oauth::setup(&[], |_, _| {}).await;
    let tg = &env.tg;
    // A policy edit that breaks the app's token endpoint: the detail would name it.
    tg.write_policy("10-test.toml", common::policies::LOCAL_BY_NAME);
    let degraded = wait_until(DEADLINE, async || {
        tg.operator_get("/readyz").await.json()["status"] == "degraded"
    })
    .await;
    assert!(degraded, "{}", tg.operator_get("/readyz").await.text());
    let detail = tg.operator_get("/readyz").await;
    assert_eq!(detail.status, 200);
    assert!(detail.text().contains("crm"), "{}", detail.text());

    let admin = tg.admin_token("acme", "root");
    let caller = tg.token("acme", "alice");
    for token in [None, Some(caller.as_str()), Some(admin.as_str())] {
        let r = web_request(tg.web, "GET", "/readyz", token, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"ready": true}), "token {token:?}");
    }
}

/// Before: `/metrics` (whose labels name agents) answered anyone. Now it needs an operator
/// token on the web listener (401/403 with a JSON error otherwise), and `--metrics-listen`
/// serves it without auth on an address of its own.
#[tokio::test]
async fn metrics_need_an_operator_or_the_metrics_listener() {
    let port = closed_port();
    let listen = format!("127.0.0.1:{port}");
    let tg = Tollgate::start(
        common::policies::LOOPBACK,
        &["--metrics-listen", listen.as_str()],
    );
    let none = web_get(tg.web, "/metrics").await;
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(none.json()["error"], "unauthorized");
    let admin = tg.admin_token("acme", "root");
    let r = web_request(tg.web, "GET", "/metrics", Some(&admin), None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "forbidden");
    let ok = tg.operator_get("/metrics").await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("tollgate_requests"), "{}", ok.text());

    let scrape = web_get(listen.parse().unwrap(), "/metrics").await;
    assert_eq!(scrape.status, 200, "{}", scrape.text());
    assert!(scrape.text().contains("tollgate_requests"));
    // The metrics listener serves metrics only.
    let other = web_get(listen.parse().unwrap(), "/v1/apps").await;
    assert_eq!(other.status, 404, "{}", other.text());
}

/// New: `GET /v1/agents` lists the agents connected to this instance, for operators only.
#[tokio::test]
async fn operators_list_connected_agents() {
    let (tg, _relay, _agent) = agents::setup(&[]).await;
    let r = tg.operator_get("/v1/agents").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json()["agents"].as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "{}", r.text());
    for a in &list {
        assert_eq!(a["id"], "onprem-1", "{a}");
        assert!(a["instance"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
        assert!(unix_time(&a["connected_since"]).is_some(), "{a}");
    }
    let admin = tg.admin_token("acme", "root");
    let r = web_request(tg.web, "GET", "/v1/agents", Some(&admin), None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = web_get(tg.web, "/v1/agents").await;
    assert_eq!(r.status, 401, "{}", r.text());
}

/// Before: a caller whose destination routes through an agent learned the agent's ID from
/// `502 agent_unavailable` (body and `Proxy-Status`).
#[tokio::test]
async fn agent_errors_do_not_name_the_agent() {
    let tg = Tollgate::start(common::policies::LOOPBACK, &[]);
    let auth = tg.bearer("acme", "alice");
    let (r, _) = proxy_connect(
        tg.proxy,
        "db.corp.example:443",
        &[("proxy-authorization", &auth)],
    )
    .await;
    let body = assert_proxy_error(&r, 502, "agent_unavailable");
    assert!(!r.text().contains("onprem"), "{}", r.text());
    assert!(body.get("agent").is_none(), "{body}");
    let status = r.header("proxy-status").unwrap_or_default();
    assert!(!status.contains("onprem"), "{status}");
    // The operator's log still says which agent.
    let logged = wait_until(DEADLINE, async || tg.logs().contains("onprem-1")).await;
    assert!(logged, "{}", tg.logs());
}

/// Before: `502 token_refresh_failed` carried the transport error, which names the token
/// endpoint (`egress policy "local" does not allow 127.0.0.1:PORT`).
#[tokio::test]
async fn refresh_failures_do_not_name_the_token_endpoint() {
    let env = common::oauth::setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.wait_stale("alice").await;
    // The token endpoint (127.0.0.1:PORT) is no longer allowed; the API (localhost) is.
    env.tg
        .write_policy("10-test.toml", common::policies::LOCAL_BY_NAME);
    let endpoint = env.p.addr.to_string();
    let mut last = None;
    let failed = wait_until(DEADLINE, async || {
        let r = env.call("acme", "alice").await;
        let done = r.status == 502;
        last = Some(r);
        done
    })
    .await;
    let r = last.unwrap();
    assert!(failed, "{}", r.text());
    assert_proxy_error(&r, 502, "token_refresh_failed");
    assert!(!r.text().contains(&endpoint), "{}", r.text());
    let status = r.header("proxy-status").unwrap_or_default();
    assert!(!status.contains(&endpoint), "{status}");
    assert!(!status.contains("127.0.0.1"), "{status}");
}

/// Before: an admin could PATCH `token_url` to another allowed host and tollgate kept the
/// client secret and every user's refresh token, and sent them there on the next refresh.
/// Now the PATCH needs `client_secret` (`400 secret_required`) and starts a new generation,
/// so the new host never sees a stored refresh token.
#[tokio::test]
async fn moving_the_token_endpoint_needs_the_secret_and_drops_the_tokens() {
    let env = common::oauth::setup(&[], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    let before = env.admin_call("GET", "/v1/apps/crm", None).await.json();
    let generation = before["generation"].as_u64().unwrap();
    env.wait_stale("alice").await;

    // A second provider: another host (here, another port of loopback) the policy allows.
    let other = Provider::start().await;
    let moved = json!({"token_url": format!("{}/token", other.issuer())});
    let r = env.admin_call("PATCH", "/v1/apps/crm", Some(&moved)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "secret_required", "{}", r.text());
    for field in ["revocation_url", "authorize_url"] {
        let doc = json!({field: format!("{}/{field}", other.issuer())});
        let r = env.admin_call("PATCH", "/v1/apps/crm", Some(&doc)).await;
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        assert_eq!(r.json()["error"], "secret_required", "{field}");
    }
    // Same host, other path: no secret needed, tokens kept.
    let same = json!({"revocation_url": format!("{}/revoke2", env.p.issuer())});
    let r = env.admin_call("PATCH", "/v1/apps/crm", Some(&same)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"].as_u64(), Some(generation));

    let mut with_secret = moved.clone();
    with_secret["client_secret"] = json!("sk-CLIENT-SECRET");
    let r = env
        .admin_call("PATCH", "/v1/apps/crm", Some(&with_secret))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["generation"].as_u64().unwrap() > generation,
        "{}",
        r.text()
    );
    assert_eq!(r.json()["authorized_users"], 0, "{}", r.text());
    assert!(env.authorizations("crm").await.is_empty());

    // alice's next call asks for consent again; the new host saw no refresh token.
    let r = env.call("acme", "alice").await;
    assert_proxy_error(&r, 401, "authorization_required");
    assert_eq!(other.refresh_calls(), 0);
    assert!(other.with(|s| s.refresh_tokens_used.is_empty()));
    // The old provider was not asked either (the token was dropped, not refreshed).
    assert!(env.p.with(|s| s.refresh_tokens_used.is_empty()));
    let _ = RefreshMode::Normal;
}

/// The same rule for the webhook handshake's request URLs.
#[tokio::test]
async fn moving_a_webhook_url_needs_the_secret() {
    let env = common::webhook::setup(|spec, _| {
        spec["client_secret"] = json!("sk-CLIENT-SECRET");
    })
    .await;
    let app = env.app().await;
    let mut hook = app["webhook"].clone();
    let other = Provider::start().await;
    hook["refresh"]["url"] = json!(format!("{}/handshake/refresh", other.issuer()));
    // Masked values do not follow a template to another server: they are sent again.
    hook["refresh"]["headers"]["X-Api-Key"] = json!(common::webhook::API_KEY);
    hook["refresh"]["json"]["renew"] = json!("{refresh_token}");
    let r = env.patch(&json!({ "webhook": hook.clone() })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "secret_required");
    let r = env
        .patch(&json!({ "webhook": hook, "client_secret": "sk-CLIENT-SECRET" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["generation"].as_u64() > app["generation"].as_u64());
}

/// Before: `GET /v1/apps/{id}` (and the list, and `tollgate app show`) returned the webhook
/// templates' form and JSON body values; only header values were masked.
#[tokio::test]
async fn webhook_body_values_are_write_only() {
    let env = common::webhook::setup(|spec, _| {
        spec["webhook"]["token"]["json"]["api_secret"] = json!("body-SECRET-1");
        spec["webhook"]["refresh"]
            .as_object_mut()
            .unwrap()
            .remove("json");
        spec["webhook"]["refresh"]["form"] =
            json!({"renew": "{refresh_token}", "key": "form-SECRET-2"});
    })
    .await;
    let shown = env.app().await;
    let list = web_request(env.tg.web, "GET", "/v1/apps", Some(&env.admin), None).await;
    let cli = Command::new(bin())
        .args(["app", "show", "legacy", "--json", "--server"])
        .arg(format!("http://{}", env.tg.web))
        .args(["--token", &env.admin])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli = String::from_utf8_lossy(&cli.stdout).to_string();
    for (what, text) in [
        ("show", shown.to_string()),
        ("list", list.text()),
        ("cli", cli),
    ] {
        for secret in [
            "body-SECRET-1",
            "form-SECRET-2",
            "{authorization_code}",
            "{refresh_token}",
        ] {
            assert!(!text.contains(secret), "{what} shows {secret}: {text}");
        }
    }
    // Names stay visible, values are null.
    assert_eq!(shown["webhook"]["token"]["json"]["api_secret"], Value::Null);
    assert_eq!(shown["webhook"]["refresh"]["form"]["key"], Value::Null);

    // Sending the view back unchanged keeps every stored value: the handshake still works.
    let r = env
        .patch(&json!({"webhook": shown["webhook"].clone()}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    env.consent("alice").await;
    let sent = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert_eq!(sent.body["api_secret"], "body-SECRET-1", "{:?}", sent.body);
    assert!(sent.body["grant"]["code"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
}

fn credential_claims(credential: &str) -> Value {
    let payload = credential.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Before: `agent enroll` without `--ttl` printed a credential that never expired.
#[test]
fn agent_credentials_expire_in_90_days_by_default() {
    let tg = Tollgate::start(common::policies::LOOPBACK, &[]);
    let claims = credential_claims(&agents::enroll(&tg, "onprem-1"));
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(
        claims["exp"].as_u64(),
        Some(iat + 90 * 24 * 3600),
        "{claims}"
    );
}

/// Waits until the relay has refused a credential as revoked.
async fn refused_as_revoked(tg: &Tollgate) -> bool {
    let series = "tollgate_agent_auth_failures_total{reason=\"revoked\"}";
    wait_until(DEADLINE, async || agents::metric(tg, series).await >= 1.0).await
}

fn revoke(tg: &Tollgate, id: &str, token: &str) -> std::process::Output {
    Command::new(bin())
        .args(["agent", "revoke", id, "--server"])
        .arg(format!("http://{}", tg.web))
        .args(["--token", token])
        .output()
        .unwrap()
}

/// Before: there was no way to revoke an agent at run time (only `--revoked-agents` and a
/// restart), and a revoked agent's live connections stayed up. Now `tollgate agent revoke`
/// (operators only) refuses every credential issued so far, closes the agent's connections
/// within 5 s, and a credential enrolled afterwards is accepted.
#[tokio::test]
async fn agent_revoke_closes_connections_and_refuses_old_credentials() {
    let (tg, relay, agent) = agents::setup(&[]).await;
    let echo = tcp_echo().await;
    let auth = tg.bearer("acme", "alice");
    let mut tunnel = agents::tunnel_to(&tg, &echo.to_string(), &auth).await;
    agents::echo_on(&mut tunnel, b"before").await.unwrap();

    // Admins of an org may not revoke agents; operators may.
    let admin = tg.admin_token("acme", "root");
    let out = revoke(&tg, "onprem-1", &admin);
    assert!(!out.status.success());
    assert!(agents::wait_connections(&tg, "onprem-1", 2, DEADLINE).await);
    let out = revoke(&tg, "onprem-1", &tg.operator_token());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let closed = agents::time_to_failure(&mut tunnel, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "tunnel still open 5 s after the revocation"
    );
    assert!(
        agents::wait_connections(&tg, "onprem-1", 0, Duration::from_secs(5)).await,
        "connections still up 5 s after the revocation"
    );
    // The agent keeps redialing with its old credential and is refused.
    let refused = refused_as_revoked(&tg).await;
    assert!(refused, "{}", tg.logs());
    assert_eq!(
        agents::metric(&tg, "tollgate_agent_connections{agent=\"onprem-1\"}").await,
        0.0
    );
    drop(agent);

    // A credential enrolled right after the revocation is accepted.
    let fresh = Agent::start(
        &tg,
        relay,
        "onprem-1",
        &["127.0.0.0/8"],
        &["--keepalive", KEEPALIVE],
    );
    assert!(
        agents::wait_connections(&tg, "onprem-1", 2, DEADLINE).await,
        "{}",
        fresh.logs()
    );
    agents::echo_through(tg.proxy, &auth, &echo.to_string(), b"after")
        .await
        .unwrap();
}

/// The revocation is kept in the store: it survives a restart.
#[tokio::test]
async fn agent_revocation_survives_a_restart() {
    let (tg, relay) = agents::start_tollgate(&[]);
    let (old, ca) = agents::credential_files(&tg, "onprem-1");
    let out = revoke(&tg, "onprem-1", &tg.operator_token());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let relay_arg = relay.to_string();
    let tg = tg.restart(
        false,
        &["--relay-listen", &relay_arg, "--relay-keepalive", KEEPALIVE],
    );
    let agent = Agent::start_with_files(
        relay,
        "onprem-1",
        &old,
        &ca,
        &["127.0.0.0/8"],
        &["--keepalive", KEEPALIVE],
    );
    let refused = refused_as_revoked(&tg).await;
    assert!(refused, "{}\n{}", tg.logs(), agent.logs());
}
