//! Contract tests for caller-token revocations: stored and merged under one key, never
//! narrowed, published, listed while live, and purged once they expire. Part of the suite in
//! `contract`, which runs them for every backend.

use super::{Fixture, T0};
use crate::clock::ManualClock;
use crate::store::{Change, RevokedTokens, Seen, TokenRevocation};

fn by_user(org: &str, user: &str, before: u64, expires_at: u64) -> TokenRevocation {
    TokenRevocation {
        target: RevokedTokens::User {
            org: org.into(),
            user: user.into(),
            before,
        },
        expires_at,
    }
}

fn by_jti(jti: &str, org: Option<&str>, expires_at: u64) -> TokenRevocation {
    TokenRevocation {
        target: RevokedTokens::Jti {
            jti: jti.into(),
            org: org.map(Into::into),
        },
        expires_at,
    }
}

/// Listed revocations, sorted by key.
async fn listed(f: &Fixture) -> Vec<TokenRevocation> {
    let mut all = f.store.list_token_revocations().await.unwrap();
    all.sort_by_key(TokenRevocation::key);
    all
}

/// Stored as given, merged per key (the later `before` and expiry win, whatever the order),
/// published, listed only while live, purged once expired.
pub(super) async fn token_revocations(f: Fixture, clock: ManualClock) {
    let s = &*f.store;
    assert!(s.list_token_revocations().await.unwrap().is_empty());
    let changes = s.subscribe();
    let alice = s
        .revoke_tokens(by_user("acme", "alice", T0, T0 + 100))
        .await
        .unwrap();
    assert_eq!(alice, by_user("acme", "alice", T0, T0 + 100));
    let mut seen = Vec::new();
    changes.catch_up(|e| {
        if let Seen::Event(e) = e {
            seen.push(e.change.clone());
        }
    });
    assert_eq!(seen, vec![Change::TokensRevoked]);

    // An older `before` does not narrow a stored one; a later one widens it.
    let kept = s
        .revoke_tokens(by_user("acme", "alice", T0 - 50, T0 + 10))
        .await
        .unwrap();
    assert_eq!(kept, by_user("acme", "alice", T0, T0 + 100));
    let widened = s
        .revoke_tokens(by_user("acme", "alice", T0 + 5, T0 + 200))
        .await
        .unwrap();
    assert_eq!(widened, by_user("acme", "alice", T0 + 5, T0 + 200));

    // One jti in one org, the same jti in any org, and another user: four records.
    s.revoke_tokens(by_jti("j-1", Some("acme"), T0 + 50))
        .await
        .unwrap();
    s.revoke_tokens(by_jti("j-1", None, T0 + 300))
        .await
        .unwrap();
    s.revoke_tokens(by_user("acme/x", "bob", T0, T0 + 300))
        .await
        .unwrap();
    let all = listed(&f).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&by_jti("j-1", Some("acme"), T0 + 50)));
    assert!(all.contains(&by_jti("j-1", None, T0 + 300)));
    assert!(all.contains(&by_user("acme", "alice", T0 + 5, T0 + 200)));

    // Expired ones are no longer listed, and the purge deletes them.
    clock.advance(60);
    assert_eq!(listed(&f).await.len(), 3);
    clock.advance(150);
    let left = listed(&f).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(s.purge_stale().await.unwrap() >= 2);
    clock.set(T0);
    assert_eq!(
        listed(&f).await.len(),
        2,
        "the purge deleted the expired records"
    );
}
