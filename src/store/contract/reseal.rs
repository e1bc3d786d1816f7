//! Contract tests for the store key re-seal: usage by key id, a re-seal in leased batches
//! that moves every sealed record (app, grants, ticket, pending authorization, key check) to
//! the new key, leaves every value readable, and refuses to run before the new key seals.
//! Part of the suite in `contract`, which runs them for every backend.

use super::{grant, pending, sample_app, ticket, Fixture, T0};
use crate::store::seal::{KeySet, SealKey};

/// Batches until the re-seal is done (bounded), for owner `owner`.
async fn finish(f: &Fixture, owner: &str) -> crate::store::ResealProgress {
    for _ in 0..100 {
        let p = f.store.reseal_batch(2, owner).await.unwrap().unwrap();
        if p.finished_at.is_some() {
            return p;
        }
    }
    panic!("the re-seal did not finish in 100 batches of 2");
}

pub(super) async fn store_key_reseal(f: Fixture) {
    let s = &*f.store;
    let app = s.create_app(sample_app("acme", "gh")).await.unwrap();
    let users = ["u1", "u2", "u3", "u4", "u5"];
    for u in users {
        let g = grant(&app, u, &format!("at-{u}"));
        assert!(s.put_token_if_current(g, app.incarnation).await.unwrap());
    }
    let t = s.issue_ticket(ticket(&app, "u1", T0 + 600)).await.unwrap();
    let p = pending(&app, "u2", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    let old = f.key.sealing_kid();
    // app + 5 grants + ticket + pending + key check.
    let records = 9;
    assert_eq!(
        s.seal_usage().await.unwrap(),
        [(old.clone(), records)].into()
    );
    assert_eq!(s.reseal_progress().await.unwrap(), None);
    assert_eq!(s.reseal_batch(2, "a").await.unwrap(), None);

    // A new key, not sealing yet: the re-seal is recorded but refuses to run.
    let before = f.key.key_set();
    let new = SealKey::from_bytes(&[0x5e; 32]).unwrap();
    f.key.set(KeySet {
        opening: vec![before.sealing.clone(), new.clone()],
        ..before.clone()
    });
    let started = s.start_reseal(&new.kid()).await.unwrap();
    assert!(started.total >= records, "{started:?}");
    assert_eq!(s.reseal_progress().await.unwrap(), Some(started.clone()));
    assert!(s.reseal_batch(2, "a").await.is_err());

    // Sealing with it: leased batches move everything.
    f.key.set(KeySet {
        sealing: new.clone(),
        opening: vec![before.sealing.clone(), new.clone()],
        original: before.original.clone(),
    });
    let first = s.reseal_batch(2, "a").await.unwrap().unwrap();
    assert_eq!(first.owner.as_deref(), Some("a"));
    assert!(
        first.scanned > 0 && first.scanned < started.total,
        "{first:?}"
    );
    let held = s.reseal_batch(2, "b").await.unwrap().unwrap();
    assert_eq!(
        held.scanned, first.scanned,
        "another owner waits for the lease"
    );
    // A grant written meanwhile is sealed with the new key already: skipped, not counted.
    let fresh = grant(&app, "u5", "at-u5-new");
    assert!(s
        .put_token_if_current(fresh, app.incarnation)
        .await
        .unwrap());
    let done = finish(&f, "a").await;
    assert!(
        done.resealed <= records && done.resealed >= records - 1,
        "{done:?}"
    );
    assert_eq!(done.remaining(), 0);
    assert_eq!(s.seal_usage().await.unwrap(), [(new.kid(), records)].into());
    assert_eq!(
        s.reseal_batch(2, "a").await.unwrap(),
        None,
        "nothing under way"
    );

    // Without the old key, everything opens.
    f.key.set(KeySet {
        sealing: new.clone(),
        opening: vec![new.clone()],
        original: before.original,
    });
    let got = s.get_app("acme", "gh").await.unwrap().unwrap();
    assert_eq!(got, app);
    for u in users {
        let g = s
            .get_token("acme", "gh", app.incarnation, app.generation, u)
            .await
            .unwrap()
            .unwrap();
        let want = if u == "u5" {
            "at-u5-new".to_owned()
        } else {
            format!("at-{u}")
        };
        assert_eq!(g.access_token.expose(), want);
        assert_eq!(g.refresh_token.unwrap().expose(), format!("rt-{want}"));
    }
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), Some(t));
    assert_eq!(s.take_pending(&p.state).await.unwrap(), Some(p));
}
