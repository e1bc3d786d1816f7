//! The contract of consent tickets and pending authorizations: expiry and single use (also
//! under concurrency), one live ticket per (org, user, app) repeated until used or expired,
//! and lookups by hash with no plaintext ticket id or state in the backend's raw storage.

use super::{pending, sample_app, ticket, Fixture, RACERS, T0};
use crate::clock::ManualClock;
use crate::store::model::ConsentTicket;
use crate::store::Store;

pub(super) async fn tickets_expire_and_are_single_use(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.get_ticket("unknown").await.unwrap(), None);
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), None, "single use");
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);

    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    clock.set(T0 + 899);
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), Some(t.clone()));
    clock.set(T0 + 900);
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None, "expired");
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), None, "expired");
}

pub(super) async fn pending_expires_and_is_single_use(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    assert_eq!(s.take_pending(&p.state).await.unwrap(), Some(p.clone()));
    assert_eq!(s.take_pending(&p.state).await.unwrap(), None, "single use");
    assert_eq!(s.take_pending("unknown").await.unwrap(), None);

    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    clock.set(T0 + 600);
    assert_eq!(s.take_pending(&p.state).await.unwrap(), None, "expired");
    clock.set(T0);
    assert_eq!(
        s.take_pending(&p.state).await.unwrap(),
        None,
        "an expired record is consumed all the same"
    );
}

pub(super) async fn one_of_many_takers_wins(f: Fixture) {
    let s = f.store.clone();
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice", T0 + 900);
    s.issue_ticket(t.clone()).await.unwrap();
    let p = pending(&a, "alice", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    let tickets: Vec<_> = (0..RACERS)
        .map(|_| {
            let (s, id) = (s.clone(), t.id.clone());
            tokio::spawn(async move { s.take_ticket(&id).await.unwrap() })
        })
        .collect();
    let pendings: Vec<_> = (0..RACERS)
        .map(|_| {
            let (s, state) = (s.clone(), p.state.clone());
            tokio::spawn(async move { s.take_pending(&state).await.unwrap() })
        })
        .collect();
    let mut won_tickets = Vec::new();
    for h in tickets {
        won_tickets.extend(h.await.unwrap());
    }
    let mut won_pending = Vec::new();
    for h in pendings {
        won_pending.extend(h.await.unwrap());
    }
    assert_eq!(won_tickets, vec![t], "exactly one ticket taker wins");
    assert_eq!(won_pending, vec![p], "exactly one pending taker wins");
}

/// Issues `t`, asserting that it was stored (no live ticket of its owner to repeat).
async fn issue_new(s: &dyn Store, t: &ConsentTicket) {
    assert_eq!(&s.issue_ticket(t.clone()).await.unwrap(), t, "a new ticket");
}

pub(super) async fn one_live_ticket_per_user_and_app(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice", T0 + 900);
    issue_new(s, &t).await;
    // Every later issue for (acme, alice, github) repeats it, expiry unchanged.
    clock.set(T0 + 100);
    for _ in 0..50 {
        let again = s
            .issue_ticket(ticket(&a, "alice", T0 + 1000))
            .await
            .unwrap();
        assert_eq!(again, t, "the live ticket is repeated");
    }
    assert_eq!(f.tamper.consent_records(), (1, 0), "one ticket stored");
    // Other users and other apps have their own.
    let bob = ticket(&a, "bob", T0 + 1000);
    issue_new(s, &bob).await;
    let b = s.create_app(sample_app("acme", "crm")).await.unwrap();
    issue_new(s, &ticket(&b, "alice", T0 + 1000)).await;
    let g = s.create_app(sample_app("globex", "github")).await.unwrap();
    issue_new(s, &ticket(&g, "alice", T0 + 1000)).await;
    assert_eq!(f.tamper.consent_records(), (4, 0));

    // Expired: replaced, and the old id is gone.
    clock.set(T0 + 900);
    let next = ticket(&a, "alice", T0 + 1800);
    issue_new(s, &next).await;
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), None);
    assert_eq!(s.take_ticket(&t.id).await.unwrap(), None);
    assert_eq!(f.tamper.consent_records(), (4, 0), "replaced, not added");

    // Used: the next issue stores a new one.
    assert_eq!(s.take_ticket(&next.id).await.unwrap(), Some(next.clone()));
    let after_use = ticket(&a, "alice", T0 + 1800);
    issue_new(s, &after_use).await;

    // A new generation replaces the old one (a reset sweeps it; an issue for the new
    // generation replaces one the sweep has not reached).
    let r = s.reset_app("acme", "github").await.unwrap();
    let fresh = ticket(&r, "alice", T0 + 1800);
    issue_new(s, &fresh).await;
    assert_eq!(s.get_ticket(&after_use.id).await.unwrap(), None);
    assert_eq!(s.get_ticket(&fresh.id).await.unwrap(), Some(fresh.clone()));
    let mut old_gen = ticket(&r, "alice", T0 + 1800);
    old_gen.generation = r.generation - 1;
    let replaced = s.issue_ticket(old_gen.clone()).await.unwrap();
    assert_eq!(
        replaced, old_gen,
        "a ticket of another generation is not repeated"
    );
    assert_eq!(
        s.get_ticket(&fresh.id).await.unwrap(),
        None,
        "at most one per owner"
    );
    assert_eq!(
        s.get_ticket(&old_gen.id).await.unwrap(),
        None,
        "stale generation"
    );
}

pub(super) async fn concurrent_issues_agree_on_one_ticket(f: Fixture) {
    let s = f.store.clone();
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (s, t) = (s.clone(), ticket(&a, "alice", T0 + 900));
            tokio::spawn(async move { s.issue_ticket(t).await.unwrap() })
        })
        .collect();
    let mut issued = Vec::new();
    for t in tasks {
        issued.push(t.await.unwrap());
    }
    assert!(issued.windows(2).all(|w| w[0] == w[1]), "{issued:?}");
    assert_eq!(f.tamper.consent_records(), (1, 0));
}

pub(super) async fn consent_ids_are_stored_only_hashed_or_sealed(f: Fixture) {
    let s = &*f.store;
    let a = s.create_app(sample_app("acme", "github")).await.unwrap();
    let t = ticket(&a, "alice-VISIBLE-USER", T0 + 900);
    issue_new(s, &t).await;
    let p = pending(&a, "bob-VISIBLE-USER", T0 + 600);
    s.put_pending(p.clone()).await.unwrap();
    assert!(
        f.tamper.raw_contains(b"alice-VISIBLE-USER"),
        "the raw scan reads the stored records"
    );
    assert!(f.tamper.raw_contains(b"bob-VISIBLE-USER"));
    for (what, plain) in [("ticket id", &t.id), ("state", &p.state)] {
        assert!(
            !f.tamper.raw_contains(plain.as_bytes()),
            "{what} stored in the clear"
        );
    }
    assert!(!f.tamper.raw_contains(b"pkce-PLAINTEXT-777"));
    // Looked up by the plaintext all the same.
    assert_eq!(s.get_ticket(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.take_pending(&p.state).await.unwrap(), Some(p));
}
