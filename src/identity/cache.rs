//! The verifier's cache: a sharded map from the exact header (or token) bytes to the caller
//! they verified as.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, RwLock};

use super::verify::expired;
use super::Caller;

/// Independent cache shards, so concurrent requests rarely touch the same lock. A power of two.
pub(super) const CACHE_SHARDS: usize = 16;

/// Sharded map from (tag, bytes) to a verified caller.
///
/// Each shard is keyed by a 64-bit keyed SipHash of the input (random per process, so clients
/// cannot aim for collisions) and stores the full input, compared on lookup: a hash collision
/// is a miss, never a wrong identity. Hashing once and keying the inner map by that hash means a
/// hit hashes the header bytes exactly once.
pub(super) struct Cache {
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
    pub(super) shard_capacity: usize,
}

/// One shard: keyed by the input's keyed hash, which [`PreHashed`] passes through.
type Shard = HashMap<u64, Entry, BuildHasherDefault<PreHashed>>;

struct Entry {
    /// The tag byte followed by the input bytes.
    key: Box<[u8]>,
    caller: Arc<Caller>,
}

impl Entry {
    fn matches(&self, tag: u8, bytes: &[u8]) -> bool {
        self.key.split_first() == Some((&tag, bytes))
    }
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Self {
        let shard_capacity = capacity.div_ceil(CACHE_SHARDS).max(1);
        Self {
            hasher: RandomState::new(),
            shards: (0..CACHE_SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            shard_capacity,
        }
    }

    fn hash(&self, tag: u8, bytes: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(tag);
        h.write(bytes);
        h.finish()
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // Bits 32.. pick the shard; the inner map uses the low bits (bucket) and the top 7 bits
        // (control byte), which therefore stay fully random within a shard.
        &self.shards[(hash >> 32) as usize % CACHE_SHARDS]
    }

    pub(super) fn get(&self, tag: u8, bytes: &[u8]) -> Option<Arc<Caller>> {
        let hash = self.hash(tag, bytes);
        // A poisoned lock means a panic while holding it; the map itself is still consistent
        // (every mutation is a single std call), so keep serving from it.
        let map = self
            .shard(hash)
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        map.get(&hash)
            .filter(|e| e.matches(tag, bytes))
            .map(|e| e.caller.clone())
    }

    pub(super) fn insert(&self, tag: u8, bytes: &[u8], caller: Arc<Caller>, now: u64) {
        let hash = self.hash(tag, bytes);
        let mut map = self
            .shard(hash)
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if map.len() >= self.shard_capacity && !map.contains_key(&hash) {
            let before = map.len();
            map.retain(|_, e| !expired(e.caller.exp, now));
            if before - map.len() < self.shard_capacity / 4 {
                map.clear();
            }
        }
        let mut key = Vec::with_capacity(bytes.len() + 1);
        key.push(tag);
        key.extend_from_slice(bytes);
        map.insert(
            hash,
            Entry {
                key: key.into_boxed_slice(),
                caller,
            },
        );
    }

    /// Approximate bytes the entries hold: keys, callers and per-entry overhead.
    pub(super) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let map = s.read().unwrap_or_else(|p| p.into_inner());
                map.values()
                    .map(|e| e.key.len() + entry_overhead(&e.caller))
                    .sum::<usize>()
            })
            .sum()
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// What an entry costs besides its key: the map slot and the caller with its strings.
fn entry_overhead(caller: &Caller) -> usize {
    std::mem::size_of::<(u64, Entry)>()
        + std::mem::size_of::<Caller>()
        + caller.org.len()
        + caller.user.len()
        + caller
            .roles
            .iter()
            .map(|r| r.len() + std::mem::size_of::<String>())
            .sum::<usize>()
}

/// Hasher for keys that already are a keyed hash: passes the `u64` through.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this hasher; fold anything else in rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
