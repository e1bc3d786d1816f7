//! What is on disk: no plaintext secrets, reopening, the directory lock, the key check, and
//! records that were tampered with or sealed under another key.

use super::*;

#[tokio::test]
async fn secrets_never_reach_the_disk_in_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let clock = ManualClock::new(T0);
    let s = open(&dir, &clock);
    let a = s.create_app(app("acme", "github")).await.unwrap();
    assert!(put_token(&s, &a, "alice", "at-PLAINTEXT-456").await);
    s.put_pending(pending(&a, "alice", T0 + 600)).await.unwrap();
    s.flush().await.unwrap();

    let mut files = 0;
    let mut saw_marker = false;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for secret in [
                "sk-PLAINTEXT-123",
                "at-PLAINTEXT-456",
                "rt-at-PLAINTEXT-456",
                "pkce-PLAINTEXT-777",
                "hook-PLAINTEXT-000",
            ] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} found in {}",
                    path.display()
                );
            }
            saw_marker |= bytes.windows(16).any(|w| w == b"VISIBLE-NAME-789");
        }
    }
    assert!(files > 0, "scanned no files");
    // The scan is meaningful only if records are on disk uncompressed.
    assert!(saw_marker, "a non-secret field was not found on disk");
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let clock = ManualClock::new(T0);
    let (a, t, tk, pd, ev) = {
        let s = open(&dir, &clock);
        let a = s.create_app(app("acme", "github")).await.unwrap();
        let t = token(&a, "alice", "at-1");
        assert!(s
            .put_token_if_current(t.clone(), a.incarnation)
            .await
            .unwrap());
        let tk = ticket(&a, "alice", T0 + 900);
        s.issue_ticket(tk.clone()).await.unwrap();
        let pd = pending(&a, "alice", T0 + 600);
        s.put_pending(pd.clone()).await.unwrap();
        let ev = s
            .append_audit(AuditEvent::new(
                "acme",
                "admin",
                "app.create",
                "github",
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        s.close().await.unwrap();
        (a, t, tk, pd, ev)
    };
    let s = open(&dir, &clock);
    assert_eq!(s.get_app("acme", "github").await.unwrap(), Some(a.clone()));
    assert_eq!(current(&s, &a, "alice").await, Some(t));
    assert_eq!(s.take_ticket(&tk.id).await.unwrap(), Some(tk));
    assert_eq!(s.take_pending(&pd.state).await.unwrap(), Some(pd));
    assert_eq!(s.list_audit("acme", 10).await.unwrap(), vec![ev.clone()]);
    let ev2 = s
        .append_audit(AuditEvent::new(
            "acme",
            "admin",
            "app.reset",
            "github",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    assert!(ev2.seq > ev.seq, "sequence stays monotonic across restarts");
}

#[tokio::test]
async fn second_open_is_refused_with_a_helpful_error() {
    let (tmp, _clock, _s) = fresh();
    let err = SledStore::open(&tmp.path().join("store"), key_a()).unwrap_err();
    match err {
        StoreError::Io(msg) => assert!(msg.contains("locked by another process"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_key_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let clock = ManualClock::new(T0);
    {
        let s = open(&dir, &clock);
        s.create_app(app("acme", "github")).await.unwrap();
        s.close().await.unwrap();
    }
    let (record, reason) = corrupt_record(SledStore::open(&dir, key_b()));
    assert_eq!(record, "meta/key-check");
    assert!(reason.contains("not the one"), "{reason}");
}

#[tokio::test]
async fn secret_sealed_under_another_key_is_corrupt_on_read() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    // Plant records sealed under key B, as if the key file had been swapped for one
    // record's worth of data (the key check covers the whole-store case).
    let foreign_app = AppRecord::seal(&a, &key_b()).unwrap();
    s.apps
        .insert(app_key("acme", "github"), encode(&foreign_app).unwrap())
        .unwrap();
    let (record, reason) = corrupt_record(s.get_app("acme", "github").await);
    assert_eq!(record, "app/acme/github");
    // Sealed values name their key (issue 18): one the ring does not hold is named.
    assert!(reason.contains("does not hold"), "{reason}");
    let foreign_token =
        TokenRecord::seal(&token(&a, "alice", "at"), a.incarnation, &key_b()).unwrap();
    s.tokens
        .insert(
            token_key("acme", "github", a.incarnation, a.generation, "alice"),
            encode(&foreign_token).unwrap(),
        )
        .unwrap();
    let (record, _) = corrupt_record(current_result(&s, &a, "alice").await);
    assert_eq!(
        record,
        format!("token/acme/github/{}/1/alice", a.incarnation)
    );
    // Listings that need no secret still work.
    assert_eq!(s.count_authorizations("acme", "github").await.unwrap(), 1);
    assert_eq!(
        s.list_authorizations("acme", "github").await.unwrap().len(),
        1
    );
}

async fn current_result(s: &SledStore, a: &App, user: &str) -> StoreResult<Option<TokenSet>> {
    s.get_token(&a.org, &a.id, a.incarnation, a.generation, user)
        .await
}

#[tokio::test]
async fn tampered_records_are_corrupt_and_named() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    assert!(put_token(&s, &a, "alice", "at").await);
    let akey = app_key("acme", "github");
    let tkey = token_key("acme", "github", a.incarnation, a.generation, "alice");

    edit_raw(&s.tokens, &tkey, |v| flip_sealed(&mut v["access_token"]));
    let (record, reason) = corrupt_record(current_result(&s, &a, "alice").await);
    assert_eq!(
        record,
        format!("token/acme/github/{}/1/alice", a.incarnation)
    );
    assert!(reason.contains("does not open"), "{reason}");

    // A sealed value moved between fields of one record does not open either.
    edit_raw(&s.tokens, &tkey, |v| {
        v["access_token"] = v["refresh_token"].clone()
    });
    corrupt_record(current_result(&s, &a, "alice").await);

    edit_raw(&s.apps, &akey, |v| flip_sealed(&mut v["client_secret"]));
    let (record, _) = corrupt_record(s.get_app("acme", "github").await);
    assert_eq!(record, "app/acme/github");
    corrupt_record(s.list_apps("acme").await);
    corrupt_record(s.list_all_apps().await);

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "truncated",
            br#"{"v":1,"org":"acme","id":"git"#.to_vec(),
            "not a JSON record",
        ),
        ("empty", Vec::new(), "not a JSON record"),
        (
            "older build",
            br#"{"org":"acme","id":"github"}"#.to_vec(),
            "no format version",
        ),
        (
            "newer build",
            br#"{"v":2,"org":"acme","id":"github"}"#.to_vec(),
            "unknown format version 2",
        ),
    ];
    for (case, bytes, want) in cases {
        s.apps.insert(akey.as_slice(), bytes).unwrap();
        let (record, reason) = corrupt_record(s.get_app("acme", "github").await);
        assert_eq!(record, "app/acme/github", "{case}");
        assert!(reason.contains(want), "{case}: {reason}");
        // Everything that reads the app reports it too, without panicking.
        corrupt_record(s.set_app_enabled("acme", "github", false).await);
        corrupt_record(
            s.put_token_if_current(token(&a, "bob", "at"), a.incarnation)
                .await,
        );
    }

    // A truncated sealed value.
    let good = AppRecord::seal(&a, &s.key).unwrap();
    s.apps
        .insert(akey.as_slice(), encode(&good).unwrap())
        .unwrap();
    edit_raw(&s.apps, &akey, |v| {
        v["client_secret"] = serde_json::json!("AQID")
    });
    let (_, reason) = corrupt_record(s.get_app("acme", "github").await);
    assert!(reason.contains("truncated"), "{reason}");

    // A record stored under another app's key.
    s.apps
        .insert(
            app_key("acme", "gitlab"),
            encode(&AppRecord::seal(&a, &s.key).unwrap()).unwrap(),
        )
        .unwrap();
    let (record, reason) = corrupt_record(s.get_app("acme", "gitlab").await);
    assert_eq!(record, "app/acme/gitlab");
    assert!(reason.contains("do not match"), "{reason}");
}

#[tokio::test]
async fn corrupt_tickets_and_pending_are_reported() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    edit_raw(&s.pending, &lookup_hash(Kind::Pending, &p.state), |v| {
        flip_sealed(&mut v["pkce_verifier"])
    });
    let (record, _) = corrupt_record(s.take_pending(&p.state).await);
    assert!(record.starts_with("pending/"), "{record}");
    assert!(!record.contains(&p.state[..8]), "the state is not echoed");
    s.tickets
        .insert(lookup_hash(Kind::Ticket, "tk"), b"{\"v\":1".as_slice())
        .unwrap();
    let (record, _) = corrupt_record(s.take_ticket("tk").await);
    assert!(record.starts_with("ticket/"), "{record}");
    // Clean-up skips what it cannot read instead of failing.
    s.purge_stale().await.unwrap();
}
