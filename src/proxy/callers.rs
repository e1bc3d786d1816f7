//! Live proxy connections per caller (`--max-connections-per-caller`, DESIGN default 256).
//!
//! A connection is counted for the caller its first identified request names, from then until
//! the connection closes (a `CONNECT` tunnel included: the count travels with the connection's
//! [`ConnPermit`]). Beyond the limit the request gets `503 overloaded` with the reason
//! `per_caller_connection_limit`, and the connection is closed. Later requests on a counted
//! connection only check that it is counted: no lock, no allocation.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::OwnedSemaphorePermit;

use crate::identity::Caller;

/// Independent lock shards, so connections of different callers rarely share a lock.
const SHARDS: usize = 16;

/// A caller as counted: org and user (roles and expiry do not make another caller).
#[derive(Clone)]
struct CallerKey(Arc<Caller>);

impl PartialEq for CallerKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.org == other.0.org && self.0.user == other.0.user
    }
}

impl Eq for CallerKey {}

impl Hash for CallerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.org.hash(state);
        self.0.user.hash(state);
    }
}

/// One shard: live connections per caller; a caller is present only while it has some.
type Shard = Mutex<HashMap<CallerKey, usize>>;

/// The counts of live connections per caller.
pub struct CallerConnections {
    /// Picks a shard (keyed per process).
    hasher: RandomState,
    /// The counts, sharded.
    shards: Arc<[Shard]>,
    /// Connections one caller may hold.
    limit: usize,
}

/// One connection counted for its caller; released on drop (when the connection, or the
/// tunnel it became, ends).
pub struct CallerSlot {
    /// Where the count lives.
    shards: Arc<[Shard]>,
    /// The shard.
    shard: usize,
    /// Whose count.
    key: CallerKey,
}

impl CallerConnections {
    /// Counts allowing `limit` connections per caller.
    pub fn new(limit: usize) -> Self {
        CallerConnections {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            limit,
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for one more connection of `caller`, unless it already holds the limit.
    pub fn try_acquire(&self, caller: &Arc<Caller>) -> Option<CallerSlot> {
        let key = CallerKey(caller.clone());
        let shard = (self.hasher.hash_one(&key) as usize) % SHARDS;
        // A poisoned lock means a panic while holding it; each change is a single operation,
        // so the counts are still right.
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(CallerSlot {
            shards: self.shards.clone(),
            shard,
            key,
        })
    }

    /// Live connections of `caller` (for tests).
    pub fn count(&self, caller: &Arc<Caller>) -> usize {
        let key = CallerKey(caller.clone());
        let shard = (self.hasher.hash_one(&key) as usize) % SHARDS;
        let map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).copied().unwrap_or(0)
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut map = self.shards[self.shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// What a client connection holds while it lives: its place under `--max-connections`, and,
/// once a request identified the caller, its place in the caller's count.
pub struct ConnPermit {
    /// The connection-limit permit.
    _limit: OwnedSemaphorePermit,
    /// The caller's slot, set by the first identified request.
    caller: OnceLock<CallerSlot>,
}

impl ConnPermit {
    /// A connection holding `limit`, not yet counted for a caller.
    pub fn new(limit: OwnedSemaphorePermit) -> Self {
        ConnPermit {
            _limit: limit,
            caller: OnceLock::new(),
        }
    }

    /// Whether the connection is counted for a caller already.
    pub fn counted(&self) -> bool {
        self.caller.get().is_some()
    }

    /// Counts the connection for `caller` in `callers`; `false` when the caller is at the
    /// limit. A connection already counted stays counted for its first caller.
    pub fn count_for(&self, callers: &CallerConnections, caller: &Arc<Caller>) -> bool {
        if self.counted() {
            return true;
        }
        match callers.try_acquire(caller) {
            Some(slot) => {
                // Requests on one HTTP/1.1 connection are sequential; should another have set
                // it meanwhile, this slot is dropped and released.
                let _ = self.caller.set(slot);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(org: &str, user: &str, exp: u64) -> Arc<Caller> {
        Arc::new(Caller {
            org: org.into(),
            user: user.into(),
            roles: vec![],
            exp,
            jti: None,
            iat: None,
        })
    }

    #[test]
    fn counts_per_org_and_user_and_releases_on_drop() {
        let c = CallerConnections::new(2);
        let alice = caller("acme", "alice", 1);
        let a1 = c.try_acquire(&alice).unwrap();
        // Another token of the same caller counts for the same caller.
        let _a2 = c.try_acquire(&caller("acme", "alice", 2)).unwrap();
        assert!(c.try_acquire(&alice).is_none());
        assert!(c.try_acquire(&caller("beta", "alice", 1)).is_some());
        assert!(c.try_acquire(&caller("acme", "bob", 1)).is_some());
        assert_eq!(c.count(&alice), 2);
        drop(a1);
        assert_eq!(c.count(&alice), 1);
        assert!(c.try_acquire(&alice).is_some());
    }
}
