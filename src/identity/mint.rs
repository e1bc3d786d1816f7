//! Minting caller tokens and the identity key file: what `tollgate token mint` and first start
//! use, and what a platform holding the same key does on its own side.

use std::io;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{IdentityKey, MIN_KEY_LEN};
use crate::clock::{Clock, ClockError};

/// Reads the identity key file. The file holds ASCII text (64 hex characters written by
/// [`generate_key_text`] at first start); the HMAC key is that text with surrounding whitespace
/// trimmed — *not* the hex-decoded bytes — so other minters need no convention beyond
/// `jwt.encode(claims, open(path).read().strip(), "HS256")`.
///
/// Fails with `InvalidData` when the file is not UTF-8 or the trimmed key is shorter than
/// [`MIN_KEY_LEN`] bytes (the message never contains the key).
pub fn load_key_file(path: impl AsRef<Path>) -> io::Result<IdentityKey> {
    let text = std::fs::read_to_string(path.as_ref())?;
    let key = text.trim();
    if key.len() < MIN_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "identity key in {} is {} bytes; at least {MIN_KEY_LEN} are required",
                path.as_ref().display(),
                key.len()
            ),
        ));
    }
    Ok(IdentityKey::from_bytes(key.as_bytes()))
}

/// A fresh identity key in its file form: 32 random bytes from the OS (`ring`'s
/// `SystemRandom`), hex-encoded (64 characters, no newline).
///
/// # Panics
///
/// When the operating system's random number generator fails. This runs once, when `serve`
/// first creates its data directory; there is no safe way to continue without randomness.
pub fn generate_key_text() -> String {
    random_hex(32)
}

/// `n` random bytes from the OS (`ring`'s `SystemRandom`), hex-encoded: key files and token
/// ids (`jti`).
///
/// # Panics
///
/// When the operating system's random number generator fails: neither a key nor a token id
/// may be predictable, and there is no safe way to continue without randomness.
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random number generator failed");
    let mut out = String::with_capacity(2 * n);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Random bytes in a minted token's `jti`: 128 bits, so ids never collide.
const JTI_BYTES: usize = 16;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The claims tollgate writes.
#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    org: &'a str,
    iat: u64,
    exp: u64,
    /// The token's id, which `tollgate token revoke --jti` names.
    jti: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
}

/// A caller token for `user` in `org`, valid for `ttl`, with a random `jti` and `roles`
/// (omitted when empty). Fails only when the system clock is unusable.
pub fn mint(
    key: &IdentityKey,
    org: &str,
    user: &str,
    roles: &[String],
    ttl: Duration,
) -> Result<String, ClockError> {
    let now = Clock::system().now()?;
    Ok(mint_at(
        key,
        org,
        user,
        roles,
        now,
        now.saturating_add(ttl.as_secs()),
    ))
}

/// Mints with explicit `iat` and `exp` (tests need tokens relative to a chosen clock).
pub(super) fn mint_at(
    key: &IdentityKey,
    org: &str,
    user: &str,
    roles: &[String],
    iat: u64,
    exp: u64,
) -> String {
    let jti = random_hex(JTI_BYTES);
    let claims = MintClaims {
        sub: user,
        org,
        iat,
        exp,
        jti: &jti,
        roles,
    };
    // Cannot fail: the claims are strings and integers, which serde_json always serializes, and
    // HMAC-SHA256 accepts keys of any length (jsonwebtoken's only other error paths concern
    // RSA/EC key parsing, not used here).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.0))
        .expect("HS256 encoding of string/integer claims cannot fail")
}
