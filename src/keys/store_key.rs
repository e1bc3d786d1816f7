//! The store key ring: `keys/store.key` (the original key, which also opens values sealed
//! before keys had ids) and, once rotated, `keys/store/<kid>.key` with `keys/store/ring.json`.
//! The same [`Ring`] as the identity and session keys; what differs is the overlap rule: a
//! superseded store key never stops opening by itself (what it sealed stays in the store until
//! re-sealed), so it is retired only by hand, and `keys retire` refuses while any record still
//! uses it (`crate::store::reseal`).
//!
//! The store seals with the ring's signing key, so a new key seals only after the signing
//! delay, once every replica following the ring (`super::watch`) can open what it seals.

use std::path::Path;

use super::ring::{Ring, RingError, RingKey};
use crate::store::seal::{KeySet, SealKey};
use crate::store::StoreKey;

impl RingKey for SealKey {
    const KIND: &'static str = "store";
    /// Never by itself: what a store key sealed stays until the re-seal moved it.
    const VERIFIES_FOR: u64 = u64::MAX;
    fn load(path: &Path) -> std::io::Result<Self> {
        SealKey::load(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }
    fn from_text(text: &str) -> Self {
        // `Ring::rotate` passes `generate_key_text()`, 64 hex characters; any other text is
        // hashed to a key rather than refused, as the identity key does with its text.
        SealKey::from_hex_text(text).unwrap_or_else(|_| {
            let digest = ring::digest::digest(&ring::digest::SHA256, text.trim().as_bytes());
            SealKey::from_bytes(digest.as_ref()).expect("a SHA-256 digest is 32 bytes")
        })
    }
    fn kid(&self) -> String {
        SealKey::kid(self)
    }
}

/// The store key ring.
pub type StoreRing = Ring<SealKey>;

/// The keys the store uses at `now`: the ring's signing key seals, every key not retired
/// opens.
pub fn key_set(ring: &StoreRing, now: u64) -> KeySet {
    let original = ring
        .list(now)
        .into_iter()
        .find(|k| k.original)
        .map(|k| k.kid)
        .unwrap_or_default();
    KeySet {
        sealing: ring.signing(now).clone(),
        opening: ring.verifying(now).0,
        original,
    }
}

/// The store's keys as the ring under `keys_dir` holds them now.
pub fn load(keys_dir: &Path) -> Result<StoreKey, RingError> {
    let now = crate::clock::Clock::system().now().unwrap_or(0);
    Ok(StoreKey::from_keys(key_set(
        &StoreRing::load(keys_dir)?,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ring::SIGNING_DELAY_SECS;
    use crate::store::seal::Aad;

    #[test]
    fn the_ring_seals_with_its_signing_key_after_the_delay_and_opens_with_all() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join("store.key"), "11".repeat(32)).unwrap();
        let store = load(&keys).unwrap();
        let original = store.sealing_kid();
        assert_eq!(store.original_kid(), original);
        let aad = Aad::new(&[b"t"]);
        let before = store.seal(&aad, b"before").unwrap();

        let now = 1_800_000_000;
        let mut ring = StoreRing::load(&keys).unwrap();
        let new = ring.rotate(now).unwrap();
        store.set(key_set(&ring, now));
        assert_eq!(
            store.sealing_kid(),
            original,
            "the delay: the old key still seals"
        );
        store.set(key_set(&ring, now + SIGNING_DELAY_SECS));
        assert_eq!(store.sealing_kid(), new);
        let after = store.seal(&aad, b"after").unwrap();
        assert_eq!(store.kid_of(&after).unwrap(), new);
        assert_eq!(store.open(&aad, &before).unwrap(), b"before");
        // Never retired by time.
        let (opening, _) = ring.verifying(u64::MAX - 1);
        assert_eq!(opening.len(), 2);

        ring.retire(&original, now + 10).unwrap();
        let reloaded = load(&keys).unwrap();
        assert_eq!(reloaded.open(&aad, &after).unwrap(), b"after");
        let err = reloaded.open(&aad, &before).unwrap_err();
        assert!(err.to_string().contains(&original), "{err}");
    }
}
