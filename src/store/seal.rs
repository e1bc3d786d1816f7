//! Sealing of secrets at rest: ChaCha20-Poly1305 (ring) under the store key
//! (`data/keys/store.key`).
//!
//! A sealed value is `version (1 byte) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`,
//! base64 (standard alphabet, padded) inside the record's JSON. Version 1 means
//! ChaCha20-Poly1305 with a random 96-bit nonce from the system CSPRNG; the version byte
//! leaves room to change the algorithm without guessing.
//!
//! The associated data names the record and the field the secret belongs to (see
//! `Aad`), so a sealed value copied into another record, or into another field of the same
//! record, fails to open. ChaCha20-Poly1305 was chosen over AES-GCM because it is
//! constant-time in software on every CPU the proxy may run on.
//!
//! Random nonces are safe here: the birthday bound for 96-bit nonces is around 2^48 seals
//! under one key, far beyond what a token store writes.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::model::Secret;
use super::StoreError;

/// Format version byte of sealed values written by this build.
const SEAL_VERSION: u8 = 1;

/// Length of the key in bytes (ChaCha20-Poly1305).
const KEY_LEN: usize = 32;

/// Domain separator at the start of every associated data, so these seals can never be
/// confused with another use of the same key.
const AAD_DOMAIN: &[u8] = b"tollgate/store/seal/v1";

/// The store's AEAD key. Cheap to clone; `Debug` never prints it.
#[derive(Clone)]
pub struct StoreKey(Arc<LessSafeKey>);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(MASKED)")
    }
}

impl StoreKey {
    /// Parses the text of a key file: 64 hex characters (32 bytes), surrounding whitespace
    /// ignored. The error never echoes the text.
    pub fn from_hex_text(text: &str) -> Result<StoreKey, StoreError> {
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

    /// Reads and parses a key file (`data/keys/store.key`).
    pub fn load(path: &Path) -> Result<StoreKey, StoreError> {
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
    pub fn from_bytes(bytes: &[u8]) -> Result<StoreKey, StoreError> {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| StoreError::Corrupt {
                record: "store key".into(),
                reason: "expected 32 bytes".into(),
            })?;
        Ok(StoreKey(Arc::new(LessSafeKey::new(unbound))))
    }

    /// Seals `plaintext` for the record and field named by `aad`.
    pub(crate) fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Sealed, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Io("system random generator failed".into()))?;
        let mut in_out = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.0.as_slice()),
                &mut in_out,
            )
            // Fails only for inputs beyond ChaCha20's 256 GiB limit.
            .map_err(|_| StoreError::Io("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(Sealed(
            base64::engine::general_purpose::STANDARD.encode(out),
        ))
    }

    /// Opens a sealed value. Errors say why in words fit for [`StoreError::Corrupt`]; they
    /// never contain plaintext.
    pub(crate) fn open(&self, aad: &Aad, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed.0.as_bytes())
            .map_err(|_| SealError::Encoding)?;
        let (&version, rest) = raw.split_first().ok_or(SealError::Truncated)?;
        if version != SEAL_VERSION {
            return Err(SealError::Version(version));
        }
        if rest.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Truncated);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Truncated)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, aead::Aad::from(aad.0.as_slice()), &mut in_out)
            .map_err(|_| SealError::DoesNotOpen)?;
        Ok(plain.to_vec())
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

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A sealed value as it appears in a record's JSON: base64 of version ‖ nonce ‖ ciphertext.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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
        assert_eq!(other.open(&aad, &s1), Err(SealError::DoesNotOpen));
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
}
