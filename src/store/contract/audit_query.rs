//! Contract tests for `Store::query_audit`: every filter (user as actor or affected user,
//! app, action or action family, time range), newest first, pages by `before_seq`, one org
//! only. Part of the suite in `contract`, which runs them for every backend.

use serde_json::json;

use super::{Fixture, T0};
use crate::clock::ManualClock;
use crate::store::{AuditEvent, AuditQuery};

pub(super) async fn audit_queries_filter_and_page(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let add = |actor: &str, action: &str, target: &str, detail: serde_json::Value| {
        AuditEvent::new("acme", actor, action, target, detail)
    };
    let create = s
        .append_audit(add("alice", "app.create", "gh", json!({})))
        .await
        .unwrap();
    clock.advance(10);
    let revoke = s
        .append_audit(add(
            "alice",
            "authorization.revoke",
            "gh",
            json!({"user": "bob"}),
        ))
        .await
        .unwrap();
    clock.advance(10);
    let other_app = s
        .append_audit(add("carol", "app.update", "gl", json!({})))
        .await
        .unwrap();
    // Another org's event with matching fields never shows.
    s.append_audit(AuditEvent::new(
        "globex",
        "alice",
        "app.create",
        "gh",
        json!({}),
    ))
    .await
    .unwrap();

    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::org("acme", 10);
        f(&mut q);
        q
    };
    let run = |q: AuditQuery| async move { s.query_audit(&q).await.unwrap() };
    assert_eq!(
        run(q(|_| {})).await,
        vec![other_app.clone(), revoke.clone(), create.clone()]
    );
    assert_eq!(
        run(q(|q| q.user = Some("alice".into()))).await,
        vec![revoke.clone(), create.clone()]
    );
    assert_eq!(
        run(q(|q| q.user = Some("bob".into()))).await,
        vec![revoke.clone()],
        "the affected user matches too"
    );
    assert_eq!(
        run(q(|q| q.app = Some("gl".into()))).await,
        vec![other_app.clone()]
    );
    assert_eq!(
        run(q(|q| q.action = Some("app.".into()))).await,
        vec![other_app.clone(), create.clone()]
    );
    assert_eq!(
        run(q(|q| q.action = Some("app.create".into()))).await,
        vec![create.clone()]
    );
    assert_eq!(
        run(q(|q| q.action = Some("app_create".into()))).await,
        vec![]
    );
    assert_eq!(
        run(q(|q| {
            q.since = Some(T0 + 5);
            q.until = Some(T0 + 15);
        }))
        .await,
        vec![revoke.clone()]
    );
    // Pages: two, then the rest after the last one shown.
    let first = run(q(|q| q.limit = 2)).await;
    assert_eq!(first, vec![other_app.clone(), revoke.clone()]);
    let mut next = q(|q| q.limit = 2);
    next.before_seq = Some(revoke.seq);
    assert_eq!(run(next).await, vec![create.clone()]);
    assert_eq!(run(AuditQuery::org("nobody", 10)).await, vec![]);
}
