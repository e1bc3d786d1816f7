//! The [`Verifier`]: signature and claims checks for caller tokens, with the cache of
//! successes in front of them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};

use super::cache::{Cache, CACHE_MAX_BYTES};
use super::header::{self, Credentials};
use super::issuer::Issuers;
use super::revoked::RevokedSet;
use super::{valid_name, Caller, IdentityError, IdentityKey};
use super::{CACHE_CAPACITY, LEEWAY_SECS, MAX_HEADER_LEN, MAX_ROLES};
use crate::clock::Clock;

/// The claims tollgate reads. Unknown claims are ignored (platforms may add their own).
#[derive(Deserialize)]
struct TokenClaims {
    sub: String,
    org: String,
    #[serde(deserialize_with = "numeric_date")]
    exp: u64,
    #[serde(default, deserialize_with = "opt_numeric_date")]
    nbf: Option<u64>,
    #[serde(default, deserialize_with = "opt_numeric_date")]
    iat: Option<u64>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    jti: Option<String>,
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

/// are cached: forged or expired tokens always take the slow path.
pub struct Verifier {
    /// The HMAC keys that verify, by `kid`, prepared once per key ring change.
    keys: RwLock<Arc<KeySet>>,
    /// HS256 only; `exp` required (checked by us against `clock`, so cached and fresh
    /// verifications use the same rule).
    validation: Validation,
    /// Verified callers, keyed by the token's SHA-256 (every header form of a token is one
    /// entry), bounded in entries and bytes.
    cache: Cache,
    /// Source of the current time for `exp` / `nbf`.
    clock: Clock,
    /// Longest lifetime a token may have, in seconds (`--max-token-ttl`): a leaked token
    /// minted for years is refused rather than honoured for years.
    max_ttl: u64,
    /// Revoked tokens (`tollgate token revoke`), checked on every verification, cache hits
    /// included; filled by whoever follows the store.
    revoked: Arc<RevokedSet>,
    /// `[[identity.issuer]]`: workload tokens from OIDC issuers (`super::issuer`).
    pub(super) issuers: Arc<Issuers>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

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
            keys: RwLock::new(Arc::new(KeySet::single(&key))),
            validation,
            cache: Cache::new(CACHE_CAPACITY, CACHE_MAX_BYTES),
            clock,
            max_ttl: super::DEFAULT_MAX_TOKEN_TTL.as_secs(),
            revoked: Arc::default(),
            issuers: Arc::default(),
        }
    }

    /// Refuses tokens whose lifetime is longer than `ttl` (default
    /// [`DEFAULT_MAX_TOKEN_TTL`](super::DEFAULT_MAX_TOKEN_TTL)).
    pub fn with_max_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.max_ttl = ttl.as_secs();
        self
    }

    /// Verifies with `keys` from now on (a key ring change): a token names its key by `kid`,
    /// and one without `kid` is verified with `original` (the original key's id) when it is
    /// among them. When a key that verified is no longer among them, the cache is flushed, so
    /// what it signed is refused from the next request on.
    pub fn set_keys(&self, keys: &[IdentityKey], original: Option<String>) {
        let next = Arc::new(KeySet::new(keys, original));
        let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let dropped = current.drops(&next);
        *current = next;
        drop(current);
        if dropped {
            self.cache.clear();
        }
    }

    /// The set of revoked tokens this verifier refuses, for the store follower to fill.
    pub fn revoked(&self) -> &Arc<RevokedSet> {
        &self.revoked
    }

    /// Also accepts the workload tokens of `issuers`.
    pub fn with_issuers(mut self, issuers: Arc<Issuers>) -> Self {
        self.issuers = issuers;
        self
    }

    /// Number of cached verifications (for metrics and tests).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Approximate memory held by the cache, in bytes (for tests and metrics).
    pub fn cached_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Verifies a bare JWT.
    pub fn verify_token(&self, token: &str) -> Result<Arc<Caller>, IdentityError> {
        let now = self.clock.now().map_err(|_| IdentityError::Clock)?;
        if token.is_empty() {
            return Err(IdentityError::Missing);
        }
        if token.len() > MAX_HEADER_LEN {
            return Err(IdentityError::Malformed);
        }
        self.verify_cached(token, now)
    }

    /// Verifies a `Proxy-Authorization` (or `Authorization`) header value:
    /// `Bearer <jwt>` or `Basic base64(user:<jwt>)`. Scheme names are case-insensitive. With
    /// Basic, the user part must be empty or equal to the token's `sub` (checked on every
    /// call: the cache knows the token, not the header it came in).
    pub fn verify_header(&self, value: &[u8]) -> Result<Arc<Caller>, IdentityError> {
        let now = self.clock.now().map_err(|_| IdentityError::Clock)?;
        let Credentials { token, user } = header::parse(value)?;
        let caller = self.verify_cached(&token, now)?;
        if user.is_some_and(|user| user != caller.user) {
            return Err(IdentityError::UserMismatch);
        }
        Ok(caller)
    }

    /// The caller `token` verifies as: from the cache (with the expiry checked again), or
    /// fully verified and then cached.
    fn verify_cached(&self, token: &str, now: u64) -> Result<Arc<Caller>, IdentityError> {
        let caller = match self.cache.get(token.as_bytes()) {
            Some(caller) => check_exp(caller, now)?,
            None => {
                let caller = Arc::new(match self.issuers.verify(token, now) {
                    Some(verdict) => verdict?,
                    None => self.decode(token, now)?,
                });
                self.cache.insert(token.as_bytes(), caller.clone(), now);
                caller
            }
        };
        if self.revoked.covers(&caller, now) {
            return Err(IdentityError::Revoked);
        }
        Ok(caller)
    }

    /// Full verification: signature (HS256 only), claims, then times.
    fn decode(&self, token: &str, now: u64) -> Result<Caller, IdentityError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityError::Invalid)?;
        let key = keys
            .get(header.kid.as_deref())
            .ok_or(IdentityError::Invalid)?;
        let data = jsonwebtoken::decode::<TokenClaims>(token, key, &self.validation)
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
        // The lifetime from issue (or from now, for a token without `iat`, or one claiming
        // to be issued in the future) to expiry.
        let from = c.iat.map_or(now, |iat| iat.min(now));
        if c.exp.saturating_sub(from) > self.max_ttl.saturating_add(LEEWAY_SECS) {
            return Err(IdentityError::Invalid);
        }
        Ok(Caller {
            org: c.org,
            user: c.sub,
            roles,
            exp: c.exp,
            jti: c.jti,
            iat: c.iat,
        })
    }
}

impl Verifier {
    /// Whether `caller`, verified earlier, is still within its token's lifetime (this
    /// verifier's clock and leeway): for what outlives the request that presented the token,
    /// such as the inner requests of an intercepted tunnel. A token revoked since is refused
    /// too.
    pub fn check_expiry(&self, caller: &Caller) -> Result<(), IdentityError> {
        let now = self.clock.now().map_err(|_| IdentityError::Clock)?;
        if expired(caller.exp, now) {
            Err(IdentityError::Expired)
        } else if self.revoked.covers(caller, now) {
            Err(IdentityError::Revoked)
        } else {
            Ok(())
        }
    }
}

/// The keys a verifier accepts, by id (caller tokens here, agent credentials at the relay).
pub struct KeySet {
    /// `kid` → HMAC key.
    by_kid: HashMap<String, DecodingKey>,
    /// The id of the key that verifies tokens without `kid` (the original key file's), while
    /// it is not retired.
    original: Option<String>,
}

impl KeySet {
    /// One key, which also verifies tokens without `kid`.
    pub fn single(key: &IdentityKey) -> Self {
        KeySet::new(std::slice::from_ref(key), Some(key.kid()))
    }

    /// `keys`, with `original` (an id) verifying tokens without `kid`.
    pub fn new(keys: &[IdentityKey], original: Option<String>) -> Self {
        KeySet {
            by_kid: keys
                .iter()
                .map(|k| (k.kid(), DecodingKey::from_secret(&k.0)))
                .collect(),
            original,
        }
    }

    /// Whether some token `self` verifies would not verify with `next`.
    pub fn drops(&self, next: &KeySet) -> bool {
        self.by_kid.keys().any(|k| !next.by_kid.contains_key(k))
            || (self.original.is_some() && next.original != self.original)
    }

    /// The key for a token's `kid` (the original one when it has none).
    pub fn get(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        self.by_kid.get(kid.or(self.original.as_deref())?)
    }
}

/// True when `exp` (with [`LEEWAY_SECS`]) has passed at `now`.
pub(super) fn expired(exp: u64, now: u64) -> bool {
    exp.saturating_add(LEEWAY_SECS) < now
}

fn check_exp(caller: Arc<Caller>, now: u64) -> Result<Arc<Caller>, IdentityError> {
    if expired(caller.exp, now) {
        Err(IdentityError::Expired)
    } else {
        Ok(caller)
    }
}
