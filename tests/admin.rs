//! Admin API and `tollgate app` CLI against the real server on 127.0.0.1:0.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const POLICY: &str = r#"
[[policy]]
name = "idp"
route = "direct"
  [[policy.allow]]
  hosts = ["idp.example", "login.example"]
  ports = [443]

[[policy]]
name = "apis"
route = "direct"
  [[policy.allow]]
  hosts = ["api.example"]
  ports = [443]
"#;

fn github(id: &str) -> Value {
    json!({
        "id": id,
        "name": "GitHub",
        "description": "Repositories and issues",
        "approval_prompt": "Allow the runner to read your repositories?",
        "authorize_url": "https://idp.example/authorize",
        "token_url": "https://idp.example/token",
        "client_id": "client-123",
        "client_secret": "sk-SECRET-never-returned",
        "scopes": ["repo", "read:user"],
        "egress_policy": "idp",
        "domains": [format!("{id}.api.example"), format!("*.{id}.example")],
    })
}

#[tokio::test]
async fn create_list_show_with_status_codes_and_no_secret() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&admin),
        Some(&github("github")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/v1/apps/github"));
    let app = r.json();
    assert_eq!(app["enabled"], true);
    assert_eq!(app["client_secret_set"], true);
    assert_eq!(
        app["redirect_uri"],
        format!("http://{}/oauth/callback", tg.web)
    );
    assert_eq!(app["authorized_users"], 0);
    assert_eq!(app["pkce"], true);
    assert_eq!(app["status"], "ok");
    assert!(!r.text().contains("sk-SECRET"), "secret returned on create");

    // Duplicate id → 409.
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&admin),
        Some(&github("github")),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "conflict");

    // List and show never carry the secret.
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&admin), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["apps"].as_array().unwrap().len(), 1);
    assert!(!r.text().contains("sk-SECRET"));
    let r = web_request(tg.web, "GET", "/v1/apps/github", Some(&admin), None).await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("sk-SECRET"));
    assert!(!tg.logs().contains("sk-SECRET"), "secret logged");

    // 401 without a token, with a bad one; 403 without the admin role.
    let r = web_request(tg.web, "GET", "/v1/apps", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = web_request(tg.web, "GET", "/v1/apps", Some("not-a-token"), None).await;
    assert_eq!(r.status, 401);
    let user = tg.token("acme", "alice");
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&user), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
}

#[tokio::test]
async fn invalid_input_names_every_bad_field() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let bad = json!({
        "id": "Not A Slug",
        "name": "",
        "approval_prompt": "ok",
        "authorize_url": "http://idp.example/authorize",
        "token_url": "https://unknown.example/token",
        "client_id": "c",
        "client_secret": "s",
        "scopes": [],
        "access_token_ttl": 0,
        "egress_policy": "idp",
        "domains": ["*"],
    });
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&bad)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "invalid_request");
    let fields = body["fields"].as_object().unwrap();
    for f in [
        "id",
        "name",
        "authorize_url",
        "access_token_ttl",
        "egress_policy",
        "domains",
    ] {
        assert!(fields.contains_key(f), "{f} not named in {body}");
    }

    // Unknown and mistyped fields are named too.
    let mut typo = github("x");
    typo["scope"] = json!("repo");
    typo["pkce"] = json!("yes");
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&typo)).await;
    assert_eq!(r.status, 400);
    let fields = r.json()["fields"].clone();
    assert_eq!(fields["scope"], "unknown field");
    assert!(fields.get("pkce").is_some(), "{fields}");

    // A policy that does not exist, and missing required fields.
    let mut nopol = github("y");
    nopol["egress_policy"] = json!("nope");
    nopol.as_object_mut().unwrap().remove("client_secret");
    nopol.as_object_mut().unwrap().remove("scopes");
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&nopol)).await;
    assert_eq!(r.status, 400);
    let fields = r.json()["fields"].clone();
    for f in ["egress_policy", "client_secret", "scopes"] {
        assert!(fields.get(f).is_some(), "{f} not named in {fields}");
    }

    // Empty scopes are fine; the same domain in a second app of the org is not.
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&admin),
        Some(&github("one")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut two = github("two");
    two["domains"] = json!(["one.api.example"]);
    two["scopes"] = json!([]);
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&two)).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["fields"]["domains"]
        .as_str()
        .unwrap()
        .contains("\"one\""));
    two["domains"] = json!(["two.api.example"]);
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&two)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["scopes"], json!([]));

    // Nothing invalid was stored.
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&admin), None).await;
    let ids: Vec<String> = r.json()["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["one", "two"]);
}

/// A URL port of 0 or above 65535 is a validation error naming the field, never read as the
/// scheme's default port.
#[tokio::test]
async fn token_url_port_out_of_range_is_400_naming_the_field() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    for url in [
        "https://idp.example:99999/token",
        "https://idp.example:0/token",
    ] {
        let mut app = github("ports");
        app["token_url"] = json!(url);
        let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&app)).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(body["fields"].get("token_url").is_some(), "{url}: {body}");
    }
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&admin), None).await;
    assert_eq!(r.json()["apps"], json!([]), "{}", r.text());
}

#[tokio::test]
async fn orgs_are_isolated() {
    let tg = Tollgate::start(POLICY, &[]);
    let acme = tg.admin_token("acme", "root");
    let beta = tg.admin_token("beta", "root");
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&acme),
        Some(&github("github")),
    )
    .await;
    assert_eq!(r.status, 201);
    for (method, path) in [
        ("GET", "/v1/apps/github"),
        ("PATCH", "/v1/apps/github"),
        ("DELETE", "/v1/apps/github"),
        ("POST", "/v1/apps/github/disable"),
        ("POST", "/v1/apps/github/reset"),
        ("GET", "/v1/apps/github/authorizations"),
    ] {
        let body = (method == "PATCH").then(|| json!({"name": "pwned"}));
        let r = web_request(tg.web, method, path, Some(&beta), body.as_ref()).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&beta), None).await;
    assert_eq!(r.json()["apps"], json!([]));
    // beta may use the same id and domains in its own org.
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&beta),
        Some(&github("github")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = web_request(tg.web, "GET", "/v1/apps/github", Some(&acme), None).await;
    assert_eq!(r.json()["name"], "GitHub");
    let r = web_request(tg.web, "GET", "/v1/audit", Some(&beta), None).await;
    let events = r.json()["events"].as_array().unwrap().clone();
    assert!(events.iter().all(|e| e["org"] == "beta"));
}

#[tokio::test]
async fn lifecycle_update_enable_disable_reset_delete_and_audit() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&admin),
        Some(&github("github")),
    )
    .await;

    let r = web_request(
        tg.web,
        "PATCH",
        "/v1/apps/github",
        Some(&admin),
        Some(&json!({"name": "GitHub Enterprise", "client_secret": "sk-ROTATED"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "GitHub Enterprise");
    assert_eq!(r.json()["client_id"], "client-123", "untouched fields kept");
    assert!(!r.text().contains("sk-ROTATED"));
    let r = web_request(
        tg.web,
        "PATCH",
        "/v1/apps/github",
        Some(&admin),
        Some(&json!({"id": "other"})),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = web_request(
        tg.web,
        "PATCH",
        "/v1/apps/github",
        Some(&admin),
        Some(&json!({"token_url": "https://elsewhere.example/t"})),
    )
    .await;
    assert_eq!(r.status, 400, "token endpoint outside the egress policy");

    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps/github/disable",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.json()["enabled"], false);
    let r = web_request(tg.web, "POST", "/v1/apps/github/enable", Some(&admin), None).await;
    assert_eq!(r.json()["enabled"], true);
    let before = web_request(tg.web, "GET", "/v1/apps/github", Some(&admin), None)
        .await
        .json();
    let r = web_request(tg.web, "POST", "/v1/apps/github/reset", Some(&admin), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["generation"].as_u64().unwrap(),
        before["generation"].as_u64().unwrap() + 1
    );
    assert_eq!(
        r.json()["name"],
        "GitHub Enterprise",
        "reset keeps the configuration"
    );
    let r = web_request(
        tg.web,
        "GET",
        "/v1/apps/github/authorizations",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.json()["authorizations"], json!([]));
    let r = web_request(
        tg.web,
        "DELETE",
        "/v1/apps/github/authorizations/nobody",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    let r = web_request(tg.web, "DELETE", "/v1/apps/github", Some(&admin), None).await;
    assert_eq!(r.status, 204);
    let r = web_request(tg.web, "GET", "/v1/apps/github", Some(&admin), None).await;
    assert_eq!(r.status, 404);
    let r = web_request(tg.web, "DELETE", "/v1/apps/github", Some(&admin), None).await;
    assert_eq!(r.status, 404);

    let r = web_request(tg.web, "GET", "/v1/audit", Some(&admin), None).await;
    let text = r.text();
    assert!(!text.contains("sk-"), "secret in the audit log: {text}");
    let actions: Vec<String> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "app.delete",
            "app.reset",
            "app.enable",
            "app.disable",
            "app.update",
            "app.create"
        ],
        "newest first"
    );
    let first = &r.json()["events"][0];
    assert_eq!(first["actor"], "root");
    assert!(unix_time(&first["at"]).unwrap() > 1_700_000_000, "{first}");
}

#[tokio::test]
async fn apps_survive_restart_and_sigkill_right_after_create() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&admin),
        Some(&github("github")),
    )
    .await;
    assert_eq!(r.status, 201);
    // SIGKILL immediately after the 201: the write was flushed before the answer.
    let tg = tg.restart(true, &[]);
    let admin = tg.admin_token("acme", "root");
    let r = web_request(tg.web, "GET", "/v1/apps/github", Some(&admin), None).await;
    assert_eq!(r.status, 200, "app lost after SIGKILL: {}", r.text());
    assert_eq!(r.json()["client_secret_set"], true);
    let r = web_request(
        tg.web,
        "POST",
        "/v1/apps/github/disable",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let tg = tg.restart(false, &[]);
    let admin = tg.admin_token("acme", "root");
    let r = web_request(tg.web, "GET", "/v1/apps/github", Some(&admin), None).await;
    assert_eq!(
        r.json()["enabled"],
        false,
        "disable persisted across a graceful restart"
    );
    // The secret is sealed on disk.
    assert!(
        !tg.data_contains(b"sk-SECRET"),
        "client secret in plaintext on disk"
    );
}

#[tokio::test]
async fn an_app_whose_policy_disappears_is_reported() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    web_request(
        tg.web,
        "POST",
        "/v1/apps",
        Some(&admin),
        Some(&github("github")),
    )
    .await;
    assert_eq!(tg.operator_get("/readyz").await.json()["status"], "ready");
    tg.write_policy(
        "10-test.toml",
        &POLICY.replace("name = \"idp\"", "name = \"idp-renamed\""),
    );
    let seen = wait_until(std::time::Duration::from_secs(3), async || {
        tg.operator_get("/readyz").await.json()["status"] == "degraded"
    })
    .await;
    assert!(seen, "broken app not reported on /readyz");
    let ready = tg.operator_get("/readyz").await.json();
    assert_eq!(ready["apps"][0]["id"], "github");
    let app = web_request(tg.web, "GET", "/v1/apps/github", Some(&admin), None)
        .await
        .json();
    assert_eq!(app["status"], "broken");
    assert!(app["problems"][0].as_str().unwrap().contains("idp"));
}

#[tokio::test]
async fn cli_drives_the_admin_api() {
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let app_file = tg.dir.path().join("github.toml");
    std::fs::write(
        &app_file,
        r#"
id = "github"
name = "GitHub"
description = "Repositories"
approval_prompt = "Allow access to your repositories?"
authorize_url = "https://idp.example/authorize"
token_url = "https://idp.example/token"
client_id = "client-123"
client_secret = { env = "GH_SECRET" }
scopes = ["repo"]
egress_policy = "idp"
domains = ["api.example"]

[authorize_params]
access_type = "offline"
"#,
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("app")
            .args(args)
            .env("TOLLGATE_URL", format!("http://{}", tg.web))
            .env("TOLLGATE_TOKEN", &admin)
            .env("GH_SECRET", "sk-FROM-ENV")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["apply", "-f", app_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("created app github"), "{out}");
    assert!(!out.contains("sk-FROM-ENV"));
    let (code, out, _) = cli(&["apply", "-f", app_file.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(out.contains("updated app github"), "{out}");

    // `policy explain` names the app that would inject, asking the admin API.
    let explain = Command::new(bin())
        .args([
            "policy",
            "explain",
            "--policies",
            tg.policies.to_str().unwrap(),
            "--org",
            "acme",
            "--no-resolve",
            "https://api.example/v1",
        ])
        .env("TOLLGATE_URL", format!("http://{}", tg.web))
        .env("TOLLGATE_TOKEN", &admin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("decision: allowed"), "{text}");
    assert!(
        text.contains("app:      github (GitHub): its token is injected"),
        "{text}"
    );

    let (_, out, _) = cli(&["list"]);
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(
        out.contains("github") && out.contains("api.example"),
        "{out}"
    );
    let (_, out, _) = cli(&["show", "github", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["authorize_params"]["access_type"], "offline");
    assert_eq!(v["client_secret_set"], true);

    let (code, out, _) = cli(&[
        "update",
        "github",
        "--set",
        "pkce=false",
        "--set",
        "name=GH",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("GH"));
    let (_, out, _) = cli(&["disable", "github", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["enabled"],
        false
    );
    let (_, out, _) = cli(&["enable", "github", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["enabled"],
        true
    );
    let (code, _, _) = cli(&["reset", "github"]);
    assert_eq!(code, Some(0));
    let (code, out, _) = cli(&["authorizations", "github"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("USER"));
    let (code, _, err) = cli(&["revoke", "github", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("has not authorized"), "{err}");
    let (code, _, err) = cli(&["update", "github", "--set", "domains=[\"*\"]"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("domains:"), "{err}");
    let (code, _, _) = cli(&["delete", "github"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&["show", "github"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");

    // No token → a clear error, exit 1.
    let out = Command::new(bin())
        .args(["app", "list", "--server", &format!("http://{}", tg.web)])
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOLLGATE_TOKEN"));
}
