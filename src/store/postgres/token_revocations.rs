//! Caller-token revocations in PostgreSQL: one row per [`TokenRevocation::key`], merged under
//! an advisory lock on the key so that concurrent revocations of the same tokens never narrow
//! what is refused, with the change recorded in the same transaction.

use super::super::changes::Change;
use super::super::record::token_revocation::TokenRevocationRecord;
use super::{pg, record_text, PgStore};
use crate::store::{StoreResult, TokenRevocation};

impl PgStore {
    /// `revoke_tokens`.
    pub(super) async fn revoke_tokens_now(
        &self,
        revocation: TokenRevocation,
    ) -> StoreResult<TokenRevocation> {
        let key = revocation.key();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("token_revocation/{key}")],
        )
        .await
        .map_err(pg)?;
        let previous = tx
            .query_opt("SELECT rec FROM token_revocations WHERE key = $1", &[&key])
            .await
            .map_err(pg)?
            .map(|r| TokenRevocationRecord::decode(&key, r.get::<_, &str>(0).as_bytes()))
            .transpose()?;
        let merged = revocation.merged(previous.as_ref());
        let expires_at = i64::try_from(merged.expires_at).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO token_revocations (key, rec, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET rec = EXCLUDED.rec, expires_at = EXCLUDED.expires_at",
            &[
                &key,
                &record_text(&TokenRevocationRecord::new(&merged))?,
                &expires_at,
            ],
        )
        .await
        .map_err(pg)?;
        self.record_change(&tx, &Change::TokensRevoked).await?;
        self.commit_publishing(tx, Change::TokensRevoked).await?;
        Ok(merged)
    }

    /// `list_token_revocations`: the unexpired ones.
    pub(super) async fn token_revocations(&self) -> StoreResult<Vec<TokenRevocation>> {
        let now = i64::try_from(self.clock.now()?).unwrap_or(i64::MAX);
        self.client()
            .await?
            .query(
                "SELECT key, rec FROM token_revocations WHERE expires_at > $1 ORDER BY key",
                &[&now],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                TokenRevocationRecord::decode(r.get::<_, &str>(0), r.get::<_, &str>(1).as_bytes())
            })
            .collect()
    }
}
