//! The provider catalog (issue 15): revocation templates for providers without RFC 7009
//! (GitHub-style and Slack-style, against the test provider's endpoints of that shape),
//! `GET /v1/providers`, `POST /v1/apps` with `provider`, and the `tollgate app providers` /
//! `app create --provider` commands.

mod common;

use common::oauth::*;
use common::provider::Provider;
use common::*;
use serde_json::{json, Value};

/// GitHub's shape: `DELETE /applications/{client_id}/grant`, Basic, the token in JSON.
fn github_style(p: &Provider) -> Value {
    json!({
        "method": "DELETE",
        "url": format!("{}/applications/{{client_id}}/grant", p.issuer()),
        "auth": "basic",
        "json": {"access_token": "{access_token}"},
    })
}

/// Slack's shape: `POST /api/auth.revoke` with the token as the bearer, `"ok"` in the answer.
fn slack_style(p: &Provider) -> Value {
    json!({
        "method": "POST",
        "url": format!("{}/api/auth.revoke", p.issuer()),
        "auth": "bearer",
        "ok_json": "/ok",
    })
}

/// The app of [`app_spec`] revoking with `template` instead of RFC 7009.
async fn with_template(template: fn(&Provider) -> Value) -> Env {
    setup(&[], |spec, p| {
        let spec = spec.as_object_mut().unwrap();
        spec.remove("revocation_url");
        spec.insert("revocation".into(), template(p));
    })
    .await
}

/// Consents `user` and returns the access token tollgate injects for them.
async fn connected(env: &Env, user: &str) -> String {
    env.consent("acme", user).await;
    let r = env.call("acme", user).await;
    assert_eq!(r.status, 200, "{}", r.text());
    bearer_of(&r).trim_start_matches("Bearer ").to_string()
}

async fn revoke_authorization(env: &Env, user: &str) {
    let path = format!("/v1/apps/crm/authorizations/{user}");
    let r = env.admin_call("DELETE", &path, None).await;
    assert_eq!(r.status, 204, "{}", r.text());
}

async fn wait_logged(env: &Env, needle: &str) -> bool {
    wait_until(DEADLINE, async || env.tg.logs().contains(needle)).await
}

#[tokio::test]
async fn github_style_revocation_sends_delete_with_basic_and_json() {
    let env = with_template(github_style).await;
    let token = connected(&env, "ann").await;
    revoke_authorization(&env, "ann").await;
    let p = env.p.clone();
    let t = token.clone();
    assert!(
        wait_until(DEADLINE, async || p.with(|s| s.revoked.contains(&t))).await,
        "not revoked: {:?}",
        env.p.styled_revocations()
    );
    let seen = env.p.styled_revocations();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].path, "/applications/client-1/grant");
    assert!(seen[0].content_type.starts_with("application/json"));
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({"access_token": token}));
    assert!(wait_logged(&env, "token revoked at the provider").await);

    // The API shows the template with its values masked; a move to another server needs
    // the client secret again.
    let r = env.admin_call("GET", "/v1/apps/crm", None).await;
    assert_eq!(r.status, 200);
    let shown = r.json();
    assert_eq!(shown["revocation"]["json"], json!({"access_token": null}));
    assert_eq!(shown["revocation"]["auth"], "basic");
    let mut moved = github_style(&env.p);
    moved["url"] = json!(format!(
        "http://localhost:{}/applications/{{client_id}}/grant",
        env.p.addr.port()
    ));
    let r = env
        .admin_call("PATCH", "/v1/apps/crm", Some(&json!({"revocation": moved})))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("revocation.url"), "{}", r.text());
    // The masked view sent back keeps the stored values (same server).
    let mut view = shown["revocation"].clone();
    view["method"] = json!("delete");
    let r = env
        .admin_call("PATCH", "/v1/apps/crm", Some(&json!({"revocation": view})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let bob = connected(&env, "bob").await;
    revoke_authorization(&env, "bob").await;
    let p = env.p.clone();
    assert!(wait_until(DEADLINE, async || p.with(|s| s.revoked.contains(&bob))).await);
    let seen = env.p.styled_revocations();
    assert_eq!(
        seen.last().unwrap().body,
        format!(r#"{{"access_token":"{bob}"}}"#)
    );
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn slack_style_revocation_sends_the_bearer_and_reads_ok() {
    let env = with_template(slack_style).await;
    let token = connected(&env, "ann").await;
    revoke_authorization(&env, "ann").await;
    let p = env.p.clone();
    let t = token.clone();
    assert!(wait_until(DEADLINE, async || p.with(|s| s.revoked.contains(&t))).await);
    let seen = env.p.styled_revocations();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].authorization, format!("Bearer {token}"));
    assert_eq!(seen[0].body, "");

    // A 200 with {"ok": false} is a refusal, not a confirmation.
    let ben = connected(&env, "ben").await;
    env.p.with(|s| s.access_tokens.remove(&ben));
    revoke_authorization(&env, "ben").await;
    assert!(
        wait_logged(&env, "did not confirm the revocation").await,
        "{}",
        env.tg.logs()
    );
    assert!(wait_logged(&env, "the provider refused to revoke a token").await);
    let seen = env.p.styled_revocations();
    assert_eq!(seen.len(), 2);
    assert!(!seen[1].revoked);
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn an_unreachable_revocation_endpoint_fails_without_blocking_the_delete() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = setup(&[], |spec, _| {
        let spec = spec.as_object_mut().unwrap();
        spec.remove("revocation_url");
        spec.insert(
            "revocation".into(),
            json!({"url": format!("http://127.0.0.1:{port}/revoke"), "auth": "bearer"}),
        );
    })
    .await;
    connected(&env, "ann").await;
    revoke_authorization(&env, "ann").await;
    assert!(
        wait_logged(&env, "token revocation at the provider failed").await,
        "{}",
        env.tg.logs()
    );
    assert!(env.authorizations("crm").await.is_empty());
    assert!(env.p.styled_revocations().is_empty());
    env.assert_no_secrets_logged();
}

/// Allows the token and revocation hosts of the entries the tests create apps from.
const SAAS: &str = r#"
[[policy]]
name = "saas"
route = "direct"
  [[policy.allow]]
  hosts = ["github.com", "api.github.com", "gitlab.com", "login.microsoftonline.com"]
  ports = [443]
"#;

#[tokio::test]
async fn the_catalog_is_served_to_callers_and_apps_are_created_from_it() {
    let tg = Tollgate::start(SAAS, &[]);
    let user = tg.token("acme", "alice");
    let admin = tg.admin_token("acme", "root");
    let r = web_request(tg.web, "GET", "/v1/providers", Some(&user), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let all = r.json()["providers"].as_array().unwrap().clone();
    assert_eq!(all.len(), 10);
    let ids: Vec<&str> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&"github") && ids.contains(&"hubspot"),
        "{ids:?}"
    );
    let r = web_request(tg.web, "GET", "/v1/providers", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = web_request(tg.web, "GET", "/v1/providers/microsoft", Some(&user), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["params"][0]["name"], "tenant");
    assert!(!r.json()["quirks"].as_array().unwrap().is_empty());
    let r = web_request(tg.web, "GET", "/v1/providers/myspace", Some(&user), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");

    let create = async |body: Value| {
        web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&body)).await
    };
    let admin_fields =
        json!({"client_id": "c-1", "client_secret": "sk-CATALOG", "egress_policy": "saas"});
    let with = |extra: Value| {
        let mut doc = admin_fields.clone();
        doc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        doc
    };
    // A missing placeholder is named.
    let r = create(with(json!({"provider": "microsoft", "id": "graph"}))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(
        r.json()["fields"]["provider_params.tenant"]
            .as_str()
            .unwrap()
            .contains("tenant"),
        "{}",
        r.text()
    );
    let r = create(with(json!({"provider": "myspace", "id": "x"}))).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["fields"]["provider"].is_string(), "{}", r.text());
    let r = create(with(json!({"provider": "microsoft", "id": "graph",
                               "provider_params": {"tenant": "contoso.example"}})))
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["token_url"],
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    );
    // The admin's fields override the entry's.
    let r = create(with(
        json!({"provider": "gitlab", "id": "gitlab", "scopes": ["api"]}),
    ))
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["scopes"], json!(["api"]));
    assert_eq!(
        r.json()["revocation_url"],
        "https://gitlab.com/oauth/revoke"
    );
    let r = create(with(json!({"provider": "github", "id": "gh"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gh = r.json();
    assert_eq!(gh["revocation"]["method"], "DELETE");
    assert_eq!(gh["revocation"]["json"], json!({"access_token": null}));
    assert_eq!(
        gh["authorize_url"],
        "https://github.com/login/oauth/authorize"
    );
    assert!(!r.text().contains("sk-CATALOG"));
}

fn tollgate_cli(args: &[&str], tg: &Tollgate, token: &str) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .env("TOLLGATE_URL", format!("http://{}", tg.web))
        .env("TOLLGATE_TOKEN", token)
        .output()
        .unwrap()
}

/// stdout of a command that must succeed.
fn succeeded(out: std::process::Output) -> Vec<u8> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    out.stdout
}

#[tokio::test]
async fn app_providers_and_app_create_from_the_catalog() {
    let tg = Tollgate::start(SAAS, &[]);
    let admin = tg.admin_token("acme", "root");
    // The list is the binary's own: no token needed.
    let out = std::process::Command::new(bin())
        .args(["app", "providers", "--json"])
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&succeeded(out)).unwrap();
    assert_eq!(listed["providers"].as_array().unwrap().len(), 10);
    let out = tollgate_cli(&["app", "providers"], &tg, &admin);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("instance=gitlab.com"), "{table}");
    let quirk = "quirk: No token revocation endpoint";
    assert!(table.contains(quirk), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "sk-FROM-FILE\n").unwrap();
    let secret = secret.to_str().unwrap();
    let create = "app create --provider microsoft --id graph --client-id c-2 --egress-policy saas";
    let mut args: Vec<&str> = create.split(' ').collect();
    args.extend(["--client-secret-file", secret]);
    let out = tollgate_cli(&args, &tg, &admin);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provider_params.tenant"), "{err}");
    args.extend([
        "--param",
        "tenant=contoso.example",
        "--scopes",
        "openid,offline_access",
        "--json",
    ]);
    let stdout = succeeded(tollgate_cli(&args, &tg, &admin));
    let app: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(app["id"], "graph");
    assert_eq!(app["scopes"], json!(["openid", "offline_access"]));
    assert_eq!(app["client_secret_set"], true);
    assert!(!String::from_utf8_lossy(&stdout).contains("sk-FROM-FILE"));
    // The secret is the file's, without its newline: the app validates with it stored.
    let r = web_request(tg.web, "GET", "/v1/apps/graph", Some(&admin), None).await;
    assert_eq!(r.json()["status"], "ok", "{}", r.text());
}
