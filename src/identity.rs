//! Caller identity: the JWT (HS256) a workload presents in `Proxy-Authorization`, turned into a
//! [`Caller`] (org + user + roles).
//!
//! Tokens are minted offline with the identity key (`tollgate token mint`, or a platform holding
//! the same key) and verified by a [`Verifier`] on every request. Verification is the first
//! thing the proxy does for each request, so successes are cached keyed by the exact header
//! bytes: a warm hit is one hash, one shard read lock, one byte comparison and an `exp` check —
//! no base64, no JSON, no HMAC. The `exp` check on a hit is what keeps a cached token from
//! outliving its expiry.
//!
//! Nothing here ever logs a token or puts one in an error: [`IdentityError`] carries no data and
//! [`IdentityKey`]'s `Debug` is masked.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::{Clock, ClockError};

/// Clock skew tolerated on `exp` (and `nbf`), in seconds: platforms mint on other hosts.
pub const LEEWAY_SECS: u64 = 5;

/// Longest `sub` / `org` / role accepted, in characters. Names longer than this are not
/// identities anyone types, and they end up in every log line.
pub const MAX_CLAIM_CHARS: usize = 128;

/// Most roles a token may carry; a token is a credential, not a directory.
pub const MAX_ROLES: usize = 32;

/// Longest `Proxy-Authorization` value considered at all. A caller token is a few hundred bytes;
/// the limit keeps a hostile client from filling the cache with megabyte keys.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Verified callers kept in the cache (headers and bare tokens together). At a few hundred bytes
/// per entry this bounds the cache to tens of MiB.
pub const CACHE_CAPACITY: usize = 100_000;

/// Independent cache shards, so concurrent requests rarely touch the same lock. A power of two.
const CACHE_SHARDS: usize = 16;

/// Shortest identity key accepted from a key file: RFC 7518 §3.2 asks for a key at least as
/// long as the HS256 output (32 bytes). The generated key is 64 hex characters.
pub const MIN_KEY_LEN: usize = 32;

/// A verified caller: who is making the request, for which organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Organization (`org` claim).
    pub org: String,
    /// User (`sub` claim).
    pub user: String,
    /// Roles (`roles` claim); `admin` may manage its org's outbound applications.
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch (`exp` claim).
    pub exp: u64,
}

impl Caller {
    /// True when the caller holds the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

/// Why a caller could not be identified. None of these carry the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// No credentials were presented.
    #[error("credentials required")]
    Missing,
    /// The header is not `Bearer <jwt>` or `Basic base64(user:<jwt>)`.
    #[error("malformed credentials")]
    Malformed,
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, missing or invalid claims.
    #[error("invalid token")]
    Invalid,
    /// Basic user part differs from the token's `sub`.
    #[error("user does not match token")]
    UserMismatch,
    /// The host clock is unusable, so no expiry can be checked: refused, never assumed fresh.
    #[error("the proxy's clock is unusable")]
    Clock,
}

/// The HS256 signing key (`data/keys/identity.key`). `Debug` never prints it.
#[derive(Clone)]
pub struct IdentityKey(Arc<[u8]>);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(MASKED)")
    }
}

impl IdentityKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    /// The key bytes, for other HS256 signers of this key (agent credentials).
    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }
}

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
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random number generator failed; cannot create an identity key");
    let mut out = String::with_capacity(64);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The claims tollgate writes.
#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    org: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
}

/// The claims tollgate reads. Unknown claims are ignored (platforms may add their own).
#[derive(Deserialize)]
struct TokenClaims {
    sub: String,
    org: String,
    #[serde(deserialize_with = "numeric_date")]
    exp: u64,
    #[serde(default, deserialize_with = "opt_numeric_date")]
    nbf: Option<u64>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// JWT NumericDate: a JSON number, possibly with a fraction (RFC 7519 §2). Fractions are
/// truncated; negative or non-finite values are rejected.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
        // Truncation is the intent: NumericDate fractions are sub-second precision.
        Ok(v as u64)
    } else {
        Err(serde::de::Error::custom("NumericDate out of range"))
    }
}

fn opt_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "numeric_date")] u64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// Why claims would make a token the verifier refuses (the checks `verify` applies to `sub`,
/// `org` and `roles`), so `token mint` fails instead of printing one.
pub fn claims_problem(org: &str, user: &str, roles: &[String]) -> Option<String> {
    let rule = format!("1 to {MAX_CLAIM_CHARS} characters, no control characters");
    if !valid_name(org) {
        return Some(format!("--org must be {rule}"));
    }
    if !valid_name(user) {
        return Some(format!("--user must be {rule}"));
    }
    if roles.len() > MAX_ROLES || !roles.iter().all(|r| valid_name(r)) {
        return Some(format!("--role: at most {MAX_ROLES}, each {rule}"));
    }
    None
}

/// Mints a caller token (HS256) with `sub`, `org`, `iat`, `exp = now + ttl`, and `roles`
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
fn mint_at(
    key: &IdentityKey,
    org: &str,
    user: &str,
    roles: &[String],
    iat: u64,
    exp: u64,
) -> String {
    let claims = MintClaims {
        sub: user,
        org,
        iat,
        exp,
        roles,
    };
    // Cannot fail: the claims are strings and integers, which serde_json always serializes, and
    // HMAC-SHA256 accepts keys of any length (jsonwebtoken's only other error paths concern
    // RSA/EC key parsing, not used here).
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key.0),
    )
    .expect("HS256 encoding of string/integer claims cannot fail")
}

/// Verifies tokens and `Proxy-Authorization` values, caching successes so the hot path does
/// not re-verify the same token on every request.
///
/// The cache holds at most [`CACHE_CAPACITY`] entries, split over 16 shards. When a shard is
/// full, an insert first drops its expired entries; if that frees less than a quarter of the
/// shard, the shard is cleared. Each sweep therefore frees at least a quarter of a shard, which
/// keeps the amortized insert cost constant, and a clear costs at most a few thousand cold
/// verifications (about 2 µs each, see `benches/identity.rs`), not an outage. Only successes
/// are cached: forged or expired tokens always take the slow path.
pub struct Verifier {
    /// HMAC key, prepared once.
    key: DecodingKey,
    /// HS256 only; `exp` required (checked by us against `clock`, so cached and fresh
    /// verifications use the same rule).
    validation: Validation,
    /// Verified callers, keyed by header (or token) bytes.
    cache: Cache,
    /// Source of the current time for `exp` / `nbf`.
    clock: Clock,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

/// Cache namespaces: a bare token and a header value are different inputs even if their bytes
/// happened to be equal.
const TAG_HEADER: u8 = b'H';
const TAG_TOKEN: u8 = b'T';

impl Verifier {
    /// A verifier for tokens signed with `key`.
    pub fn new(key: IdentityKey) -> Self {
        Self::with_clock(key, Clock::system())
    }

    /// A verifier reading `clock` for `exp` / `nbf` (tests expire cached tokens with a
    /// [`crate::clock::ManualClock`] instead of sleeping).
    pub fn with_clock(key: IdentityKey, clock: Clock) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry and not-before are checked against `clock` in `decode`, with the same `expired`
        // rule a cache hit applies in `check_exp`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp"]);
        // validate_aud stays on with no audience configured: a token carrying `aud` was minted
        // for some other service and is refused.
        Self {
            key: DecodingKey::from_secret(&key.0),
            validation,
            cache: Cache::new(CACHE_CAPACITY),
            clock,
        }
    }

    /// Number of cached verifications (for metrics and tests).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Verifies a bare JWT.
    pub fn verify_token(&self, token: &str) -> Result<Arc<Caller>, IdentityError> {
        let now = self.clock.now().map_err(|_| IdentityError::Clock)?;
        if let Some(caller) = self.cache.get(TAG_TOKEN, token.as_bytes()) {
            return check_exp(caller, now);
        }
        if token.is_empty() {
            return Err(IdentityError::Missing);
        }
        if token.len() > MAX_HEADER_LEN {
            return Err(IdentityError::Malformed);
        }
        let caller = Arc::new(self.decode(token, now)?);
        self.cache
            .insert(TAG_TOKEN, token.as_bytes(), caller.clone(), now);
        Ok(caller)
    }

    /// Verifies a `Proxy-Authorization` (or `Authorization`) header value:
    /// `Bearer <jwt>` or `Basic base64(user:<jwt>)`. Scheme names are case-insensitive. With
    /// Basic, the user part must be empty or equal to the token's `sub`.
    pub fn verify_header(&self, value: &[u8]) -> Result<Arc<Caller>, IdentityError> {
        let now = self.clock.now().map_err(|_| IdentityError::Clock)?;
        if let Some(caller) = self.cache.get(TAG_HEADER, value) {
            return check_exp(caller, now);
        }
        let caller = Arc::new(self.verify_header_uncached(value, now)?);
        self.cache.insert(TAG_HEADER, value, caller.clone(), now);
        Ok(caller)
    }

    fn verify_header_uncached(&self, value: &[u8], now: u64) -> Result<Caller, IdentityError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(IdentityError::Malformed);
        }
        let value = value.trim_ascii();
        if value.is_empty() {
            return Err(IdentityError::Missing);
        }
        let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], value[i..].trim_ascii_start()),
            None => return Err(IdentityError::Malformed),
        };
        if rest.is_empty() {
            return Err(IdentityError::Malformed);
        }
        if scheme.eq_ignore_ascii_case(b"bearer") {
            let token = std::str::from_utf8(rest).map_err(|_| IdentityError::Malformed)?;
            self.decode(token, now)
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            let decoded = BASIC_B64
                .decode(rest)
                .map_err(|_| IdentityError::Malformed)?;
            let text = std::str::from_utf8(&decoded).map_err(|_| IdentityError::Malformed)?;
            // RFC 7617: the user-id cannot contain ':'; the password (our token) could.
            let (user, token) = text.split_once(':').ok_or(IdentityError::Malformed)?;
            if token.is_empty() {
                return Err(IdentityError::Malformed);
            }
            let caller = self.decode(token, now)?;
            if !user.is_empty() && user != caller.user {
                return Err(IdentityError::UserMismatch);
            }
            Ok(caller)
        } else {
            Err(IdentityError::Malformed)
        }
    }

    /// Full verification: signature (HS256 only), claims, then times.
    fn decode(&self, token: &str, now: u64) -> Result<Caller, IdentityError> {
        let data = jsonwebtoken::decode::<TokenClaims>(token, &self.key, &self.validation)
            .map_err(|_| IdentityError::Invalid)?;
        let c = data.claims;
        if !valid_name(&c.sub) || !valid_name(&c.org) {
            return Err(IdentityError::Invalid);
        }
        let roles = c.roles.unwrap_or_default();
        if roles.len() > MAX_ROLES || !roles.iter().all(|r| valid_name(r)) {
            return Err(IdentityError::Invalid);
        }
        if c.nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err(IdentityError::Invalid);
        }
        if expired(c.exp, now) {
            return Err(IdentityError::Expired);
        }
        Ok(Caller {
            org: c.org,
            user: c.sub,
            roles,
            exp: c.exp,
        })
    }
}

/// Basic credentials as clients send them; padding is tolerated either way because some
/// hand-rolled clients strip it.
const BASIC_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn expired(exp: u64, now: u64) -> bool {
    exp.saturating_add(LEEWAY_SECS) < now
}

fn check_exp(caller: Arc<Caller>, now: u64) -> Result<Arc<Caller>, IdentityError> {
    if expired(caller.exp, now) {
        Err(IdentityError::Expired)
    } else {
        Ok(caller)
    }
}

/// `sub`, `org` and roles: non-empty, at most [`MAX_CLAIM_CHARS`] characters, no control
/// characters (they end up in log lines and headers).
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control)
}

/// Sharded map from (tag, bytes) to a verified caller.
///
/// Each shard is keyed by a 64-bit keyed SipHash of the input (random per process, so clients
/// cannot aim for collisions) and stores the full input, compared on lookup: a hash collision
/// is a miss, never a wrong identity. Hashing once and keying the inner map by that hash means a
/// hit hashes the header bytes exactly once.
struct Cache {
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
    shard_capacity: usize,
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
    fn new(capacity: usize) -> Self {
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

    fn get(&self, tag: u8, bytes: &[u8]) -> Option<Arc<Caller>> {
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

    fn insert(&self, tag: u8, bytes: &[u8], caller: Arc<Caller>, now: u64) {
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

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn key() -> IdentityKey {
        IdentityKey::from_bytes(KEY)
    }

    fn verifier_at(now: u64) -> (Verifier, ManualClock) {
        let clock = ManualClock::new(now);
        (Verifier::with_clock(key(), clock.clock()), clock)
    }

    fn token(org: &str, user: &str, roles: &[&str], exp: u64) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        mint_at(&key(), org, user, &roles, NOW - 10, exp)
    }

    fn basic(user_and_token: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_and_token)
        )
        .into_bytes()
    }

    fn b64url(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn round_trip_with_system_clock() {
        let tok = mint(
            &key(),
            "acme",
            "alice",
            &["admin".to_string()],
            Duration::from_secs(3600),
        )
        .unwrap();
        let v = Verifier::new(key());
        let c = v.verify_token(&tok).unwrap();
        assert_eq!(c.org, "acme");
        assert_eq!(c.user, "alice");
        assert_eq!(c.roles, vec!["admin".to_string()]);
        assert!(c.is_admin());
        let now = Clock::system().now().unwrap();
        assert!(c.exp >= now + 3590 && c.exp <= now + 3600);
    }

    #[test]
    fn roles_are_optional() {
        let (v, _) = verifier_at(NOW);
        let c = v
            .verify_token(&token("acme", "bob", &[], NOW + 60))
            .unwrap();
        assert!(c.roles.is_empty());
        assert!(!c.is_admin());
    }

    #[test]
    fn bearer_any_case_and_spacing() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            for sep in [" ", "   "] {
                let h = format!("{scheme}{sep}{tok}");
                let c = v.verify_header(h.as_bytes()).unwrap();
                assert_eq!((c.org.as_str(), c.user.as_str()), ("acme", "alice"), "{h}");
            }
        }
    }

    #[test]
    fn basic_with_matching_user() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let c = v.verify_header(&basic(&format!("alice:{tok}"))).unwrap();
        assert_eq!(c.user, "alice");
        // Scheme is case-insensitive for Basic too.
        let h = String::from_utf8(basic(&format!("alice:{tok}"))).unwrap();
        let lower = h.replacen("Basic", "basic", 1);
        assert_eq!(v.verify_header(lower.as_bytes()).unwrap().user, "alice");
    }

    #[test]
    fn basic_unpadded_base64_is_accepted() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("alice:{tok}"))
        );
        assert_eq!(v.verify_header(h.as_bytes()).unwrap().user, "alice");
    }

    #[test]
    fn basic_user_mismatch() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        assert_eq!(
            v.verify_header(&basic(&format!("mallory:{tok}"))),
            Err(IdentityError::UserMismatch)
        );
        // Not cached as a success under that header either.
        assert_eq!(
            v.verify_header(&basic(&format!("mallory:{tok}"))),
            Err(IdentityError::UserMismatch)
        );
    }

    #[test]
    fn basic_empty_user_takes_sub() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let c = v.verify_header(&basic(&format!(":{tok}"))).unwrap();
        assert_eq!(c.user, "alice");
    }

    #[test]
    fn expired_token() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW - 60);
        assert_eq!(v.verify_token(&tok), Err(IdentityError::Expired));
        assert_eq!(
            v.verify_header(format!("Bearer {tok}").as_bytes()),
            Err(IdentityError::Expired)
        );
        assert_eq!(v.cached(), 0);
    }

    #[test]
    fn leeway_is_five_seconds() {
        let tok = token("acme", "alice", &[], NOW);
        let (v, _) = verifier_at(NOW + LEEWAY_SECS);
        assert!(v.verify_token(&tok).is_ok());
        let (v, _) = verifier_at(NOW + LEEWAY_SECS + 1);
        assert_eq!(v.verify_token(&tok), Err(IdentityError::Expired));
    }

    #[test]
    fn forged_signature_other_key() {
        let (v, _) = verifier_at(NOW);
        let other = IdentityKey::from_bytes(b"another key, 32 bytes or more........");
        let tok = mint_at(&other, "acme", "alice", &[], NOW, NOW + 60);
        assert_eq!(v.verify_token(&tok), Err(IdentityError::Invalid));
        assert_eq!(
            v.verify_header(format!("Bearer {tok}").as_bytes()),
            Err(IdentityError::Invalid)
        );
        // A tampered payload with the original signature.
        let good = token("acme", "alice", &[], NOW + 60);
        let parts: Vec<&str> = good.split('.').collect();
        let payload = b64url(&format!(
            r#"{{"sub":"alice","org":"other","iat":{NOW},"exp":{}}}"#,
            NOW + 60
        ));
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(v.verify_token(&tampered), Err(IdentityError::Invalid));
    }

    #[test]
    fn alg_none_and_other_algs_rejected() {
        let (v, _) = verifier_at(NOW);
        let payload = b64url(&format!(
            r#"{{"sub":"alice","org":"acme","iat":{NOW},"exp":{}}}"#,
            NOW + 60
        ));
        for alg in ["none", "None", "NONE"] {
            let header = b64url(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let tok = format!("{header}.{payload}.");
            assert_eq!(v.verify_token(&tok), Err(IdentityError::Invalid), "{alg}");
        }
        #[derive(Serialize)]
        struct C<'a> {
            sub: &'a str,
            org: &'a str,
            exp: u64,
        }
        let claims = C {
            sub: "alice",
            org: "acme",
            exp: NOW + 60,
        };
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let tok =
                jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(KEY))
                    .unwrap();
            assert_eq!(v.verify_token(&tok), Err(IdentityError::Invalid), "{alg:?}");
        }
    }

    #[test]
    fn invalid_claims() {
        let (v, _) = verifier_at(NOW);
        let sign = |claims: &str| {
            let header = b64url(r#"{"alg":"HS256","typ":"JWT"}"#);
            let msg = format!("{header}.{}", b64url(claims));
            let sig = jsonwebtoken::crypto::sign(
                msg.as_bytes(),
                &EncodingKey::from_secret(KEY),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{msg}.{sig}")
        };
        let exp = NOW + 60;
        let long = "x".repeat(MAX_CLAIM_CHARS + 1);
        let max = "é".repeat(MAX_CLAIM_CHARS);
        let nbf = NOW + 30;
        let valid: &[(&str, String)] = &[
            ("ok", format!(r#"{{"sub":"a","org":"b","exp":{exp}}}"#)),
            (
                "fractional exp",
                format!(r#"{{"sub":"a","org":"b","exp":{exp}.5}}"#),
            ),
            (
                "128 chars",
                format!(r#"{{"sub":"{max}","org":"{max}","exp":{exp}}}"#),
            ),
            (
                "extra claims",
                format!(r#"{{"sub":"a","org":"b","exp":{exp},"jti":"x"}}"#),
            ),
            (
                "null roles",
                format!(r#"{{"sub":"a","org":"b","exp":{exp},"roles":null}}"#),
            ),
        ];
        let invalid: &[(&str, String)] = &[
            ("missing exp", r#"{"sub":"a","org":"b"}"#.into()),
            (
                "string exp",
                format!(r#"{{"sub":"a","org":"b","exp":"{exp}"}}"#),
            ),
            ("negative exp", r#"{"sub":"a","org":"b","exp":-1}"#.into()),
            ("missing sub", format!(r#"{{"org":"b","exp":{exp}}}"#)),
            ("missing org", format!(r#"{{"sub":"a","exp":{exp}}}"#)),
            (
                "empty sub",
                format!(r#"{{"sub":"","org":"b","exp":{exp}}}"#),
            ),
            (
                "empty org",
                format!(r#"{{"sub":"a","org":"","exp":{exp}}}"#),
            ),
            (
                "long sub",
                format!(r#"{{"sub":"{long}","org":"b","exp":{exp}}}"#),
            ),
            (
                "long org",
                format!(r#"{{"sub":"a","org":"{long}","exp":{exp}}}"#),
            ),
            (
                "newline in sub",
                format!(r#"{{"sub":"a\nb","org":"b","exp":{exp}}}"#),
            ),
            (
                "NUL in org",
                format!(r#"{{"sub":"a","org":"b\u0000","exp":{exp}}}"#),
            ),
            (
                "DEL in sub",
                format!(r#"{{"sub":"a\u007f","org":"b","exp":{exp}}}"#),
            ),
            (
                "numeric sub",
                format!(r#"{{"sub":1,"org":"b","exp":{exp}}}"#),
            ),
            (
                "roles string",
                format!(r#"{{"sub":"a","org":"b","exp":{exp},"roles":"x"}}"#),
            ),
            (
                "empty role",
                format!(r#"{{"sub":"a","org":"b","exp":{exp},"roles":[""]}}"#),
            ),
            (
                "nbf ahead",
                format!(r#"{{"sub":"a","org":"b","exp":{exp},"nbf":{nbf}}}"#),
            ),
            (
                "foreign aud",
                format!(r#"{{"sub":"a","org":"b","exp":{exp},"aud":"x"}}"#),
            ),
            ("not json", "nope".into()),
        ];
        for (name, claims) in valid {
            assert!(v.verify_token(&sign(claims)).is_ok(), "{name}");
        }
        for (name, claims) in invalid {
            assert_eq!(
                v.verify_token(&sign(claims)),
                Err(IdentityError::Invalid),
                "{name}"
            );
        }
    }

    #[test]
    fn malformed_headers() {
        use IdentityError::{Invalid, Malformed, Missing};
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let basic_raw = |raw: &[u8]| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
            format!("Basic {encoded}").into_bytes()
        };
        let text = |s: &str| s.as_bytes().to_vec();
        let huge = format!("Bearer {}", "a".repeat(MAX_HEADER_LEN));
        let cases: &[(&str, Vec<u8>, IdentityError)] = &[
            ("empty", text(""), Missing),
            ("blank", text("   "), Missing),
            ("scheme only", text("Bearer"), Malformed),
            ("scheme and space", text("Bearer "), Malformed),
            ("bare token", text(&tok), Malformed),
            ("unknown scheme", text(&format!("Token {tok}")), Malformed),
            (
                "scheme glued to token",
                text(&format!("Bearer{tok}")),
                Malformed,
            ),
            ("digest", text("Digest username=\"a\""), Malformed),
            ("bearer garbage", text("Bearer not-a-jwt"), Invalid),
            ("bearer two parts", text("Bearer a.b"), Invalid),
            ("bearer non-utf8", b"Bearer \xff\xfe".to_vec(), Malformed),
            ("basic bad base64", text("Basic !!!notbase64"), Malformed),
            ("basic no colon", basic_raw(tok.as_bytes()), Malformed),
            ("basic empty token", basic_raw(b"alice:"), Malformed),
            ("basic non-utf8", basic_raw(b"\xff:\xfe"), Malformed),
            ("basic token garbage", basic_raw(b"alice:xyz"), Invalid),
            ("oversized", text(&huge), Malformed),
        ];
        for (name, header, want) in cases {
            assert_eq!(v.verify_header(header).as_ref(), Err(want), "{name}");
        }
        assert_eq!(v.cached(), 0);
    }

    #[test]
    fn surrounding_whitespace_tolerated() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let h = format!("  Bearer {tok} \t");
        assert_eq!(v.verify_header(h.as_bytes()).unwrap().user, "alice");
    }

    #[test]
    fn cache_hit_returns_same_arc() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let h = format!("Bearer {tok}");
        let a = v.verify_header(h.as_bytes()).unwrap();
        let b = v.verify_header(h.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = v.verify_token(&tok).unwrap();
        let d = v.verify_token(&tok).unwrap();
        assert!(Arc::ptr_eq(&c, &d));
        // Header and bare token are separate entries.
        assert_eq!(v.cached(), 2);
        // A header whose bytes equal the token is not a hit on the token's entry.
        assert_eq!(
            v.verify_header(tok.as_bytes()),
            Err(IdentityError::Malformed)
        );
    }

    #[test]
    fn cached_then_expired_is_refused() {
        let (v, clock) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 30);
        let h = format!("Bearer {tok}");
        assert!(v.verify_header(h.as_bytes()).is_ok());
        assert!(v.verify_token(&tok).is_ok());
        assert_eq!(v.cached(), 2);
        clock.set(NOW + 30 + LEEWAY_SECS + 1);
        assert_eq!(v.verify_header(h.as_bytes()), Err(IdentityError::Expired));
        assert_eq!(v.verify_token(&tok), Err(IdentityError::Expired));
    }

    #[test]
    fn concurrent_verification_shares_one_entry() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW + 60);
        let h = format!("Bearer {tok}");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        assert_eq!(v.verify_header(h.as_bytes()).unwrap().user, "alice");
                    }
                });
            }
        });
        assert_eq!(v.cached(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let cache = Cache::new(64);
        let cap = cache.shard_capacity;
        let caller = |exp| {
            Arc::new(Caller {
                org: "o".into(),
                user: "u".into(),
                roles: vec![],
                exp,
            })
        };
        for i in 0..10_000u32 {
            cache.insert(TAG_TOKEN, &i.to_be_bytes(), caller(NOW + 60), NOW);
            assert!(cache.len() <= cap * CACHE_SHARDS);
        }
        // The last insert is always present.
        assert!(cache.get(TAG_TOKEN, &9_999u32.to_be_bytes()).is_some());
        // Expired entries are swept before anything live is evicted.
        let cache = Cache::new(CACHE_SHARDS * 8);
        for i in 0..(CACHE_SHARDS * 8 * 4) as u32 {
            cache.insert(TAG_TOKEN, &i.to_be_bytes(), caller(NOW - 60), NOW);
        }
        let live = b"live";
        cache.insert(TAG_TOKEN, live, caller(NOW + 60), NOW);
        assert!(cache.get(TAG_TOKEN, live).is_some());
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let (v, _) = verifier_at(NOW);
        let tok = token("acme", "alice", &[], NOW - 60);
        let err = v.verify_token(&tok).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(&tok));
        let k = key();
        assert_eq!(format!("{k:?}"), "IdentityKey(MASKED)");
        assert!(!format!("{v:?}").contains("0123456789"));
    }

    #[test]
    fn key_file_convention() {
        let text = generate_key_text();
        assert_eq!(text.len(), 64);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(text, generate_key_text());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, format!("{text}\n")).unwrap();
        let loaded = load_key_file(&path).unwrap();
        assert_eq!(&*loaded.0, text.as_bytes());

        // A token signed with the trimmed text (what pyjwt does) verifies.
        let v = Verifier::new(loaded.clone());
        let tok = mint(
            &IdentityKey::from_bytes(text.as_bytes()),
            "acme",
            "alice",
            &[],
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(v.verify_token(&tok).is_ok());

        std::fs::write(&path, "short\n").unwrap();
        let err = load_key_file(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(load_key_file(dir.path().join("missing")).is_err());
    }
}
