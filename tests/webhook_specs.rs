//! Webhook app specs through the admin API and `app apply`: validation naming the field,
//! switching the handshake, and header values that are write-only and sealed at rest.

mod common;

use common::policies::LOCAL as POLICY;
use common::provider::Provider;
use common::webhook::*;
use common::*;
use serde_json::{json, Value};

/// Switching the handshake by PATCH drops what only the old one used (unless the PATCH sends
/// it), and a standard app switched to the webhook handshake runs the webhook exchange.
#[tokio::test]
async fn patch_switches_the_handshake_both_ways() {
    let env = setup(|_, _| {}).await;
    let hook = env.app().await["webhook"].clone();
    // To standard: a token_url and a secret are needed; the templates go.
    let r = env
        .patch(&json!({
            "handshake": "standard",
            "token_url": format!("{}/token", env.p.issuer()),
            "client_secret": "sk-CLIENT-SECRET",
        }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["webhook"], Value::Null);
    env.consent("alice").await;
    assert_eq!(
        env.p.with(|s| s.code_calls),
        1,
        "standard token endpoint not used"
    );
    assert_eq!(env.p.hook_token_calls(), 0);

    // Back to webhook. GET showed the templates with every value masked, and the standard
    // app keeps none of them, so they are sent again in full; the request URLs are new
    // endpoints, so the client secret comes with them (issue 13: `secret_required`).
    assert!(hook["token"]["json"]["client"].is_null(), "{hook}");
    let hook = common::webhook::app_spec(&env.p)["webhook"].clone();
    let r = env
        .patch(&json!({"handshake": "webhook", "webhook": hook.clone()}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "secret_required");
    let r = env
        .patch(&json!({"handshake": "webhook", "webhook": hook,
                       "client_secret": "sk-CLIENT-SECRET"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_url"], Value::Null);
    env.consent("bob").await;
    assert_eq!(env.p.hook_token_calls(), 1, "webhook exchange not used");
    assert!(env.violations().is_empty(), "{:?}", env.violations());
}

#[tokio::test]
async fn invalid_webhook_specs_name_the_field() {
    let p = Provider::start().await;
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    type Tweak = fn(&mut Value);
    // A field key is matched exactly, or as a prefix when it ends with '*'.
    let cases: [(&str, Tweak, &str, &str); 14] = [
        (
            "unknown placeholder in the token JSON",
            |s| s["webhook"]["token"]["json"]["grant"]["code"] = json!("{nope}"),
            "webhook.token.json",
            "nope",
        ),
        (
            "unknown placeholder in a token header",
            |s| s["webhook"]["token"]["headers"]["X-Client"] = json!("id={nope}"),
            "webhook.token.headers",
            "nope",
        ),
        (
            "refresh token in the token request",
            |s| s["webhook"]["token"]["json"]["client"] = json!("{refresh_token}"),
            "webhook.token.json",
            "refresh_token",
        ),
        (
            "authorization code in the refresh request",
            |s| s["webhook"]["refresh"]["json"]["code"] = json!("{authorization_code}"),
            "webhook.refresh.json",
            "authorization_code",
        ),
        (
            "code verifier in a refresh header",
            |s| s["webhook"]["refresh"]["headers"]["X-V"] = json!("{code_verifier}"),
            "webhook.refresh.headers",
            "code_verifier",
        ),
        (
            "code verifier without PKCE",
            |s| s["pkce"] = json!(false),
            "webhook.token.json",
            "code_verifier",
        ),
        (
            "client secret when the app has none",
            |s| s["webhook"]["token"]["json"]["secret"] = json!("{client_secret}"),
            "webhook.token.json",
            "client_secret",
        ),
        (
            "unknown placeholder in a form",
            |s| {
                let t = &mut s["webhook"]["token"];
                t.as_object_mut().unwrap().remove("json");
                t["form"] = json!({"code": "{authorization_code}", "x": "{nope}"});
            },
            "webhook.token.form",
            "nope",
        ),
        (
            "json and form together",
            |s| s["webhook"]["token"]["form"] = json!({"code": "{authorization_code}"}),
            "webhook.token*",
            "",
        ),
        (
            "no access_token output",
            |s| {
                s["webhook"]["token"]["outputs"]
                    .as_object_mut()
                    .unwrap()
                    .remove("access_token");
            },
            "webhook.token*",
            "access_token",
        ),
        (
            "no scope output",
            |s| {
                s["webhook"]["refresh"]["outputs"]
                    .as_object_mut()
                    .unwrap()
                    .remove("scope");
            },
            "webhook.refresh*",
            "scope",
        ),
        (
            "an output that is not a JSON pointer",
            |s| s["webhook"]["token"]["outputs"]["access_token"] = json!("result.token"),
            "webhook.token*",
            "",
        ),
        (
            "token_url on a webhook app",
            |s| s["token_url"] = json!("http://127.0.0.1:1/token"),
            "token_url",
            "",
        ),
        (
            "no webhook object",
            |s| {
                s.as_object_mut().unwrap().remove("webhook");
            },
            "webhook",
            "",
        ),
    ];
    for (name, tweak, field, mention) in cases {
        let mut spec = app_spec(&p);
        tweak(&mut spec);
        let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let fields = r.json()["fields"].clone();
        let fields = fields
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no fields in {}", r.text()));
        let hit = match field.strip_suffix('*') {
            Some(prefix) => fields.iter().find(|(k, _)| k.starts_with(prefix)),
            None => fields.iter().find(|(k, _)| k.as_str() == field),
        };
        let (key, msg) = hit.unwrap_or_else(|| panic!("{name}: {field} not named in {fields:?}"));
        let msg = msg.as_str().unwrap_or_default();
        assert!(
            msg.contains(mention) || key.contains(mention),
            "{name}: {key}: {msg:?} does not mention {mention:?}"
        );
        assert!(!r.text().contains(API_KEY), "{name}: API key echoed");
    }
    // Doubled braces are literal braces, not placeholders.
    let mut spec = app_spec(&p);
    spec["webhook"]["token"]["headers"]["X-Literal"] = json!("{{nope}}");
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&admin), None).await;
    assert_eq!(
        r.json()["apps"].as_array().unwrap().len(),
        1,
        "{}",
        r.text()
    );
}

/// Every file under `dir`, recursively.
#[tokio::test]
async fn header_values_are_write_only_and_sealed_at_rest() {
    let env = setup(|_, _| {}).await;
    env.consent("alice").await;

    let app = env.app().await;
    assert_eq!(app["handshake"], "webhook");
    let hook = &app["webhook"];
    for t in ["token", "refresh"] {
        let headers = &hook[t]["headers"];
        let v = header_entry(headers, "X-Api-Key")
            .unwrap_or_else(|| panic!("{t}: header name not shown: {app}"));
        assert!(v.is_null(), "{t}: header value shown: {v}");
    }
    assert!(header_entry(&hook["token"]["headers"], "X-Client").is_some_and(Value::is_null));
    assert_eq!(
        hook["token"]["url"],
        format!("{}/handshake/token", env.p.issuer())
    );
    assert_eq!(hook["token"]["outputs"], outputs());
    for r in [
        web_request(env.tg.web, "GET", "/v1/apps", Some(&env.admin), None).await,
        web_request(env.tg.web, "GET", "/v1/apps/legacy", Some(&env.admin), None).await,
    ] {
        assert!(!r.text().contains(API_KEY), "{}", r.text());
    }

    // On disk: the app is there (its description, in the clear), the API key is not.
    let stored = wait_until(DEADLINE, async || {
        env.tg.data_contains(b"Records kept by the legacy CRM")
    })
    .await;
    assert!(
        stored,
        "the walk found no trace of the app in {:?}",
        env.tg.data
    );
    assert!(
        !env.tg.data_contains(API_KEY.as_bytes()),
        "API key in plaintext on disk"
    );
    env.assert_no_secrets_logged();

    // Still in force after a restart: the sealed value is read back.
    let tg = env.tg.restart(false, &[]);
    let env = Env {
        admin: tg.admin_token("acme", "root"),
        tg,
        p: env.p,
    };
    env.consent("bob").await;
    assert!(env.violations().is_empty(), "{:?}", env.violations());
}

#[tokio::test]
async fn patch_with_null_header_values_keeps_the_stored_ones() {
    let env = setup(|_, _| {}).await;
    let mut hook = env.app().await["webhook"].clone();
    assert!(hook.is_object(), "no webhook in GET");
    // Sent back as shown (values null), a header name in another case, and one real change.
    let headers = hook["token"]["headers"].as_object_mut().unwrap();
    let name = headers
        .keys()
        .find(|k| k.eq_ignore_ascii_case("x-api-key"))
        .unwrap()
        .clone();
    headers.remove(&name);
    headers.insert("x-API-key".into(), Value::Null);
    hook["token"]["json"]["note"] = json!("patched");
    let r = env.patch(&json!({ "webhook": hook })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(API_KEY));
    let shown = env.app().await;
    // Body values are write-only (issue 13): the patched one is shown masked, and the
    // provider sees it below.
    assert!(
        shown["webhook"]["token"]["json"]["note"].is_null(),
        "{shown}"
    );
    assert!(
        header_entry(&shown["webhook"]["token"]["headers"], "x-api-key")
            .is_some_and(Value::is_null)
    );

    // The token request still carries the kept key (and the patched body); so does the
    // refresh request, whose template was sent back with its null too.
    env.p.with(|s| s.hook_ttl = Some("3".into()));
    env.consent("alice").await;
    let seen = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert_eq!(seen.body["note"], "patched");
    env.p.with(|s| s.hook_ttl = Some("3600".into()));
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.hook_refresh_calls(), 1);
    let seen = env.p.with(|s| s.last_hook_refresh.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert!(env.violations().is_empty(), "{:?}", env.violations());

    // A new header has no stored value to keep.
    let mut bad = env.app().await["webhook"].clone();
    bad["token"]["headers"]["X-New"] = Value::Null;
    let r = env.patch(&json!({ "webhook": bad })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let fields = r.json()["fields"].clone();
    let (key, msg) = fields
        .as_object()
        .and_then(|f| {
            f.iter()
                .find(|(k, _)| k.starts_with("webhook.token.headers"))
        })
        .unwrap_or_else(|| panic!("webhook.token.headers not named: {}", r.text()));
    assert!(
        msg.as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("x-new")
            || key.to_lowercase().contains("x-new"),
        "{key}: {msg}"
    );
    // The refused PATCH changed nothing.
    env.consent("bob").await;

    // A value that is sent replaces the stored one.
    let mut rotated = env.app().await["webhook"].clone();
    for (k, v) in rotated["token"]["headers"].as_object_mut().unwrap() {
        if k.eq_ignore_ascii_case("x-api-key") {
            *v = json!("k-ROTATED");
        }
    }
    let r = env.patch(&json!({ "webhook": rotated })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    env.p.with(|s| s.hook_api_key = "k-ROTATED".into());
    env.consent("carol").await;
    assert!(env.violations().is_empty(), "{:?}", env.violations());
    assert!(!env.tg.data_contains(b"k-ROTATED"), "new key on disk");
}

#[tokio::test]
async fn app_apply_from_a_file_takes_the_api_key_from_the_environment() {
    let p = Provider::start().await;
    let tg = Tollgate::start(POLICY, &[]);
    let admin = tg.admin_token("acme", "root");
    let file = tg.dir.path().join("legacy.toml");
    let issuer = p.issuer();
    std::fs::write(
        &file,
        format!(
            r#"
id = "legacy"
name = "Legacy CRM"
approval_prompt = "Allow the runner to use the legacy CRM?"
handshake = "webhook"
authorize_url = "{issuer}/authorize"
client_id = "client-1"
scopes = ["read", "write"]
egress_policy = "local"
domains = ["localhost"]
upstream_tls = false

[webhook.token]
url = "{issuer}/handshake/token"
headers = {{ "X-Api-Key" = {{ env = "HOOK_KEY" }} }}
json = {{ client = "{{client_id}}", redirect = "{{redirect_uri}}", grant = {{ code = "{{authorization_code}}", verifier = "{{code_verifier}}" }} }}
outputs = {{ access_token = "/result/token", scope = "/result/scopes", refresh_token = "/result/renew", expires_in = "/result/ttl" }}
"#
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("app")
            .args(args)
            .env("TOLLGATE_URL", format!("http://{}", tg.web))
            .env("TOLLGATE_TOKEN", &admin)
            .env("HOOK_KEY", API_KEY)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(API_KEY), "API key printed:\n{text}");
        (out.status.code(), text)
    };
    let (code, out) = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("created app legacy"), "{out}");
    let (code, out) = cli(&["show", "legacy"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("webhook"), "{out}");
    let (code, out) = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("updated app legacy"), "{out}");

    let env = Env { tg, p, admin };
    env.consent("alice").await;
    let seen = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
    assert!(env.violations().is_empty(), "{:?}", env.violations());
    assert_eq!(env.call("alice").await.status, 200);
}
