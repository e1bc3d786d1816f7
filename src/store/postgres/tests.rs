//! The store contract against PostgreSQL, when `TOLLGATE_TEST_POSTGRES` names a database:
//! each fixture gets its own fresh schema (through `search_path`), so runs can share one
//! database in parallel. Without the variable the test says it was skipped.

use std::sync::Arc;

use tokio::runtime::Handle;

use super::super::contract::{self, Fixture, Tamper};
use super::super::model::random_id;
use super::{schema, PgStore};
use crate::clock::Clock;
use crate::store::{Store, StoreKey};

/// The variable naming the test database.
const VAR: &str = "TOLLGATE_TEST_POSTGRES";

/// The test database's URL, or `None` after printing that the test is skipped.
pub(crate) fn database_url(test: &str) -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped {test}: set {VAR}=postgres://… to run it against PostgreSQL");
            None
        }
    }
}

/// Runs `f` on the current multi-threaded runtime from synchronous code.
fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| Handle::current().block_on(f))
}

/// A fresh schema in the test database, dropped with the guard.
pub(crate) struct Schema {
    /// The database URL.
    url: String,
    /// The schema's name.
    pub(crate) name: String,
}

impl Schema {
    /// Creates a schema with a random name.
    pub(crate) async fn create(url: &str) -> Schema {
        let name = format!(
            "tg_{}",
            random_id().unwrap().to_lowercase().replace('-', "_")
        );
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let (client, conn) = schema::config(url)
            .unwrap()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Schema {
            url: url.to_owned(),
            name,
        }
    }

    /// The connection configuration with this schema first on the search path.
    pub(crate) fn config(&self) -> tokio_postgres::Config {
        let mut c = schema::config(&self.url).unwrap();
        let options = format!(
            "{} -c search_path={}",
            c.get_options().unwrap_or(""),
            self.name
        );
        c.options(&options).application_name(&self.name);
        c
    }

    /// A connection in this schema.
    pub(crate) async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = self.config().connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside or outside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = schema::config(&url)
                    .ok()?
                    .connect(tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Raw access to one fixture's schema.
struct PgTamper {
    client: tokio_postgres::Client,
}

impl Tamper for PgTamper {
    fn copy_app(&self, org: &str, from: &str, to: &str) {
        block(async {
            let row = self
                .client
                .query_one(
                    "SELECT incarnation, generation, rec FROM apps WHERE org = $1 AND id = $2",
                    &[&org, &from],
                )
                .await
                .unwrap();
            let mut v: serde_json::Value = serde_json::from_str(row.get(2)).unwrap();
            v["id"] = to.into();
            self.client
                .execute(
                    "INSERT INTO apps (org, id, incarnation, generation, rec) VALUES ($1, $2, $3, $4, $5)",
                    &[&org, &to, &row.get::<_, i64>(0), &row.get::<_, i64>(1), &v.to_string()],
                )
                .await
                .unwrap();
        })
    }

    fn copy_grant(&self, org: &str, app: &str, from_user: &str, to_user: &str) {
        block(async {
            let row = self
                .client
                .query_one(
                    "SELECT incarnation, generation, version, rec FROM tokens \
                     WHERE org = $1 AND app = $2 AND usr = $3",
                    &[&org, &app, &from_user],
                )
                .await
                .unwrap();
            let mut v: serde_json::Value = serde_json::from_str(row.get(3)).unwrap();
            v["user"] = to_user.into();
            self.client
                .execute(
                    "INSERT INTO tokens (org, app, incarnation, generation, usr, version, rec) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &org,
                        &app,
                        &row.get::<_, i64>(0),
                        &row.get::<_, i64>(1),
                        &to_user,
                        &row.get::<_, i64>(2),
                        &v.to_string(),
                    ],
                )
                .await
                .unwrap();
        })
    }

    fn raw_contains(&self, needle: &[u8]) -> bool {
        let text = String::from_utf8_lossy(needle).into_owned();
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        block(async {
            let tables = self
                .client
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema()",
                    &[],
                )
                .await
                .unwrap();
            for t in tables {
                let table: String = t.get(0);
                let row = self
                    .client
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM {table} t \
                             WHERE strpos(t::text, $1) > 0 OR strpos(t::text, $2) > 0"
                        ),
                        &[&text, &hex],
                    )
                    .await
                    .unwrap();
                if row.get::<_, i64>(0) > 0 {
                    return true;
                }
            }
            false
        })
    }

    fn consent_records(&self) -> (usize, usize) {
        block(async {
            let count = |table: &'static str| async move {
                let n: i64 = self
                    .client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .unwrap()
                    .get(0);
                usize::try_from(n).unwrap()
            };
            (
                count("consent_tickets").await,
                count("consent_pending").await,
            )
        })
    }
}

fn key() -> StoreKey {
    StoreKey::from_hex_text(&"a7".repeat(32)).unwrap()
}

/// An empty store in a fresh schema.
pub(crate) async fn fixture(url: &str, clock: Clock) -> Fixture {
    let schema = Schema::create(url).await;
    let key = key();
    let store = PgStore::open_config(schema.config(), key.clone(), clock)
        .await
        .unwrap();
    let tamper = PgTamper {
        client: schema.connect().await,
    };
    Fixture {
        store: Arc::new(store),
        tamper: Box::new(tamper),
        _guard: Box::new(schema),
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_store_contract() {
    let Some(url) = database_url("postgres::passes_the_store_contract") else {
        return;
    };
    contract::run_all(|clock| block(fixture(&url, clock))).await;
}

/// Opens a store on `schema` (a replica) with the system clock.
async fn replica(schema: &Schema) -> PgStore {
    PgStore::open_config(schema.config(), key(), Clock::system())
        .await
        .unwrap()
}

/// Waits (up to 10 s) until `changes` hands over something `want` accepts; returns how long
/// it took. Panics at the deadline.
async fn wait_for(
    changes: &crate::store::Changes,
    mut want: impl FnMut(crate::store::Seen<'_>) -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    let mut found = false;
    while !found {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "not seen within 10 s"
        );
        changes.catch_up(|seen| found |= want(seen));
        if !found {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_starting_at_once_on_an_empty_database_all_come_up() {
    let Some(url) = database_url("postgres::three_replicas_starting_at_once") else {
        return;
    };
    let schema = Schema::create(&url).await;
    let opens = (0..3).map(|_| PgStore::open_config(schema.config(), key(), Clock::system()));
    let stores = futures_util::future::join_all(opens).await;
    for s in &stores {
        assert!(s.is_ok(), "{:?}", s.as_ref().err());
    }
    let client = schema.connect().await;
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        super::schema::MIGRATIONS.len() as i64,
        "each migration applied once"
    );
    // A fourth, later, finds nothing to do; one with another key is refused.
    assert!(
        PgStore::open_config(schema.config(), key(), Clock::system())
            .await
            .is_ok()
    );
    let other = StoreKey::from_hex_text(&"b8".repeat(32)).unwrap();
    match PgStore::open_config(schema.config(), other, Clock::system()).await {
        Err(crate::store::StoreError::Corrupt { record, .. }) => {
            assert_eq!(record, "meta/key-check")
        }
        other => panic!("opened with another key: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_reach_other_replicas_and_a_reconnect_flushes() {
    let Some(url) = database_url("postgres::changes_reach_other_replicas") else {
        return;
    };
    let schema = Schema::create(&url).await;
    let (a, b) = (replica(&schema).await, replica(&schema).await);
    let (on_a, on_b) = (a.subscribe(), b.subscribe());
    let app = |id: &str| crate::store::Change::AppChanged {
        org: "acme".into(),
        app: id.into(),
    };
    let is = |want: crate::store::Change| move |seen: crate::store::Seen<'_>| matches!(seen, crate::store::Seen::Event(e) if e.change == want);
    let created = a
        .create_app(contract::sample_app("acme", "github"))
        .await
        .unwrap();
    let took = wait_for(&on_b, is(app("github"))).await;
    eprintln!("postgres: a change on replica A reached replica B in {took:?}");
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    // B's view matches; A's own subscriber saw its write once, not again from the listener.
    assert!(b.get_app("acme", "github").await.unwrap().is_some());
    b.set_app_enabled("acme", "github", false).await.unwrap();
    wait_for(&on_a, is(app("github"))).await;
    let mut seen_on_a = Vec::new();
    on_a.catch_up(|s| seen_on_a.push(format!("{s:?}")));
    assert!(seen_on_a.is_empty(), "duplicates on A: {seen_on_a:?}");

    // Kill B's listener connection: B's subscribers are told to flush, and B follows again.
    let admin = schema.connect().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity              WHERE application_name = $1) k",
            &[&format!("{}-listen", schema.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 2, "one listener per replica");
    wait_for(&on_b, |s| s == crate::store::Seen::Missed).await;
    a.reset_app("acme", "github").await.unwrap();
    wait_for(&on_b, is(app("github"))).await;
    assert_eq!(
        b.get_app("acme", "github")
            .await
            .unwrap()
            .unwrap()
            .generation,
        created.generation + 1
    );
}

/// Two replicas on a fresh schema, acme's app `github`, and `user`'s grant in it (as read
/// back); `None` (skipped) without the database.
pub(crate) async fn two_replicas_and_a_grant(
    test: &str,
    user: &str,
) -> Option<(
    Schema,
    PgStore,
    PgStore,
    crate::store::App,
    crate::store::TokenSet,
)> {
    let url = database_url(test)?;
    let schema = Schema::create(&url).await;
    let (a, b) = (replica(&schema).await, replica(&schema).await);
    let app = a
        .create_app(contract::sample_app("acme", "github"))
        .await
        .unwrap();
    assert!(a
        .put_token_if_current(contract::grant(&app, user, "at-1"), app.incarnation)
        .await
        .unwrap());
    let grant = a
        .get_token("acme", "github", app.incarnation, app.generation, user)
        .await
        .unwrap()
        .unwrap();
    Some((schema, a, b, app, grant))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_leases_admit_one_replica_and_expire() {
    use crate::store::RefreshLease::{Acquired, Held, Moved};
    use std::time::Duration;
    let Some((_schema, a, b, app, v1)) =
        two_replicas_and_a_grant("postgres::refresh_leases", "alice").await
    else {
        return;
    };
    let inc = app.incarnation;
    let ttl = Duration::from_secs(15);
    assert_eq!(
        a.acquire_refresh_lease(&v1, inc, ttl).await.unwrap(),
        Acquired
    );
    match b.acquire_refresh_lease(&v1, inc, ttl).await.unwrap() {
        Held(left) => assert!(left > Duration::from_secs(10) && left <= ttl, "{left:?}"),
        other => panic!("B took A's lease: {other:?}"),
    }
    // The holder may renew; another replica's release does not free it.
    assert_eq!(
        a.acquire_refresh_lease(&v1, inc, ttl).await.unwrap(),
        Acquired
    );
    b.release_refresh_lease(&v1, inc).await.unwrap();
    assert!(matches!(
        b.acquire_refresh_lease(&v1, inc, ttl).await.unwrap(),
        Held(_)
    ));

    // The holder's write clears the lease and moves the version: the old one is refused.
    let v2 = a
        .replace_token_if_current(v1.clone(), inc)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.acquire_refresh_lease(&v1, inc, ttl).await.unwrap(), Moved);
    let short = Duration::from_millis(300);
    assert_eq!(
        b.acquire_refresh_lease(&v2, inc, short).await.unwrap(),
        Acquired
    );

    // B "dies" holding it: the lease expires by the database's clock and A takes over.
    assert!(matches!(
        a.acquire_refresh_lease(&v2, inc, ttl).await.unwrap(),
        Held(_)
    ));
    let start = std::time::Instant::now();
    loop {
        match a.acquire_refresh_lease(&v2, inc, ttl).await.unwrap() {
            Acquired => break,
            Held(_) => assert!(start.elapsed() < Duration::from_secs(5), "never expired"),
            Moved => panic!("moved"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    a.release_refresh_lease(&v2, inc).await.unwrap();
    assert_eq!(
        b.acquire_refresh_lease(&v2, inc, ttl).await.unwrap(),
        Acquired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_taken_on_three_replicas_at_once_is_taken_once() {
    let Some(url) = database_url("postgres::a_ticket_taken_on_three_replicas") else {
        return;
    };
    let schema = Schema::create(&url).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Arc::new(replica(&schema).await));
    }
    let app = replicas[0]
        .create_app(contract::sample_app("acme", "github"))
        .await
        .unwrap();
    let now = crate::clock::Clock::system().now().unwrap();
    for round in 0..20 {
        let user = format!("user-{round}");
        let ticket = replicas[0]
            .issue_ticket(contract::ticket(&app, &user, now + 900))
            .await
            .unwrap();
        let pending = contract::pending(&app, &user, now + 600);
        replicas[1].put_pending(pending.clone()).await.unwrap();
        let takes = replicas.iter().map(|r| {
            let (r, id, state) = (r.clone(), ticket.id.clone(), pending.state.clone());
            tokio::spawn(async move {
                (
                    r.take_ticket(&id).await.unwrap().is_some(),
                    r.take_pending(&state).await.unwrap().is_some(),
                )
            })
        });
        let results: Vec<_> = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(results.iter().filter(|r| r.0).count(), 1, "{results:?}");
        assert_eq!(results.iter().filter(|r| r.1).count(), 1, "{results:?}");
    }
}
