//! Connecting to PostgreSQL and bringing its schema up to date.
//!
//! Connections: TLS through rustls on `ring` (webpki roots; `sslmode` from the URL decides
//! whether it is required), TCP keepalives, a connect timeout and a `statement_timeout`, so a
//! dead server or a stuck query surfaces as an error instead of a hung request.
//!
//! Migrations are embedded, versioned SQL files applied in one transaction under
//! `pg_advisory_xact_lock`: replicas starting at once on an empty database queue on the lock,
//! the first applies everything, and the others find nothing left to do.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::{pg, PgStore};
use crate::store::{StoreError, StoreResult};

/// The migrations, in order: (version, SQL). Never edit one that was released; add another.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_replicas.sql")),
    (3, include_str!("migrations/0003_retention.sql")),
    (4, include_str!("migrations/0004_token_revocations.sql")),
    (5, include_str!("migrations/0005_grant_health.sql")),
];

/// Advisory lock key serializing migrations (any constant; "tollgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// A statement running longer than this is cancelled by the server.
const STATEMENT_TIMEOUT_MS: u64 = 15_000;

/// Connecting gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time before TCP keepalive probes start, so a dead peer is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Parses a `postgres://` URL into a connection configuration with tollgate's timeouts and
/// keepalives. The error never repeats the URL (it may hold a password).
pub(crate) fn config(url: &str) -> StoreResult<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Io(format!("invalid PostgreSQL URL: {e}")))?;
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c statement_timeout={STATEMENT_TIMEOUT_MS}"),
        _ => format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"),
    };
    config
        .options(&options)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("tollgate");
    Ok(config)
}

/// The TLS connector: rustls with the `ring` provider and the webpki roots.
pub(crate) fn tls() -> StoreResult<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Io(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Applies the migrations this build has and the database lacks, in one transaction.
    pub(super) async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg)?;
        let row = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg)?;
        let have: i64 = row.get(0);
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if have > newest {
            return Err(StoreError::Io(format!(
                "the database schema is version {have}, newer than this build's {newest}"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg)?;
            tracing::info!(version, "store: applied a PostgreSQL migration");
        }
        tx.commit().await.map_err(pg)
    }
}
