//! Consent tickets, pending authorizations, clean-up and the audit log.

use super::*;

#[tokio::test]
async fn tickets_are_single_use_and_expire() {
    let (_tmp, clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice", T0 + 900);
    s.put_ticket(t.clone()).await.unwrap();
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(
        s.get_ticket(&t.id).await.unwrap(),
        Some(t.clone()),
        "get does not consume"
    );
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), None);
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);
    assert_eq!(s.take_ticket("never-issued").await.unwrap(), None);

    let e = ticket(&a, "alice", T0 + 900);
    s.put_ticket(e.clone()).await.unwrap();
    clock.set(T0 + 899);
    assert!(s.get_ticket(&e.id).await.unwrap().is_some());
    clock.set(T0 + 900);
    assert_eq!(s.get_ticket(&e.id).await.unwrap(), None);
    assert_eq!(s.take_ticket(&e.id).await.unwrap(), None);
    assert!(
        s.tickets.is_empty(),
        "an expired ticket is removed when taken"
    );
}

#[tokio::test]
async fn pending_is_single_use_and_expires() {
    let (_tmp, clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    let got = s.take_pending(&p.state).await.unwrap().unwrap();
    assert_eq!(got, p);
    assert_eq!(got.pkce_verifier.unwrap().expose(), "pkce-PLAINTEXT-777");
    assert_eq!(s.take_pending(&p.state).await.unwrap(), None);

    let mut no_pkce = pending(&a, "bob", T0 + 600);
    no_pkce.pkce_verifier = None;
    s.put_pending(no_pkce.clone()).await.unwrap();
    clock.set(T0 + 600);
    assert_eq!(s.take_pending(&no_pkce.state).await.unwrap(), None);
    assert!(s.pending.is_empty());
}

#[tokio::test]
async fn purge_removes_expired_and_orphaned_records() {
    let (_tmp, clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let keep = ticket(&a, "alice", T0 + 900);
    let expire = ticket(&a, "bob", T0 + 10);
    s.put_ticket(keep.clone()).await.unwrap();
    s.put_ticket(expire.clone()).await.unwrap();
    s.put_pending(pending(&a, "bob", T0 + 10)).await.unwrap();
    assert!(put_token(&s, &a, "alice", "at").await);
    // A token left behind by a reset whose clean-up never ran (crash in between).
    let leftover = TokenRecord::seal(&token(&a, "old", "at-old"), a.incarnation, &s.key).unwrap();
    s.tokens
        .insert(
            token_key("acme", "github", a.incarnation, 0, "old"),
            encode(&leftover).unwrap(),
        )
        .unwrap();
    clock.set(T0 + 10);
    assert_eq!(s.purge_stale().await.unwrap(), 3);
    assert_eq!(s.tickets.len(), 1);
    assert!(s.pending.is_empty());
    assert_eq!(s.tokens.len(), 1);
    assert!(current(&s, &a, "alice").await.is_some());
    assert_eq!(s.purge_stale().await.unwrap(), 0);
}

#[tokio::test]
async fn audit_is_newest_first_per_org_and_limited() {
    let (_tmp, clock, s) = fresh();
    for (i, org) in ["acme", "globex", "acme", "acme"].iter().enumerate() {
        clock.set(T0 + i as u64);
        let e = s
            .append_audit(AuditEvent::new(
                *org,
                "admin",
                "app.create",
                format!("app{i}"),
                serde_json::json!({"n": i}),
            ))
            .await
            .unwrap();
        assert_eq!(e.at, T0 + i as u64);
    }
    let acme = s.list_audit("acme", 10).await.unwrap();
    let targets: Vec<_> = acme.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["app3", "app2", "app0"]);
    assert!(acme.windows(2).all(|w| w[0].seq > w[1].seq));
    assert_eq!(acme[0].detail, serde_json::json!({"n": 3}));
    assert_eq!(s.list_audit("acme", 2).await.unwrap().len(), 2);
    let globex = s.list_audit("globex", 10).await.unwrap();
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0].org, "globex");
    assert!(s.list_audit("initech", 10).await.unwrap().is_empty());
}
