//! Contract tests for grant health ([`crate::store::grant_health`]): stored next to the
//! tokens, written without moving the grant's version or publishing a change, refused for a
//! version that moved, and kept by token writes (the later "last used" wins). Part of the
//! suite in `contract`, which runs them for every backend.

use super::Fixture;
use super::{current, drain, grant, put, sample_app, T0};
use crate::store::grant_health::{needs_consent, refreshed};
use crate::store::{GrantRef, GrantState, HealthUpdate, Secret};

pub(super) async fn health_is_stored_beside_the_tokens(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let first = put(s, &a, "bob", "at-1").await;
    assert_eq!(first.health, Default::default(), "a new grant is ok");
    let changes = s.subscribe();
    let mut seqs = Vec::new();
    let r = |version| GrantRef {
        org: "acme".into(),
        app: "github".into(),
        user: "bob".into(),
        incarnation: a.incarnation,
        generation: a.generation,
        version,
    };

    // "Last used": no version moves, no change is published, an older time never wins.
    let (before, after) = s
        .update_grant_health(&r(None), &HealthUpdate::Used { at: T0 + 60 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.last_used_at, None);
    assert_eq!(after.last_used_at, Some(T0 + 60));
    s.update_grant_health(&r(None), &HealthUpdate::Used { at: T0 + 1 })
        .await
        .unwrap();
    let now = current(s, &a, "bob").await.unwrap();
    assert_eq!(now.health.last_used_at, Some(T0 + 60));
    assert_eq!(now.version, first.version, "health writes keep the version");
    assert_eq!(now.access_token, first.access_token);
    assert!(drain(&changes, &mut seqs).is_empty(), "no change event");

    // A refresh failure of the stored version is kept; one of another version is not.
    let failed = HealthUpdate::RefreshFailed {
        error: "the provider answered 503 Service Unavailable".into(),
        at: T0 + 100,
    };
    let stale = s
        .update_grant_health(&r(Some(first.version + 1)), &failed)
        .await
        .unwrap();
    assert_eq!(stale, None, "a failure of a replaced version is dropped");
    s.update_grant_health(&r(Some(first.version)), &failed)
        .await
        .unwrap()
        .unwrap();
    let failing = current(s, &a, "bob").await.unwrap();
    assert_eq!(failing.health.state, GrantState::RefreshFailing);
    assert_eq!(failing.health.failing_since, Some(T0 + 100));
    assert_eq!(
        failing.health.last_error.as_deref(),
        Some("the provider answered 503 Service Unavailable")
    );
    let listed = s.list_tokens("acme", "github").await.unwrap();
    assert_eq!(listed[0].health, failing.health);

    // A refresh that read the grant before the "last used" write keeps it (the later wins),
    // and its own health (ok again) is stored.
    let mut next = grant(&a, "bob", "at-2");
    next.version = first.version;
    next.health = refreshed(&first.health, T0 + 200);
    let stored = s
        .replace_token_if_current(next, a.incarnation)
        .await
        .unwrap()
        .unwrap();
    let now = current(s, &a, "bob").await.unwrap();
    assert_eq!(now.version, stored.version);
    assert_eq!(now.health.state, GrantState::Ok);
    assert_eq!(now.health.last_refreshed_at, Some(T0 + 200));
    assert_eq!(now.health.last_used_at, Some(T0 + 60));
    assert_eq!(
        (&now.health.last_error, now.health.failing_since),
        (&None, None)
    );

    // A grant the provider refused stays, marked, with its tokens cleared.
    let mut dead = now.clone();
    dead.access_token = Secret::new("");
    dead.refresh_token = None;
    dead.health = needs_consent(&now.health, "the provider revoked access", T0 + 300);
    s.replace_token_if_current(dead, a.incarnation)
        .await
        .unwrap()
        .unwrap();
    let dead = current(s, &a, "bob").await.unwrap();
    assert_eq!(dead.health.state, GrantState::NeedsConsent);
    assert_eq!(dead.refresh_token, None);
    assert!(s
        .list_authorizations("acme", "github")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);

    // A new consent makes it ok again; an unknown grant has no health to write.
    let again = put(s, &a, "bob", "at-3").await;
    assert_eq!(again.health.state, GrantState::Ok);
    assert_eq!(again.health.last_used_at, Some(T0 + 60));
    let mut nobody = r(None);
    nobody.user = "carol".into();
    let none = s
        .update_grant_health(&nobody, &HealthUpdate::Used { at: T0 })
        .await
        .unwrap();
    assert_eq!(none, None);
}
