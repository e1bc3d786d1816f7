//! Contract tests for the replicas table (heartbeats create and refresh rows, a clean stop
//! deletes one, and a row whose lease ended is no longer listed) and retention (the audit
//! log and the change log pruned). Part of the suite in
//! `contract`, which runs them for every backend.

use std::time::Duration;

use super::{sample_app, Fixture};
use crate::clock::ManualClock;
use crate::store::{AuditEvent, Change, Replica, Seen};

/// The ids of the listed replicas.
async fn ids(f: &Fixture) -> Vec<String> {
    let list: Vec<Replica> = f.store.list_replicas().await.unwrap();
    list.into_iter().map(|r| r.id).collect()
}

/// Heartbeats create rows (listed by id, with their relay), a later heartbeat keeps
/// `started_at` and replaces the relay, `remove_replica` deletes one row once, and bad ids
/// are refused.
pub(super) async fn replicas_heartbeat_and_leave(f: Fixture) {
    let s = &*f.store;
    let ttl = Duration::from_secs(60);
    assert_eq!(s.list_replicas().await.unwrap(), vec![]);
    s.heartbeat_replica("b", None, ttl).await.unwrap();
    s.heartbeat_replica("a", Some("https://10.0.0.1:8443"), ttl)
        .await
        .unwrap();
    let list = s.list_replicas().await.unwrap();
    assert_eq!(ids(&f).await, ["a", "b"]);
    assert_eq!(list[0].relay.as_deref(), Some("https://10.0.0.1:8443"));
    assert_eq!(list[1].relay, None);
    assert!(list
        .iter()
        .all(|r| r.started_at <= r.last_seen && r.started_at > 0));
    let started = list[0].started_at;

    s.heartbeat_replica("a", Some("https://10.0.0.2:8443"), ttl)
        .await
        .unwrap();
    let a = s.list_replicas().await.unwrap().remove(0);
    assert_eq!(
        (a.started_at, a.relay.as_deref()),
        (started, Some("https://10.0.0.2:8443"))
    );

    assert!(s.remove_replica("a").await.unwrap());
    assert!(!s.remove_replica("a").await.unwrap());
    assert_eq!(ids(&f).await, ["b"]);
    for bad in ["", "has space", &"x".repeat(65)] {
        assert!(
            s.heartbeat_replica(bad, None, ttl).await.is_err(),
            "{bad:?}"
        );
    }
    let long = format!("https://{}:1", "h".repeat(600));
    assert!(s.heartbeat_replica("c", Some(&long), ttl).await.is_err());
}

/// A replica that stops heartbeating drops out of the list when its lease ends (judged by the
/// store's clock: the manual clock for the embedded store, the database's for PostgreSQL, so
/// the lease here is short and the test polls), while others stay.
pub(super) async fn replicas_expire(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    s.heartbeat_replica("gone", None, Duration::from_millis(500))
        .await
        .unwrap();
    s.heartbeat_replica("kept", None, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ids(&f).await, ["gone", "kept"]);
    clock.advance(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ids(&f).await != ["kept"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an expired replica is still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A heartbeat deletes expired rows; the expired replica's next heartbeat brings it back.
    s.heartbeat_replica("kept", None, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        !s.remove_replica("gone").await.unwrap(),
        "expired rows are deleted"
    );
    s.heartbeat_replica("gone", None, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ids(&f).await, ["gone", "kept"]);
}

/// Audit events stamped longer ago than the retention are pruned, in every org; newer ones
/// stay, and a second pass finds nothing.
pub(super) async fn audit_is_pruned_after_its_retention(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let event = |org: &str, action: &str| {
        AuditEvent::new(org, "admin", action, "github", serde_json::json!({}))
    };
    s.append_audit(event("acme", "app.create")).await.unwrap();
    s.append_audit(event("globex", "app.create")).await.unwrap();
    clock.advance(100);
    let kept = s.append_audit(event("acme", "app.reset")).await.unwrap();
    assert_eq!(s.prune_audit(Duration::from_secs(200)).await.unwrap(), 0);
    assert_eq!(s.prune_audit(Duration::from_secs(50)).await.unwrap(), 2);
    assert_eq!(s.list_audit("acme", 10).await.unwrap(), vec![kept]);
    assert_eq!(s.list_audit("globex", 10).await.unwrap(), vec![]);
    assert_eq!(s.prune_audit(Duration::from_secs(50)).await.unwrap(), 0);
}

/// The change log keeps what is younger than its retention; after everything is pruned,
/// writes still publish their changes.
pub(super) async fn changes_are_pruned_and_keep_flowing(f: Fixture) {
    let s = &*f.store;
    s.create_app(sample_app("acme", "github")).await.unwrap();
    assert_eq!(s.prune_changes(Duration::from_secs(3600)).await.unwrap(), 0);
    let changes = s.subscribe();
    s.prune_changes(Duration::ZERO).await.unwrap();
    s.set_app_enabled("acme", "github", false).await.unwrap();
    let mut seen = Vec::new();
    changes.catch_up(|e| {
        if let Seen::Event(e) = e {
            seen.push(e.change.clone());
        }
    });
    assert_eq!(
        seen,
        vec![Change::AppChanged {
            org: "acme".into(),
            app: "github".into()
        }]
    );
}
