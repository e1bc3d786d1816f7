//! Identity key rotation end to end (issue 18): a rotation while 8 callers send requests
//! fails none of them (old tokens keep verifying, new ones are signed by the new key once
//! every replica knows it); retiring a key refuses what it signed with `407`; a ring changed
//! on disk (another replica sharing the keys directory) applies without a restart.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::status_as as status;
use common::*;

/// Callers sending requests during the rotation.
const CALLERS: usize = 8;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token of `user` signed by the data directory's signing key now, as `token mint` does.
fn mint_now(data: &std::path::Path, user: &str) -> (String, String) {
    let ring = tollgate::keys::IdentityRing::load(&data.join("keys")).unwrap();
    let key = ring.signing(now());
    let token = tollgate::identity::mint(key, "acme", user, &[], Duration::from_secs(600)).unwrap();
    (token, key.kid())
}

/// A token signed with the original key file and no `kid`, as a platform minting with the
/// same key (or a token minted before kids existed) does.
fn without_kid(tg: &Tollgate, user: &str) -> String {
    let key = std::fs::read_to_string(tg.data.join("keys/identity.key")).unwrap();
    let claims = serde_json::json!({"sub": user, "org": "acme", "iat": now(), "exp": now() + 600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.trim().as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_under_load_fails_nothing_and_retiring_refuses_what_the_key_signed() {
    let up = echo_upstream().await;
    let tg = Arc::new(Tollgate::start(common::policies::LOCAL, &[]));
    let (old, original_kid) = mint_now(&tg.data, "old");
    let legacy = without_kid(&tg, "legacy");
    assert_eq!(status(&tg, up, &old).await, 200);
    assert_eq!(status(&tg, up, &legacy).await, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed, by_new) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut callers = Vec::new();
    for i in 0..CALLERS {
        let (tg, stop, sent, failed, by_new) = (
            tg.clone(),
            stop.clone(),
            sent.clone(),
            failed.clone(),
            by_new.clone(),
        );
        let (old, legacy, original_kid) = (old.clone(), legacy.clone(), original_kid.clone());
        callers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // A fresh token from the signing key, then the old ones.
                let (fresh, kid) = mint_now(&tg.data, &format!("caller-{i}"));
                for t in [&fresh, &old, &legacy] {
                    let s = status(&tg, up, t).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if s != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("caller {i}: {s} (fresh kid {kid})");
                    }
                }
                if kid != original_kid {
                    by_new.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }
    // Some load before the rotation.
    assert!(
        wait_until(Duration::from_secs(10), async || sent
            .load(Ordering::Relaxed)
            >= 200)
        .await
    );
    let r = web_request(
        tg.web,
        "POST",
        "/v1/keys/identity/rotate",
        Some(&tg.operator_token()),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_kid = r.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, original_kid);
    let rotated = Instant::now();
    // Until the new key has signed plenty of the callers' tokens.
    let switched = wait_until(Duration::from_secs(15), async || {
        by_new.load(Ordering::Relaxed) >= 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "rotation under load: {sent} requests by {CALLERS} callers, {failed} failed; \
         the new key signed {} tokens from {:?} after the rotation",
        by_new.load(Ordering::Relaxed),
        rotated.elapsed()
    );
    assert!(switched, "the new key never signed");
    assert_eq!(failed, 0, "requests failed during the rotation");

    // Retiring the active key is refused; retiring the original refuses what it signed,
    // tokens without kid included, at once.
    let operator = tg.operator_token();
    let active = web_request(
        tg.web,
        "POST",
        &format!("/v1/keys/{new_kid}/retire"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(active.status, 409, "{}", active.text());
    let (fresh, kid) = mint_now(&tg.data, "after");
    assert_eq!(kid, new_kid);
    let r = web_request(
        tg.web,
        "POST",
        &format!("/v1/keys/{original_kid}/retire"),
        Some(&operator),
        None,
    )
    .await;
    // The operator token itself was minted with the original key (the harness reads
    // identity.key), and the retirement answers before it applies.
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/k", up.port()),
        &[("proxy-authorization", &format!("Bearer {old}"))],
        "",
    )
    .await;
    assert_proxy_error(&refused, 407, "proxy_auth_required");
    assert_eq!(status(&tg, up, &legacy).await, 407);
    assert_eq!(status(&tg, up, &fresh).await, 200);

    // Listed offline, with their states; both operations audited in the operator's org.
    let out = offline_ok(&["keys", "list", "--json"], &tg.data, &[]);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let states = key_states(&listed, "identity");
    assert_eq!(
        states,
        [
            (original_kid, "retired".into()),
            (new_kid.clone(), "active".into())
        ]
    );
    let key = tollgate::keys::IdentityRing::load(&tg.data.join("keys")).unwrap();
    let ops_admin = tollgate::identity::mint(
        key.signing(now()),
        "ops",
        "root",
        &["admin".into()],
        Duration::from_secs(60),
    )
    .unwrap();
    let audit = web_request(tg.web, "GET", "/v1/audit", Some(&ops_admin), None).await;
    let actions: Vec<String> = audit.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["key.retire", "key.rotate"], "{}", audit.text());
}

#[tokio::test]
async fn a_ring_changed_on_disk_applies_without_a_restart() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(common::policies::LOCAL, &[]);
    // Another replica sharing the keys directory rotates.
    let mut ring = tollgate::keys::IdentityRing::load(&tg.data.join("keys")).unwrap();
    let kid = ring.rotate(now()).unwrap();
    let key = std::fs::read_to_string(tg.data.join(format!("keys/identity/{kid}.key"))).unwrap();
    let key = tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes());
    let token =
        tollgate::identity::mint(&key, "acme", "new", &[], Duration::from_secs(60)).unwrap();
    let since = Instant::now();
    let took = wait_until(Duration::from_secs(2), async || {
        status(&tg, up, &token).await == 200
    })
    .await;
    assert!(
        took,
        "a token of the new key was refused 2 s after the ring changed"
    );
    eprintln!("a ring changed on disk applied after {:?}", since.elapsed());
    // Offline rotation with the server stopped, then a restart: the newest key signs.
    let data = tg.data.clone();
    let dir = tg.stop_keep_dir();
    offline_ok(&["keys", "rotate", "identity"], &data, &[]);
    let tg = Tollgate::start_in(dir, &[]);
    assert_eq!(
        status(&tg, up, &token).await,
        200,
        "the previous key still verifies"
    );
    let ring = tollgate::keys::IdentityRing::load(&tg.data.join("keys")).unwrap();
    assert_ne!(ring.active_kid(), kid);
    let newest = tollgate::identity::mint(
        ring.signing(now() + 10),
        "acme",
        "newest",
        &[],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(status(&tg, up, &newest).await, 200);
}
