//! `Store::query_audit` on PostgreSQL: one statement whose absent filters are `NULL` (so the
//! text never varies with the input), newest first, bounded by the page size.

use super::rows::{pg, to_db};
use super::PgStore;
use crate::store::record::{decode, AuditRecord};
use crate::store::{AuditEvent, AuditQuery, StoreResult};

const QUERY: &str = "SELECT seq, rec FROM audit WHERE org = $1 \
     AND ($2::text IS NULL OR rec::jsonb ->> 'actor' = $2 \
          OR rec::jsonb -> 'detail' ->> 'user' = $2) \
     AND ($3::text IS NULL OR rec::jsonb ->> 'target' = $3) \
     AND ($4::text IS NULL OR rec::jsonb ->> 'action' LIKE $4) \
     AND ($5::bigint IS NULL OR at >= $5) \
     AND ($6::bigint IS NULL OR at <= $6) \
     AND ($7::bigint IS NULL OR seq < $7) \
     ORDER BY seq DESC LIMIT $8";

impl PgStore {
    /// [`crate::store::Store::query_audit`].
    pub(super) async fn query_audit_now(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let limit = i64::try_from(q.page_size()).unwrap_or(i64::MAX);
        let action = q.action_pattern();
        let (since, until, before) = (
            q.since.map(to_db),
            q.until.map(to_db),
            q.before_seq.map(to_db),
        );
        let rows = self
            .client()
            .await?
            .query(
                QUERY,
                &[
                    &q.org, &q.user, &q.app, &action, &since, &until, &before, &limit,
                ],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let name = format!("audit/{}/{}", q.org, r.get::<_, i64>(0));
                let rec: AuditRecord = decode(&name, r.get::<_, &str>(1).as_bytes())?;
                Ok(rec.into_event())
            })
            .collect()
    }
}
