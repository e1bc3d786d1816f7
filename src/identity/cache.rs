//! The verifier's cache: a sharded map from a verified token's SHA-256 to the caller it
//! verified as, bounded in entries and in bytes.
//!
//! Keyed by the token, not by the header it came in: `Bearer` and `Basic` forms, scheme case
//! and whitespace are taken apart first ([`super::header`]), so every variant of one token is
//! one entry. Keyed by the digest, so an entry costs the same few dozen bytes however long the
//! token (a cache keyed by the raw header held 100,000 variants of one 8 KiB token: 0.9 GB).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use super::verify::expired;
use super::Caller;

/// Independent cache shards, so concurrent requests rarely touch the same lock. A power of two.
pub(super) const CACHE_SHARDS: usize = 16;

/// Bytes the cache may hold (keys, callers and their strings, map slots). An entry is about
/// 200 bytes for usual claims and at most about 5 KiB (32 roles of 128 characters), so this
/// holds the 100,000 entries of [`super::CACHE_CAPACITY`] for usual tokens while bounding the
/// worst case.
pub(super) const CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// A token's SHA-256.
type Digest = [u8; 32];

/// Sharded map from a token's digest to a verified caller.
///
/// The digest is of the token's exact bytes, so two tokens share an entry only if they are
/// equal. Its first 8 bytes key the inner map and the next ones pick the shard (SHA-256 is
/// uniform, and only tokens that verified are ever inserted); the whole digest is compared on
/// lookup, so a partial collision is a miss, never a wrong identity.
pub(super) struct Cache {
    shards: Box<[RwLock<Shard>]>,
    pub(super) shard_capacity: usize,
    /// Byte budget of each shard.
    shard_max_bytes: usize,
}

/// One shard: its entries, keyed by the first 8 bytes of the digest, and what they cost.
#[derive(Default)]
struct Shard {
    /// The entries.
    map: HashMap<u64, Entry, BuildHasherDefault<PreHashed>>,
    /// Sum of [`Entry::cost`] over `map`.
    bytes: usize,
}

struct Entry {
    /// The whole digest, compared on lookup.
    digest: Digest,
    caller: Arc<Caller>,
}

impl Entry {
    /// What the entry holds in memory: the map slot and the caller with its strings.
    fn cost(&self) -> usize {
        let c = &self.caller;
        std::mem::size_of::<(u64, Entry)>()
            + std::mem::size_of::<Caller>()
            + c.org.len()
            + c.user.len()
            + c.jti.as_ref().map_or(0, String::len)
            + c.roles
                .iter()
                .map(|r| r.len() + std::mem::size_of::<String>())
                .sum::<usize>()
    }
}

/// The SHA-256 of `token`.
fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Cache {
    pub(super) fn new(capacity: usize, max_bytes: usize) -> Self {
        let shard_capacity = capacity.div_ceil(CACHE_SHARDS).max(1);
        Self {
            shards: (0..CACHE_SHARDS)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            shard_capacity,
            shard_max_bytes: max_bytes.div_ceil(CACHE_SHARDS).max(1),
        }
    }

    /// The inner map key and the shard of a digest.
    fn place(&self, d: &Digest) -> (u64, &RwLock<Shard>) {
        let key = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let shard = usize::from(d[8]) % CACHE_SHARDS;
        (key, &self.shards[shard])
    }

    /// The caller `token` verified as, if cached.
    pub(super) fn get(&self, token: &[u8]) -> Option<Arc<Caller>> {
        let d = digest(token);
        let (key, shard) = self.place(&d);
        // A poisoned lock means a panic while holding it; the map itself is still consistent
        // (every mutation is a single std call), so keep serving from it.
        let shard = shard.read().unwrap_or_else(|poison| poison.into_inner());
        shard
            .map
            .get(&key)
            .filter(|e| e.digest == d)
            .map(|e| e.caller.clone())
    }

    /// Remembers that `token` verified as `caller`. A full shard (entries or bytes) first drops
    /// its expired entries and, when that frees less than a quarter, everything.
    pub(super) fn insert(&self, token: &[u8], caller: Arc<Caller>, now: u64) {
        let d = digest(token);
        let (key, shard) = self.place(&d);
        let entry = Entry { digest: d, caller };
        let cost = entry.cost();
        if cost > self.shard_max_bytes {
            // Larger than a whole shard may hold (only with a tiny budget): not cached.
            return;
        }
        let mut shard = shard.write().unwrap_or_else(|poison| poison.into_inner());
        let full =
            |s: &Shard| s.map.len() >= self.shard_capacity || s.bytes + cost > self.shard_max_bytes;
        if full(&shard) && !shard.map.contains_key(&key) {
            let before = shard.map.len();
            shard.map.retain(|_, e| !expired(e.caller.exp, now));
            shard.bytes = shard.map.values().map(Entry::cost).sum();
            if before - shard.map.len() < self.shard_capacity / 4 || full(&shard) {
                shard.map.clear();
                shard.bytes = 0;
            }
        }
        if let Some(old) = shard.map.insert(key, entry) {
            shard.bytes -= old.cost();
        }
        shard.bytes += cost;
    }

    /// Forgets every entry (a verifying key was retired: what it signed must be verified
    /// again, and refused).
    pub(super) fn clear(&self) {
        for s in &self.shards {
            let mut s = s.write().unwrap_or_else(|p| p.into_inner());
            s.map.clear();
            s.bytes = 0;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    /// Bytes the entries hold (see [`Entry::cost`]).
    pub(super) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }
}

/// Hasher for keys that already are uniformly distributed: passes the `u64` through.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str, roles: usize) -> Arc<Caller> {
        Arc::new(Caller {
            org: "acme".into(),
            user: user.into(),
            roles: (0..roles).map(|i| format!("{i:0>128}")).collect(),
            exp: u64::MAX / 2,
            jti: None,
            iat: None,
        })
    }

    #[test]
    fn bounded_in_bytes_as_well_as_entries() {
        let max = 1024 * 1024;
        let cache = Cache::new(100_000, max);
        // Callers with 32 long roles: the entry count alone would allow far more bytes.
        for i in 0..2_000u32 {
            cache.insert(&i.to_be_bytes(), caller("u", 32), 0);
            assert!(cache.bytes() <= max, "{}", cache.bytes());
        }
        assert!(cache.len() > 0);
        // The byte count is what the entries cost.
        let recount: usize = cache
            .shards
            .iter()
            .flat_map(|s| {
                let s = s.read().unwrap();
                s.map.values().map(Entry::cost).collect::<Vec<_>>()
            })
            .sum();
        assert_eq!(recount, cache.bytes());
        // Replacing an entry does not count it twice.
        let small = Cache::new(100, max);
        for _ in 0..10 {
            small.insert(b"same", caller("u", 0), 0);
        }
        assert_eq!(small.len(), 1);
        assert!(small.bytes() < 1024);
    }
}
