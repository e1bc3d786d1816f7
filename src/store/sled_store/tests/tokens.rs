//! Token sets: writes under the app's version, listing, reset and delete, and races
//! between a reset and refreshes.

use super::*;

/// A refresh's write goes only over an existing token: a revoke (delete) during the
/// refresh wins.
#[tokio::test]
async fn replace_writes_only_over_an_existing_token() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    assert!(s
        .replace_token_if_current(token(&a, "bob", "at-1"), a.incarnation)
        .await
        .unwrap()
        .is_none());
    assert!(
        current(&s, &a, "bob").await.is_none(),
        "written over nothing"
    );
    assert!(put_token(&s, &a, "bob", "at-1").await);
    let stored = s
        .replace_token_if_current(token(&a, "bob", "at-2"), a.incarnation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        current(&s, &a, "bob").await.unwrap().access_token.expose(),
        "at-2"
    );
    assert!(s.delete_token("acme", "github", "bob").await.unwrap());
    assert!(s
        .replace_token_if_current(token(&a, "bob", "at-3"), a.incarnation)
        .await
        .unwrap()
        .is_none());
    assert!(current(&s, &a, "bob").await.is_none(), "revoke undone");
}

#[tokio::test]
async fn token_round_trip_list_count_and_delete() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let t = token(&a, "bob", "at-bob");
    assert!(s
        .put_token_if_current(t.clone(), a.incarnation)
        .await
        .unwrap());
    let mut no_refresh = token(&a, "alice", "at-alice");
    no_refresh.refresh_token = None;
    no_refresh.expires_at = None;
    no_refresh.token_type = None;
    assert!(s
        .put_token_if_current(no_refresh.clone(), a.incarnation)
        .await
        .unwrap());
    assert_eq!(current(&s, &a, "bob").await.unwrap(), t);
    assert_eq!(current(&s, &a, "alice").await.unwrap(), no_refresh);
    assert_eq!(current(&s, &a, "carol").await, None);

    // A new consent overwrites, one version up.
    let mut refreshed = t.clone();
    refreshed.access_token = Secret::new("at-bob-2");
    assert!(s
        .put_token_if_current(refreshed.clone(), a.incarnation)
        .await
        .unwrap());
    refreshed.version = 2;
    assert_eq!(current(&s, &a, "bob").await.unwrap(), refreshed);

    let auths = s.list_authorizations("acme", "github").await.unwrap();
    assert_eq!(
        auths,
        vec![
            Authorization {
                user: "alice".into(),
                scopes: vec!["repo".into()],
                expires_at: None,
                obtained_at: T0,
            },
            Authorization {
                user: "bob".into(),
                scopes: vec!["repo".into()],
                expires_at: Some(T0 + 3600),
                obtained_at: T0,
            },
        ]
    );
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 2);
    let listed = s.list_tokens("acme", "github").await.unwrap();
    assert_eq!(listed, vec![no_refresh, refreshed]);

    assert!(s.delete_token("acme", "github", "bob").await.unwrap());
    assert!(!s.delete_token("acme", "github", "bob").await.unwrap());
    assert_eq!(current(&s, &a, "bob").await, None);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 1);
    for r in [
        s.delete_token("acme", "nope", "bob").await.map(|_| ()),
        s.list_authorizations("acme", "nope").await.map(|_| ()),
        s.count_authorizations("acme", "nope").await.map(|_| ()),
        s.list_tokens("acme", "nope").await.map(|_| ()),
    ] {
        assert_eq!(r.unwrap_err(), StoreError::NotFound);
    }
}

#[tokio::test]
async fn token_for_wrong_incarnation_or_missing_app_is_refused() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let t = token(&a, "alice", "at-1");
    assert!(!s
        .put_token_if_current(t.clone(), a.incarnation ^ 1)
        .await
        .unwrap());
    let mut ghost = t.clone();
    ghost.app = "ghost".into();
    assert!(!s.put_token_if_current(ghost, a.incarnation).await.unwrap());
    assert!(s.tokens.is_empty());
}

#[tokio::test]
async fn reset_bumps_generation_and_deletes_tokens_and_consents() {
    let (_tmp, clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let other = s.create_app(app("acme", "other")).await.unwrap();
    for user in ["alice", "bob"] {
        assert!(put_token(&s, &a, user, "at-old").await);
    }
    assert!(put_token(&s, &other, "alice", "at-other").await);
    let tk = ticket(&a, "alice", T0 + 900);
    let pd = pending(&a, "alice", T0 + 600);
    let other_tk = ticket(&other, "alice", T0 + 900);
    s.issue_ticket(tk.clone()).await.unwrap();
    s.put_pending(pd.clone()).await.unwrap();
    s.issue_ticket(other_tk.clone()).await.unwrap();

    clock.advance(5);
    let r = s.reset_app("acme", "github").await.unwrap();
    assert_eq!(r.generation, a.generation + 1);
    assert_eq!(r.incarnation, a.incarnation);
    assert_eq!(r.updated_at, T0 + 5);
    assert_eq!(r.client_secret, a.client_secret, "configuration stays");

    // Unreachable under both generations, and physically gone.
    assert_eq!(current(&s, &a, "alice").await, None);
    assert_eq!(current(&s, &r, "alice").await, None);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);
    assert_eq!(
        s.tokens
            .scan_prefix(token_app_prefix("acme", "github"))
            .count(),
        0
    );
    // Consents of the old generation are invalid and gone.
    assert_eq!(s.get_ticket(&tk.id).await.unwrap(), None);
    assert_eq!(s.take_pending(&pd.state).await.unwrap(), None);
    assert!(s.tickets.get(tk.id.as_bytes()).unwrap().is_none());
    // Another app is untouched.
    assert!(current(&s, &other, "alice").await.is_some());
    assert_eq!(s.get_ticket(&other_tk.id).await.unwrap(), Some(other_tk));

    // A refresh that started before the reset loses.
    assert!(!put_token(&s, &a, "alice", "at-late").await);
    assert_eq!(current(&s, &a, "alice").await, None);
    // A consent under the new generation works.
    assert!(put_token(&s, &r, "alice", "at-new").await);
    assert_eq!(
        current(&s, &r, "alice")
            .await
            .unwrap()
            .access_token
            .expose(),
        "at-new"
    );
    assert_eq!(
        s.reset_app("acme", "nope").await.unwrap_err(),
        StoreError::NotFound
    );
}

#[tokio::test]
async fn delete_then_recreate_never_exposes_old_tokens() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    assert!(put_token(&s, &a, "alice", "at-old").await);
    let tk = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(tk.clone()).await.unwrap();
    s.delete_app("acme", "github").await.unwrap();
    assert_eq!(s.get_app("acme", "github").await.unwrap(), None);
    assert_eq!(
        s.delete_app("acme", "github").await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(s.tokens.is_empty());
    assert!(s.tickets.is_empty());

    let b = s.create_app(app("acme", "github")).await.unwrap();
    assert_ne!(b.incarnation, a.incarnation);
    assert_eq!(
        b.generation, a.generation,
        "generation restarts; incarnation tells them apart"
    );
    assert_eq!(current(&s, &b, "alice").await, None);
    assert_eq!(current(&s, &a, "alice").await, None);
    assert_eq!(
        s.list_authorizations("acme", "github").await.unwrap(),
        vec![]
    );
    assert_eq!(s.take_ticket(&tk.id).await.unwrap(), None);
    // A token exchange started against the deleted app cannot land in the new one.
    assert!(!put_token(&s, &a, "alice", "at-late").await);
    assert_eq!(current(&s, &b, "alice").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_racing_with_refreshes_leaves_no_stale_token() {
    let (_tmp, _clock, s) = fresh();
    let s = Arc::new(s);
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, a) = (s.clone(), a.clone());
        writers.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..100 {
                let t = token(&a, &format!("user{w}-{i}"), "at");
                if !s.put_token_if_current(t, a.incarnation).await.unwrap() {
                    refused += 1;
                }
            }
            refused
        }));
    }
    // Reset in the middle of the writes, not before or after them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.count_authorizations("acme", "github").await.unwrap() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers made no progress"
        );
        tokio::task::yield_now().await;
    }
    let r = s.reset_app("acme", "github").await.unwrap();
    let mut refused = 0;
    for w in writers {
        refused += w.await.unwrap();
    }
    assert!(
        refused > 0,
        "no write came after the reset; the race was not exercised"
    );
    // Whatever the interleaving, nothing of generation 1 survives.
    let mut seen = 0;
    for item in s.tokens.iter() {
        let (k, _) = item.unwrap();
        let tk = TokenKey::parse(&k).unwrap();
        assert_eq!(tk.generation, r.generation, "stale token {}", tk.name());
        seen += 1;
    }
    assert_eq!(seen, 0);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);
}
