//! Sign-in for the pages (`--login`): who is at a consent page must be the ticket's user, and
//! nobody can claim to be someone else. Each test starts the real `tollgate` with an
//! in-process OAuth provider (the app being consented to) and, for `--login oidc`, an
//! in-process OpenID Provider ([`common::idp`]).
//!
//! The settings that are new are given as environment variables where that lets the test
//! run against a build without them too: such a build ignores them, and the test shows the
//! hole (a forged header believed, a forged cookie accepted) instead of failing to start.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::idp::{Bend, Idp, CLIENT_SECRET};
use common::login::*;
use common::oauth::{http, now, setup_env, split, Env};
use common::policies::LOCAL as POLICY;
use common::*;

/// A provider, tollgate with `flags` and `env`, and acme's app `crm`.
async fn start(flags: &[&str], env: &[(&str, &str)]) -> Env {
    setup_env(flags, env, |_, _| {}).await
}

/// Whether `r` is the consent page itself (the Authorize form), rather than a refusal.
fn is_consent_page(r: &Resp) -> bool {
    r.status == 200 && r.text().contains("<form method=\"post\"")
}

/// Whether `r` sends the browser on to the app's provider (an authorization started).
fn sent_to_provider(r: &Resp, env: &Env) -> bool {
    r.header("location")
        .is_some_and(|l| l.starts_with(&env.p.issuer()))
}

#[tokio::test]
async fn forged_login_header_from_an_untrusted_peer_is_ignored() {
    // The test connects from 127.0.0.1, which 10.0.0.0/8 does not contain: its header is
    // what anyone on the network could send.
    let env = start(
        &["--consent-user-header", "X-Forwarded-User"],
        &[("TOLLGATE_TRUSTED_PROXIES", "10.0.0.0/8")],
    )
    .await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let forged = [("x-forwarded-user", "alice")];
    let page = http(web, "GET", &path, &forged).await;
    assert!(
        !is_consent_page(&page),
        "forged header believed: {}",
        page.text()
    );
    let post = http(web, "POST", &path, &forged).await;
    assert!(
        !sent_to_provider(&post, &env),
        "forged header started an authorization"
    );

    // From a trusted peer (loopback, the default), the same headers sign alice in, and the
    // org header must match the ticket's org.
    let env = start(
        &[
            "--login",
            "header",
            "--login-user-header",
            "X-Forwarded-User",
            "--login-org-header",
            "X-Forwarded-Org",
        ],
        &[],
    )
    .await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let alice = [("x-forwarded-user", "alice"), ("x-forwarded-org", "acme")];
    assert!(is_consent_page(&http(web, "GET", &path, &alice).await));
    let other_org = [("x-forwarded-user", "alice"), ("x-forwarded-org", "other")];
    let r = http(web, "GET", &path, &other_org).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let no_org = [("x-forwarded-user", "alice")];
    assert!(!is_consent_page(&http(web, "GET", &path, &no_org).await));
    let (r, _) = env.complete(&url, &alice).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.call("acme", "alice").await.status, 200);
}

#[tokio::test]
async fn consent_user_header_alias_still_works() {
    let env = start(&["--consent-user-header", "X-Forwarded-User"], &[]).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    assert!(is_consent_page(
        &http(web, "GET", &path, &[("x-forwarded-user", "alice")]).await
    ));
    for headers in [&[][..], &[("x-forwarded-user", "mallory")][..]] {
        let r = http(web, "GET", &path, headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
    }
}

/// Runs `tollgate serve` with `args` and returns its exit code and stderr, or `None` when it
/// is still running after a few seconds (it started).
fn serve_exit(args: &[&str], env: &[(&str, &str)]) -> Option<(i32, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_command(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return Some((status.code().unwrap_or(-1), err));
        }
        std::thread::sleep(POLL_EVERY);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test]
async fn implicit_login_none_is_refused_off_loopback() {
    for url in ["https://tollgate.example", "http://192.0.2.10:8080"] {
        let refused = serve_exit(&["--public-url", url], &[]);
        let Some((code, err)) = refused else {
            panic!("serve started with no sign-in for the public URL {url}");
        };
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--login"), "{err}");
    }
    // Explicitly asked for: it starts, and says what that means.
    let tg = Tollgate::start(
        POLICY,
        &["--public-url", "http://192.0.2.10:8080", "--login", "none"],
    );
    assert!(
        wait_until(Duration::from_secs(10), async || tg
            .logs()
            .contains("--login none"))
        .await,
        "no warning: {}",
        tg.logs()
    );
    // A loopback public URL needs nothing.
    assert_eq!(
        serve_exit(&["--public-url", "http://localhost:8080"], &[]),
        None
    );
}

#[tokio::test]
async fn tampered_expired_or_foreign_session_cookies_are_anonymous() {
    let idp = Idp::start().await;
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let data = env.tg.data.clone();
    let later = now() + 3600;

    for garbage in ["", "v1.x.y.z", "alice"] {
        let r = get_signed_in(web, &path, garbage).await;
        assert!(!is_consent_page(&r), "cookie {garbage:?} accepted");
    }
    let alice = mint_session(&data, "alice", Some("acme"), later);
    assert!(
        is_consent_page(&get_signed_in(web, &path, &alice).await),
        "a valid session is not accepted, so the refusals below prove nothing"
    );
    // Claims changed under the same MAC.
    let parts: Vec<&str> = alice.split('.').collect();
    let forged_claims = mint_session(&data, "alice", None, later + 86400 * 365);
    let forged_payload = forged_claims.split('.').nth(2).unwrap();
    let tampered = format!("{}.{}.{forged_payload}.{}", parts[0], parts[1], parts[3]);
    let expired = mint_session(&data, "alice", Some("acme"), now() - 1);
    let other_key_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other_key_dir.path().join("keys")).unwrap();
    std::fs::write(other_key_dir.path().join("keys/session.key"), "f00d\n").unwrap();
    let foreign = mint_session(other_key_dir.path(), "alice", Some("acme"), later);
    let bob = mint_session(&data, "bob", Some("acme"), later);
    let other_org = mint_session(&data, "alice", Some("other"), later);
    for (what, cookie) in [
        ("tampered", &tampered),
        ("expired", &expired),
        ("signed with another key", &foreign),
        ("bob's", &bob),
        ("another org's", &other_org),
    ] {
        let r = get_signed_in(web, &path, cookie).await;
        assert!(!is_consent_page(&r), "{what} session accepted");
        let post = http(
            web,
            "POST",
            &path,
            &[("cookie", &format!("tollgate_session={cookie}"))],
        )
        .await;
        assert!(
            !sent_to_provider(&post, &env),
            "{what} session started an authorization"
        );
    }
    // None of that consumed the ticket.
    assert!(is_consent_page(&get_signed_in(web, &path, &alice).await));
}

#[tokio::test]
async fn oidc_sign_in_binds_the_consent_page_to_the_person() {
    let idp = Idp::start().await;
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);

    let alice = sign_in(web, &idp, &path).await;
    assert_eq!(alice.callback.status, 303, "{}", alice.callback.text());
    assert_eq!(alice.callback.header("location").unwrap(), path);
    let line = cookie_line(&alice.callback, "tollgate_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=28800"] {
        assert!(line.contains(attr), "{attr} missing: {line}");
    }
    assert!(
        !line.contains("Secure"),
        "Secure over a plain-http public URL: {line}"
    );
    assert_eq!(
        cookie_value(&alice.callback, "tollgate_login").as_deref(),
        Some(""),
        "the login-state cookie is not cleared"
    );
    let login_line = cookie_line(&alice.login, "tollgate_login").unwrap();
    assert!(
        login_line.contains("HttpOnly") && login_line.contains("Max-Age=600"),
        "{login_line}"
    );
    let q = idp.with(|s| s.last_authorize.clone());
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert!(get("nonce").is_some_and(|n| n.len() >= 43), "{q:?}");
    assert_eq!(
        get("redirect_uri"),
        Some(format!("http://{web}/login/callback"))
    );
    let session = alice.session.unwrap();
    let page = get_signed_in(web, &path, &session).await;
    assert!(is_consent_page(&page), "{}", page.text());

    // Bob, signed in for real, gets no further with alice's link.
    idp.with(|s| s.user = "bob".into());
    let bob = sign_in(web, &idp, &path).await;
    let r = get_signed_in(web, &path, &bob.session.unwrap()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        idp.with(|s| s.violations.is_empty()),
        "{:?}",
        idp.with(|s| s.violations.clone())
    );

    // Neither the client secret nor a session is ever logged.
    let logged = async || env.tg.logs().matches("signed in at the pages").count() == 2;
    assert!(wait_until(Duration::from_secs(10), logged).await);
    let logs = env.tg.logs();
    assert!(
        !logs.contains(CLIENT_SECRET) && !logs.contains(&session),
        "{logs}"
    );

    // Another site cannot sign the person out: a cross-site POST is refused and keeps the
    // cookie (browsers send `Sec-Fetch-Site` on every request).
    let out = http(web, "POST", "/logout", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(out.status, 403);
    let page = String::from_utf8_lossy(&out.body);
    assert!(page.contains("logout_cross_site"), "{page}");
    let status = out.header("proxy-status").unwrap_or_default();
    assert!(status.contains("logout_cross_site"), "{status:?}");
    assert_eq!(cookie_value(&out, "tollgate_session"), None);

    // Signing out clears the cookie.
    let out = http(web, "POST", "/logout", &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(out.status, 200);
    assert_eq!(cookie_value(&out, "tollgate_session").as_deref(), Some(""));
}

#[tokio::test]
async fn login_return_stays_on_this_origin() {
    let idp = Idp::start().await;
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let web = env.tg.web;
    for evil in [
        "https://evil.example/x",
        "//evil.example/x",
        "/\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
    ] {
        let s = sign_in(web, &idp, evil).await;
        assert_eq!(s.callback.status, 303, "{evil}: {}", s.callback.text());
        assert_eq!(
            s.callback.header("location").as_deref(),
            Some("/"),
            "{evil}"
        );
    }
    let s = sign_in(web, &idp, "/connections?tab=2").await;
    assert_eq!(
        s.callback.header("location").as_deref(),
        Some("/connections?tab=2")
    );
}

#[tokio::test]
async fn forged_id_tokens_and_foreign_callbacks_are_refused() {
    let idp = Idp::start().await;
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let web = env.tg.web;
    for bend in [
        Bend::Nonce,
        Bend::NoNonce,
        Bend::Audience,
        Bend::Issuer,
        Bend::Expired,
        Bend::ForeignKey,
        Bend::AlgNone,
        Bend::Hmac,
        Bend::UnknownKid,
        Bend::UnknownKid,
    ] {
        idp.with(|s| s.bend = bend);
        let s = sign_in(web, &idp, "/").await;
        assert_eq!(s.callback.status, 502, "{bend:?}: {}", s.callback.text());
        assert!(s.callback.text().contains("login_failed"), "{bend:?}");
        let status = s.callback.header("proxy-status").unwrap_or_default();
        assert!(status.contains("login_failed"), "{bend:?}: {status:?}");
        assert!(s.session.is_none(), "{bend:?} gave a session");
    }
    // Unknown key ids refetch the JWKS at most once a minute.
    assert_eq!(idp.with(|s| s.jwks_calls), 1);
    idp.with(|s| s.bend = Bend::None);
    assert!(sign_in(web, &idp, "/").await.session.is_some());

    // A callback this browser did not start (login CSRF: the attacker's own code and state
    // sent to the victim) is refused, with or without another sign-in's cookie.
    let q = "return=%2F";
    let started = http(web, "GET", &format!("/login?{q}"), &[]).await;
    let (_, authorize) = split(&started.header("location").unwrap());
    let at_idp = http(idp.addr, "GET", &authorize, &[]).await;
    let (_, callback) = split(&at_idp.header("location").unwrap());
    let other = http(web, "GET", &format!("/login?{q}"), &[]).await;
    let other_cookie = format!(
        "tollgate_login={}",
        cookie_value(&other, "tollgate_login").unwrap()
    );
    for headers in [&[][..], &[("cookie", other_cookie.as_str())][..]] {
        let r = http(web, "GET", &callback, headers).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("login_state_invalid"));
        let status = r.header("proxy-status").unwrap_or_default();
        assert!(status.contains("login_state_invalid"), "{status:?}");
        assert!(cookie_value(&r, "tollgate_session").is_none());
    }
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let idp = Idp::start().await;
    idp.with(|s| s.discovery_issuer = Some("https://evil.example".into()));
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let r = http(env.tg.web, "GET", "/login?return=%2F", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("login_unavailable"));
    assert!(r.header("location").is_none());
    assert!(
        wait_until(Duration::from_secs(10), async || env
            .tg
            .logs()
            .contains("evil.example"))
        .await,
        "{}",
        env.tg.logs()
    );
}

#[tokio::test]
async fn oidc_org_claim_binds_the_org() {
    let idp = Idp::start().await;
    let flags = ["--login-oidc-org-claim", "org"];
    let (env, _secret) = start_oidc(&idp, &flags).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    // alice of another org is not acme's alice.
    idp.with(|s| s.extra = serde_json::json!({"org": "other"}));
    let other = sign_in(web, &idp, &path).await;
    let r = get_signed_in(web, &path, &other.session.unwrap()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Without the org claim, nobody is signed in.
    idp.with(|s| s.extra = serde_json::json!({}));
    let none = sign_in(web, &idp, &path).await;
    assert_eq!(none.callback.status, 502, "{}", none.callback.text());
    assert!(none.session.is_none());
    idp.with(|s| s.extra = serde_json::json!({"org": "acme"}));
    let acme = sign_in(web, &idp, &path).await;
    let r = get_signed_in(web, &path, &acme.session.unwrap()).await;
    assert!(is_consent_page(&r), "{}", r.text());
}
