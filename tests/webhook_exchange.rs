//! The webhook code exchange: what the endpoint may answer and how failures are named, the
//! output shapes and form templates it accepts, and the egress policy and address guard it
//! runs under.

mod common;

use common::policies::LOCAL as POLICY;
use common::provider::{Canned, Provider};
use common::webhook::*;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn callback_failures_name_the_cause_and_store_nothing() {
    let env = setup(|_, _| {}).await;
    struct Case {
        name: &'static str,
        status: u16,
        content_type: Option<&'static str>,
        body: &'static str,
        /// Set the provider's expected API key to something the app does not send.
        wrong_key: bool,
        /// Text the error page must contain.
        says: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "missing access_token output",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"result":{}}"#,
            wrong_key: false,
            says: &["/result/token"],
        },
        Case {
            name: "missing scope output",
            status: 200,
            content_type: Some("application/json"),
            body: r#"{"result":{"token":"{at}","renew":"{rt}"}}"#,
            wrong_key: false,
            says: &["/result/scopes"],
        },
        Case {
            name: "provider error with a code",
            status: 400,
            content_type: Some("application/json"),
            body: r#"{"error":"access_denied"}"#,
            wrong_key: false,
            says: &["provider error", "access_denied"],
        },
        Case {
            name: "provider error without a code",
            status: 403,
            content_type: Some("text/plain"),
            body: "forbidden",
            wrong_key: false,
            says: &["http_403"],
        },
        Case {
            name: "provider down",
            status: 500,
            content_type: Some("text/plain"),
            body: "internal error",
            wrong_key: false,
            says: &["unreachable", "HTTP 500"],
        },
        Case {
            name: "redirect",
            status: 302,
            content_type: Some("text/plain"),
            body: "moved",
            wrong_key: false,
            says: &["http_302"],
        },
        Case {
            name: "not JSON",
            status: 200,
            content_type: Some("text/html"),
            body: "<html>login</html>",
            wrong_key: false,
            says: &[],
        },
        Case {
            name: "wrong API key",
            status: 0,
            content_type: None,
            body: "",
            wrong_key: true,
            says: &["bad_api_key"],
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let user = format!("user{i}");
        env.p.with(|s| {
            s.next_hook_response = (!c.wrong_key).then(|| Canned {
                status: c.status,
                content_type: c.content_type,
                body: c.body.to_string(),
            });
            s.hook_api_key = if c.wrong_key {
                "k-SOMETHING-ELSE".into()
            } else {
                API_KEY.into()
            };
        });
        let b = env.browse(&user).await;
        let page = b.callback.text();
        assert_eq!(b.callback.status, 502, "{}: {page}", c.name);
        assert!(
            b.callback
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("text/html")),
            "{}",
            c.name
        );
        for want in c.says {
            assert!(page.contains(want), "{}: {want:?} missing:\n{page}", c.name);
        }
        assert!(page.contains("Nothing was stored"), "{}: {page}", c.name);
        assert!(!page.contains(API_KEY), "{}: API key on the page", c.name);
        assert!(
            env.authorization(&user).await.is_none(),
            "{}: stored",
            c.name
        );
        let r = env.call(&user).await;
        assert_eq!(r.status, 401, "{}: {}", c.name, r.text());
        assert_eq!(env.p.hook_token_calls(), i + 1, "{}", c.name);
    }
    assert!(env.authorizations().await.is_empty());
    env.assert_no_secrets_logged();
}

#[tokio::test]
async fn output_variants_are_accepted() {
    let env = setup(|spec, _| spec["access_token_ttl"] = json!(1234)).await;
    struct Case {
        name: &'static str,
        body: &'static str,
        scopes: Value,
        lifetime: u64,
    }
    let cases = [
        Case {
            name: "space-separated scope, numeric ttl",
            body: r#"{"result":{"token":"{at}","scopes":"read write","renew":"{rt}","ttl":60}}"#,
            scopes: json!(["read", "write"]),
            lifetime: 60,
        },
        Case {
            name: "array of one scope, ttl as a numeric string",
            body: r#"{"result":{"token":"{at}","scopes":["read"],"ttl":"120"}}"#,
            scopes: json!(["read"]),
            lifetime: 120,
        },
        Case {
            name: "no ttl: the app's access_token_ttl",
            body: r#"{"result":{"token":"{at}","scopes":["write"]}}"#,
            scopes: json!(["write"]),
            lifetime: 1234,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let user = format!("user{i}");
        env.p.with(|s| {
            s.next_hook_response = Some(Canned {
                status: 200,
                content_type: Some("application/json"),
                body: c.body.to_string(),
            })
        });
        let b = env.browse(&user).await;
        assert_eq!(b.callback.status, 200, "{}: {}", c.name, b.callback.text());
        let a = env
            .authorization(&user)
            .await
            .unwrap_or_else(|| panic!("{}: not stored", c.name));
        assert_eq!(a["scopes"], c.scopes, "{}", c.name);
        assert_eq!(lifetime(&a), c.lifetime, "{}", c.name);
        let r = env.call(&user).await;
        assert_eq!(r.status, 200, "{}: {}", c.name, r.text());
        assert!(bearer_of(&r).starts_with("Bearer AT-secret-"), "{}", c.name);
    }
}

#[tokio::test]
async fn form_templates_are_url_encoded() {
    let env = setup(|spec, _| {
        let forms = [
            (
                "token",
                json!({
                    "code": "{authorization_code}", "verifier": "{code_verifier}",
                    "client": "{client_id}", "redirect": "{redirect_uri}",
                    "note": "a&b=c d+e%",
                }),
            ),
            ("refresh", json!({"renew": "{refresh_token}"})),
        ];
        for (step, form) in forms {
            let t = &mut spec["webhook"][step];
            t.as_object_mut().unwrap().remove("json");
            t["form"] = form;
        }
    })
    .await;
    env.p.with(|s| {
        s.hook_accepts_form = true;
        s.hook_ttl = Some("3".into());
    });
    let b = env.browse("alice").await;
    assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    let seen = env.p.with(|s| s.last_hook_token.clone()).unwrap();
    assert!(
        seen.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.body["grant"]["code"], b.code.as_str());
    assert_eq!(seen.body["client"], "client-1");
    assert_eq!(
        seen.body["redirect"],
        format!("http://{}/oauth/callback", env.tg.web)
    );
    assert_eq!(seen.body["note"], "a&b=c d+e%", "form value not encoded");
    let rt: Vec<String> = env.p.with(|s| s.refresh_tokens.iter().cloned().collect());

    env.p.with(|s| s.hook_ttl = Some("3600".into()));
    env.wait_expired(&["alice"]).await;
    let r = env.call("alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.hook_refresh_calls(), 1);
    let seen = env.p.with(|s| s.last_hook_refresh.clone()).unwrap();
    assert_eq!(seen.body, json!({"renew": rt[0]}));
    assert!(env.violations().is_empty(), "{:?}", env.violations());
}

#[tokio::test]
async fn a_policy_that_no_longer_allows_the_endpoint_stops_the_exchange() {
    let env = setup(|_, _| {}).await;
    let url = env.consent_url("alice").await;
    let (web, path) = common::consent::split(&url);
    let mut browser = common::consent::Browser::default();
    let post = browser.consent(web, &path).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = common::consent::split(&post.header("location").unwrap());
    let at_idp = web_request(idp, "GET", &authorize, None, None).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    // The admins narrow the policy: the handshake endpoint (a loopback address) is no
    // longer allowed; the API (by name) still is.
    env.tg
        .write_policy("10-test.toml", common::policies::LOCAL_BY_NAME);
    let reloaded = wait_until(DEADLINE, async || env.tg.policy_generation().await == 2).await;
    assert!(reloaded, "policy not reloaded");
    let (back, callback) = common::consent::split(&at_idp.header("location").unwrap());
    let r = browser.get(back, &callback).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("does not allow"), "{}", r.text());
    assert_eq!(env.p.hook_token_calls(), 0, "handshake endpoint reached");
    assert!(env.authorizations().await.is_empty());
    // The app is reported as broken, naming the refusal.
    let app = env.app().await;
    assert_eq!(app["status"], "broken", "{app}");
    assert!(
        app["problems"].to_string().contains("does not allow"),
        "{app}"
    );
}

#[tokio::test]
async fn the_address_guard_applies_to_the_exchange() {
    // `hooks` allows the name `localhost` but not private addresses: the handshake URL is
    // valid for the policy, and the address it resolves to is refused when dialing.
    let policy = format!(
        "{POLICY}
[[policy]]
name = \"hooks\"
route = \"direct\"
  [[policy.allow]]
  hosts = [\"localhost\"]
  ports = [\"1-65535\"]
"
    );
    let p = Provider::start().await;
    let tg = Tollgate::start(&policy, &[]);
    let admin = tg.admin_token("acme", "root");
    let mut spec = app_spec(&p);
    spec["webhook"]["egress_policy"] = json!("hooks");
    for step in ["token", "refresh"] {
        spec["webhook"][step]["url"] = json!(format!(
            "http://localhost:{}/handshake/{step}",
            p.addr.port()
        ));
    }
    let r = web_request(tg.web, "POST", "/v1/apps", Some(&admin), Some(&spec)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let env = Env { tg, p, admin };
    let b = env.browse("alice").await;
    assert_eq!(b.callback.status, 502, "{}", b.callback.text());
    for want in ["prohibited", "Nothing was stored"] {
        assert!(
            b.callback.text().contains(want),
            "{want:?} missing: {}",
            b.callback.text()
        );
    }
    assert_eq!(env.p.hook_token_calls(), 0, "loopback dialed");
    assert!(env.authorizations().await.is_empty());
}
