//! Caller-token revocation end to end (issue 18): a user's tokens revoked through
//! `POST /v1/tokens/revoke` or `tollgate token revoke` (offline) get `407` on their next
//! request within 1 s, on the sled store and on two PostgreSQL replicas; one token by its
//! `jti`; admins only in their own org; every revocation audited.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::postgres::{fresh_database, replica_dir};
use common::status_as as status;
use common::*;
use serde_json::json;

/// How soon a revocation must hold everywhere.
const WITHIN: Duration = Duration::from_secs(1);

/// Polls until `token` gets `407` through `tg`; how long it took, or `None` after [`WITHIN`].
async fn refused_within(
    tg: &Tollgate,
    up: std::net::SocketAddr,
    token: &str,
    since: Instant,
) -> Option<Duration> {
    wait_until(WITHIN, async || status(tg, up, token).await == 407)
        .await
        .then(|| since.elapsed())
}

/// A token's `jti` claim, read from its payload.
fn jti(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"]
        .as_str()
        .expect("minted tokens carry jti")
        .to_owned()
}

async fn revoke(tg: &Tollgate, token: &str, body: serde_json::Value) -> Resp {
    web_request(
        tg.web,
        "POST",
        "/v1/tokens/revoke",
        Some(token),
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn a_users_tokens_and_one_jti_are_refused_within_a_second_on_sled() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(common::policies::LOCAL, &[]);
    let alice = [tg.token("acme", "alice"), tg.token("acme", "alice")];
    let bob = [tg.token("acme", "bob"), tg.token("acme", "bob")];
    let carol = tg.token("beta", "alice");
    for t in alice.iter().chain(&bob).chain([&carol]) {
        assert_eq!(status(&tg, up, t).await, 200);
    }

    // An admin of another org may not; a caller without a role may not either.
    let other = revoke(
        &tg,
        &tg.admin_token("beta", "root"),
        json!({"org": "acme", "user": "alice"}),
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.text());
    let plain = revoke(&tg, &alice[0], json!({"user": "alice"})).await;
    assert_eq!(plain.status, 403, "{}", plain.text());
    let bad = revoke(
        &tg,
        &tg.admin_token("acme", "root"),
        json!({"user": "a", "jti": "b"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"], "invalid_request");

    // Every token of alice in acme: refused; alice of beta and bob are not.
    let since = Instant::now();
    let r = revoke(
        &tg,
        &tg.admin_token("acme", "root"),
        json!({"user": "alice"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revocation"]["org"], "acme");
    for t in &alice {
        let took = refused_within(&tg, up, t, since).await;
        assert!(
            took.is_some(),
            "a revoked token still passed after {WITHIN:?}"
        );
    }
    let refused = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://localhost:{}/r", up.port()),
        &[("proxy-authorization", &format!("Bearer {}", alice[0]))],
        "",
    )
    .await;
    let body = assert_proxy_error(&refused, 407, "proxy_auth_required");
    assert!(body.to_string().contains("revoked"), "{body}");
    assert_eq!(status(&tg, up, &carol).await, 200);
    assert_eq!(status(&tg, up, &bob[0]).await, 200);
    // A token minted after the revocation's second works.
    let deadline = Instant::now() + Duration::from_secs(3);
    let fresh = loop {
        tokio::time::sleep(POLL_EVERY).await;
        let t = tg.token("acme", "alice");
        if status(&tg, up, &t).await == 200 || Instant::now() > deadline {
            break t;
        }
    };
    assert_eq!(
        status(&tg, up, &fresh).await,
        200,
        "a new token of alice is refused"
    );

    // One token by its jti, by an operator: bob's other token still works.
    let since = Instant::now();
    let r = revoke(&tg, &tg.operator_token(), json!({"jti": jti(&bob[0])})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(refused_within(&tg, up, &bob[0], since).await.is_some());
    assert_eq!(status(&tg, up, &bob[1]).await, 200);

    // Audited: alice's in acme's log; the operator's any-org revocation in the operator's.
    let audited = async |org: &str| -> Vec<String> {
        let token = tg.admin_token(org, "root");
        let audit = web_request(tg.web, "GET", "/v1/audit", Some(&token), None).await;
        let events = audit.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        events
            .iter()
            .filter(|e| e["action"] == "token.revoke")
            .map(|e| e["target"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(audited("acme").await, ["user:alice"]);
    assert_eq!(audited("ops").await, [format!("jti:{}", jti(&bob[0]))]);

    // The revocations survive a restart.
    let tg = tg.restart(false, &[]);
    assert_eq!(status(&tg, up, &alice[1]).await, 407);
    assert_eq!(status(&tg, up, &bob[0]).await, 407);
    assert_eq!(status(&tg, up, &bob[1]).await, 200);
}

#[tokio::test]
async fn token_revoke_offline_writes_the_store_a_server_then_reads() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(common::policies::LOCAL, &[]);
    let alice = tg.token("acme", "alice");
    let bob = tg.token("acme", "bob");
    assert_eq!(status(&tg, up, &alice).await, 200);
    let data = tg.data.clone();
    let dir = tg.stop_keep_dir();
    let out = offline_ok(
        &["token", "revoke"],
        &data,
        &["--org", "acme", "--user", "alice"],
    );
    assert!(out.contains("revoked caller tokens"), "{out}");
    let out = offline(
        &["token", "revoke"],
        &data,
        &["--jti", "x", "--user", "bob"],
    );
    assert!(!out.status.success(), "--jti with --user is refused");
    let tg = Tollgate::start_in(dir, &[]);
    assert_eq!(status(&tg, up, &alice).await, 407);
    assert_eq!(status(&tg, up, &bob).await, 200);
}

#[tokio::test]
async fn a_revocation_on_one_postgres_replica_holds_on_the_other_within_a_second() {
    let Some((url, _db)) = fresh_database("token_revoke").await else {
        return;
    };
    let up = echo_upstream().await;
    let store = ["--store", url.as_str()];
    let a = Tollgate::start(common::policies::LOCAL, &store);
    let b = Tollgate::start_in(replica_dir(&a.data, common::policies::LOCAL), &store);
    let alice = a.token("acme", "alice");
    let bob = a.token("acme", "bob");
    for tg in [&a, &b] {
        assert_eq!(status(tg, up, &alice).await, 200);
        assert_eq!(status(tg, up, &bob).await, 200);
    }
    let since = Instant::now();
    let r = revoke(&a, &a.admin_token("acme", "root"), json!({"user": "alice"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let took = refused_within(&b, up, &alice, since).await;
    let took = took.expect("replica B still accepted a revoked token after 1 s");
    eprintln!("postgres: a user revocation on A held on B after {took:?}");
    assert_eq!(status(&a, up, &alice).await, 407);
    assert_eq!(status(&b, up, &bob).await, 200);

    // Offline, straight into the database while both run: both refuse bob's token.
    let since = Instant::now();
    let store_args = [
        "--store",
        url.as_str(),
        "--jti",
        &jti(&bob),
        "--org",
        "acme",
    ];
    offline_ok(&["token", "revoke"], &a.data, &store_args);
    for tg in [&a, &b] {
        let took = refused_within(tg, up, &bob, since).await;
        let took = took.expect("a replica still accepted a jti revoked offline after 1 s");
        eprintln!("postgres: an offline jti revocation held after {took:?}");
    }
}
