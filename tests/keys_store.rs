//! Store key rotation end to end (issue 18): over 1,000 grants (seeded through the store API,
//! not 1,000 OAuth flows), `keys rotate store` starts a background re-seal in small batches
//! (`TOLLGATE_RESEAL_BATCH`), the server is killed with SIGKILL in the middle, and after the
//! restart the re-seal resumes where it stopped and completes; every grant still opens with
//! the same tokens, the old key is refused retirement while records use it and retired once
//! none does, and a request through the proxy injects a re-sealed token. The same on
//! PostgreSQL when `TOLLGATE_TEST_POSTGRES` is set (skipped with a notice otherwise).
//! And a rotation made offline (`tollgate keys rotate store --data`), re-sealed by the next
//! server to start.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::oauth::{bearer_of, setup_env, Env};
use common::postgres::fresh_database;
use common::*;
use serde_json::Value;
use tollgate::store::{ResealProgress, Store};

/// Grants seeded beside the one real consent.
const GRANTS: usize = 1000;

/// Small batches with a pause, so that a SIGKILL lands in the middle of the re-seal.
const ENV: &[(&str, &str)] = &[
    ("TOLLGATE_RESEAL_BATCH", "10"),
    ("TOLLGATE_RESEAL_PAUSE_MS", "20"),
];

/// How long the re-seal may take in a debug build.
const DEADLINE: Duration = Duration::from_secs(60);

/// The store `serve` uses for `data` (`url`: PostgreSQL, else sled), opened with the keys of
/// the data directory's ring, while no server holds it.
async fn open_store(data: &std::path::Path, url: Option<&str>) -> Arc<dyn Store> {
    let key = tollgate::keys::store_key::load(&data.join("keys")).unwrap();
    match url {
        Some(url) => Arc::new(tollgate::store::PgStore::open(url, key).await.unwrap()),
        None => Arc::new(tollgate::store::SledStore::open(&data.join("store"), key).unwrap()),
    }
}

/// Seeds `GRANTS` grants of app `crm` directly through the store; returns (user, access token).
async fn seed(store: &dyn Store) -> Vec<(String, String)> {
    let app = store.get_app("acme", "crm").await.unwrap().unwrap();
    let mut out = Vec::with_capacity(GRANTS);
    for i in 0..GRANTS {
        let (user, access) = (format!("seed-{i:04}"), format!("AT-seed-{i}-{}", i * 7919));
        let grant = tollgate::store::TokenSet {
            org: "acme".into(),
            app: "crm".into(),
            user: user.clone(),
            generation: app.generation,
            version: 0,
            access_token: tollgate::store::Secret::new(access.clone()),
            refresh_token: Some(tollgate::store::Secret::new(format!("RT-{access}"))),
            token_type: Some("bearer".into()),
            scopes: vec!["read".into()],
            expires_at: Some(4_000_000_000),
            obtained_at: 1_700_000_000,
            health: Default::default(),
        };
        assert!(store
            .put_token_if_current(grant, app.incarnation)
            .await
            .unwrap());
        out.push((user, access));
    }
    store.flush().await.unwrap();
    out
}

async fn keys(tg: &Tollgate) -> Value {
    let r = tg.operator_get("/v1/keys").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn active_store_kid(listed: &Value) -> String {
    listed["store"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `tollgate_store_reseal_records_total` as scraped.
async fn resealed_metric(tg: &Tollgate) -> u64 {
    let text = tg.operator_get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("tollgate_store_reseal_records_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn retire(tg: &Tollgate, kid: &str) -> Resp {
    let path = format!("/v1/keys/{kid}/retire");
    web_request(tg.web, "POST", &path, Some(&tg.operator_token()), None).await
}

/// Once the server logs the re-seal complete (its progress is committed just before the
/// line), the old key retires, and the proxy injects alice's re-sealed token, unchanged.
async fn retire_after_reseal(tg: &Tollgate, old: &str, api_port: u16, alice_bearer: &str) {
    assert!(
        wait_until(DEADLINE, async || tg
            .logs()
            .contains("store key re-seal complete"))
        .await,
        "{}",
        tg.logs()
    );
    let r = retire(tg, old).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let again = common::postgres::call(tg, api_port, "alice").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(bearer_of(&again), alice_bearer);
}

async fn rotation_over_many_grants(store_flags: &[&str], url: Option<&str>, name: &str) {
    let env = setup_env(store_flags, ENV, |_, _| {}).await;
    env.consent("acme", "alice").await;
    let first = env.call("acme", "alice").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let alice_bearer = bearer_of(&first);
    let Env { tg, p, admin: _ } = env;

    // 1,000 grants, seeded while no server runs.
    let dir = tg.stop_keep_dir();
    let data = dir.path().join("data");
    let store = open_store(&data, url).await;
    let seeded = seed(&*store).await;
    drop(store);
    let tg = Tollgate::start_in_env(dir, store_flags, ENV);
    let listed = keys(&tg).await;
    let old = active_store_kid(&listed);
    // The seeded grants, alice's, the app and the key check.
    let records = u64::try_from(GRANTS).unwrap() + 3;
    assert_eq!(listed["store_records"][&old], records, "{listed}");

    let r = web_request(
        tg.web,
        "POST",
        "/v1/keys/store/rotate",
        Some(&tg.operator_token()),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let refused = retire(&tg, &old).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.text().contains("records"), "{}", refused.text());

    // Killed in the middle of the re-seal.
    assert!(
        wait_until(DEADLINE, async || resealed_metric(&tg).await >= 50).await,
        "the re-seal never started:\n{}",
        tg.logs()
    );
    let mut tg = tg;
    tg.child.kill().unwrap();
    tg.child.wait().unwrap();
    let dir = std::mem::replace(&mut tg.dir, tempfile::tempdir().unwrap());
    drop(tg);
    let store = open_store(&data, url).await;
    let mid: ResealProgress = store.reseal_progress().await.unwrap().unwrap();
    assert_eq!(mid.target, new);
    assert!(
        mid.scanned > 0 && mid.scanned < mid.total && mid.finished_at.is_none(),
        "the kill did not land mid-way: {mid:?}"
    );
    let usage = store.seal_usage().await.unwrap();
    assert!(usage.get(&old).copied().unwrap_or(0) > 0, "{usage:?}");
    drop(store);

    // Restarted: resumes after the last batch and completes.
    let tg = Tollgate::start_in_env(dir, store_flags, ENV);
    let mut done = Value::Null;
    assert!(
        wait_until(DEADLINE, async || {
            done = keys(&tg).await;
            !done["reseal"]["finished_at"].is_null()
        })
        .await,
        "the re-seal did not complete: {done}\n{}",
        tg.logs()
    );
    let reseal = &done["reseal"];
    assert_eq!(reseal["target"], new.as_str());
    let resumed = resealed_metric(&tg).await;
    assert!(
        resumed > 0 && resumed < records,
        "the restart re-sealed {resumed} of {records}: it did not resume where it stopped"
    );
    assert_eq!(done["store_records"], serde_json::json!({ &new: records }));
    retire_after_reseal(&tg, &old, p.api.port(), &alice_bearer).await;

    // Every grant opens, with the ring that no longer holds the old key.
    let dir = tg.stop_keep_dir();
    let store = open_store(&dir.path().join("data"), url).await;
    let app = store.get_app("acme", "crm").await.unwrap().unwrap();
    for (user, access) in &seeded {
        let g = store
            .get_token("acme", "crm", app.incarnation, app.generation, user)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{user}: gone"));
        assert_eq!(g.access_token.expose(), access);
        assert_eq!(g.refresh_token.unwrap().expose(), &format!("RT-{access}"));
    }
    eprintln!(
        "{name}: {records} records, killed after {} scanned, resumed and re-sealed {resumed} more",
        mid.scanned
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_key_rotation_over_1000_grants_survives_a_kill_on_sled() {
    rotation_over_many_grants(&[], None, "sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_key_rotation_over_1000_grants_survives_a_kill_on_postgres() {
    let Some((url, _client)) = fresh_database("keys_store").await else {
        return;
    };
    rotation_over_many_grants(&["--store", url.as_str()], Some(&url), "postgres").await;
}

/// `tollgate keys rotate store` offline (no server, no token) against the data directory:
/// the rotation is recorded in the store, and the next server to start re-seals every record;
/// the old key then retires and the proxy injects the same token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_store_key_rotation_is_resealed_by_the_next_server() {
    let env = setup_env(&[], &[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    let first = env.call("acme", "alice").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let alice_bearer = bearer_of(&first);
    let Env { tg, p, admin: _ } = env;
    let old = active_store_kid(&keys(&tg).await);

    let dir = tg.stop_keep_dir();
    let data = dir.path().join("data");
    let out = std::process::Command::new(common::bin())
        .args(["keys", "rotate", "store", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = open_store(&data, None).await;
    let recorded = store
        .reseal_progress()
        .await
        .unwrap()
        .expect("no re-seal recorded");
    assert!(recorded.finished_at.is_none(), "{recorded:?}");
    assert_ne!(recorded.target, old);
    drop(store);

    let tg = Tollgate::start_in_env(dir, &[], &[]);
    let mut done = Value::Null;
    assert!(
        wait_until(DEADLINE, async || {
            done = keys(&tg).await;
            !done["reseal"]["finished_at"].is_null()
        })
        .await,
        "the next server did not re-seal: {done}\n{}",
        tg.logs()
    );
    assert_eq!(done["reseal"]["target"], recorded.target.as_str());
    assert!(
        done["store_records"].get(&old).is_none(),
        "records still under the old key: {done}"
    );
    retire_after_reseal(&tg, &old, p.api.port(), &alice_bearer).await;
}
