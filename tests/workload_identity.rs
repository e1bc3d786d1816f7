//! Workload identities from OIDC issuers (`[[identity.issuer]]`): GitHub-Actions-shaped tokens
//! signed with ES256, RS256 and EdDSA keys generated here (a fixed RSA test key), their JWKS
//! served on 127.0.0.1 and fetched through the entry's egress policy. Accepted tokens are
//! callers `gha:<actor>` in the `repository_owner` org with the entry's fixed roles (never the
//! token's); every refused one is a `407` naming why in the access line, never the token.

mod common;

use std::time::Duration;

use common::workload::{gha_claims, gha_config, Jwks};
use common::*;
use serde_json::json;

/// The JWKS server, the echo upstream and the callers' destinations are all on loopback:
/// one global policy named `jwks` allows them.
const LOCAL: &str = r#"
[[policy]]
name = "jwks"
route = "direct"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]

[[policy]]
name = "elsewhere"
route = "direct"

  [[policy.allow]]
  hosts = ["api.example.com"]
"#;

const OWNER_ID: &str = "4242";

/// tollgate with `config` as its `--config` file, JSON logs.
fn start(config: &str) -> Tollgate {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("10-test.toml"), LOCAL).unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_string();
    Tollgate::start_in(dir, &["--config", &path, "--log-format", "json"])
}

async fn get_via(tg: &Tollgate, url: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    proxy_request(tg.proxy, "GET", url, &[("proxy-authorization", &auth)], "").await
}

/// Waits for an access line with all of `needles`.
async fn logged(tg: &Tollgate, needles: &[&str]) -> bool {
    wait_until(Duration::from_secs(5), async || {
        tg.logs()
            .lines()
            .any(|l| l.contains("tollgate::access") && needles.iter().all(|n| l.contains(n)))
    })
    .await
}

#[tokio::test]
async fn github_actions_tokens_are_callers_with_the_entrys_roles() {
    let jwks = Jwks::start().await;
    let tg = start(&gha_config(&jwks.url(), OWNER_ID));
    let up = echo_upstream().await;
    let url = format!("http://127.0.0.1:{}/build", up.port());

    // The token claims admin and operator roles: ignored.
    let mut claims = gha_claims("octocat", "octo-org", OWNER_ID);
    claims["roles"] = json!(["admin", "operator"]);
    let es = jwks.sign("es-1", &claims);
    let r = get_via(&tg, &url, &es).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwks.calls(), 1);
    assert!(
        logged(
            &tg,
            &[
                "\"user\":\"gha:octocat\"",
                "\"org\":\"octo-org\"",
                "\"decision\":\"allowed\""
            ]
        )
        .await,
        "{}",
        tg.logs()
    );
    // The same caller at the API: the entry's roles (`ci`), not the token's.
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&es), None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = web_request(tg.web, "GET", "/v1/agents", Some(&es), None).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // RS256 and EdDSA keys of the same set: no second fetch.
    for kid in ["rs-1", "ed-1"] {
        let token = jwks.sign(kid, &gha_claims("hubot", "octo-org", OWNER_ID));
        let r = get_via(&tg, &url, &token).await;
        assert_eq!(r.status, 200, "{kid}: {}", r.text());
    }
    assert!(logged(&tg, &["\"user\":\"gha:hubot\""]).await);
    assert_eq!(jwks.calls(), 1);

    // A CONNECT with the token as Basic password works too.
    let basic = format!("Basic {}", base64_encode(&format!(":{es}")));
    let tcp = tcp_echo().await;
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &tcp.to_string(),
        &[("proxy-authorization", &basic)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_echoes(&mut tunnel.unwrap(), b"ping").await;
    assert!(!tg.logs().contains(&es), "token logged");
}

#[tokio::test]
async fn the_entrys_fixed_roles_hold_at_the_admin_api_from_the_first_use() {
    let jwks = Jwks::start().await;
    let tg = start(
        &gha_config(&jwks.url(), OWNER_ID).replace(r#"roles = ["ci"]"#, r#"roles = ["admin"]"#),
    );
    // No proxied request first: the admin API fetches the keys itself.
    let token = jwks.sign("ed-1", &gha_claims("octocat", "octo-org", OWNER_ID));
    let r = web_request(tg.web, "GET", "/v1/apps", Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwks.calls(), 1);
    // Not the operator role, which the entry does not grant.
    let r = web_request(tg.web, "GET", "/v1/agents", Some(&token), None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A refused token is a 401 naming why.
    let mut claims = gha_claims("octocat", "octo-org", OWNER_ID);
    claims["aud"] = json!("elsewhere");
    let r = web_request(
        tg.web,
        "GET",
        "/v1/apps",
        Some(&jwks.sign("ed-1", &claims)),
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("wrong audience"), "{}", r.text());
}

#[tokio::test]
async fn refused_tokens_get_407_with_the_reason_logged() {
    let jwks = Jwks::start().await;
    let tg = start(&gha_config(&jwks.url(), OWNER_ID));
    let up = echo_upstream().await;
    let url = format!("http://127.0.0.1:{}/build", up.port());
    let now = common::oauth::now();
    let good = || gha_claims("octocat", "octo-org", OWNER_ID);

    let mut cases = Vec::new();
    cases.push((
        gha_claims("mallory", "evil-org", "666"),
        "a required claim does not match",
    ));
    let mut c = good();
    c["aud"] = json!("https://someone-else.example");
    cases.push((c, "wrong audience"));
    let mut c = good();
    c["exp"] = json!(now - 60);
    cases.push((c, "token expired"));
    let mut c = good();
    c["nbf"] = json!(now + 600);
    cases.push((c, "not valid yet"));
    let mut c = good();
    c["iss"] = json!("https://gitlab.example.com");
    cases.push((c, "the token's issuer is not configured"));
    let mut c = good();
    c.as_object_mut().unwrap().remove("actor");
    cases.push((c, "a user or org claim is missing"));
    for (claims, why) in cases {
        let token = jwks.sign("es-1", &claims);
        let r = get_via(&tg, &url, &token).await;
        let body = assert_proxy_error(&r, 407, "proxy_auth_required");
        assert!(r.text().contains(why), "{why}: {body}");
        assert!(!r.text().contains(&token));
        // The access line's reason: which check failed, never the token.
        let reason = if why == "token expired" {
            "token_expired".to_string()
        } else {
            format!("token_refused: {why}")
        };
        assert!(
            logged(&tg, &[&format!("\"reason\":\"{reason}"), "\"status\":407"]).await,
            "{why}: {}",
            tg.logs()
        );
    }
    // Only the unknown issuer's token never needed the keys; the others fetched them once.
    assert_eq!(jwks.calls(), 1);

    // An unknown kid: the set was fetched moments ago, so no refetch within 30 s.
    jwks.rotated
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let rotated = jwks.sign("es-2", &good());
    for _ in 0..3 {
        let r = get_via(&tg, &url, &rotated).await;
        assert_proxy_error(&r, 407, "proxy_auth_required");
        assert!(r.text().contains("unknown signing key"), "{}", r.text());
    }
    assert_eq!(jwks.calls(), 1);
    // A token signed by a key outside the set under a known kid: a bad signature.
    let forged = {
        let other = Jwks::start().await;
        other.sign("es-1", &good())
    };
    let r = get_via(&tg, &url, &forged).await;
    assert_proxy_error(&r, 407, "proxy_auth_required");
    assert!(r.text().contains("invalid token"), "{}", r.text());
    assert!(!tg.logs().contains(&forged));
}

#[tokio::test]
async fn an_unknown_kid_first_fetches_once_then_is_refused() {
    let jwks = Jwks::start().await;
    let tg = start(&gha_config(&jwks.url(), OWNER_ID));
    let up = echo_upstream().await;
    let url = format!("http://127.0.0.1:{}/", up.port());
    let token = jwks.sign("es-9", &gha_claims("octocat", "octo-org", OWNER_ID));
    for _ in 0..3 {
        let r = get_via(&tg, &url, &token).await;
        assert_proxy_error(&r, 407, "proxy_auth_required");
        assert!(r.text().contains("unknown signing key"), "{}", r.text());
    }
    assert_eq!(
        jwks.calls(),
        1,
        "one fetch for an unknown kid, then none within 30 s"
    );
    // The set it fetched serves the known keys.
    let good = jwks.sign("es-1", &gha_claims("octocat", "octo-org", OWNER_ID));
    assert_eq!(get_via(&tg, &url, &good).await.status, 200);
    assert_eq!(jwks.calls(), 1);
}

#[tokio::test]
async fn the_jwks_is_fetched_only_through_its_egress_policy() {
    let jwks = Jwks::start().await;
    let config = gha_config(&jwks.url(), OWNER_ID)
        .replace("egress_policy = \"jwks\"", "egress_policy = \"elsewhere\"");
    let tg = start(&config);
    let up = echo_upstream().await;
    let url = format!("http://127.0.0.1:{}/", up.port());
    let token = jwks.sign("es-1", &gha_claims("octocat", "octo-org", OWNER_ID));
    let r = get_via(&tg, &url, &token).await;
    assert_proxy_error(&r, 407, "proxy_auth_required");
    assert!(r.text().contains("keys are unavailable"), "{}", r.text());
    assert_eq!(jwks.calls(), 0);
    let warned = wait_until(Duration::from_secs(5), async || {
        tg.logs().contains("could not fetch the issuer's JWKS")
    })
    .await;
    assert!(warned, "{}", tg.logs());
}

#[test]
fn a_shared_issuer_without_require_is_rejected_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let config = gha_config("http://127.0.0.1:9/jwks", OWNER_ID);
    let without = &config[..config.find("  [identity.issuer.require]").unwrap()];
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, without).unwrap();
    let out = serve_command(dir.path())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.issuer[0]") && err.contains("require"),
        "{err}"
    );
}
