//! One refresh per grant across replicas on a shared store: in front of the provider call,
//! after the in-process single-flight, the injector takes the grant's refresh lease in the
//! store ([`Store::acquire_refresh_lease`], judged by the database clock). Losers wait until
//! the grant's version moves (the winner's write) or the lease ends (the winner died), then
//! use the new grant or try again. The provider call holds no transaction and no pooled
//! connection, and its deadline is shorter than the lease, so a holder never writes after
//! its lease could have passed to another replica; the write is the store's compare-and-swap
//! on the version, which also clears the lease. A failed refresh releases it at once.
//!
//! [`Store::acquire_refresh_lease`]: crate::store::Store::acquire_refresh_lease

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::egress::EgressError;
use super::super::grant::{Grant, TokenError};
use super::{InjectError, Injector};
use crate::store::{App, RefreshLease, Secret, TokenSet};

/// How long a refresh lease lasts, by the database's clock.
pub const REFRESH_LEASE: Duration = Duration::from_secs(15);

/// The provider call's deadline under a lease: shorter than the lease.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(10);

/// How often a replica waiting for another's refresh reads the grant again.
const WAIT_POLL: Duration = Duration::from_millis(25);

/// Longest a request waits for other replicas' refreshes (two leases and a margin).
const WAIT_LIMIT: Duration = Duration::from_secs(35);

impl Injector {
    /// Takes the refresh lease on `current`. `Ok(None)`: this replica holds it and refreshes.
    /// `Ok(Some(t))`: another replica wrote the grant meanwhile; use `t`.
    pub(super) async fn refresh_lease(
        &self,
        app: &Arc<App>,
        user: &str,
        current: &TokenSet,
    ) -> Result<Option<Arc<TokenSet>>, InjectError> {
        let start = Instant::now();
        loop {
            let left = match self
                .store
                .acquire_refresh_lease(current, app.incarnation, REFRESH_LEASE)
                .await?
            {
                RefreshLease::Acquired => return Ok(None),
                RefreshLease::Moved => return self.written_elsewhere(app, user).await.map(Some),
                RefreshLease::Held(left) => left,
            };
            // Wait for the holder's write, or for its lease to end.
            let until = Instant::now() + left + WAIT_POLL;
            while Instant::now() < until {
                tokio::time::sleep(WAIT_POLL).await;
                match self.read(app, user).await? {
                    Some(t) if t.version == current.version => {}
                    _ => return self.written_elsewhere(app, user).await.map(Some),
                }
            }
            if start.elapsed() > WAIT_LIMIT {
                return Err(InjectError::RefreshFailed {
                    app: app.id.clone(),
                    reason: "another replica's refresh of this grant did not finish".into(),
                });
            }
        }
    }

    /// The grant as another writer left it; a consent answer if it is gone.
    async fn written_elsewhere(
        &self,
        app: &Arc<App>,
        user: &str,
    ) -> Result<Arc<TokenSet>, InjectError> {
        self.metrics.count_refresh("superseded");
        match self.read(app, user).await? {
            Some(t) => Ok(t),
            None => Err(self.consent_required(app, user).await),
        }
    }

    /// The provider call under the lease, within [`REFRESH_DEADLINE`]; a failure releases
    /// the lease so another replica need not wait for it to expire.
    pub(super) async fn refresh_leased(
        &self,
        app: &App,
        current: &TokenSet,
        refresh_token: &Secret,
    ) -> Result<Grant, TokenError> {
        let result =
            match tokio::time::timeout(REFRESH_DEADLINE, self.tokens.refresh(app, refresh_token))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(TokenError::Transport(EgressError::Timeout(
                    REFRESH_DEADLINE,
                ))),
            };
        if result.is_err() {
            if let Err(e) = self
                .store
                .release_refresh_lease(current, app.incarnation)
                .await
            {
                tracing::warn!(org = %app.org, app = %app.id, error = %e, "releasing a refresh lease failed; it expires on its own");
            }
        }
        result
    }
}
