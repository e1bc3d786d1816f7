//! Consent bound to the signed-in user and to the browser, and tickets that cannot flood the
//! store (issue 13). The real `tollgate` with the platform's login header
//! (`--consent-user-header X-Forwarded-User`, trusted from loopback), the in-process provider,
//! and browsers that keep tollgate's `tollgate_consent` cookie.

mod common;

use common::consent::Browser;
use common::oauth::*;
use common::*;

const LOGIN: [&str; 2] = ["--consent-user-header", "X-Forwarded-User"];

/// The error code a consent page names (HTML for browsers; the code must appear).
fn assert_refused(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(r.text().contains(code), "{code} not named:\n{}", r.text());
}

#[tokio::test]
async fn a_link_minted_for_alice_cannot_be_completed_by_bob() {
    let env = setup(&LOGIN, |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);

    // Bob at the page and at the Authorize POST.
    let mut bob = Browser::signed_in("bob");
    let (page, csrf) = bob.open(web, &path).await;
    assert_refused(&page, 403, "consent_user_mismatch");
    assert!(csrf.is_none(), "the refused page offers no Authorize form");
    let post = bob.authorize(web, &path, None).await;
    assert_refused(&post, 403, "consent_user_mismatch");
    // A client asking for JSON gets the code as JSON, with Proxy-Status.
    let mut api = Browser::signed_in("bob");
    api.headers
        .push(("accept".into(), "application/json".into()));
    let r = api.get(web, &path).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "consent_user_mismatch");
    assert_eq!(
        r.header("proxy-status").unwrap(),
        "tollgate; error=http_request_denied; details=\"consent_user_mismatch\""
    );

    // Alice starts the authorization; bob completes the callback in alice's browser session
    // (the cookie came along) but signed in as himself.
    let mut alice = Browser::signed_in("alice");
    let callback = env.to_callback(&mut alice, &url).await;
    let mut bob_with_cookie = alice.clone();
    bob_with_cookie.headers = Browser::signed_in("bob").headers;
    let r = bob_with_cookie.get(web, &callback).await;
    assert_refused(&r, 403, "consent_user_mismatch");
    assert_eq!(env.p.with(|s| s.code_calls), 0, "the code was exchanged");
    assert!(
        env.authorizations("crm").await.is_empty(),
        "stored for alice"
    );
    // The state was consumed: alice herself cannot use it any more.
    let again = alice.get(web, &callback).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(env.authorizations("crm").await.is_empty());
    assert_eq!(env.call("acme", "alice").await.status, 401);
}

#[tokio::test]
async fn mallorys_link_opened_by_a_victim_is_refused() {
    let env = setup(&LOGIN, |_, _| {}).await;
    let url = env.consent_url("acme", "mallory").await;
    let (web, path) = split(&url);
    let mut victim = Browser::signed_in("alice");
    let (page, _) = victim.open(web, &path).await;
    assert_refused(&page, 403, "consent_user_mismatch");
    let post = victim.authorize(web, &path, None).await;
    assert_refused(&post, 403, "consent_user_mismatch");

    // Mallory starts it herself and sends the victim the provider's way back.
    let mut mallory = Browser::signed_in("mallory");
    let callback = env.to_callback(&mut mallory, &url).await;
    let r = victim.get(web, &callback).await;
    assert_refused(&r, 403, "consent_user_mismatch");
    assert_eq!(env.p.with(|s| s.code_calls), 0);
    assert!(
        env.authorizations("crm").await.is_empty(),
        "stored for mallory"
    );
}

#[tokio::test]
async fn no_sign_in_with_a_login_configured_is_refused() {
    let env = setup(&LOGIN, |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let mut anonymous = Browser::default();
    let (page, _) = anonymous.open(web, &path).await;
    assert_refused(&page, 403, "consent_user_mismatch");
    assert!(page.text().contains("Sign in"), "{}", page.text());
    assert_refused(
        &anonymous.authorize(web, &path, None).await,
        403,
        "consent_user_mismatch",
    );
    let mut alice = Browser::signed_in("alice");
    let callback = env.to_callback(&mut alice, &url).await;
    let mut no_login = alice.clone();
    no_login.headers.clear();
    assert_refused(
        &no_login.get(web, &callback).await,
        403,
        "consent_user_mismatch",
    );
    // Nothing consumed by the anonymous visits: alice finishes.
    let done = alice.get(web, &callback).await;
    assert_eq!(done.status, 200, "{}", done.text());
}

#[tokio::test]
async fn authorize_without_a_valid_csrf_is_refused_and_keeps_the_ticket() {
    let env = setup(&LOGIN, |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let mut alice = Browser::signed_in("alice");
    let (page, csrf) = alice.open(web, &path).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let cookie = page.header("set-cookie").expect("the consent cookie");
    for attr in ["tollgate_consent=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "Secure on an http public URL: {cookie}"
    );
    let csrf = csrf.expect("a csrf field");
    assert!(csrf.len() >= 22, "{csrf}");

    // No csrf; a wrong one; the right one without the cookie; another browser's cookie.
    let refused = [
        alice.authorize(web, &path, None).await,
        alice.authorize(web, &path, Some("AAAA")).await,
        Browser::signed_in("alice")
            .authorize(web, &path, Some(&csrf))
            .await,
    ];
    let mut other = Browser::signed_in("alice");
    other.open(web, &path).await;
    assert_ne!(other.cookie, alice.cookie, "cookies are random");
    for r in refused
        .iter()
        .chain([&other.authorize(web, &path, Some(&csrf)).await])
    {
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.header("location").is_none());
    }

    // The ticket still works, and the page reuses the browser's cookie.
    let (page, again) = alice.open(web, &path).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("set-cookie")
        .is_none_or(|c| c.contains(alice.cookie.as_deref().unwrap())));
    assert_eq!(
        again.as_deref(),
        Some(csrf.as_str()),
        "same cookie, same ticket: same csrf"
    );
    let (r, _) = env.complete(&url, &[("x-forwarded-user", "alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.call("acme", "alice").await.status, 200);
}

#[tokio::test]
async fn a_callback_without_the_browser_cookie_is_refused() {
    let env = setup(&LOGIN, |_, _| {}).await;
    let url = env.consent_url("acme", "alice").await;
    let mut alice = Browser::signed_in("alice");
    let callback = env.to_callback(&mut alice, &url).await;
    let web = env.tg.web;

    // Signed in as alice, but in another browser (no cookie, then another cookie).
    let r = Browser::signed_in("alice").get(web, &callback).await;
    assert_refused(&r, 400, "consent_browser_mismatch");
    assert_eq!(env.p.with(|s| s.code_calls), 0);
    assert!(env.authorizations("crm").await.is_empty());
    // The state was consumed: the right browser cannot use it any more.
    let again = alice.get(web, &callback).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(!again.text().contains("consent_browser_mismatch"));
    assert!(env.authorizations("crm").await.is_empty());

    let url = env.consent_url("acme", "alice").await;
    let callback = env.to_callback(&mut alice, &url).await;
    let mut stranger = Browser::signed_in("alice");
    stranger.cookie = Some("A".repeat(43));
    assert_refused(
        &stranger.get(web, &callback).await,
        400,
        "consent_browser_mismatch",
    );
    assert!(env.authorizations("crm").await.is_empty());
}

#[tokio::test]
async fn repeated_401s_repeat_one_ticket() {
    let env = setup(&[], |_, _| {}).await;
    let first = env.call("acme", "alice").await.json();
    let url = first["consent_url"].as_str().unwrap().to_string();
    let mut last_expiry = first["expires_in"].as_u64().unwrap();
    assert!(last_expiry <= 900);
    for i in 0..1_000 {
        let r = env.call("acme", "alice").await;
        assert_eq!(r.status, 401, "{}", r.text());
        let body = r.json();
        assert_eq!(
            body["consent_url"],
            url.as_str(),
            "call {i} minted another ticket"
        );
        let expires_in = body["expires_in"].as_u64().unwrap();
        assert!(expires_in <= last_expiry, "expires_in went up at call {i}");
        last_expiry = expires_in;
    }
    // Another user gets their own ticket; alice's stays the same.
    let bob = env.consent_url("acme", "bob").await;
    assert_ne!(bob, url);
    assert_eq!(env.consent_url("acme", "alice").await, url);

    // Without a login the page says that anyone holding the link can connect an account.
    let mut anyone = Browser::default();
    let (page, _) = anyone.open(env.tg.web, &split(&url).1).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("Anyone holding this link"),
        "{}",
        page.text()
    );

    // Consumed by the Authorize POST: the next 401 gives a new link.
    let (r, _) = env.complete(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.call("acme", "alice").await.status, 200);

    // One ticket stored (bob's) after all those 401s: count the store's records.
    let mut tg = env.tg;
    let data = tg.data.clone();
    tg.signal(libc::SIGTERM);
    let _ = tg.child.wait();
    let key = tollgate::store::StoreKey::load(&data.join("keys/store.key")).unwrap();
    let store = tollgate::store::SledStore::open(&data.join("store"), key).unwrap();
    assert_eq!(store.consent_record_counts().unwrap(), (1, 0));
}
