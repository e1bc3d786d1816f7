//! Health-only writes of a grant in sled ([`crate::store::grant_health`]): a transaction on
//! the grant's record that rewrites only its health, never its version or sealed tokens.

use super::super::grant_health::{GrantRef, HealthUpdate};
use super::super::model::GrantHealth;
use super::super::record::{encode, token_key, TokenRecord};
use super::{abort, tx_error, SledStore};
use crate::store::StoreResult;

impl SledStore {
    /// [`crate::store::Store::update_grant_health`].
    pub(super) async fn update_health(
        &self,
        grant: &GrantRef,
        update: &HealthUpdate,
    ) -> StoreResult<Option<(GrantHealth, GrantHealth)>> {
        let tk = TokenRecord::key_of_ref(grant);
        let key = token_key(
            &grant.org,
            &grant.app,
            grant.incarnation,
            grant.generation,
            &grant.user,
        );
        let written = self
            .tokens
            .transaction(|tokens| {
                let Some(bytes) = tokens.get(key.as_slice())? else {
                    return Ok(None);
                };
                let mut rec = match TokenRecord::decode(&tk, &bytes) {
                    Ok(rec) => rec,
                    Err(e) => return abort(e),
                };
                let Some((before, after)) = rec.apply_health(grant, update) else {
                    return Ok(None);
                };
                if after != before {
                    match encode(&rec) {
                        Ok(b) => tokens.insert(key.as_slice(), b)?,
                        Err(e) => return abort(e),
                    };
                }
                Ok(Some((before, after)))
            })
            .map_err(tx_error)?;
        if written.as_ref().is_some_and(|(b, a)| b != a) {
            self.durable().await?;
        }
        Ok(written)
    }
}
