//! Health-only writes of a grant on PostgreSQL ([`crate::store::grant_health`]): the grant's
//! row is locked, its record's health rewritten, and its `version`, sealed tokens and refresh
//! lease left as they are.

use super::super::grant_health::{GrantRef, HealthUpdate};
use super::super::model::GrantHealth;
use super::super::record::{TokenKey, TokenRecord};
use super::{pg, record_text, to_db, PgStore};
use crate::store::StoreResult;

impl PgStore {
    /// [`crate::store::Store::update_grant_health`].
    pub(super) async fn update_health(
        &self,
        grant: &GrantRef,
        update: &HealthUpdate,
    ) -> StoreResult<Option<(GrantHealth, GrantHealth)>> {
        let tk = TokenKey {
            org: grant.org.clone(),
            app: grant.app.clone(),
            incarnation: grant.incarnation,
            generation: grant.generation,
            user: grant.user.clone(),
        };
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
        if grant.version.is_some_and(|v| v != rec.version()) {
            return Ok(None);
        }
        let before = rec.health();
        let after = update.apply(&before);
        if after != before {
            rec.set_health(&after);
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
