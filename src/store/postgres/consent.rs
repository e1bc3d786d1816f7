//! Consent tickets and pending authorizations on PostgreSQL: one live ticket per
//! (org, app, user) through the unique `owner` column, lookups by hash, and single-use
//! consumption with `DELETE … RETURNING`, checked against the app in the same transaction.

use deadpool_postgres::Transaction;

use super::super::model::{ConsentTicket, PendingAuthorization};
use super::super::record::{lookup_hash, ConsentRecord, Kind, PendingRecord, TicketRecord};
use super::{pg, record_text, to_db, PgStore};
use crate::store::{StoreError, StoreResult};

/// How often `issue_ticket` retries when a concurrent issue for the same owner won the insert.
const ISSUE_ATTEMPTS: usize = 16;

/// The plain columns of a consent record: org, app, incarnation, generation, expiry.
fn columns(r: &impl ConsentRecord) -> (String, String, i64, i64, i64) {
    let b = r.binding();
    (
        b.org.to_owned(),
        b.app.to_owned(),
        to_db(b.incarnation),
        to_db(b.generation),
        i64::try_from(b.expires_at).unwrap_or(i64::MAX),
    )
}

impl PgStore {
    /// Whether a consent record is unexpired and its app still at its incarnation and
    /// generation (read inside `tx`, holding the app's row against a reset).
    async fn usable(&self, tx: &Transaction<'_>, rec: &impl ConsentRecord) -> StoreResult<bool> {
        let b = rec.binding();
        if self.clock.now()? >= b.expires_at {
            return Ok(false);
        }
        Ok(
            Self::app_version_locked(tx, b.org, b.app).await?
                == Some((b.incarnation, b.generation)),
        )
    }

    /// `Store::issue_ticket`.
    pub(super) async fn issue_ticket_now(
        &self,
        ticket: ConsentTicket,
    ) -> StoreResult<ConsentTicket> {
        let now = self.clock.now()?;
        let hash = lookup_hash(Kind::Ticket, &ticket.id);
        let sealed = TicketRecord::seal(&ticket, &hash, &self.key)?;
        let owner = sealed.owner_key();
        let (org, app, inc, generation, expires) = columns(&sealed);
        let rec = record_text(&sealed)?;
        let mut client = self.client().await?;
        for _ in 0..ISSUE_ATTEMPTS {
            let tx = client.transaction().await.map_err(pg)?;
            let old = tx
                .query_opt(
                    "SELECT hash, rec FROM consent_tickets WHERE owner = $1 FOR UPDATE",
                    &[&owner],
                )
                .await
                .map_err(pg)?;
            if let Some(row) = old {
                let old_hash: Vec<u8> = row.get(0);
                let reusable = TicketRecord::decode(&old_hash, row.get::<_, &str>(1).as_bytes())
                    .ok()
                    .filter(|r| r.reusable_for(&ticket, now))
                    .and_then(|r| r.open(&old_hash, &self.key).ok());
                if let Some(existing) = reusable {
                    tx.commit().await.map_err(pg)?;
                    return Ok(existing);
                }
                // Expired, for another app version, or unreadable: replaced.
                tx.execute("DELETE FROM consent_tickets WHERE hash = $1", &[&old_hash])
                    .await
                    .map_err(pg)?;
            }
            let n = tx
                .execute(
                    "INSERT INTO consent_tickets \
                     (hash, owner, org, app, incarnation, generation, expires_at, rec) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &&hash[..],
                        &owner,
                        &org,
                        &app,
                        &inc,
                        &generation,
                        &expires,
                        &rec,
                    ],
                )
                .await
                .map_err(pg)?;
            if n == 1 {
                tx.commit().await.map_err(pg)?;
                return Ok(ticket);
            }
            // A concurrent issue for the same owner committed first: look again.
            tx.rollback().await.map_err(pg)?;
        }
        Err(StoreError::Io(
            "issuing a consent ticket: too much contention".into(),
        ))
    }

    /// `Store::get_ticket`.
    pub(super) async fn get_ticket_now(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        let hash = lookup_hash(Kind::Ticket, id);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(row) = tx
            .query_opt(
                "SELECT rec FROM consent_tickets WHERE hash = $1",
                &[&&hash[..]],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let rec = TicketRecord::decode(&hash, row.get::<_, &str>(0).as_bytes())?;
        if !self.usable(&tx, &rec).await? {
            return Ok(None);
        }
        rec.open(&hash, &self.key).map(Some)
    }

    /// `Store::take_ticket`.
    pub(super) async fn take_ticket_now(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        let hash = lookup_hash(Kind::Ticket, id);
        let taken = self
            .take_consent("consent_tickets", &hash, |b| TicketRecord::decode(&hash, b))
            .await?;
        taken.map(|r| r.open(&hash, &self.key)).transpose()
    }

    /// `Store::put_pending`.
    pub(super) async fn put_pending_now(&self, pending: PendingAuthorization) -> StoreResult<()> {
        let hash = lookup_hash(Kind::Pending, &pending.state);
        let sealed = PendingRecord::seal(&pending, &hash, &self.key)?;
        let (org, app, inc, generation, expires) = columns(&sealed);
        self.client()
            .await?
            .execute(
                "INSERT INTO consent_pending \
                 (hash, org, app, incarnation, generation, expires_at, rec) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO UPDATE SET \
                 org = EXCLUDED.org, app = EXCLUDED.app, incarnation = EXCLUDED.incarnation, \
                 generation = EXCLUDED.generation, expires_at = EXCLUDED.expires_at, \
                 rec = EXCLUDED.rec",
                &[
                    &&hash[..],
                    &org,
                    &app,
                    &inc,
                    &generation,
                    &expires,
                    &record_text(&sealed)?,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// `Store::take_pending`.
    pub(super) async fn take_pending_now(
        &self,
        state: &str,
    ) -> StoreResult<Option<PendingAuthorization>> {
        let hash = lookup_hash(Kind::Pending, state);
        let taken = self
            .take_consent("consent_pending", &hash, |b| {
                PendingRecord::decode(&hash, b)
            })
            .await?;
        taken.map(|r| r.open(state, &hash, &self.key)).transpose()
    }

    /// Deletes the record under `hash` from `table` and returns it decoded if it was
    /// unexpired and its app is still at its incarnation and generation; a stale record is
    /// removed all the same. One transaction: of concurrent takers, one gets the row. The
    /// app's row is locked before the record's, the order a reset takes them in, so the two
    /// never deadlock.
    async fn take_consent<R: ConsentRecord>(
        &self,
        table: &str,
        hash: &[u8],
        decode: impl Fn(&[u8]) -> StoreResult<R>,
    ) -> StoreResult<Option<R>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(owner) = tx
            .query_opt(
                &format!("SELECT org, app FROM {table} WHERE hash = $1"),
                &[&hash],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let current = Self::app_version_locked(&tx, owner.get(0), owner.get(1)).await?;
        let Some(row) = tx
            .query_opt(
                &format!("DELETE FROM {table} WHERE hash = $1 RETURNING rec"),
                &[&hash],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let rec = decode(row.get::<_, &str>(0).as_bytes())?;
        let b = rec.binding();
        let usable = self.clock.now()? < b.expires_at
            && current == Some((b.incarnation, b.generation))
            && (b.org, b.app) == (owner.get(0), owner.get(1));
        tx.commit().await.map_err(pg)?;
        Ok(usable.then_some(rec))
    }
}
