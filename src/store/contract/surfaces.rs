//! Contract tests for endpoint moves (the generation bumped atomically with the update) and
//! agent revocations (stored, ordered, published). Part of the suite in `contract`, which runs
//! them for every backend.

use super::{grant, pending, sample_app, ticket, Fixture, T0};
use crate::clock::ManualClock;
use crate::store::{Change, Changes, Seen};

/// `update_app_new_generation` is an update and a reset in one: the new configuration, the
/// generation one up, every token, ticket and pending authorization of the old generation
/// gone; a plain `update_app` keeps them.
pub(super) async fn an_endpoint_move_starts_a_new_generation(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    assert!(s
        .put_token_if_current(grant(&a, "alice", "at"), a.incarnation)
        .await
        .unwrap());
    let kept = s.update_app(a.clone()).await.unwrap();
    assert_eq!(kept.generation, a.generation);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 1);

    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    let changes = s.subscribe();
    let mut moved = a.clone();
    moved.config.token_url = Some("https://elsewhere.example/token".into());
    let b = s.update_app_new_generation(moved).await.unwrap();
    assert_eq!(b.generation, a.generation + 1);
    assert_eq!(
        b.token_url.as_deref(),
        Some("https://elsewhere.example/token")
    );
    assert_eq!(
        b.client_secret, a.client_secret,
        "the secret given is stored"
    );
    let stored = s.get_app("acme", "github").await.unwrap().unwrap();
    assert_eq!(
        (stored.generation, &stored.token_url),
        (b.generation, &b.token_url)
    );
    assert_eq!(s.list_tokens("acme", "github").await.unwrap(), vec![]);
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 0);
    assert_eq!(
        s.get_token("acme", "github", a.incarnation, a.generation, "alice")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);
    assert_eq!(s.take_pending(&p.state).await.unwrap(), None);
    assert_eq!(
        published(&changes),
        vec![Change::AppChanged {
            org: "acme".into(),
            app: "github".into()
        }]
    );
    // An app that is gone cannot be moved.
    s.delete_app("acme", "github").await.unwrap();
    assert_eq!(
        s.update_app_new_generation(b).await.unwrap_err(),
        super::StoreError::NotFound
    );
}

/// A revocation is stored with the store's time in nanoseconds, never moves backwards,
/// survives as a record listed by agent, and is published.
pub(super) async fn agent_revocations(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    assert_eq!(s.get_agent_revocation("onprem-1").await.unwrap(), None);
    assert!(s.list_agent_revocations().await.unwrap().is_empty());
    let changes = s.subscribe();
    let first = s.revoke_agent("onprem-1").await.unwrap();
    assert_eq!(first.agent, "onprem-1");
    assert_eq!(first.revoked_at_ns, T0 * 1_000_000_000);
    assert_eq!(
        published(&changes),
        vec![Change::AgentRevoked {
            agent: "onprem-1".into()
        }]
    );
    // Issued at the revocation's moment or before: refused; after: accepted.
    assert!(first.refuses(first.revoked_at_ns));
    assert!(!first.refuses(first.revoked_at_ns + 1));

    clock.advance(10);
    let later = s.revoke_agent("onprem-1").await.unwrap();
    assert_eq!(later.revoked_at_ns, (T0 + 10) * 1_000_000_000);
    // A clock that went back does not move a revocation back.
    clock.set(T0);
    let again = s.revoke_agent("onprem-1").await.unwrap();
    assert_eq!(again.revoked_at_ns, later.revoked_at_ns);
    s.revoke_agent("edge-2").await.unwrap();
    assert_eq!(
        s.get_agent_revocation("onprem-1").await.unwrap(),
        Some(later.clone())
    );
    let mut all = s.list_agent_revocations().await.unwrap();
    all.sort_by(|a, b| a.agent.cmp(&b.agent));
    let agents: Vec<&str> = all.iter().map(|r| r.agent.as_str()).collect();
    assert_eq!(agents, ["edge-2", "onprem-1"]);
}

/// The changes published since the last call.
fn published(changes: &Changes) -> Vec<Change> {
    let mut seen = Vec::new();
    changes.catch_up(|e| {
        if let Seen::Event(e) = e {
            seen.push(e.change.clone());
        }
    });
    seen
}
