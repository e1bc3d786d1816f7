//! Persistent state: outbound applications, users' token sets, consent tickets, pending
//! authorizations and the audit log.
//!
//! Callers see only the [`Store`] trait and the records in [`model`]; the embedded
//! implementation is [`SledStore`] (sled 0.34), the shared one [`PgStore`] (PostgreSQL, for
//! several proxy replicas). Callers never know which: no backend types in signatures, one
//! error type, and every method one atomic operation.
//!
//! Secrets (client secrets, webhook configurations, access and refresh tokens, PKCE
//! verifiers) are sealed with ChaCha20-Poly1305 under the store key ring (`data/keys/store.key`
//! and its rotations), with the record's key as associated data ([`seal`]); each value names
//! its key, and a rotation re-seals every record in the background ([`reseal`]). The stored
//! JSON never holds plaintext.
//!
//! Caches of what the store holds (the app index, the injector's token cache) follow the
//! store's [`changes`] instead of being invalidated by whoever wrote.
//!
//! Generations and incarnations: every token set, ticket and pending authorization records
//! the app's `generation` (bumped by reset) and `incarnation` (random per creation). The store
//! hands them out only while they match the app's current values, so a reset or a delete
//! invalidates everything at once, and the stale records are then deleted. A token set also
//! has its own `version`, moved by every write: a refresh is a compare-and-swap on it.
//!
//! Every backend passes the same contract suite (`contract`, generic over `dyn Store`).

pub mod app_config;
pub mod audit_query;
pub mod changes;
#[cfg(test)]
pub(crate) mod contract;
pub mod copy;
pub mod grant_health;
pub mod model;
mod postgres;
mod record;
pub mod replicas;
pub mod reseal;
pub mod seal;
mod sled_store;
pub mod timed;

use async_trait::async_trait;

use crate::clock::ClockError;

pub use app_config::{AppConfig, ClientAuth, Handshake};
pub use audit_query::AuditQuery;
pub use changes::{Change, ChangeEvent, ChangeFeed, Changes, Seen};
pub use grant_health::{GrantRef, HealthUpdate};
pub use model::{
    random_id, App, AuditEvent, Authorization, ConsentTicket, GrantHealth, GrantState,
    PendingAuthorization, Secret, TokenSet, BROWSER_TAG_LEN, PENDING_TTL_SECS, TICKET_TTL_SECS,
};
pub use postgres::PgStore;
pub use record::agent::AgentRevocation;
pub use record::token_revocation::{RevokedTokens, TokenRevocation};
pub use replicas::{Replica, ReplicaStore};
pub use reseal::ResealProgress;
pub use seal::StoreKey;
pub use sled_store::SledStore;

/// Store failures. None of them carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record (usually the app) does not exist.
    #[error("not found")]
    NotFound,
    /// A record with that id already exists.
    #[error("already exists")]
    Conflict,
    /// A stored record cannot be read: truncated, written by another build, tampered with,
    /// or sealed under another key.
    #[error("corrupt record {record}: {reason}")]
    Corrupt {
        /// Which record, e.g. `app/acme/github` or `token/acme/github/<inc>/<gen>/alice`.
        record: String,
        /// Why, in words for an operator.
        reason: String,
    },
    /// The backend failed (disk, lock, random generator, the host clock).
    #[error("store: {0}")]
    Io(String),
    /// A shared store cannot be reached (connection refused or lost, timed out): requests
    /// that need it fail with `503 store_unavailable` until it returns, cached ones go on.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<ClockError> for StoreError {
    fn from(e: ClockError) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The persistent state of tollgate. Every method is one atomic operation; writes that a
/// response depends on (app changes, token writes and deletes) are durable when the method
/// returns.
///
/// Lookups of things that may legitimately be absent return `Ok(None)`; mutations of an app
/// that does not exist return [`StoreError::NotFound`].
///
/// The replicas table and retention are the [`ReplicaStore`] part ([`replicas`]).
#[async_trait]
pub trait Store: ReplicaStore + Send + Sync {
    // ----- apps -----

    /// Creates an app. The store sets `incarnation` (random), `generation = 1`, `created_at`
    /// and `updated_at`, and `enabled = true`; the values passed in are ignored.
    /// [`StoreError::Conflict`] if `(org, id)` exists.
    async fn create_app(&self, app: App) -> StoreResult<App>;

    /// One app of an org.
    async fn get_app(&self, org: &str, id: &str) -> StoreResult<Option<App>>;

    /// The apps of an org, by id.
    async fn list_apps(&self, org: &str) -> StoreResult<Vec<App>>;

    /// Every app of every org, by (org, id): for building the domain index at startup.
    async fn list_all_apps(&self) -> StoreResult<Vec<App>>;

    /// Replaces an app's configuration (including the client secret: pass the one from
    /// [`Store::get_app`] to keep it). `enabled`, `generation`, `incarnation` and `created_at`
    /// are kept from the stored app; `updated_at` is set. [`StoreError::NotFound`] if absent
    /// (also if it was deleted and re-created while this update was prepared).
    async fn update_app(&self, app: App) -> StoreResult<App>;

    /// Enables or disables an app. Tokens are kept either way.
    async fn set_app_enabled(&self, org: &str, id: &str, enabled: bool) -> StoreResult<App>;

    /// Bumps the app's generation: every user's tokens, tickets and pending authorizations
    /// become unreachable at once, and are then deleted. The configuration stays. Read the
    /// tokens first with [`Store::list_tokens`] if they are to be revoked at the provider.
    async fn reset_app(&self, org: &str, id: &str) -> StoreResult<App>;

    /// Deletes the app's configuration (including the client secret), then all its tokens,
    /// tickets and pending authorizations. Irreversible; a later app with the same id gets a
    /// new incarnation and never sees any of them.
    async fn delete_app(&self, org: &str, id: &str) -> StoreResult<()>;

    // ----- tokens -----

    /// A user's token set, if the app currently has this incarnation and generation.
    async fn get_token(
        &self,
        org: &str,
        app: &str,
        incarnation: u64,
        generation: u64,
        user: &str,
    ) -> StoreResult<Option<TokenSet>>;

    /// Stores (or replaces) a token set, only if the app still exists with `incarnation` and
    /// `token.generation`: a reset or delete that happened during a code exchange wins. The
    /// store sets `version` one past the stored grant's (1 if none; `token.version` is
    /// ignored), so a refresh that read the replaced grant fails. Returns whether it was
    /// written.
    async fn put_token_if_current(&self, token: TokenSet, incarnation: u64) -> StoreResult<bool>;

    /// A refresh's write: a compare-and-swap on the grant's version. Writes only if the app
    /// still exists with `incarnation` and `token.generation` (a reset during the refresh
    /// wins) and the user's stored token set still has version `token.version` (an admin
    /// revoke, a new consent or another replica's refresh during this one wins), in one
    /// transaction; the stored version is one more. Returns the token set as stored, or
    /// `None` if the write was refused: re-read to see what won.
    async fn replace_token_if_current(
        &self,
        token: TokenSet,
        incarnation: u64,
    ) -> StoreResult<Option<TokenSet>>;

    /// Deletes a user's token set of the app's current incarnation and generation. Returns
    /// whether there was one; [`StoreError::NotFound`] if the app does not exist.
    async fn delete_token(&self, org: &str, app: &str, user: &str) -> StoreResult<bool>;

    /// Every user's token set of the app's current incarnation and generation, secrets
    /// included: for best-effort revocation at the provider before a reset or delete.
    /// [`StoreError::NotFound`] if the app does not exist.
    async fn list_tokens(&self, org: &str, app: &str) -> StoreResult<Vec<TokenSet>>;

    /// Who has authorized the app (current incarnation and generation), by user; never token
    /// values. Grants kept as `needs_consent` (the provider refused them) are left out.
    /// [`StoreError::NotFound`] if the app does not exist.
    async fn list_authorizations(&self, org: &str, app: &str) -> StoreResult<Vec<Authorization>>;

    /// How many users have authorized the app. [`StoreError::NotFound`] if it does not exist.
    async fn count_authorizations(&self, org: &str, app: &str) -> StoreResult<usize>;

    // ----- consent tickets -----
    //
    // A backend never stores a ticket id or a `state` in the clear: it keys records by their
    // SHA-256 (`record::lookup_hash`) and keeps a ticket's id only sealed (bound to org, app
    // and user). The contract suite checks the backend's raw storage for the plaintext.

    /// Issues a ticket: at most one live ticket exists per (org, app, user). If the stored
    /// one is for the candidate's incarnation and generation and has not expired, it is
    /// returned unchanged (same id, same `expires_at`) and `ticket` is dropped; otherwise
    /// `ticket` is stored, replacing it, and returned. Atomic: concurrent calls for one
    /// (org, app, user) return one ticket.
    async fn issue_ticket(&self, ticket: ConsentTicket) -> StoreResult<ConsentTicket>;

    /// A ticket by its id, unless expired or its app was reset, deleted or re-created since.
    async fn get_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>>;

    /// Removes and returns a ticket (single use); `None` if absent, expired, or its app was
    /// reset, deleted or re-created since (the stale ticket is removed too). The next
    /// [`Store::issue_ticket`] for its (org, app, user) stores a new one.
    async fn take_ticket(&self, id: &str) -> StoreResult<Option<ConsentTicket>>;

    // ----- pending authorizations -----

    /// Stores a pending authorization under the hash of its state (replacing one with the
    /// same state).
    async fn put_pending(&self, pending: PendingAuthorization) -> StoreResult<()>;

    /// Removes and returns a pending authorization (single use); `None` if absent, expired,
    /// or its app was reset, deleted or re-created since (the stale record is removed too).
    async fn take_pending(&self, state: &str) -> StoreResult<Option<PendingAuthorization>>;

    // ----- audit -----

    /// Appends an event, stamping `at` (now) and `seq` (monotonic); returns it as stored.
    async fn append_audit(&self, event: AuditEvent) -> StoreResult<AuditEvent>;

    /// The org's latest `limit` events, newest first.
    async fn list_audit(&self, org: &str, limit: usize) -> StoreResult<Vec<AuditEvent>>;

    // ----- maintenance -----

    /// Deletes expired tickets and pending authorizations, and token sets, tickets and pending
    /// authorizations of apps that were reset or deleted (left behind if the process stopped
    /// between the reset and its clean-up). Returns how many records were removed. Safe to
    /// run at any time, e.g. periodically; it walks whole tables, so a backend runs it off
    /// the async runtime (a blocking thread, or the database server).
    async fn purge_stale(&self) -> StoreResult<usize>;

    /// Makes every write so far durable.
    async fn flush(&self) -> StoreResult<()>;

    // ----- change events -----

    /// Follows the store's changes from now on: app changed or deleted, grant changed or
    /// deleted, agent revoked ([`changes`]). Every write method publishes before it returns,
    /// so caches that catch up before each use never serve what a returned write replaced.
    fn subscribe(&self) -> Changes;

    // ----- endpoint moves and agent revocations -----

    /// [`Store::update_app`] for a change that moves one of the app's provider endpoints to
    /// another host: in the same atomic write the generation is bumped, as by
    /// [`Store::reset_app`], so no stored token (the refresh tokens above all) can ever be
    /// sent to the new host. The stale records are then deleted. Read the tokens first with
    /// [`Store::list_tokens`] if they are to be revoked at the old provider.
    async fn update_app_new_generation(&self, app: App) -> StoreResult<App>;

    /// Revokes every credential of agent `agent` issued up to now (the store's clock, in
    /// nanoseconds; never earlier than a previous revocation of the same agent), durably,
    /// and publishes [`Change::AgentRevoked`]. Returns the revocation as stored.
    async fn revoke_agent(&self, agent: &str) -> StoreResult<AgentRevocation>;

    /// The revocation of one agent, if it was ever revoked.
    async fn get_agent_revocation(&self, agent: &str) -> StoreResult<Option<AgentRevocation>>;

    /// Every agent revocation, by agent ID.
    async fn list_agent_revocations(&self) -> StoreResult<Vec<AgentRevocation>>;

    // ----- refresh leases (replicas on a shared store) -----
    //
    // A store that one process owns (sled) needs none: the injector's in-process
    // single-flight already allows one refresh per grant, so the defaults grant every lease.

    /// Takes the refresh lease on the user's grant `token` (org, app, user, generation)
    /// under `incarnation`, for `ttl` by the store's clock, if the stored grant still has
    /// `token.version` and no other process holds an unexpired lease on it. The lease ends
    /// when it expires, when [`Store::release_refresh_lease`] is called, or when the grant is
    /// written ([`Store::replace_token_if_current`] clears it).
    async fn acquire_refresh_lease(
        &self,
        token: &TokenSet,
        incarnation: u64,
        ttl: std::time::Duration,
    ) -> StoreResult<RefreshLease> {
        let _ = (token, incarnation, ttl);
        Ok(RefreshLease::Acquired)
    }

    /// Gives up this process's lease on the grant, if it still holds it (never another's).
    async fn release_refresh_lease(&self, token: &TokenSet, incarnation: u64) -> StoreResult<()> {
        let _ = (token, incarnation);
        Ok(())
    }

    // ----- replica lifecycle -----

    /// Gives up every refresh lease this process still holds (at shutdown, once requests
    /// drained, so other replicas need not wait for them to expire). Returns how many.
    async fn release_all_refresh_leases(&self) -> StoreResult<u64> {
        Ok(0)
    }

    /// Whether the store answers now, within a short deadline (for `/readyz`): an embedded
    /// store always does; a shared one reports [`StoreError::Unavailable`] while it cannot
    /// be reached.
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
    // ----- caller-token revocations (issue 18) -----

    /// Records `revocation` durably, merged with the one stored under the same
    /// [`TokenRevocation::key`] (a later `before` or `expires_at` wins; nothing narrows), and
    /// publishes [`Change::TokensRevoked`]. Returns the revocation as stored. Expired ones are
    /// deleted by [`Store::purge_stale`].
    async fn revoke_tokens(&self, revocation: TokenRevocation) -> StoreResult<TokenRevocation>;

    /// Every token revocation that has not expired (the store's clock), in no set order.
    async fn list_token_revocations(&self) -> StoreResult<Vec<TokenRevocation>>;

    // ----- store key re-seal (issue 18, [`reseal`]) -----

    /// How many records each store key sealed, by key id: a record counts once for every key
    /// that sealed one of its fields. Walks every sealed table (off the runtime).
    async fn seal_usage(&self) -> StoreResult<std::collections::BTreeMap<String, u64>>;

    /// The last re-seal's progress, if one was ever started.
    async fn reseal_progress(&self) -> StoreResult<Option<ResealProgress>>;

    /// Starts a re-seal of every sealed record to key `target`, replacing any progress (a
    /// rotation during a re-seal restarts it for the newer key): counts the records and
    /// stores the progress durably. Returns it.
    async fn start_reseal(&self, target: &str) -> StoreResult<ResealProgress>;

    /// Re-seals the next at most `limit` records of the re-seal under way, for process
    /// `owner`: claims or renews the progress's lease, re-seals the records not sealed with
    /// the target (skipping any written since they were read), and stores them and the
    /// advanced progress in one durable transaction. Returns the progress after it (unchanged
    /// when another process holds the lease), or `None` when no re-seal is under way.
    /// [`StoreError::Io`] if the store key does not seal with the target yet.
    async fn reseal_batch(&self, limit: usize, owner: &str) -> StoreResult<Option<ResealProgress>>;

    // ----- grant health (issue 15) -----

    /// Applies `update` to the health of the grant `grant` names, in one atomic step, if it
    /// is stored (and, when `grant.version` is set, still has that version). The grant's
    /// version, tokens and refresh lease stay as they are, and no change event is published
    /// ([`grant_health`]). Returns the health before and after, or `None` if there is no
    /// such grant (or it moved to another version).
    async fn update_grant_health(
        &self,
        grant: &GrantRef,
        update: &HealthUpdate,
    ) -> StoreResult<Option<(GrantHealth, GrantHealth)>>;
    // ----- audit queries (the admin console, issue 15) -----

    /// The events of `query.org` that pass every filter of `query` ([`AuditQuery::matches`]),
    /// newest first, at most [`AuditQuery::page_size`].
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
}

/// The answer of [`Store::acquire_refresh_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshLease {
    /// This process holds the lease: refresh, then write with the compare-and-swap.
    Acquired,
    /// Another process holds it for about this much longer: wait for its write (or the
    /// lease's end), then read the grant again.
    Held(std::time::Duration),
    /// The grant is gone or no longer at that version: read it again.
    Moved,
}
