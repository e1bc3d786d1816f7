//! Session key rotation end to end (issue 18): with `--login oidc`, a session cookie signed
//! before a rotation still signs in after it; a new sign-in carries the new key's id once it
//! signs; retiring the old key refuses the cookies it signed. Offline, `tollgate keys rotate
//! session` adds a key that `keys list` shows, and a restarted server signs with it.

mod common;

use std::time::Duration;

use common::idp::Idp;
use common::login::*;
use common::oauth::{now, split};
use common::*;

/// Whether `r` is the consent page itself (the Authorize form): the visitor is signed in
/// as the ticket's user.
fn is_consent_page(r: &Resp) -> bool {
    r.status == 200 && r.text().contains("<form method=\"post\"")
}

/// The key id a session cookie names (`v1.KID.PAYLOAD.MAC`).
fn kid(cookie: &str) -> String {
    cookie.split('.').nth(1).unwrap().to_owned()
}

/// `POST path` as the operator.
async fn operator_post(tg: &Tollgate, path: &str) -> Resp {
    web_request(tg.web, "POST", path, Some(&tg.operator_token()), None).await
}

/// Signs in at `web` until the session cookie names `kid` (the new key signs a few seconds
/// after a rotation); that cookie, or `None` at the deadline.
async fn sign_in_with_key(
    web: std::net::SocketAddr,
    idp: &Idp,
    path: &str,
    kid_: &str,
) -> Option<String> {
    let mut last = String::new();
    let switched = wait_until(Duration::from_secs(15), async || {
        last = sign_in(web, idp, path).await.session.unwrap();
        kid(&last) == kid_
    })
    .await;
    if !switched {
        eprintln!("new sign-ins still carry {}", kid(&last));
    }
    switched.then_some(last)
}

#[tokio::test]
async fn old_sessions_survive_a_rotation_new_ones_carry_the_new_key_retiring_refuses_the_old() {
    let idp = Idp::start().await;
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let tg = &env.tg;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);

    let before = sign_in(web, &idp, &path).await.session.unwrap();
    let old_kid = kid(&before);
    assert!(is_consent_page(&get_signed_in(web, &path, &before).await));

    let r = operator_post(tg, "/v1/keys/session/rotate").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_kid = r.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    // Only operators rotate.
    let admin = web_request(
        tg.web,
        "POST",
        "/v1/keys/session/rotate",
        Some(&env.admin),
        None,
    )
    .await;
    assert_eq!(admin.status, 403, "{}", admin.text());

    // The session from before still signs in, at once and after the switch.
    assert!(
        is_consent_page(&get_signed_in(web, &path, &before).await),
        "a session signed before the rotation was refused"
    );
    // New sign-ins carry the new key's id once it signs (a few seconds).
    let after = sign_in_with_key(web, &idp, &path, &new_kid).await.unwrap();
    assert!(is_consent_page(&get_signed_in(web, &path, &after).await));
    assert!(is_consent_page(&get_signed_in(web, &path, &before).await));

    let listed = web_request(tg.web, "GET", "/v1/keys", Some(&tg.operator_token()), None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        key_states(&listed.json(), "session"),
        [
            (old_kid.clone(), "verifying".into()),
            (new_kid.clone(), "active".into())
        ]
    );

    // Retiring the new key is refused (it signs); retiring the old one refuses its cookies.
    let r = operator_post(tg, &format!("/v1/keys/{new_kid}/retire")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = operator_post(tg, &format!("/v1/keys/{old_kid}/retire")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = get_signed_in(web, &path, &before).await;
    assert!(
        !is_consent_page(&refused),
        "a session signed by the retired key still signs in"
    );
    assert!(is_consent_page(&get_signed_in(web, &path, &after).await));
    assert!(
        tg.data.join("keys/session.key").exists(),
        "the original key file stays (first start would make a new one)"
    );

    // Both operations audited, in the operator's org, with the kind.
    let ops_admin = tg.admin_token("ops", "root");
    let audit = web_request(tg.web, "GET", "/v1/audit", Some(&ops_admin), None).await;
    let events: Vec<(String, String)> = audit.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["detail"]["kind"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("key.retire".into(), "session".into()),
            ("key.rotate".into(), "session".into())
        ],
        "{}",
        audit.text()
    );
    // Neither a session nor a key is logged.
    let logs = tg.logs();
    let secret =
        std::fs::read_to_string(tg.data.join(format!("keys/session/{new_kid}.key"))).unwrap();
    assert!(!logs.contains(&after) && !logs.contains(secret.trim()));
}

#[tokio::test]
async fn a_ring_changed_on_disk_applies_and_offline_rotation_is_listed() {
    let idp = Idp::start().await;
    let (env, _secret) = start_oidc(&idp, &[]).await;
    let url = env.consent_url("acme", "alice").await;
    let (web, path) = split(&url);
    let before = sign_in(web, &idp, &path).await.session.unwrap();
    let original = kid(&before);

    // Another replica sharing the keys directory rotates: this one follows the file.
    let keys = env.tg.data.join("keys");
    let mut ring = tollgate::keys::SessionRing::load(&keys).unwrap();
    let second = ring.rotate(now()).unwrap();
    sign_in_with_key(web, &idp, &path, &second).await.unwrap();
    assert!(is_consent_page(&get_signed_in(web, &path, &before).await));

    // Offline, with the server stopped: rotate, list, retire.
    let data = env.tg.data.clone();
    let _dir = env.tg.stop_keep_dir();
    let out = offline_ok(&["keys", "rotate", "session", "--json"], &data, &[]);
    let third = serde_json::from_str::<serde_json::Value>(&out).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    // The second key still signs for a few seconds: retiring it is refused meanwhile.
    let refused = offline(&["keys", "retire", &second], &data, &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("rotate before retiring"),
        "{refused:?}"
    );
    offline_ok(&["keys", "retire", &original], &data, &[]);
    let listed: serde_json::Value =
        serde_json::from_str(&offline_ok(&["keys", "list", "--json"], &data, &[])).unwrap();
    assert_eq!(
        key_states(&listed, "session"),
        [
            (original, "retired".into()),
            (second.clone(), "verifying".into()),
            (third.clone(), "active".into())
        ]
    );
    assert_eq!(listed["identity"].as_array().unwrap().len(), 1);
    assert!(keys.join(format!("session/{second}.key")).exists());
    let text = offline_ok(&["keys", "list"], &data, &[]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("session") && l.contains(&third) && l.contains("active")),
        "{text}"
    );
}
