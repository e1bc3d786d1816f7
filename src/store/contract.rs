//! The store contract: one test suite, generic over `dyn Store`, that every backend must pass
//! unchanged (sled now, PostgreSQL next). It covers every [`Store`] method: app lifecycle,
//! grants and their compare-and-swap on `version`, expiry (through the injected clock, no
//! sleeps), single-use consumption of tickets and pending authorizations under concurrency,
//! one live ticket per (org, user, app) repeated until used, lookups by hash (no plaintext
//! ticket id or state in storage), sealing with associated data, audit, clean-up and change
//! events.
//!
//! A backend runs it with [`run_all`], handing a factory that opens an empty store reading
//! the given clock, plus a [`Tamper`] for what the trait cannot do: move a stored record to
//! another key, as someone with write access to the database could, and look at the raw
//! storage.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::{App, AuditEvent, ConsentTicket, PendingAuthorization, Secret, TokenSet};
use super::{AppConfig, Change, Changes, ClientAuth, Handshake, Seen, Store, StoreError};
use crate::clock::{Clock, ManualClock};

mod audit_query;
mod consents;
mod grant_health;
mod replicas;
mod reseal;
mod surfaces;
mod token_revocations;

/// The clock every contract test starts at.
pub const T0: u64 = 1_700_000_000;

/// How many tasks race for a single-use record.
pub(crate) const RACERS: usize = 8;

/// Raw writes a backend allows the suite, to check that sealed values are bound to their key.
/// Each copies a stored record to another key and rewrites its visible fields to match, so
/// that only the associated data of the sealed secrets can tell it was moved.
pub trait Tamper: Send + Sync {
    /// Copies the app `(org, from)` to `(org, to)`.
    fn copy_app(&self, org: &str, from: &str, to: &str);
    /// Copies the current grant of `from_user` for `(org, app)` to `to_user`.
    fn copy_grant(&self, org: &str, app: &str, from_user: &str, to_user: &str);
    /// Whether any stored key or value, in any table, contains `needle`.
    fn raw_contains(&self, needle: &[u8]) -> bool;
    /// How many consent tickets and pending authorizations are stored, live or not.
    fn consent_records(&self) -> (usize, usize);
}

/// An empty store of one backend, and what must live as long as it.
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Raw access for the sealing tests.
    pub tamper: Box<dyn Tamper>,
    /// Kept alive for the test (a temporary directory, a database schema).
    pub _guard: Box<dyn Any + Send>,
    /// The store's keys, shared with it: the re-seal tests rotate them.
    pub key: super::StoreKey,
}

/// Runs every contract test against fresh stores from `make`, which opens an empty store
/// reading the given clock.
pub async fn run_all(make: impl Fn(Clock) -> Fixture) {
    let fresh = || {
        let clock = ManualClock::new(T0);
        (make(clock.clock()), clock)
    };
    apps(fresh().0).await;
    grants(fresh().0).await;
    grant_version_is_a_compare_and_swap(fresh().0).await;
    concurrent_refreshes_one_wins(fresh().0).await;
    let (f, clock) = fresh();
    consents::tickets_expire_and_are_single_use(f, clock).await;
    let (f, clock) = fresh();
    consents::pending_expires_and_is_single_use(f, clock).await;
    consents::one_of_many_takers_wins(fresh().0).await;
    reset_and_delete_invalidate_everything(fresh().0).await;
    let (f, clock) = fresh();
    audit_is_stamped_and_newest_first(f, clock).await;
    let (f, clock) = fresh();
    purge_removes_expired_and_orphaned(f, clock).await;
    sealed_values_are_bound_to_their_key(fresh().0).await;
    change_events(fresh().0).await;
    let (f, clock) = fresh();
    consents::one_live_ticket_per_user_and_app(f, clock).await;
    consents::concurrent_issues_agree_on_one_ticket(fresh().0).await;
    consents::consent_ids_are_stored_only_hashed_or_sealed(fresh().0).await;
    surfaces::an_endpoint_move_starts_a_new_generation(fresh().0).await;
    let (f, clock) = fresh();
    surfaces::agent_revocations(f, clock).await;
    replicas::replicas_heartbeat_and_leave(fresh().0).await;
    let (f, clock) = fresh();
    replicas::replicas_expire(f, clock).await;
    let (f, clock) = fresh();
    replicas::audit_is_pruned_after_its_retention(f, clock).await;
    replicas::changes_are_pruned_and_keep_flowing(fresh().0).await;
    let (f, clock) = fresh();
    token_revocations::token_revocations(f, clock).await;
    reseal::store_key_reseal(fresh().0).await;
    a_revocation_template_is_sealed_and_round_trips(fresh().0).await;
    grant_health::health_is_stored_beside_the_tokens(fresh().0).await;
    let (f, clock) = fresh();
    audit_query::audit_queries_filter_and_page(f, clock).await;
}

/// An app as an admin would submit it; the store-set fields hold junk it must ignore.
pub fn sample_app(org: &str, id: &str) -> App {
    let config = AppConfig {
        id: id.into(),
        // Markers: tests of a backend's files look for them (plaintext must not appear).
        name: "GitHub VISIBLE-NAME-789".into(),
        description: "Source hosting".into(),
        approval_prompt: "Allow the runner to act for you?".into(),
        authorize_url: "https://github.com/login/oauth/authorize".into(),
        token_url: Some("https://github.com/login/oauth/access_token".into()),
        client_id: "Iv1.abc".into(),
        client_secret: Some(Secret::new("sk-PLAINTEXT-123")),
        scopes: vec!["repo".into(), "read:user".into()],
        access_token_ttl: Some(3600),
        egress_policy: "public-saas".into(),
        domains: vec![format!("{id}.example.com")],
        client_auth: ClientAuth::Post,
        authorize_params: BTreeMap::from([("prompt".into(), "consent".into())]),
        issuer: Some("https://github.com".into()),
        handshake: Handshake::Webhook,
        webhook: Some(
            serde_json::from_value(serde_json::json!({
                "token": {"headers": {"X-Api-Key": "hook-PLAINTEXT-000"}}
            }))
            .unwrap(),
        ),
        ..Default::default()
    };
    App {
        enabled: false,
        generation: 99,
        incarnation: 99,
        created_at: 1,
        updated_at: 1,
        ..App::new(org, config)
    }
}

/// A grant of `user` for `a`, as a consent would store it.
pub fn grant(a: &App, user: &str, access: &str) -> TokenSet {
    TokenSet {
        org: a.org.clone(),
        app: a.id.clone(),
        user: user.into(),
        generation: a.generation,
        version: 0,
        access_token: Secret::new(access),
        refresh_token: Some(Secret::new(format!("rt-{access}"))),
        token_type: Some("bearer".into()),
        scopes: vec!["repo".into()],
        expires_at: Some(T0 + 3600),
        obtained_at: T0,
        health: Default::default(),
    }
}

async fn current(s: &dyn Store, a: &App, user: &str) -> Option<TokenSet> {
    s.get_token(&a.org, &a.id, a.incarnation, a.generation, user)
        .await
        .unwrap()
}

async fn put(s: &dyn Store, a: &App, user: &str, access: &str) -> TokenSet {
    assert!(s
        .put_token_if_current(grant(a, user, access), a.incarnation)
        .await
        .unwrap());
    current(s, a, user).await.unwrap()
}

/// A consent ticket of `user` for `a`.
pub fn ticket(a: &App, user: &str, expires_at: u64) -> ConsentTicket {
    ConsentTicket::new(a, user, expires_at).unwrap()
}

/// A pending authorization of `user` for `a`, with a PKCE verifier.
pub fn pending(a: &App, user: &str, expires_at: u64) -> PendingAuthorization {
    PendingAuthorization::new(
        &ticket(a, user, expires_at),
        Some(Secret::new("pkce-PLAINTEXT-777")),
        "https://tollgate.example/oauth/callback",
        [7; super::BROWSER_TAG_LEN],
        expires_at,
    )
    .unwrap()
}

async fn apps(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    assert!(a.enabled);
    assert_eq!((a.generation, a.created_at, a.updated_at), (1, T0, T0));
    assert_ne!(a.incarnation, 99);
    assert_eq!(s.get_app("acme", "github").await.unwrap(), Some(a.clone()));
    assert_eq!(s.get_app("acme", "gitlab").await.unwrap(), None);
    assert_eq!(
        s.create_app(sample_app("acme", "github")).await,
        Err(StoreError::Conflict)
    );
    let b = s.create_app(sample_app("acme", "crm")).await.unwrap();
    let c = s.create_app(sample_app("globex", "github")).await.unwrap();
    assert_eq!(
        s.list_apps("acme").await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(s.list_apps("nobody").await.unwrap(), vec![]);
    assert_eq!(
        s.list_all_apps().await.unwrap(),
        vec![b.clone(), a.clone(), c.clone()]
    );

    let mut edit = a.clone();
    edit.config.name = "GitHub Enterprise".into();
    edit.config.client_secret = None;
    edit.enabled = false;
    edit.generation = 42;
    let updated = s.update_app(edit).await.unwrap();
    assert_eq!(updated.name, "GitHub Enterprise");
    assert_eq!(updated.client_secret, None);
    assert_eq!(
        (updated.enabled, updated.generation, updated.incarnation),
        (true, 1, a.incarnation),
        "update keeps the store's fields"
    );
    assert_eq!(
        s.update_app(sample_app("acme", "nope")).await,
        Err(StoreError::NotFound)
    );

    let off = s.set_app_enabled("acme", "github", false).await.unwrap();
    assert!(!off.enabled);
    assert!(
        s.set_app_enabled("acme", "github", true)
            .await
            .unwrap()
            .enabled
    );
    let reset = s.reset_app("acme", "github").await.unwrap();
    assert_eq!(reset.generation, 2);
    assert_eq!(
        reset.name, "GitHub Enterprise",
        "reset keeps the configuration"
    );
    for missing in [
        s.set_app_enabled("acme", "nope", true).await.err(),
        s.reset_app("acme", "nope").await.err(),
        s.delete_app("acme", "nope").await.err(),
    ] {
        assert_eq!(missing, Some(StoreError::NotFound));
    }
    s.delete_app("acme", "github").await.unwrap();
    assert_eq!(s.get_app("acme", "github").await.unwrap(), None);
    let again = s.create_app(sample_app("acme", "github")).await.unwrap();
    assert_ne!(
        again.incarnation, a.incarnation,
        "a re-created app is another"
    );
    s.flush().await.unwrap();
}

async fn grants(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let bob = put(s, &a, "bob", "at-bob").await;
    assert_eq!(bob.access_token.expose(), "at-bob");
    assert_eq!(bob.version, 1);
    let mut alice = grant(&a, "alice", "at-alice");
    alice.refresh_token = None;
    alice.expires_at = None;
    assert!(s
        .put_token_if_current(alice.clone(), a.incarnation)
        .await
        .unwrap());
    alice.version = 1;
    assert_eq!(current(s, &a, "alice").await, Some(alice.clone()));
    assert_eq!(current(s, &a, "carol").await, None);

    let users = |v: Vec<TokenSet>| v.into_iter().map(|t| t.user).collect::<Vec<_>>();
    assert_eq!(
        users(s.list_tokens("acme", "github").await.unwrap()),
        ["alice", "bob"]
    );
    let auths = s.list_authorizations("acme", "github").await.unwrap();
    assert_eq!(
        auths.iter().map(|a| a.user.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(auths[1].scopes, ["repo"]);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 2);

    // Wrong incarnation or generation, or another org: refused and unreachable.
    let mut stale = grant(&a, "carol", "x");
    stale.generation += 1;
    assert!(!s.put_token_if_current(stale, a.incarnation).await.unwrap());
    assert!(!s
        .put_token_if_current(grant(&a, "carol", "x"), a.incarnation + 1)
        .await
        .unwrap());
    assert_eq!(
        s.get_token("acme", "github", a.incarnation + 1, a.generation, "bob")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_token("globex", "github", a.incarnation, a.generation, "bob")
            .await
            .unwrap(),
        None
    );

    assert!(s.delete_token("acme", "github", "bob").await.unwrap());
    assert!(!s.delete_token("acme", "github", "bob").await.unwrap());
    assert_eq!(current(s, &a, "bob").await, None);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 1);
    for missing in [
        s.delete_token("acme", "nope", "bob").await.err(),
        s.list_tokens("acme", "nope").await.err(),
        s.list_authorizations("acme", "nope").await.err(),
        s.count_authorizations("acme", "nope").await.err(),
    ] {
        assert_eq!(missing, Some(StoreError::NotFound));
    }
}

async fn grant_version_is_a_compare_and_swap(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    // A refresh with nothing stored is refused.
    assert_eq!(
        s.replace_token_if_current(grant(&a, "bob", "at-0"), a.incarnation)
            .await
            .unwrap(),
        None
    );
    let v1 = put(s, &a, "bob", "at-1").await;
    assert_eq!(v1.version, 1);

    // A refresh over the version it read goes one up.
    let mut refreshed = v1.clone();
    refreshed.access_token = Secret::new("at-2");
    let v2 = s
        .replace_token_if_current(refreshed, a.incarnation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v2.version, v2.access_token.expose()), (2, "at-2"));
    assert_eq!(current(s, &a, "bob").await, Some(v2.clone()));

    // A second refresh from the same read (version 1) lost.
    let mut late = v1.clone();
    late.access_token = Secret::new("at-late");
    assert_eq!(
        s.replace_token_if_current(late, a.incarnation)
            .await
            .unwrap(),
        None
    );
    assert_eq!(current(s, &a, "bob").await, Some(v2.clone()));

    // A new consent moves the version too, so a refresh that read v2 loses to it.
    let v3 = put(s, &a, "bob", "at-consent").await;
    assert_eq!(v3.version, 3);
    assert_eq!(
        s.replace_token_if_current(v2.clone(), a.incarnation)
            .await
            .unwrap(),
        None
    );

    // The app's generation is checked as well: a reset during a refresh wins, and the grant
    // version is not the generation.
    let r = s.reset_app("acme", "github").await.unwrap();
    assert_eq!(r.generation, 2);
    assert_eq!(
        s.replace_token_if_current(v3.clone(), a.incarnation)
            .await
            .unwrap(),
        None
    );
    let fresh = put(s, &r, "bob", "after-reset").await;
    assert_eq!(
        fresh.version, 1,
        "a grant of the new generation starts again"
    );

    // A revoke (delete) during a refresh wins.
    assert!(s.delete_token("acme", "github", "bob").await.unwrap());
    assert_eq!(
        s.replace_token_if_current(fresh, r.incarnation)
            .await
            .unwrap(),
        None
    );
    assert_eq!(current(s, &r, "bob").await, None, "revoke undone");
}

async fn concurrent_refreshes_one_wins(f: Fixture) {
    let s = f.store.clone();
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let read = put(&*s, &a, "bob", "at-1").await;
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let s = s.clone();
            let mut t = read.clone();
            t.access_token = Secret::new(format!("at-{i}"));
            let inc = a.incarnation;
            tokio::spawn(async move { s.replace_token_if_current(t, inc).await.unwrap() })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        won.extend(t.await.unwrap());
    }
    assert_eq!(won.len(), 1, "exactly one refresh wins: {won:?}");
    assert_eq!(current(&*s, &a, "bob").await, Some(won[0].clone()));
    assert_eq!(won[0].version, 2);
}

async fn reset_and_delete_invalidate_everything(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    put(s, &a, "alice", "at").await;
    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    let r = s.reset_app("acme", "github").await.unwrap();
    assert_eq!(current(s, &a, "alice").await, None);
    assert_eq!(current(s, &r, "alice").await, None);
    assert_eq!(s.list_tokens("acme", "github").await.unwrap(), vec![]);
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), None);
    assert_eq!(s.take_pending(&p.state).await.unwrap(), None);

    put(s, &r, "alice", "at-2").await;
    let t = ticket(&r, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    s.delete_app("acme", "github").await.unwrap();
    let again = s.create_app(sample_app("acme", "github")).await.unwrap();
    assert_eq!(again.generation, r.generation - 1, "generation starts over");
    assert_eq!(current(s, &again, "alice").await, None);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);
}

async fn audit_is_stamped_and_newest_first(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let event = |org: &str, action: &str| {
        AuditEvent::new(org, "admin", action, "github", serde_json::json!({"n": 1}))
    };
    let first = s.append_audit(event("acme", "app.create")).await.unwrap();
    assert_eq!(first.at, T0);
    clock.advance(5);
    let second = s.append_audit(event("acme", "app.reset")).await.unwrap();
    s.append_audit(event("globex", "app.create")).await.unwrap();
    assert_eq!(second.at, T0 + 5);
    assert!(second.seq > first.seq);
    assert_eq!(
        s.list_audit("acme", 10).await.unwrap(),
        vec![second.clone(), first]
    );
    assert_eq!(s.list_audit("acme", 1).await.unwrap(), vec![second]);
    assert_eq!(s.list_audit("nobody", 10).await.unwrap(), vec![]);
}

async fn purge_removes_expired_and_orphaned(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    put(s, &a, "alice", "at").await;
    let keep = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(keep.clone()).await.unwrap();
    s.issue_ticket(ticket(&a, "bob", T0 + 10)).await.unwrap();
    s.put_pending(pending(&a, "bob", T0 + 10)).await.unwrap();
    assert_eq!(s.purge_stale().await.unwrap(), 0);
    clock.set(T0 + 10);
    assert_eq!(s.purge_stale().await.unwrap(), 2);
    assert_eq!(s.get_ticket(&keep.id).await.unwrap(), Some(keep));
    assert!(current(s, &a, "alice").await.is_some(), "grants are kept");
    assert_eq!(s.purge_stale().await.unwrap(), 0);
    s.flush().await.unwrap();
}

async fn sealed_values_are_bound_to_their_key(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    put(s, &a, "alice", "at-alice").await;
    f.tamper.copy_grant("acme", "github", "alice", "mallory");
    match s
        .get_token("acme", "github", a.incarnation, a.generation, "mallory")
        .await
    {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("a grant moved to another user opened: {other:?}"),
    }
    f.tamper.copy_app("acme", "github", "copy");
    match s.get_app("acme", "copy").await {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("an app moved to another id opened: {other:?}"),
    }
    // The originals still open.
    assert!(current(s, &a, "alice").await.is_some());
    assert!(s.get_app("acme", "github").await.unwrap().is_some());
}

/// The events published since the last call, without their sequence numbers; panics on
/// missed events (none of these tests publishes enough to lag).
fn drain(changes: &Changes, seqs: &mut Vec<u64>) -> Vec<Change> {
    let mut out = Vec::new();
    changes.catch_up(|seen| match seen {
        Seen::Event(e) => {
            seqs.push(e.seq);
            out.push(e.change.clone());
        }
        Seen::Missed => panic!("missed events"),
    });
    out
}

async fn change_events(f: Fixture) {
    let s = &*f.store;
    let changes = s.subscribe();
    let mut seqs = Vec::new();
    let app = |id: &str| Change::AppChanged {
        org: "acme".into(),
        app: id.into(),
    };
    let grant_changed = Change::GrantChanged {
        org: "acme".into(),
        app: "github".into(),
        user: "bob".into(),
    };
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    assert!(changes.pending(), "visible as soon as the write returned");
    assert_eq!(drain(&changes, &mut seqs), vec![app("github")]);
    assert!(!changes.pending());

    s.update_app(a).await.unwrap();
    s.set_app_enabled("acme", "github", false).await.unwrap();
    let a = s.reset_app("acme", "github").await.unwrap();
    assert_eq!(drain(&changes, &mut seqs), vec![app("github"); 3]);

    let v1 = put(s, &a, "bob", "at").await;
    assert!(s
        .replace_token_if_current(v1.clone(), a.incarnation)
        .await
        .unwrap()
        .is_some());
    // Refused writes publish nothing.
    assert_eq!(
        s.replace_token_if_current(v1, a.incarnation).await.unwrap(),
        None
    );
    assert_eq!(
        drain(&changes, &mut seqs),
        vec![grant_changed.clone(), grant_changed]
    );

    // Consent records are not cached by anyone: no events.
    s.issue_ticket(ticket(&a, "bob", T0 + 900)).await.unwrap();
    s.put_pending(pending(&a, "bob", T0 + 600)).await.unwrap();
    assert!(!changes.pending());

    assert!(s.delete_token("acme", "github", "bob").await.unwrap());
    assert!(!s.delete_token("acme", "github", "bob").await.unwrap());
    s.delete_app("acme", "github").await.unwrap();
    assert_eq!(
        drain(&changes, &mut seqs),
        vec![
            Change::GrantDeleted {
                org: "acme".into(),
                app: "github".into(),
                user: "bob".into(),
            },
            Change::AppDeleted {
                org: "acme".into(),
                app: "github".into(),
            },
        ]
    );
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // Every subscriber sees every event.
    let late = s.subscribe();
    s.create_app(sample_app("acme", "crm")).await.unwrap();
    let mut late_seqs = Vec::new();
    assert_eq!(drain(&late, &mut late_seqs), vec![app("crm")]);
    assert_eq!(drain(&changes, &mut seqs), vec![app("crm")]);
    assert_eq!(late_seqs.last(), seqs.last());
}

/// An app's revocation template (catalog issue) is stored with its header and body values,
/// sealed: they read back as written and never appear in the backend's files.
async fn a_revocation_template_is_sealed_and_round_trips(f: Fixture) {
    let s = &*f.store;
    let mut app = sample_app("acme", "revoking");
    app.config.revocation = Some(
        serde_json::from_value(serde_json::json!({
            "method": "DELETE",
            "url": "https://api.github.com/applications/{client_id}/grant",
            "auth": "basic",
            "headers": {"X-Revoke-Key": "revoke-PLAINTEXT-555"},
            "json": {"access_token": "{access_token}", "k": "revoke-BODY-PLAINTEXT-556"},
            "ok_json": "/ok"
        }))
        .unwrap(),
    );
    let created = s.create_app(app.clone()).await.unwrap();
    assert_eq!(created.revocation, app.revocation);
    let read = s.get_app("acme", "revoking").await.unwrap().unwrap();
    assert_eq!(read.revocation, app.revocation);
    let mut edit = read.clone();
    edit.config.revocation = None;
    let updated = s.update_app(edit).await.unwrap();
    assert_eq!(updated.revocation, None);
    let mut again = updated.clone();
    again.config.revocation = app.config.revocation.clone();
    s.update_app(again).await.unwrap();
    let read = s.get_app("acme", "revoking").await.unwrap().unwrap();
    assert_eq!(read.revocation, app.revocation);
    assert!(!f.tamper.raw_contains(b"revoke-PLAINTEXT-555"));
    assert!(!f.tamper.raw_contains(b"revoke-BODY-PLAINTEXT-556"));
}
