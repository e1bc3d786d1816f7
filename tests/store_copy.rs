//! `tollgate store copy --from sled:DIR --to postgres://…` end to end, when
//! `TOLLGATE_TEST_POSTGRES` names a database (without it the test prints that it was
//! skipped): a sled store with an app, a user's grant, audit events and an agent revocation
//! is copied into an empty database; tollgate restarted on PostgreSQL injects the copied
//! grant without a new consent or a refresh (its version is checked by the copy's unit of
//! work, `store::copy`); a second copy is refused, and `--merge` adds
//! nothing twice.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::oauth::setup;
use common::postgres::fresh_database;
use common::*;

/// `tollgate store copy` on the data directory under `dir`.
fn copy(dir: &Path, url: &str, extra: &[&str]) -> Output {
    Command::new(bin())
        .args(["store", "copy", "--data"])
        .arg(dir.join("data"))
        .arg("--from")
        .arg(format!("sled:{}", dir.join("data/store").display()))
        .args(["--to", url])
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sled_store_copied_into_postgres_serves_its_grants() {
    let Some((url, db)) = fresh_database("copy").await else {
        return;
    };
    let mut env = setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    assert_eq!(env.call("acme", "alice").await.status, 200);
    let operator = env.tg.operator_token();
    let r = web_request(
        env.tg.web,
        "POST",
        "/v1/agents/onprem-9/revoke",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = env.authorizations("crm").await[0].clone();

    // A password in the URL (the test server trusts local connections and never asks for it)
    // must never be printed.
    let with_password = url.replacen("://postgres@", "://postgres:pw-NEVER-SHOWN@", 1);
    assert_ne!(with_password, url);
    let mut out = None;
    env.tg = env.tg.restart_after(
        |dir| out = Some(copy(dir, &with_password, &[])),
        &["--store", url.as_str()],
    );
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("store_copy: {}", stdout.trim());
    assert!(
        stdout.contains(": 1 apps, 1 grants,") && stdout.contains("1 agent revocations"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("NEVER-SHOWN") && stdout.contains(":***@"),
        "{stdout}"
    );

    // Served from PostgreSQL: the copied grant is injected as it was.
    let refreshes = env.p.refresh_calls();
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.refresh_calls(), refreshes, "no refresh was needed");
    let after = env.authorizations("crm").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["user"], "alice");
    assert_eq!(after[0], before, "the grant is the one that was stored");
    let audit: i64 = db
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    assert!(audit >= 1, "the audit log was copied");
    let revoked: i64 = db
        .query_one("SELECT count(*) FROM agent_revocations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked, 1);

    // A second copy is refused; with --merge nothing is added twice.
    let again = copy(env.tg.dir.path(), &url, &[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds"), "{err}");
    let merged = copy(env.tg.dir.path(), &url, &["--merge"]);
    let merged_out = String::from_utf8_lossy(&merged.stdout);
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    assert!(
        merged_out.contains(": 0 apps, 0 grants, 0 audit events, 0 agent revocations"),
        "{merged_out}"
    );
}
