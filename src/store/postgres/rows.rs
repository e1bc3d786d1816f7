//! Conversions between the store's values and PostgreSQL rows, shared by every file of the
//! backend: errors, `u64` counters in `bigint` columns, records as JSON text.

use super::health;
use crate::store::record::{encode, AppRecord};
use crate::store::{StoreError, StoreResult};

/// A PostgreSQL error as a store error (the server's message never holds a secret: every
/// secret is sealed before it is sent); losing the server is [`StoreError::Unavailable`].
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    if health::unreachable(&e) {
        return StoreError::Unavailable(format!("postgres: {e}"));
    }
    StoreError::Io(format!("postgres: {e}"))
}

/// A `u64` (random incarnation, generation, version) in a `bigint` column, bit for bit.
pub(super) fn to_db(n: u64) -> i64 {
    n as i64
}

/// A `bigint` column back into the `u64` it stores.
pub(super) fn from_db(n: i64) -> u64 {
    n as u64
}

/// A record's stored text (the JSON [`encode`] makes).
pub(super) fn record_text<T: serde::Serialize>(rec: &T) -> StoreResult<String> {
    String::from_utf8(encode(rec)?).map_err(|e| StoreError::Io(format!("encoding a record: {e}")))
}

/// Decodes an app row's record.
pub(super) fn app_from_row(org: &str, id: &str, rec: &str) -> StoreResult<AppRecord> {
    AppRecord::decode(org, id, rec.as_bytes())
}
