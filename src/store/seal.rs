//! Sealing of secrets at rest: ChaCha20-Poly1305 (ring) under the store key ring
//! (`data/keys/store.key` and, once rotated, `data/keys/store/`; see `crate::keys::store_key`).
//!
//! A sealed value is base64 (standard alphabet, padded) inside the record's JSON of
//! `version (1 byte) ‖ [kid (8 bytes)] ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
//! Version 2, what this build writes, names the key that sealed it: `kid` is the first 8
//! bytes of the SHA-256 of the key (domain-separated, [`SealKey::kid`]), so opening picks the
//! key from the ring and a value sealed with a key the ring does not hold is reported by id
//! ([`SealError::KeyMissing`]). Version 1 (no kid), written before rotation existed, opens
//! with the original key, `keys/store.key`. Both are ChaCha20-Poly1305 with a random 96-bit
//! nonce from the system CSPRNG.
//!
//! The associated data names the record and the field the secret belongs to (see
//! `Aad`), so a sealed value copied into another record, or into another field of the same
//! record, fails to open. ChaCha20-Poly1305 was chosen over AES-GCM because it is
//! constant-time in software on every CPU the proxy may run on.
//!
//! Random nonces are safe here: the birthday bound for 96-bit nonces is around 2^48 seals
//! under one key, far beyond what a token store writes.
//!
//! [`StoreKey`] is the ring as the store uses it: the key that seals now and every key that
//! opens. It is shared (cheap clones see the same ring), and a running server replaces its
//! keys when the ring changes on disk ([`StoreKey::set`]), so a rotation applies without a
//! restart.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::model::Secret;
use super::StoreError;

/// Format version of values sealed before keys had ids: no kid, the original key.
const SEAL_V1: u8 = 1;

/// Format version of sealed values written by this build: the kid follows the version byte.
const SEAL_VERSION: u8 = 2;

/// Length of a key id inside a sealed value, in bytes.
pub const KID_LEN: usize = 8;

/// Length of the key in bytes (ChaCha20-Poly1305).
const KEY_LEN: usize = 32;

/// Domain separator at the start of every associated data, so these seals can never be
/// confused with another use of the same key.
const AAD_DOMAIN: &[u8] = b"tollgate/store/seal/v1";

/// Domain separator of the key id hash.
const KID_DOMAIN: &[u8] = b"tollgate store key id\0";

/// One store key and its id. Cheap to clone; `Debug` prints only the id.
#[derive(Clone)]
pub struct SealKey {
    /// Names the key in every value it seals (version 2), so opening picks it.
    kid: [u8; KID_LEN],
    /// Seals and opens.
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey({})", self.kid())
    }
}

impl SealKey {
    /// Parses the text of a key file: 64 hex characters (32 bytes), surrounding whitespace
    /// ignored. The error never echoes the text.
    pub fn from_hex_text(text: &str) -> Result<SealKey, StoreError> {
        let bad = |reason: &str| StoreError::Corrupt {
            record: "store key".into(),
            reason: reason.into(),
        };
        let hex = text.trim().as_bytes();
        if hex.len() != KEY_LEN * 2 {
            return Err(bad("expected 64 hex characters (32 bytes)"));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
                return Err(bad("not hexadecimal"));
            };
            *byte = hi << 4 | lo;
        }
        Self::from_bytes(&bytes)
    }

    /// Reads and parses a key file (`data/keys/store.key`, `data/keys/store/<kid>.key`).
    pub fn load(path: &Path) -> Result<SealKey, StoreError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        Self::from_hex_text(&text).map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt {
                record: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Wraps 32 raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, StoreError> {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| StoreError::Corrupt {
                record: "store key".into(),
                reason: "expected 32 bytes".into(),
            })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &[KID_DOMAIN, bytes].concat());
        let mut kid = [0u8; KID_LEN];
        kid.copy_from_slice(&digest.as_ref()[..KID_LEN]);
        Ok(SealKey {
            kid,
            key: Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// The key's id: 16 hex characters.
    pub fn kid(&self) -> String {
        hex(&self.kid)
    }
}

/// The keys a [`StoreKey`] holds: built from the store key ring.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// Seals every new value.
    pub sealing: SealKey,
    /// Every key that opens (the sealing key included or not: it opens either way).
    pub opening: Vec<SealKey>,
    /// The id of the original key (`keys/store.key`), which opens version-1 values; it is in
    /// `opening` unless retired.
    pub original: String,
}

/// The store's keys: the one that seals and those that open. Cheap to clone, and the clones
/// share the keys (a server replaces them with [`StoreKey::set`] when the ring changes);
/// `Debug` never prints key material.
#[derive(Clone)]
pub struct StoreKey(Arc<RwLock<KeySet>>);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(MASKED)")
    }
}

impl StoreKey {
    /// One key that seals and opens everything (a store never rotated): key-file text.
    pub fn from_hex_text(text: &str) -> Result<StoreKey, StoreError> {
        SealKey::from_hex_text(text).map(Self::single)
    }

    /// One key, read from a key file (`data/keys/store.key`).
    pub fn load(path: &Path) -> Result<StoreKey, StoreError> {
        SealKey::load(path).map(Self::single)
    }

    /// One key of 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<StoreKey, StoreError> {
        SealKey::from_bytes(bytes).map(Self::single)
    }

    /// The keys of a ring.
    pub fn from_keys(keys: KeySet) -> StoreKey {
        StoreKey(Arc::new(RwLock::new(keys)))
    }

    fn single(key: SealKey) -> StoreKey {
        Self::from_keys(KeySet {
            original: key.kid(),
            sealing: key.clone(),
            opening: vec![key],
        })
    }

    /// Replaces the keys (the ring changed): every clone seals and opens with them from now.
    pub fn set(&self, keys: KeySet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        // A writer only assigns a whole value, so a poisoned lock still holds a valid one.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys as they are now.
    pub fn key_set(&self) -> KeySet {
        self.keys().clone()
    }

    /// The id of the key that seals now.
    pub fn sealing_kid(&self) -> String {
        self.keys().sealing.kid()
    }

    /// The id of the original key (`keys/store.key`).
    pub fn original_kid(&self) -> String {
        self.keys().original.clone()
    }

    /// Seals `plaintext` for the record and field named by `aad`, with the sealing key.
    pub(crate) fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Sealed, StoreError> {
        let key = self.keys().sealing.clone();
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Io("system random generator failed".into()))?;
        let mut in_out = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.0.as_slice()),
                &mut in_out,
            )
            // Fails only for inputs beyond ChaCha20's 256 GiB limit.
            .map_err(|_| StoreError::Io("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + KID_LEN + NONCE_LEN + in_out.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&key.kid);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(Sealed(
            base64::engine::general_purpose::STANDARD.encode(out),
        ))
    }

    /// Opens a sealed value with the key it names. Errors say why in words fit for
    /// [`StoreError::Corrupt`]; they never contain plaintext.
    pub(crate) fn open(&self, aad: &Aad, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let raw = decode_sealed(sealed)?;
        let (kid, body) = split_kid(&raw)?;
        let key = {
            let keys = self.keys();
            let kid_hex = kid.map_or_else(|| keys.original.clone(), hex);
            keys.opening
                .iter()
                .find(|k| k.kid() == kid_hex)
                .cloned()
                .ok_or(SealError::KeyMissing(kid_hex))?
        };
        if body.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Truncated);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Truncated)?;
        let mut in_out = ciphertext.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, aead::Aad::from(aad.0.as_slice()), &mut in_out)
            .map_err(|_| SealError::DoesNotOpen)?;
        Ok(plain.to_vec())
    }

    /// The id of the key a sealed value names (the original key's for version 1), without
    /// opening it.
    pub(crate) fn kid_of(&self, sealed: &Sealed) -> Result<String, SealError> {
        let raw = decode_sealed(sealed)?;
        Ok(match split_kid(&raw)?.0 {
            Some(kid) => hex(kid),
            None => self.original_kid(),
        })
    }

    /// `sealed` opened and sealed again with the sealing key, or `None` when the sealing key
    /// already sealed it: the re-seal's step for one field. `name` names the record in errors.
    pub(crate) fn reseal(
        &self,
        name: &str,
        aad: &Aad,
        sealed: &Sealed,
    ) -> Result<Option<Sealed>, StoreError> {
        let corrupt = |e: SealError| StoreError::Corrupt {
            record: name.to_owned(),
            reason: e.to_string(),
        };
        if self.kid_of(sealed).map_err(corrupt)? == self.sealing_kid() {
            return Ok(None);
        }
        let plain = self.open(aad, sealed).map_err(corrupt)?;
        self.seal(aad, &plain).map(Some)
    }

    /// Seals a secret string.
    pub(crate) fn seal_secret(&self, aad: &Aad, secret: &Secret) -> Result<Sealed, StoreError> {
        self.seal(aad, secret.expose().as_bytes())
    }

    /// Opens a sealed secret string.
    pub(crate) fn open_secret(&self, aad: &Aad, sealed: &Sealed) -> Result<Secret, SealError> {
        let bytes = self.open(aad, sealed)?;
        String::from_utf8(bytes)
            .map(Secret::new)
            .map_err(|_| SealError::NotUtf8)
    }
}

fn decode_sealed(sealed: &Sealed) -> Result<Vec<u8>, SealError> {
    base64::engine::general_purpose::STANDARD
        .decode(sealed.0.as_bytes())
        .map_err(|_| SealError::Encoding)
}

/// Splits a decoded sealed value after its version (and kid, for version 2).
fn split_kid(raw: &[u8]) -> Result<(Option<&[u8]>, &[u8]), SealError> {
    let (&version, rest) = raw.split_first().ok_or(SealError::Truncated)?;
    match version {
        SEAL_V1 => Ok((None, rest)),
        SEAL_VERSION if rest.len() >= KID_LEN => {
            let (kid, body) = rest.split_at(KID_LEN);
            Ok((Some(kid), body))
        }
        SEAL_VERSION => Err(SealError::Truncated),
        other => Err(SealError::Version(other)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A sealed value as it appears in a record's JSON: base64 of version ‖ kid ‖ nonce ‖
/// ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Sealed(pub(crate) String);

/// Associated data binding a sealed value to one field of one record.
///
/// Built from length-prefixed parts (u32 big-endian length, then the bytes) after a domain
/// separator, so no two different part lists encode alike even when ids contain `/` or NUL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Aad(Vec<u8>);

impl Aad {
    /// Associated data for the given parts, e.g. `["token", org, app, inc, gen, user, field]`.
    pub(crate) fn new(parts: &[&[u8]]) -> Aad {
        let mut out = AAD_DOMAIN.to_vec();
        for part in parts {
            push_len_prefixed(&mut out, part);
        }
        Aad(out)
    }
}

/// Appends `part` with a u32 big-endian length prefix.
pub(crate) fn push_len_prefixed(out: &mut Vec<u8>, part: &[u8]) {
    // Ids are short strings; a part over 4 GiB cannot reach here (sled values are far
    // smaller), so saturating is only a formality that keeps this infallible.
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part);
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    /// Not base64.
    #[error("sealed value is not base64")]
    Encoding,
    /// Shorter than version + nonce + tag.
    #[error("sealed value is truncated")]
    Truncated,
    /// A format version this build does not know.
    #[error("sealed value has unknown format version {0}")]
    Version(u8),
    /// Authentication failed: another key, another record, or tampering.
    #[error("sealed value does not open under this store key (wrong key, tampered, or copied from another record)")]
    DoesNotOpen,
    /// Opened, but the plaintext is not UTF-8 (cannot happen for values this build sealed).
    #[error("sealed value is not UTF-8")]
    NotUtf8,
    /// Sealed with a key the ring does not hold (retired, or the keys directory is not the
    /// one the store was written with).
    #[error("sealed with store key {0}, which the store key ring does not hold (retired, or another keys directory)")]
    KeyMissing(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    #[test]
    fn key_text_parses_and_debug_is_masked() {
        let k = StoreKey::from_hex_text(HEX).unwrap();
        assert_eq!(format!("{k:?}"), "StoreKey(MASKED)");
        let upper = StoreKey::from_hex_text(&HEX.to_uppercase()).unwrap();
        let aad = Aad::new(&[b"x"]);
        let sealed = k.seal(&aad, b"hello").unwrap();
        assert_eq!(upper.open(&aad, &sealed).unwrap(), b"hello");
    }

    #[test]
    fn bad_key_texts_are_rejected_without_echo() {
        for (name, text) in [
            ("empty", ""),
            ("short", "0011"),
            ("long", &"00".repeat(33)),
            ("not hex", &"zz".repeat(32)),
        ] {
            let err = StoreKey::from_hex_text(text).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{name}: {err:?}");
            if !text.is_empty() {
                assert!(!err.to_string().contains(text), "{name}: echoed");
            }
        }
    }

    #[test]
    fn load_reads_a_key_file_and_names_the_path_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("store.key");
        std::fs::write(&good, HEX).unwrap();
        StoreKey::load(&good).unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "nope\n").unwrap();
        let err = StoreKey::load(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.key"), "{err}");
        let missing = StoreKey::load(&dir.path().join("missing.key")).unwrap_err();
        assert!(matches!(missing, StoreError::Io(_)), "{missing:?}");
    }

    #[test]
    fn seal_round_trips_and_binds_aad_and_key() {
        let k = StoreKey::from_hex_text(HEX).unwrap();
        let other = StoreKey::from_bytes(&[9u8; 32]).unwrap();
        let aad = Aad::new(&[b"token", b"acme", b"gh", b"alice", b"access_token"]);
        let s1 = k.seal(&aad, b"at-123").unwrap();
        let s2 = k.seal(&aad, b"at-123").unwrap();
        assert_ne!(s1, s2, "nonces must differ");
        assert_eq!(k.open(&aad, &s1).unwrap(), b"at-123");
        let moved = Aad::new(&[b"token", b"acme", b"gh", b"mallory", b"access_token"]);
        assert_eq!(k.open(&moved, &s1), Err(SealError::DoesNotOpen));
        // Another store's key: the value names a key that store does not hold.
        let kid = StoreKey::from_hex_text(HEX).unwrap().sealing_kid();
        assert_eq!(other.open(&aad, &s1), Err(SealError::KeyMissing(kid)));
    }

    #[test]
    fn malformed_sealed_values_are_reported() {
        let k = StoreKey::from_hex_text(HEX).unwrap();
        let aad = Aad::new(&[b"x"]);
        let b64 = |b: &[u8]| Sealed(base64::engine::general_purpose::STANDARD.encode(b));
        assert_eq!(
            k.open(&aad, &Sealed("%%%".into())),
            Err(SealError::Encoding)
        );
        assert_eq!(k.open(&aad, &b64(&[])), Err(SealError::Truncated));
        assert_eq!(k.open(&aad, &b64(&[1, 2, 3])), Err(SealError::Truncated));
        assert_eq!(k.open(&aad, &b64(&[7; 40])), Err(SealError::Version(7)));
    }

    #[test]
    fn aad_parts_are_unambiguous() {
        assert_ne!(Aad::new(&[b"a/b", b"c"]), Aad::new(&[b"a", b"b/c"]));
        assert_ne!(Aad::new(&[b"a\0", b"b"]), Aad::new(&[b"a", b"\0b"]));
    }

    /// A version-1 value (no kid) as builds before rotation sealed it.
    fn seal_v1(key: &SealKey, aad: &Aad, plain: &[u8]) -> Sealed {
        let nonce = [5u8; NONCE_LEN];
        let mut in_out = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.0.as_slice()),
                &mut in_out,
            )
            .unwrap();
        let raw = [&[SEAL_V1][..], &nonce, &in_out].concat();
        Sealed(base64::engine::general_purpose::STANDARD.encode(raw))
    }

    #[test]
    fn values_name_their_key_and_open_with_it_from_the_ring() {
        let original = SealKey::from_hex_text(HEX).unwrap();
        let second = SealKey::from_bytes(&[2u8; 32]).unwrap();
        assert_eq!(original.kid().len(), KID_LEN * 2);
        assert_ne!(original.kid(), second.kid());
        assert_eq!(format!("{second:?}"), format!("SealKey({})", second.kid()));
        let aad = Aad::new(&[b"token", b"x"]);
        let old = seal_v1(&original, &aad, b"v1");
        let store = StoreKey::from_hex_text(HEX).unwrap();
        assert_eq!(store.open(&aad, &old).unwrap(), b"v1");
        assert_eq!(store.kid_of(&old).unwrap(), original.kid());
        let by_original = store.seal(&aad, b"first").unwrap();
        assert_eq!(store.kid_of(&by_original).unwrap(), original.kid());

        // Rotated: the new key seals, both open; clones follow.
        let shared = store.clone();
        store.set(KeySet {
            sealing: second.clone(),
            opening: vec![original.clone(), second.clone()],
            original: original.kid(),
        });
        assert_eq!(shared.sealing_kid(), second.kid());
        let by_second = shared.seal(&aad, b"second").unwrap();
        assert_eq!(shared.kid_of(&by_second).unwrap(), second.kid());
        for (v, plain) in [
            (&old, &b"v1"[..]),
            (&by_original, b"first"),
            (&by_second, b"second"),
        ] {
            assert_eq!(shared.open(&aad, v).unwrap(), plain);
        }
        // Re-sealing moves older values to the sealing key and leaves current ones alone.
        assert_eq!(shared.reseal("r", &aad, &by_second).unwrap(), None);
        for v in [&old, &by_original] {
            let moved = shared.reseal("r", &aad, v).unwrap().unwrap();
            assert_eq!(shared.kid_of(&moved).unwrap(), second.kid());
            assert_eq!(
                shared.open(&aad, &moved).unwrap(),
                shared.open(&aad, v).unwrap()
            );
        }
        assert!(shared.reseal("r", &Aad::new(&[b"other"]), &old).is_err());

        // The original retired: its values are reported by kid, the others still open.
        store.set(KeySet {
            sealing: second.clone(),
            opening: vec![second.clone()],
            original: original.kid(),
        });
        assert_eq!(
            shared.open(&aad, &old),
            Err(SealError::KeyMissing(original.kid()))
        );
        let err = shared.open(&aad, &by_original).unwrap_err();
        assert!(err.to_string().contains(&original.kid()), "{err}");
        assert_eq!(shared.open(&aad, &by_second).unwrap(), b"second");
        let b64 = |b: &[u8]| Sealed(base64::engine::general_purpose::STANDARD.encode(b));
        assert_eq!(
            shared.open(&aad, &b64(&[2, 1, 2])),
            Err(SealError::Truncated)
        );
    }
}
