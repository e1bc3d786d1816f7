//! PostgreSQL for the integration tests: a fresh database per test on the server
//! `TOLLGATE_TEST_POSTGRES` names (`.ci/run` starts one; without it tests print that they
//! were skipped), and replica data directories sharing one instance's keys and CA.

use std::path::Path;

/// A fresh database on the test server, and its URL; `None` (skipped) without the variable.
pub async fn fresh_database(test: &str) -> Option<(String, tokio_postgres::Client)> {
    let Ok(base) = std::env::var("TOLLGATE_TEST_POSTGRES") else {
        eprintln!("skipped {test}: set TOLLGATE_TEST_POSTGRES=postgres://… to run it");
        return None;
    };
    let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect to TOLLGATE_TEST_POSTGRES");
    tokio::spawn(conn);
    let name = format!("tg_{}_{}", test, std::process::id());
    // Two statements: CREATE DATABASE refuses to run inside a (multi-statement) transaction.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    let (client, conn) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    Some((url.to_string(), client))
}

/// Copies the keys and CA of one instance's data directory into a new test directory, as an
/// operator distributes them to replicas.
pub fn replica_dir(from: &Path, policy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("10-test.toml"), policy).unwrap();
    for sub in ["keys", "ca"] {
        let to = dir.path().join("data").join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    dir
}
