//! The revoked caller tokens a [`Verifier`](super::Verifier) refuses: an in-memory set,
//! replaced whole by whoever follows the store (`crate::revoke`) at start and on every
//! `TokensRevoked` change event, and read on every verification (cache hits included).
//!
//! A revocation names one token (`jti`, in one org or any) or every token of one user issued
//! at or before a time. Each entry carries the moment after which nothing it covers can still
//! be valid ([`MAX_TOKEN_TTL`] after the newest token it covers was issued); past it the entry
//! is ignored here and deleted from the store, so the set holds at most the revocations of the
//! last [`MAX_TOKEN_TTL`].
//!
//! The hot path: with no revocation at all, one atomic load; otherwise a read lock and at most
//! two hash lookups, no allocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use super::Caller;

/// The longest lifetime a caller token is trusted to have (DESIGN: `token mint --ttl` is
/// capped at 30 days): a revocation is kept this long after the newest token it covers was
/// issued. The cap is what makes the set bounded; it must stay at least the mint cap.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// One revocation, as the verifier applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The token with this `jti`, in `org` (any org when `None`).
    Jti {
        /// The token's `jti` claim.
        jti: String,
        /// The token's `org`; `None` for any.
        org: Option<String>,
        /// Unix seconds after which the entry covers nothing valid.
        expires_at: u64,
    },
    /// Every token of `user` in `org` issued at or before `before` (or without `iat`).
    User {
        /// The token's `org` claim.
        org: String,
        /// The token's `sub` claim.
        user: String,
        /// Unix seconds.
        before: u64,
        /// Unix seconds after which the entry covers nothing valid.
        expires_at: u64,
    },
}

/// The entries, indexed for lookups by a caller's fields.
#[derive(Debug, Default)]
struct Entries {
    /// `jti` → (org or any, expires_at).
    jti: HashMap<String, Vec<(Option<String>, u64)>>,
    /// org → user → (before, expires_at).
    users: HashMap<String, HashMap<String, (u64, u64)>>,
}

/// The set of revoked tokens. Shared (`Arc`) between the verifier and the store follower.
#[derive(Debug, Default)]
pub struct RevokedSet {
    /// Whether any entry is held: the common case, none, costs one atomic load.
    any: AtomicBool,
    /// The entries, replaced whole on every update.
    entries: RwLock<Entries>,
}

impl RevokedSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every entry with `revocations`, dropping those expired at `now`.
    pub fn replace(&self, revocations: impl IntoIterator<Item = Revocation>, now: u64) {
        let mut entries = Entries::default();
        for r in revocations {
            match r {
                Revocation::Jti {
                    jti,
                    org,
                    expires_at,
                } if expires_at > now => {
                    entries.jti.entry(jti).or_default().push((org, expires_at));
                }
                Revocation::User {
                    org,
                    user,
                    before,
                    expires_at,
                } if expires_at > now => {
                    let slot = entries.users.entry(org).or_default().entry(user);
                    let e = slot.or_insert((before, expires_at));
                    *e = (e.0.max(before), e.1.max(expires_at));
                }
                _ => {}
            }
        }
        let any = !entries.jti.is_empty() || !entries.users.is_empty();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        self.any.store(any, Ordering::Release);
    }

    /// How many entries are held (for tests and logs).
    pub fn len(&self) -> usize {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.jti.values().map(Vec::len).sum::<usize>()
            + e.users.values().map(HashMap::len).sum::<usize>()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Whether `caller`'s token is revoked at `now`.
    pub fn covers(&self, caller: &Caller, now: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = caller.jti.as_ref().and_then(|j| e.jti.get(j)) {
            let hit = list.iter().any(|(org, expires_at)| {
                *expires_at > now && org.as_ref().is_none_or(|o| *o == caller.org)
            });
            if hit {
                return true;
            }
        }
        let user = e.users.get(&caller.org).and_then(|u| u.get(&caller.user));
        user.is_some_and(|&(before, expires_at)| {
            expires_at > now && caller.iat.is_none_or(|iat| iat <= before)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(org: &str, user: &str, jti: Option<&str>, iat: Option<u64>) -> Caller {
        Caller {
            org: org.into(),
            user: user.into(),
            roles: vec![],
            exp: u64::MAX,
            jti: jti.map(Into::into),
            iat,
        }
    }

    #[test]
    fn covers_by_jti_per_org_and_by_user_up_to_a_time_until_expiry() {
        let set = RevokedSet::new();
        let alice = caller("acme", "alice", Some("j1"), Some(100));
        assert!(!set.covers(&alice, 0), "an empty set covers nothing");
        set.replace(
            [
                Revocation::Jti {
                    jti: "j1".into(),
                    org: Some("acme".into()),
                    expires_at: 1000,
                },
                Revocation::Jti {
                    jti: "j9".into(),
                    org: None,
                    expires_at: 1000,
                },
                Revocation::User {
                    org: "acme".into(),
                    user: "bob".into(),
                    before: 100,
                    expires_at: 1000,
                },
                Revocation::Jti {
                    jti: "old".into(),
                    org: None,
                    expires_at: 10,
                },
            ],
            50,
        );
        assert_eq!(set.len(), 3, "the expired entry is dropped");
        let cases = [
            (
                "jti in its org",
                caller("acme", "alice", Some("j1"), Some(100)),
                true,
            ),
            (
                "jti in another org",
                caller("beta", "alice", Some("j1"), None),
                false,
            ),
            (
                "jti in any org",
                caller("beta", "carol", Some("j9"), None),
                true,
            ),
            ("no jti", caller("acme", "alice", None, Some(100)), false),
            (
                "user, issued before",
                caller("acme", "bob", None, Some(99)),
                true,
            ),
            (
                "user, issued at",
                caller("acme", "bob", Some("x"), Some(100)),
                true,
            ),
            (
                "user, issued after",
                caller("acme", "bob", None, Some(101)),
                false,
            ),
            ("user, no iat", caller("acme", "bob", None, None), true),
            (
                "user in another org",
                caller("beta", "bob", None, Some(1)),
                false,
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(set.covers(&c, 500), want, "{name}");
        }
        // Past their expiry, entries cover nothing.
        assert!(!set.covers(&alice, 1000));
        set.replace([], 0);
        assert!(set.is_empty() && !set.covers(&alice, 500));
    }
}
