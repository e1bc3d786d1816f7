//! Whether PostgreSQL can be reached, for degraded mode: an error that means the server is
//! gone (refused, closed, timed out, shutting down) becomes [`StoreError::Unavailable`], which
//! the request paths answer with `503 store_unavailable` while cached requests go on, and
//! [`PgStore::ping_now`] tells `/readyz` whether the store answers now.
//!
//! The pool needs nothing to recover: a connection that fails its `Verified` check is dropped
//! and a new one is made on the next request; the listener reconnects on its own.

use std::time::{Duration, Instant};

use deadpool_postgres::PoolError;

use super::PgStore;
use crate::store::{StoreError, StoreResult};

/// Longest a ping waits for a connection and its round trip: a probe must answer quickly.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a ping's answer is reused, so that probes (or a flood of anonymous `/readyz`
/// requests) cost at most one round trip per this period and never crowd the pool.
const PING_REUSE: Duration = Duration::from_secs(1);

/// The last ping's answer and when it was taken.
#[derive(Default)]
pub(super) struct Probe {
    /// `None` before the first ping.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

/// SQLSTATEs that mean the server went away or is not accepting work, rather than that the
/// statement was wrong: admin shutdown, crash shutdown, cannot connect now, query cancelled
/// (the statement timeout); and the whole connection-exception class `08`.
const GONE: &[&str] = &["57P01", "57P02", "57P03", "57014"];

/// Whether `e` means PostgreSQL cannot be reached (as opposed to a refused statement).
pub(super) fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || GONE.contains(&code);
    }
    if std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    // tokio-postgres has no public error kind; its messages for a lost server are fixed.
    let text = e.to_string();
    [
        "error connecting to server",
        "timeout waiting for server",
        "error communicating with the server",
        "error performing TLS handshake",
        "connection closed",
    ]
    .iter()
    .any(|m| text.starts_with(m))
}

/// A failure to get a pooled connection: the server unreachable, or every connection busy
/// past the wait (which, with short statements, also means the server is not answering).
pub(super) fn pool_error(e: PoolError) -> StoreError {
    match &e {
        PoolError::Backend(pg) if !unreachable(pg) => StoreError::Io(format!("postgres pool: {e}")),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Io(format!("postgres pool: {e}"))
        }
        _ => StoreError::Unavailable(format!("postgres pool: {e}")),
    }
}

impl PgStore {
    /// `Store::ping`: one round trip within [`PING_TIMEOUT`], its answer reused for
    /// [`PING_REUSE`].
    pub(super) async fn ping_now(&self) -> StoreResult<()> {
        let mut last = self.probe.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < PING_REUSE {
                return answer.clone().map_err(StoreError::Unavailable);
            }
        }
        let answer = match tokio::time::timeout(PING_TIMEOUT, async {
            self.client()
                .await?
                .simple_query("SELECT 1")
                .await
                .map_err(super::pg)
        })
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(StoreError::Unavailable(m) | StoreError::Io(m))) => Err(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "postgres: no answer within {}s",
                PING_TIMEOUT.as_secs()
            )),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer.map_err(StoreError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_and_a_bad_statement_is_not() {
        // Nothing listens there: connecting is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable");
        let config = super::super::schema::config(&url).unwrap();
        let Err(e) = config.connect(tokio_postgres::NoTls).await else {
            panic!("connected to a closed port");
        };
        assert!(unreachable(&e), "{e}");
        let Some(url) = super::super::tests::database_url("postgres::health") else {
            return;
        };
        let config = super::super::schema::config(&url).unwrap();
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let e = client.simple_query("SELEKT 1").await.unwrap_err();
        assert!(!unreachable(&e), "{e}");
    }
}
