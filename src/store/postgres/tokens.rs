//! Grant writes on PostgreSQL: the compare-and-swap of a token set under the grant's
//! transaction lock, and the current generation's token records of an app.

use super::rows::{pg, record_text, to_db};
use super::PgStore;
use crate::store::changes::Change;
use crate::store::record::{TokenKey, TokenRecord};
use crate::store::{StoreError, StoreResult, TokenSet};

impl PgStore {
    /// Writes `token` if the app still has `incarnation` and the token's generation, in one
    /// transaction holding the grant's lock: with `replace_only` (a refresh) only over the
    /// stored grant of version `token.version`, else over whatever is stored. The stored
    /// version is one past the previous (1 if none).
    pub(super) async fn write_token(
        &self,
        mut token: TokenSet,
        incarnation: u64,
        replace_only: bool,
    ) -> StoreResult<Option<TokenSet>> {
        let mut sealed = TokenRecord::seal(&token, incarnation, &self.key)?;
        let tk = TokenRecord::key_of(&token, incarnation);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if Self::app_version_locked(&tx, &token.org, &token.app).await?
            != Some((incarnation, token.generation))
        {
            return Ok(None);
        }
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&tk.name()],
        )
        .await
        .map_err(pg)?;
        let keys: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &tk.org,
            &tk.app,
            &to_db(incarnation),
            &to_db(token.generation),
            &tk.user,
        ];
        let stored = tx
            .query_opt(
                "SELECT rec FROM tokens WHERE org = $1 AND app = $2 AND incarnation = $3 \
                 AND generation = $4 AND usr = $5",
                &keys,
            )
            .await
            .map_err(pg)?;
        let stored = match stored {
            None => None,
            Some(row) => match TokenRecord::decode(&tk, row.get::<_, &str>(0).as_bytes()) {
                Ok(rec) => {
                    sealed.keep_last_used(&rec);
                    Some(rec.version())
                }
                Err(e) if replace_only => return Err(e),
                // A consent replaces an unreadable grant.
                Err(_) => Some(0),
            },
        };
        let version = match (replace_only, stored) {
            (true, Some(v)) if v == token.version => v + 1,
            (true, _) => return Ok(None),
            (false, v) => v.map_or(1, |v| v + 1),
        };
        sealed.set_version(version);
        let rec = record_text(&sealed)?;
        tx.execute(
            "INSERT INTO tokens (org, app, incarnation, generation, usr, version, rec) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (org, app, incarnation, generation, usr) DO UPDATE \
             SET version = EXCLUDED.version, rec = EXCLUDED.rec, \
                 lease_owner = NULL, lease_until = NULL",
            &[
                keys[0],
                keys[1],
                keys[2],
                keys[3],
                keys[4],
                &to_db(version),
                &rec,
            ],
        )
        .await
        .map_err(pg)?;
        let change = Change::GrantChanged {
            org: token.org.clone(),
            app: token.app.clone(),
            user: token.user.clone(),
        };
        self.record_change(&tx, &change).await?;
        self.commit_publishing(tx, change).await?;
        token.version = version;
        Ok(Some(token))
    }

    /// Token records of the app's current incarnation and generation, by user.
    pub(super) async fn current_token_records(
        &self,
        org: &str,
        app: &str,
    ) -> StoreResult<Vec<TokenRecord>> {
        let (inc, generation) = self
            .current_version(org, app)
            .await?
            .ok_or(StoreError::NotFound)?;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT usr, rec FROM tokens WHERE org = $1 AND app = $2 AND incarnation = $3 \
                 AND generation = $4 ORDER BY usr",
                &[&org, &app, &to_db(inc), &to_db(generation)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let tk = TokenKey {
                    org: org.to_owned(),
                    app: app.to_owned(),
                    incarnation: inc,
                    generation,
                    user: r.get(0),
                };
                TokenRecord::decode(&tk, r.get::<_, &str>(1).as_bytes())
            })
            .collect()
    }
}
