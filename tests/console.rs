//! The admin console (`/admin`) over HTTP, with the real `tollgate serve` and `--login
//! header` from loopback: who may enter (401 anonymous, 403 without the admin or operator
//! role), one org's admin never sees nor touches another's apps, every POST needs the
//! signed-in person's CSRF token, a GET never changes anything, and the whole app lifecycle
//! through the forms lands in the console's audit page. The deny log shows a request the
//! proxy really denied.

mod common;

use common::oauth::http;
use common::policies;
use common::*;

/// A `[[deny]]` rule for `tracker.example` and the policy `saas` (the token endpoints of the
/// catalog's GitHub entry); [`policies::LOCAL_BY_NAME`] is added to it.
const SAAS: &str = r#"
[[deny]]
hosts = ["tracker.example"]

[[policy]]
name = "saas"
route = "direct"
  [[policy.allow]]
  hosts = ["github.com", "api.github.com"]
  ports = [443]
"#;

fn start() -> Tollgate {
    Tollgate::start(
        &format!("{SAAS}{}", policies::LOCAL_BY_NAME),
        &[
            "--login",
            "header",
            "--login-user-header",
            "X-User",
            "--login-org-header",
            "X-Org",
            "--login-roles-header",
            "X-Roles",
        ],
    )
}

/// The login headers of `user` of `org` with `roles` (comma-separated).
fn who<'a>(user: &'a str, org: &'a str, roles: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("x-user", user), ("x-org", org), ("x-roles", roles)]
}

/// A GET to the console as `headers`.
async fn get(tg: &Tollgate, path: &str, headers: &[(&str, &str)]) -> Resp {
    http(tg.web, "GET", path, headers).await
}

/// A form POST to the console as `headers`.
async fn post(tg: &Tollgate, path: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Resp {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", tg.web.to_string())
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send_one(
        tg.web,
        req.body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await
}

/// The CSRF token of the first form of a console page.
async fn csrf(tg: &Tollgate, headers: &[(&str, &str)]) -> String {
    let page = get(tg, "/admin/apps/new?provider=github", headers).await;
    assert_eq!(page.status, 200, "{}", page.text());
    csrf_of(&page)
}

fn csrf_of(page: &Resp) -> String {
    let text = page.text();
    let at = text
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field: {text}"));
    let rest = &text[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Creates app `id` of acme from the catalog's GitHub entry as `admin`; returns the answer.
async fn create_github(tg: &Tollgate, admin: &[(&str, &str)], token: &str, id: &str) -> Resp {
    post(
        tg,
        "/admin/apps",
        admin,
        &[
            ("csrf", token),
            ("provider", "github"),
            ("id", id),
            ("client_id", "Iv1.console"),
            ("client_secret", "console-SECRET-123"),
            ("egress_policy", "saas"),
        ],
    )
    .await
}

/// The app as the admin API shows it to acme's admin.
async fn api_app(tg: &Tollgate, id: &str) -> Resp {
    let token = tg.admin_token("acme", "api");
    web_request(tg.web, "GET", &format!("/v1/apps/{id}"), Some(&token), None).await
}

/// The audit actions of acme, newest first (admin API).
async fn audit_actions(tg: &Tollgate) -> Vec<String> {
    let token = tg.admin_token("acme", "api");
    let r = web_request(tg.web, "GET", "/v1/audit", Some(&token), None).await;
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

fn assert_console_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let ps = r.header("proxy-status").unwrap_or_default();
    assert!(ps.contains(&format!("details=\"{code}\"")), "{ps}");
    assert!(r.text().contains(code), "{}", r.text());
}

#[tokio::test]
async fn who_may_enter() {
    let tg = start();
    // Nobody signed in: the login proxy is the one to sign people in.
    assert_console_error(&get(&tg, "/admin", &[]).await, 401, "not_signed_in");
    // Signed in without a console role.
    let plain = who("pat", "acme", "");
    assert_console_error(&get(&tg, "/admin", &plain).await, 403, "forbidden");
    assert_console_error(&get(&tg, "/admin/denials", &plain).await, 403, "forbidden");
    // A JSON client gets the same code as JSON.
    let mut json = plain.clone();
    json.push(("accept", "application/json"));
    let r = get(&tg, "/admin", &json).await;
    assert_eq!(r.json()["error"], "forbidden");
    // An admin of acme: the apps page, strict headers.
    let admin = who("alice", "acme", "admin");
    let r = get(&tg, "/admin", &admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Apps of acme"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    // An admin role without an org manages no apps.
    let no_org = vec![("x-user", "alice"), ("x-roles", "admin")];
    assert_eq!(get(&tg, "/admin", &no_org).await.status, 401);
    // An operator: agents and the deny log, no org's apps.
    let op = who("olga", "ops", "operator");
    assert_eq!(get(&tg, "/admin", &op).await.status, 200);
    assert_eq!(get(&tg, "/admin/agents", &op).await.status, 200);
    assert_console_error(&get(&tg, "/admin/apps/new", &op).await, 403, "forbidden");
    assert_console_error(&get(&tg, "/admin/audit", &op).await, 403, "forbidden");
    // Admins are not operators.
    assert_console_error(&get(&tg, "/admin/agents", &admin).await, 403, "forbidden");
}

#[tokio::test]
async fn every_post_needs_this_persons_csrf_token() {
    let tg = start();
    let alice = who("alice", "acme", "admin");
    let token = csrf(&tg, &alice).await;
    // Missing, wrong, another user's, the same user's of another org: refused, nothing made.
    let bob_token = csrf(&tg, &who("bob", "acme", "admin")).await;
    let other_org = csrf(&tg, &who("alice", "globex", "admin")).await;
    for bad in ["", "x", &bob_token, &other_org] {
        let r = create_github(&tg, &alice, bad, "gh").await;
        assert_console_error(&r, 403, "csrf_invalid");
    }
    assert_eq!(api_app(&tg, "gh").await.status, 404, "an app was created");
    // A form without the field at all.
    let r = post(&tg, "/admin/apps", &alice, &[("id", "gh")]).await;
    assert_console_error(&r, 403, "csrf_invalid");
    // The right token works.
    let r = create_github(&tg, &alice, &token, "gh").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/admin/apps/gh?done=created")
    );
    // Every action checks it too.
    for path in [
        "/admin/apps/gh/disable",
        "/admin/apps/gh",
        "/admin/apps/gh/revoke",
    ] {
        let r = post(&tg, path, &alice, &[("csrf", &bob_token), ("user", "x")]).await;
        assert_console_error(&r, 403, "csrf_invalid");
    }
    assert_eq!(api_app(&tg, "gh").await.json()["enabled"], true);
    let op = who("olga", "ops", "operator");
    let r = post(&tg, "/admin/agents/revoke", &op, &[("agent", "a1")]).await;
    assert_console_error(&r, 403, "csrf_invalid");
}

#[tokio::test]
async fn another_orgs_admin_can_neither_see_nor_touch() {
    let tg = start();
    let alice = who("alice", "acme", "admin");
    let token = csrf(&tg, &alice).await;
    assert_eq!(create_github(&tg, &alice, &token, "gh").await.status, 303);
    let mallory = who("mallory", "globex", "admin");
    let mtoken = csrf(&tg, &mallory).await;
    let list = get(&tg, "/admin", &mallory).await;
    assert_eq!(list.status, 200);
    assert!(!list.text().contains("Iv1.console") && !list.text().contains(">gh<"));
    for path in [
        "/admin/apps/gh",
        "/admin/apps/gh/disable",
        "/admin/apps/gh/authorizations",
        "/admin/apps/gh/revoke?user=alice",
    ] {
        assert_console_error(&get(&tg, path, &mallory).await, 404, "not_found");
    }
    for (path, extra) in [
        ("/admin/apps/gh/disable", ("x", "")),
        ("/admin/apps/gh/reset", ("x", "")),
        ("/admin/apps/gh/delete", ("confirm_id", "gh")),
        ("/admin/apps/gh", ("client_id", "stolen")),
        ("/admin/apps/gh/revoke", ("user", "alice")),
    ] {
        let r = post(&tg, path, &mallory, &[("csrf", &mtoken), extra]).await;
        assert_console_error(&r, 404, "not_found");
    }
    let app = api_app(&tg, "gh").await.json();
    assert_eq!(app["enabled"], true);
    assert_eq!(app["client_id"], "Iv1.console");
    assert_eq!(audit_actions(&tg).await, ["app.create"]);
    // globex's audit page shows none of acme's events.
    let audit = get(&tg, "/admin/audit", &mallory).await;
    assert!(
        audit.text().contains("No events match."),
        "{}",
        audit.text()
    );
}

#[tokio::test]
async fn a_get_never_changes_anything() {
    let tg = start();
    let alice = who("alice", "acme", "admin");
    let token = csrf(&tg, &alice).await;
    assert_eq!(create_github(&tg, &alice, &token, "gh").await.status, 303);
    for path in [
        "/admin/apps/gh/disable",
        "/admin/apps/gh/reset",
        "/admin/apps/gh/delete",
        "/admin/apps/gh/revoke?user=alice",
        "/admin/apps/gh?client_id=changed",
    ] {
        let r = get(&tg, path, &alice).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.text().contains("<form method=\"post\""),
            "{path}: a confirmation"
        );
    }
    let op = who("olga", "ops", "operator");
    assert_eq!(
        get(&tg, "/admin/agents/revoke?agent=a1", &op).await.status,
        200
    );
    let app = api_app(&tg, "gh").await.json();
    assert_eq!(app["enabled"], true);
    assert_eq!(app["client_id"], "Iv1.console");
    assert_eq!(audit_actions(&tg).await, ["app.create"]);
    // Posting to a confirmation's address without the typed id deletes nothing.
    let r = post(&tg, "/admin/apps/gh/delete", &alice, &[("csrf", &token)]).await;
    assert_console_error(&r, 400, "confirmation_required");
    assert_eq!(api_app(&tg, "gh").await.status, 200);
}

#[tokio::test]
async fn the_app_lifecycle_through_the_forms_is_audited() {
    let tg = start();
    let alice = who("alice", "acme", "admin");
    let token = csrf(&tg, &alice).await;
    // A refused form comes back with the messages, escaped, and never the secret.
    let r = post(
        &tg,
        "/admin/apps",
        &alice,
        &[
            ("csrf", &token),
            ("provider", "github"),
            ("id", "bad id<script>"),
            ("client_secret", "never-SHOWN-456"),
            ("egress_policy", "nope"),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("bad id&lt;script&gt;") && !text.contains("<script>"),
        "{text}"
    );
    assert!(
        text.contains("egress_policy") && !text.contains("never-SHOWN-456"),
        "{text}"
    );

    assert_eq!(create_github(&tg, &alice, &token, "gh").await.status, 303);
    let app = api_app(&tg, "gh").await.json();
    assert_eq!(
        app["authorize_url"],
        "https://github.com/login/oauth/authorize"
    );
    assert_eq!(app["client_secret_set"], true);
    let page = get(&tg, "/admin/apps/gh?done=created", &alice).await;
    assert!(page.text().contains("App created."));
    assert!(
        !page.text().contains("console-SECRET-123"),
        "the secret shown"
    );

    // Edit: domains change, the empty secret field keeps the stored secret.
    let edit = [
        ("csrf", token.as_str()),
        ("name", "GitHub"),
        ("client_id", "Iv1.console"),
        ("client_secret", ""),
        ("authorize_url", "https://github.com/login/oauth/authorize"),
        ("token_url", "https://github.com/login/oauth/access_token"),
        ("scopes", "repo read:user"),
        ("domains", "api.github.com uploads.github.com"),
        ("egress_policy", "saas"),
    ];
    let r = post(&tg, "/admin/apps/gh", &alice, &edit).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let app = api_app(&tg, "gh").await.json();
    assert_eq!(
        app["domains"],
        serde_json::json!(["api.github.com", "uploads.github.com"])
    );
    assert_eq!(app["client_secret_set"], true);
    // Moving the token endpoint to another host needs the secret again.
    let mut moved = edit.to_vec();
    moved[5] = ("token_url", "https://elsewhere.example/token");
    let r = post(&tg, "/admin/apps/gh", &alice, &moved).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("client_secret"), "{}", r.text());

    for action in ["disable", "enable", "reset"] {
        let r = post(
            &tg,
            &format!("/admin/apps/gh/{action}"),
            &alice,
            &[("csrf", &token)],
        )
        .await;
        assert_eq!(r.status, 303, "{action}: {}", r.text());
    }
    let r = post(
        &tg,
        "/admin/apps/gh/delete",
        &alice,
        &[("csrf", &token), ("confirm_id", "gh")],
    )
    .await;
    assert_eq!(r.header("location").as_deref(), Some("/admin?done=delete"));
    assert_eq!(api_app(&tg, "gh").await.status, 404);

    let audit = get(&tg, "/admin/audit", &alice).await.text();
    for action in [
        "app.create",
        "app.update",
        "app.disable",
        "app.enable",
        "app.reset",
        "app.delete",
    ] {
        assert!(
            audit.contains(&format!(">{action}<")),
            "{action} missing: {audit}"
        );
    }
    // Filters: one action, a family, an app nobody touched, a bad time.
    let only = get(&tg, "/admin/audit?action=app.delete", &alice)
        .await
        .text();
    assert!(only.contains(">app.delete<") && !only.contains(">app.create<"));
    let family = get(&tg, "/admin/audit?action=app.&user=alice", &alice)
        .await
        .text();
    assert!(family.contains(">app.create<") && family.contains(">app.delete<"));
    let none = get(&tg, "/admin/audit?app=other", &alice).await.text();
    assert!(none.contains("No events match."));
    let future = get(&tg, "/admin/audit?since=2999-01-01", &alice)
        .await
        .text();
    assert!(future.contains("No events match."));
    let bad = get(&tg, "/admin/audit?since=yesterday", &alice).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_deny_log_shows_real_denials_by_org() {
    let tg = start();
    let acme = format!("Bearer {}", tg.token("acme", "alice"));
    let globex = format!("Bearer {}", tg.token("globex", "gus"));
    for (auth, host) in [
        (&acme, "acme-denied.example"),
        (&globex, "globex-denied.example"),
        (&acme, "tracker.example"),
    ] {
        let uri = format!("http://{host}/secret/path?token=hidden");
        let r = proxy_request(tg.proxy, "GET", &uri, &[("proxy-authorization", auth)], "").await;
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let op = who("olga", "ops", "operator");
    // The line is written when the request's context ends: poll for it.
    let seen = wait_until(std::time::Duration::from_secs(5), async || {
        let page = get(&tg, "/admin/denials", &op).await.text();
        page.contains("globex-denied.example") && page.contains("tracker.example")
    })
    .await;
    assert!(seen, "the operator's deny log misses the denial");
    let page = get(&tg, "/admin/denials", &op).await.text();
    assert!(
        page.contains("acme-denied.example:80/secret/path"),
        "{page}"
    );
    assert!(!page.contains("token=hidden"), "the query leaked");
    assert!(page.contains("gus (globex)"));
    // A [[deny]] rule's denial names the rule (file:line) and the reason.
    let row = page
        .split("<tr>")
        .find(|r| r.contains("tracker.example"))
        .unwrap_or_else(|| panic!("no tracker row: {page}"));
    assert!(row.contains("10-test.toml:2"), "{row}");
    // acme's admin sees acme's callers only.
    let admin = get(&tg, "/admin/denials", &who("alice", "acme", "admin"))
        .await
        .text();
    assert!(admin.contains("acme-denied.example"));
    assert!(
        !admin.contains("globex-denied.example"),
        "another org's denial shown"
    );
}

#[tokio::test]
async fn policies_and_explain() {
    let tg = start();
    let alice = who("alice", "acme", "admin");
    let page = get(&tg, "/admin/policies", &alice).await.text();
    assert!(
        page.contains(">saas<") && page.contains(">local<"),
        "{page}"
    );
    assert!(page.contains("10-test.toml:"), "{page}");
    let r = get(
        &tg,
        "/admin/policies?target=https%3A%2F%2Fapi.github.com%2F",
        &alice,
    )
    .await;
    let text = r.text();
    assert!(
        text.contains("<dd>allowed</dd>") && text.contains("<dd>saas</dd>"),
        "{text}"
    );
    let r = get(
        &tg,
        "/admin/policies?target=https%3A%2F%2Fevil.example%2F",
        &alice,
    )
    .await;
    assert!(r.text().contains("<dd>denied</dd>"), "{}", r.text());
    let r = get(&tg, "/admin/policies?target=not%20a%20target", &alice).await;
    assert!(r.text().contains("field-error"), "{}", r.text());
    // A broken edit: the load error with its file and line; the old set stays.
    let generation = tg.policy_generation().await;
    tg.write_policy("20-broken.toml", "[[policy]]\nname = 1\n");
    let shown = wait_until(std::time::Duration::from_secs(10), async || {
        get(&tg, "/admin/policies", &alice)
            .await
            .text()
            .contains("20-broken.toml:")
    })
    .await;
    assert!(shown, "the load error is not shown");
    assert_eq!(tg.policy_generation().await, generation);
}

#[tokio::test]
async fn operators_revoke_agents_after_confirming() {
    let tg = start();
    let op = who("olga", "ops", "operator");
    let page = get(&tg, "/admin/agents", &op).await;
    assert!(
        page.text().contains("No agent is connected."),
        "{}",
        page.text()
    );
    let token = csrf_of(&get(&tg, "/admin/agents/revoke?agent=edge-1", &op).await);
    let r = post(
        &tg,
        "/admin/agents/revoke",
        &op,
        &[("csrf", &token), ("agent", "edge-1")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/admin/agents?revoked=edge-1")
    );
    let bad = post(
        &tg,
        "/admin/agents/revoke",
        &op,
        &[("csrf", &token), ("agent", "")],
    )
    .await;
    assert_console_error(&bad, 400, "invalid_request");
}
