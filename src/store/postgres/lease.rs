//! Refresh leases on PostgreSQL: at most one replica refreshes a grant at a time.
//!
//! The lease is two columns of the grant's row, judged by the database's clock (never a
//! replica's), taken with one conditional `UPDATE` that also checks the grant's `version`:
//! a replica that read an older grant cannot take it. No transaction or connection is held
//! while the holder calls the provider; the lease simply expires if the holder dies. The
//! holder's write (`replace_token_if_current`) clears it, and a release only clears a lease
//! the releasing replica holds (the lock-released-by-another bug of Nango #2858).

use std::time::Duration;

use super::{pg, to_db, PgStore};
use crate::store::{RefreshLease, StoreResult, TokenSet};

impl PgStore {
    /// `Store::acquire_refresh_lease`.
    pub(super) async fn acquire_lease(
        &self,
        token: &TokenSet,
        incarnation: u64,
        ttl: Duration,
    ) -> StoreResult<RefreshLease> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let (inc, generation, version) = (
            to_db(incarnation),
            to_db(token.generation),
            to_db(token.version),
        );
        let taken = client
            .execute(
                "UPDATE tokens SET lease_owner = $7, \
                 lease_until = now() + $8::bigint::float8 * interval '1 millisecond' \
                 WHERE org = $1 AND app = $2 AND incarnation = $3 AND generation = $4 \
                 AND usr = $5 AND version = $6 \
                 AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $7)",
                &[
                    &token.org,
                    &token.app,
                    &inc,
                    &generation,
                    &token.user,
                    &version,
                    &self.replica,
                    &ttl_ms,
                ],
            )
            .await
            .map_err(pg)?;
        if taken == 1 {
            return Ok(RefreshLease::Acquired);
        }
        let row = client
            .query_opt(
                "SELECT version, \
                 greatest(extract(epoch FROM lease_until - now()) * 1000, 0)::bigint \
                 FROM tokens WHERE org = $1 AND app = $2 AND incarnation = $3 \
                 AND generation = $4 AND usr = $5",
                &[&token.org, &token.app, &inc, &generation, &token.user],
            )
            .await
            .map_err(pg)?;
        Ok(match row {
            Some(r) if r.get::<_, i64>(0) == version => {
                let left: Option<i64> = r.get(1);
                RefreshLease::Held(Duration::from_millis(
                    u64::try_from(left.unwrap_or(0)).unwrap_or(0),
                ))
            }
            _ => RefreshLease::Moved,
        })
    }

    /// `Store::release_refresh_lease`: only this replica's own lease.
    pub(super) async fn release_lease(
        &self,
        token: &TokenSet,
        incarnation: u64,
    ) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE tokens SET lease_owner = NULL, lease_until = NULL \
                 WHERE org = $1 AND app = $2 AND incarnation = $3 AND generation = $4 \
                 AND usr = $5 AND lease_owner = $6",
                &[
                    &token.org,
                    &token.app,
                    &to_db(incarnation),
                    &to_db(token.generation),
                    &token.user,
                    &self.replica,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// `Store::release_all_refresh_leases`: every lease this replica holds, at shutdown.
    pub(super) async fn release_own_leases(&self) -> StoreResult<u64> {
        self.client()
            .await?
            .execute(
                "UPDATE tokens SET lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner = $1",
                &[&self.replica],
            )
            .await
            .map_err(pg)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{database_url, replica, Schema};
    use crate::store::{contract, RefreshLease, Store};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leaving_replica_releases_its_leases_and_only_its_own() {
        let Some(url) = database_url("postgres::release_all_refresh_leases") else {
            return;
        };
        let schema = Schema::create(&url).await;
        let (a, b) = (replica(&schema).await, replica(&schema).await);
        let app = a
            .create_app(contract::sample_app("acme", "github"))
            .await
            .unwrap();
        let inc = app.incarnation;
        let mut grants = Vec::new();
        for user in ["alice", "bob"] {
            let put = contract::grant(&app, user, "at-1");
            assert!(a.put_token_if_current(put, inc).await.unwrap());
            let got = a
                .get_token("acme", "github", inc, app.generation, user)
                .await;
            grants.push(got.unwrap().unwrap());
        }
        let ttl = Duration::from_secs(15);
        // A holds alice's lease, B holds bob's.
        let took = a.acquire_refresh_lease(&grants[0], inc, ttl).await.unwrap();
        assert_eq!(took, RefreshLease::Acquired);
        let took = b.acquire_refresh_lease(&grants[1], inc, ttl).await.unwrap();
        assert_eq!(took, RefreshLease::Acquired);
        // A leaves: alice's lease is free at once, bob's is still B's.
        assert_eq!(a.release_all_refresh_leases().await.unwrap(), 1);
        let took = b.acquire_refresh_lease(&grants[0], inc, ttl).await.unwrap();
        assert_eq!(took, RefreshLease::Acquired);
        let held = a.acquire_refresh_lease(&grants[1], inc, ttl).await.unwrap();
        assert!(matches!(held, RefreshLease::Held(_)), "{held:?}");
    }
}
