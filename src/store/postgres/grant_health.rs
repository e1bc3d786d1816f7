//! Health-only writes of a grant on PostgreSQL ([`crate::store::grant_health`]): the grant's
//! row is locked, its record's health rewritten, and its `version`, sealed tokens and refresh
//! lease left as they are.

use super::super::grant_health::{GrantRef, HealthUpdate};
use super::super::model::GrantHealth;
use super::super::record::TokenRecord;
use super::{pg, record_text, to_db, PgStore};
use crate::store::StoreResult;

impl PgStore {
    /// [`crate::store::Store::update_grant_health`].
    pub(super) async fn update_health(
        &self,
        grant: &GrantRef,
        update: &HealthUpdate,
    ) -> StoreResult<Option<(GrantHealth, GrantHealth)>> {
        let tk = TokenRecord::key_of_ref(grant);
        let (inc, generation) = (to_db(grant.incarnation), to_db(grant.generation));
        let keys: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&tk.org, &tk.app, &inc, &generation, &tk.user];
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(row) = tx
            .query_opt(
                "SELECT rec FROM tokens WHERE org = $1 AND app = $2 AND incarnation = $3 \
                 AND generation = $4 AND usr = $5 FOR UPDATE",
                &keys,
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let mut rec = TokenRecord::decode(&tk, row.get::<_, &str>(0).as_bytes())?;
        let Some((before, after)) = rec.apply_health(grant, update) else {
            return Ok(None);
        };
        if after != before {
            let text = record_text(&rec)?;
            tx.execute(
                "UPDATE tokens SET rec = $6 WHERE org = $1 AND app = $2 AND incarnation = $3 \
                 AND generation = $4 AND usr = $5",
                &[keys[0], keys[1], keys[2], keys[3], keys[4], &text],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
        }
        Ok(Some((before, after)))
    }
}
