//! JSON Web Key Sets, shared by the two places tollgate verifies someone else's JWTs: the
//! ID tokens of `--login oidc` (`web::login::oidc`) and workload identity tokens from
//! `[[identity.issuer]]` entries ([`super::issuer`]).
//!
//! [`pick`] chooses the signing key for a token's `kid` and `alg`; [`KeyCache`] holds the last
//! good key set and decides when it may be fetched again: when it was never fetched, when a
//! token names a `kid` it lacks and the last fetch is older than the refetch interval, and,
//! after a failed fetch, not before the failure backoff. Looking a key up is synchronous (a
//! read lock), so a verifier on the request path never waits for the network; fetching is
//! the caller's (async) business, through [`KeyCache::refresh`], one fetch at a time.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::Algorithm;

/// Most keys kept from one key set: issuers publish a handful (current and next); a set far
/// larger is not a key set anyone needs, and each key is tried by `kid` in a linear scan.
pub const MAX_KEYS: usize = 64;

/// What a key set has for a token.
#[derive(Debug)]
pub enum Lookup {
    /// The key to verify with.
    Found(Box<Jwk>),
    /// No usable key yet, and a fetch is allowed now: fetch, then look again.
    Fetch,
    /// The set was fetched recently and has no such key.
    NoKey,
    /// No set could be fetched, and the last failure is too recent to try again.
    Unavailable,
}

/// The last good key set and when fetches happened.
#[derive(Default)]
struct State {
    /// The last key set fetched and parsed successfully.
    set: Option<Arc<JwkSet>>,
    /// When the last successful fetch happened (spaces out refetches for unknown `kid`s).
    fetched: Option<Instant>,
    /// When the last failed fetch happened (spaces out retries of an unreachable issuer).
    failed: Option<Instant>,
}

/// A cached JWKS with the rules for fetching it again.
pub struct KeyCache {
    /// The keys and fetch times; read on every verification that misses the token cache.
    state: RwLock<State>,
    /// Held while fetching, so concurrent misses cause one fetch, not one each.
    fetching: tokio::sync::Mutex<()>,
    /// An unknown `kid` refetches at most this often.
    refetch: Duration,
    /// After a failed fetch, no new attempt before this long.
    failure_backoff: Duration,
}

impl KeyCache {
    /// An empty cache: the first lookup asks for a fetch.
    pub fn new(refetch: Duration, failure_backoff: Duration) -> KeyCache {
        KeyCache {
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
            refetch,
            failure_backoff,
        }
    }

    /// The key for `kid` and `alg`, or what to do about its absence.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        if let Some(jwk) = s.set.as_deref().and_then(|set| pick(set, kid, alg)) {
            return Lookup::Found(Box::new(jwk));
        }
        if self.may_fetch(&s) {
            Lookup::Fetch
        } else if s.set.is_some() {
            Lookup::NoKey
        } else {
            Lookup::Unavailable
        }
    }

    fn may_fetch(&self, s: &State) -> bool {
        let recent =
            |at: Option<Instant>, within: Duration| at.is_some_and(|t| t.elapsed() < within);
        !recent(s.fetched, self.refetch) && !recent(s.failed, self.failure_backoff)
    }

    /// Fetches the set with `fetch` (the body of the JWKS URL) unless another caller just did
    /// or the intervals forbid it; a failed fetch keeps the last good set.
    pub async fn refresh<F, Fut>(&self, fetch: F) -> Result<(), String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, String>>,
    {
        let _one = self.fetching.lock().await;
        if !self.may_fetch(&self.state.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let result = fetch().await.and_then(|body| parse(&body));
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                s.set = Some(Arc::new(set));
                s.fetched = Some(Instant::now());
                s.failed = None;
                Ok(())
            }
            Err(e) => {
                s.failed = Some(Instant::now());
                Err(e)
            }
        }
    }
}

/// A JWKS document, at most [`MAX_KEYS`] keys kept. Keys of a type `jsonwebtoken` does not
/// know make the whole document unparsable there, so each key is parsed on its own and the
/// unknown ones skipped.
pub fn parse(body: &[u8]) -> Result<JwkSet, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("the JWKS is not a key set: {e}"))?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .take(MAX_KEYS)
        .collect();
    Ok(JwkSet { keys })
}

/// The key of `set` for `kid` and `alg`: a signing key whose declared algorithm, if any, is
/// `alg`. Without a `kid`, only an unambiguous key is taken.
pub fn pick(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
    let fits = |k: &&Jwk| {
        !matches!(k.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature)
            && k.common
                .key_algorithm
                .is_none_or(|a| a.to_string() == format!("{alg:?}"))
    };
    match kid {
        Some(kid) => set
            .keys
            .iter()
            .filter(fits)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => {
            let mut candidates = set.keys.iter().filter(fits);
            let one = candidates.next()?;
            candidates.next().is_none().then(|| one.clone())
        }
    }
}

/// A claim by name, or by a dotted path into nested objects (`realm_access.roles`) when no
/// claim has the whole name.
pub fn claim<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn set(keys: Value) -> JwkSet {
        serde_json::from_value(serde_json::json!({ "keys": keys })).unwrap()
    }

    fn ec(kid: &str, alg: Option<&str>, usage: &str) -> Value {
        let mut k = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA",
            "kid": kid, "use": usage});
        if let Some(a) = alg {
            k["alg"] = a.into();
        }
        k
    }

    #[test]
    fn key_selection() {
        let s = set(serde_json::json!([
            ec("a", Some("ES256"), "sig"),
            ec("b", None, "sig"),
            ec("c", None, "enc"),
        ]));
        let kid = |k: Option<Jwk>| k.and_then(|k| k.common.key_id);
        assert_eq!(
            kid(pick(&s, Some("a"), Algorithm::ES256)).as_deref(),
            Some("a")
        );
        assert_eq!(kid(pick(&s, Some("a"), Algorithm::RS256)), None);
        assert_eq!(kid(pick(&s, Some("c"), Algorithm::ES256)), None);
        assert_eq!(kid(pick(&s, Some("z"), Algorithm::ES256)), None);
        // No kid: only when one key fits.
        assert_eq!(kid(pick(&s, None, Algorithm::ES256)), None);
        let one = set(serde_json::json!([ec("only", None, "sig")]));
        assert_eq!(
            kid(pick(&one, None, Algorithm::ES256)).as_deref(),
            Some("only")
        );
    }

    #[test]
    fn unknown_key_types_are_skipped() {
        let body = serde_json::json!({"keys": [{"kty": "weird"}, ec("a", None, "sig")]});
        let s = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(s.keys.len(), 1);
        assert!(parse(b"[]").is_err());
    }

    #[tokio::test]
    async fn refetch_is_spaced_out() {
        let cache = KeyCache::new(Duration::from_secs(30), Duration::from_secs(5));
        assert!(matches!(
            cache.lookup(Some("a"), Algorithm::ES256),
            Lookup::Fetch
        ));
        let body = serde_json::json!({"keys": [ec("a", None, "sig")]}).to_string();
        cache
            .refresh(|| async { Ok(body.clone().into_bytes()) })
            .await
            .unwrap();
        assert!(matches!(
            cache.lookup(Some("a"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        // An unknown kid right after a fetch: no second fetch.
        assert!(matches!(
            cache.lookup(Some("b"), Algorithm::ES256),
            Lookup::NoKey
        ));
        let mut called = false;
        cache
            .refresh(|| {
                called = true;
                async { Ok(Vec::new()) }
            })
            .await
            .unwrap();
        assert!(!called);
        // Once the interval has passed, an unknown kid fetches again.
        let quick = KeyCache::new(Duration::ZERO, Duration::ZERO);
        quick
            .refresh(|| async { Ok(body.clone().into_bytes()) })
            .await
            .unwrap();
        assert!(matches!(
            quick.lookup(Some("b"), Algorithm::ES256),
            Lookup::Fetch
        ));
        // A failure before any success: unavailable until the backoff passes.
        let down = KeyCache::new(Duration::from_secs(30), Duration::from_secs(5));
        assert!(down.refresh(|| async { Err("down".into()) }).await.is_err());
        assert!(matches!(
            down.lookup(None, Algorithm::ES256),
            Lookup::Unavailable
        ));
    }
}
