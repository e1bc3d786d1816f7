//! Store operation latency, measured in one place: [`Timed`] wraps the store the server
//! uses and reports each operation's duration, named by its `Store` method, to an observer
//! (the server passes `Metrics::observe_store`: `tollgate_store_operation_duration_seconds`).
//! The store knows nothing of metrics; the observer is a plain function.
//!
//! Every `Store` method is forwarded here. A method added to the trait must be added to the
//! list below too: one without a default body fails to compile until it is, and one with a
//! default would otherwise silently run the default instead of the backend's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    AgentRevocation, App, AuditEvent, AuditQuery, Authorization, Changes, ConsentTicket,
    GrantHealth, GrantRef, HealthUpdate, PendingAuthorization, RefreshLease, Replica, ReplicaStore,
    Store, StoreResult, TokenRevocation, TokenSet,
};

/// Receives each operation's name and duration.
pub type Observer = Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

/// A store whose operations are timed.
pub struct Timed {
    /// The backend.
    inner: Arc<dyn Store>,
    /// Where durations go.
    observe: Observer,
}

impl Timed {
    /// Wraps `inner`, reporting to `observe`.
    pub fn wrap(inner: Arc<dyn Store>, observe: Observer) -> Arc<dyn Store> {
        Arc::new(Timed { inner, observe })
    }
}

/// Forwards each listed method of trait `$trait` to the backend, timing it; `$extra` are
/// further items of the impl, forwarded untimed.
macro_rules! timed {
    ($trait:ident { $( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )* } $($extra:tt)*) => {
        #[async_trait]
        impl $trait for Timed {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let start = Instant::now();
                    let out = self.inner.$name($($arg),*).await;
                    (self.observe)(stringify!($name), start.elapsed());
                    out
                }
            )*
            $($extra)*
        }
    };
}

timed! { Store {
    fn create_app(&self, app: App) -> StoreResult<App>;
    fn get_app(&self, org: &str, id: &str) -> StoreResult<Option<App>>;
    fn list_apps(&self, org: &str) -> StoreResult<Vec<App>>;
    fn list_all_apps(&self) -> StoreResult<Vec<App>>;
    fn update_app(&self, app: App) -> StoreResult<App>;
    fn set_app_enabled(&self, org: &str, id: &str, enabled: bool) -> StoreResult<App>;
    fn reset_app(&self, org: &str, id: &str) -> StoreResult<App>;
    fn delete_app(&self, org: &str, id: &str) -> StoreResult<()>;
    fn get_token(&self, org: &str, app: &str, incarnation: u64, generation: u64, user: &str) -> StoreResult<Option<TokenSet>>;
    fn put_token_if_current(&self, token: TokenSet, incarnation: u64) -> StoreResult<bool>;
    fn replace_token_if_current(&self, token: TokenSet, incarnation: u64) -> StoreResult<Option<TokenSet>>;
    fn delete_token(&self, org: &str, app: &str, user: &str) -> StoreResult<bool>;
    fn list_tokens(&self, org: &str, app: &str) -> StoreResult<Vec<TokenSet>>;
    fn list_authorizations(&self, org: &str, app: &str) -> StoreResult<Vec<Authorization>>;
    fn count_authorizations(&self, org: &str, app: &str) -> StoreResult<usize>;
    fn issue_ticket(&self, ticket: ConsentTicket) -> StoreResult<ConsentTicket>;
    fn get_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>>;
    fn take_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>>;
    fn put_pending(&self, pending: PendingAuthorization) -> StoreResult<()>;
    fn take_pending(&self, state: &str) -> StoreResult<Option<PendingAuthorization>>;
    fn append_audit(&self, event: AuditEvent) -> StoreResult<AuditEvent>;
    fn list_audit(&self, org: &str, limit: usize) -> StoreResult<Vec<AuditEvent>>;
    fn purge_stale(&self) -> StoreResult<usize>;
    fn flush(&self) -> StoreResult<()>;
    fn update_app_new_generation(&self, app: App) -> StoreResult<App>;
    fn revoke_agent(&self, agent: &str) -> StoreResult<AgentRevocation>;
    fn get_agent_revocation(&self, agent: &str) -> StoreResult<Option<AgentRevocation>>;
    fn list_agent_revocations(&self) -> StoreResult<Vec<AgentRevocation>>;
    fn acquire_refresh_lease(&self, token: &TokenSet, incarnation: u64, ttl: std::time::Duration) -> StoreResult<RefreshLease>;
    fn release_refresh_lease(&self, token: &TokenSet, incarnation: u64) -> StoreResult<()>;
    fn release_all_refresh_leases(&self) -> StoreResult<u64>;
    fn ping(&self) -> StoreResult<()>;
    fn revoke_tokens(&self, revocation: TokenRevocation) -> StoreResult<TokenRevocation>;
    fn list_token_revocations(&self) -> StoreResult<Vec<TokenRevocation>>;
    fn seal_usage(&self) -> StoreResult<std::collections::BTreeMap<String, u64>>;
    fn reseal_progress(&self) -> StoreResult<Option<super::ResealProgress>>;
    fn start_reseal(&self, target: &str) -> StoreResult<super::ResealProgress>;
    fn reseal_batch(&self, limit: usize, owner: &str) -> StoreResult<Option<super::ResealProgress>>;
    fn update_grant_health(&self, grant: &GrantRef, update: &HealthUpdate) -> StoreResult<Option<(GrantHealth, GrantHealth)>>;
    fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
}
    fn subscribe(&self) -> Changes {
        self.inner.subscribe()
    }
}

timed! { ReplicaStore {
    fn heartbeat_replica(&self, id: &str, relay: Option<&str>, ttl: Duration) -> StoreResult<()>;
    fn list_replicas(&self) -> StoreResult<Vec<Replica>>;
    fn remove_replica(&self, id: &str) -> StoreResult<bool>;
    fn prune_audit(&self, keep: Duration) -> StoreResult<usize>;
    fn prune_changes(&self, keep: Duration) -> StoreResult<usize>;
} }
