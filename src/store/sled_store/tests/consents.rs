//! Consent tickets, pending authorizations, clean-up and the audit log.

use super::*;

#[tokio::test]
async fn tickets_are_single_use_and_expire() {
    let (_tmp, clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
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
    s.issue_ticket(e.clone()).await.unwrap();
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
    s.issue_ticket(keep.clone()).await.unwrap();
    s.issue_ticket(expire.clone()).await.unwrap();
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

#[tokio::test]
async fn raw_trees_hold_no_plaintext_ticket_id_or_state() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    s.flush().await.unwrap();
    // Keyed by the SHA-256 of the id and of the state.
    let (tk, tv) = s.tickets.iter().next().unwrap().unwrap();
    assert_eq!(&tk[..], lookup_hash(Kind::Ticket, &t.id));
    let (pk, pv) = s.pending.iter().next().unwrap().unwrap();
    assert_eq!(&pk[..], lookup_hash(Kind::Pending, &p.state));
    let (owner, hash) = s.ticket_owners.iter().next().unwrap().unwrap();
    assert_eq!(&owner[..], ticket_owner_key("acme", "github", "alice"));
    assert_eq!(hash, tk);
    for bytes in [&tv, &pv] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(&t.id) && !text.contains(&p.state), "{text}");
        assert!(
            text.contains("alice"),
            "the visible fields are there: {text}"
        );
    }
    for plain in [&t.id, &p.state] {
        assert!(
            !super::raw_contains(&s.db, plain.as_bytes()),
            "{plain} stored"
        );
    }
    // Moving a ticket record under another hash does not open.
    let stolen = ticket(&a, "alice", T0 + 900);
    s.tickets
        .insert(lookup_hash(Kind::Ticket, &stolen.id), tv.clone())
        .unwrap();
    let (record, _) = corrupt_record(s.get_ticket(&stolen.id).await);
    assert!(record.starts_with("ticket/"), "{record}");
    assert!(
        !record.contains(&stolen.id[..8]),
        "the name hides the id: {record}"
    );
}

#[tokio::test]
async fn a_pending_authorization_edited_to_another_user_does_not_open() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let mut p = pending(&a, "alice", T0 + 600);
    p.pkce_verifier = None;
    s.put_pending(p.clone()).await.unwrap();
    let key = lookup_hash(Kind::Pending, &p.state);
    edit_raw(&s.pending, &key, |v| v["bound"]["user"] = "mallory".into());
    corrupt_record(s.take_pending(&p.state).await);
}

#[tokio::test]
async fn purge_runs_off_the_runtime() {
    let (_tmp, clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    s.issue_ticket(ticket(&a, "bob", T0 + 10)).await.unwrap();
    s.put_pending(pending(&a, "bob", T0 + 10)).await.unwrap();
    clock.set(T0 + 10);
    // `#[tokio::test]` runs on this thread: a sweep here would have blocked the runtime.
    let here = super::super::sweep::tests::sweeps_on_this_thread();
    assert_eq!(s.purge_stale().await.unwrap(), 2, "the sweep ran");
    s.reset_app("acme", "github").await.unwrap();
    assert_eq!(super::super::sweep::tests::sweeps_on_this_thread(), here);
    assert!(
        s.ticket_owners.is_empty(),
        "the owner entry went with its ticket"
    );
}

#[tokio::test]
async fn consent_records_of_the_plaintext_layout_are_migrated_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let clock = ManualClock::new(T0);
    let key = key_a();
    let (a, live) = {
        let s = open(&dir, &clock);
        let a = s.create_app(app("acme", "github")).await.unwrap();
        // As the builds before hashed keys wrote them: trees `tickets` and `pending`, keyed
        // by the plaintext id and state.
        let legacy = |id: &str, user: &str, expires_at: u64| {
            serde_json::json!({
                "v": 1, "id": id, "org": "acme", "user": user, "app": "github",
                "generation": a.generation, "incarnation": a.incarnation,
                "expires_at": expires_at,
            })
        };
        let tickets = s.db.open_tree("tickets").unwrap();
        for (id, user, exp) in [
            ("old-alice-1-PLAINTEXT", "alice", T0 + 100),
            ("old-alice-2-PLAINTEXT", "alice", T0 + 900),
            ("old-bob-expired-PLAINTEXT", "bob", T0),
        ] {
            tickets
                .insert(id, serde_json::to_vec(&legacy(id, user, exp)).unwrap())
                .unwrap();
        }
        tickets.insert("garbage", &b"{"[..]).unwrap();
        let pending = s.db.open_tree("pending").unwrap();
        pending
            .insert(
                "old-state-PLAINTEXT",
                &br#"{"v":1,"state":"old-state-PLAINTEXT"}"#[..],
            )
            .unwrap();
        drop((tickets, pending));
        // A store written by the builds before migrations: no schema version.
        s.db.open_tree("meta")
            .unwrap()
            .remove("schema-version")
            .unwrap();
        s.close().await.unwrap();
        (a, "old-alice-2-PLAINTEXT")
    };
    let s = SledStore::open_with_clock(&dir, key, clock.clock()).unwrap();
    let names: Vec<_> = s.db.tree_names();
    assert!(!names
        .iter()
        .any(|n| &n[..] == b"tickets" || &n[..] == b"pending"));
    for plain in ["old-alice-1-PLAINTEXT", live, "old-state-PLAINTEXT"] {
        assert!(
            !super::raw_contains(&s.db, plain.as_bytes()),
            "{plain} kept"
        );
    }
    // The newest live ticket of alice still works, and is the one repeated.
    let t = s.get_ticket(live).await.unwrap().unwrap();
    assert_eq!((t.user.as_str(), t.expires_at), ("alice", T0 + 900));
    let again = s.issue_ticket(ticket(&a, "alice", T0 + 900)).await.unwrap();
    assert_eq!(again.id, live);
    assert_eq!(s.get_ticket("old-alice-1-PLAINTEXT").await.unwrap(), None);
    assert_eq!(s.consent_record_counts().unwrap(), (1, 0));
    // Opening again finds nothing to migrate.
    s.close().await.unwrap();
    let s = open(&dir, &clock);
    assert_eq!(s.consent_record_counts().unwrap(), (1, 0));
}
