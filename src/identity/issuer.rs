//! Workload identities from OIDC issuers (`[[identity.issuer]]`): RS256, ES256 and EdDSA JWTs
//! that CI platforms (GitHub Actions, GitLab CI) hand their jobs, accepted as callers besides
//! tollgate's own HS256 tokens.
//!
//! A token is routed to its issuer by an unverified peek at its `iss` claim; the issuer's
//! entry then verifies it for real: an accepted algorithm, the key named by `kid` from the
//! issuer's cached JWKS, the signature, `iss`, `aud`, `exp` and `nbf` (with
//! [`LEEWAY_SECS`]), and every `require` condition. The caller is `user_prefix` + the user
//! claim, in the fixed org or the org claim's, with the entry's fixed roles: roles are never
//! read from such a token.
//!
//! Verification stays synchronous: when the issuer's keys are not cached (or the `kid` is
//! unknown and a refetch is allowed, at most once per [`REFETCH`]),
//! [`IdentityError::KeysNeeded`] tells the caller to await [`Verifier::fetch_issuer_keys`]
//! and verify again. The JWKS is fetched by a [`JwksFetch`] the server installs: tollgate's
//! own egress path under the entry's `egress_policy`, with the address guard.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::header::{self, Credentials};
use super::jwks::{claim as lookup, KeyCache, Lookup};
use super::verify::expired;
use super::{valid_name, Caller, IdentityError, Verifier, LEEWAY_SECS, MAX_CLAIM_CHARS};
use crate::config::identity::{IssuerConfig, OrgSource};

/// An unknown `kid` refetches the issuer's JWKS at most this often.
pub const REFETCH: Duration = Duration::from_secs(30);

/// After a failed JWKS fetch, tokens of that issuer are refused (`keys unavailable`) for
/// this long before the next attempt, so an unreachable issuer is not asked once per request.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// The algorithms accepted from issuers: never `none`, never an HMAC.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A future returned by [`JwksFetch::get`].
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Fetches a JWKS URL under a policy: the server's egress path (decided under `policy` for
/// `org`, dialed behind the address guard). Kept abstract so `identity` does not depend on
/// `oauth`.
pub trait JwksFetch: Send + Sync {
    /// The body of a `200` answer to `GET url`.
    fn get<'a>(&'a self, policy: &'a str, org: &'a str, url: &'a str) -> FetchFuture<'a>;
}

/// The configured issuers.
#[derive(Default)]
pub struct Issuers {
    /// One verifier per `[[identity.issuer]]`, looked up by `iss`.
    list: Vec<Issuer>,
    /// Set once the egress path exists (after the verifier is built).
    fetcher: OnceLock<Arc<dyn JwksFetch>>,
}

/// One issuer entry with its keys.
struct Issuer {
    /// What the config said.
    cfg: IssuerConfig,
    /// The issuer's JWKS.
    keys: KeyCache,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|i| &i.cfg.issuer))
            .finish()
    }
}

impl Issuers {
    /// The issuers of `[[identity.issuer]]`.
    pub fn new(cfgs: Vec<IssuerConfig>) -> Issuers {
        Issuers {
            list: cfgs
                .into_iter()
                .map(|cfg| Issuer {
                    cfg,
                    keys: KeyCache::new(REFETCH, FAILURE_BACKOFF),
                })
                .collect(),
            fetcher: OnceLock::new(),
        }
    }

    /// Installs how JWKS are fetched (once; later calls are ignored).
    pub fn set_fetcher(&self, fetcher: Arc<dyn JwksFetch>) {
        let _ = self.fetcher.set(fetcher);
    }

    /// The JWKS policies named by the entries, for a startup check.
    pub fn egress_policies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list
            .iter()
            .map(|i| (i.cfg.issuer.as_str(), i.cfg.egress_policy.as_str()))
    }

    /// `None` when `token` is not for an issuer (tollgate's own HS256 tokens); else the
    /// issuer's verdict.
    pub(super) fn verify(&self, token: &str, now: u64) -> Option<Result<Caller, IdentityError>> {
        if self.list.is_empty() {
            return None;
        }
        let iss = peek_iss(token)?;
        match self.find(&iss) {
            Some(issuer) => Some(issuer.verify(token, now)),
            // A token naming an issuer that is not tollgate's own HS256 token.
            None => match jsonwebtoken::decode_header(token) {
                Ok(h) if h.alg != Algorithm::HS256 => Some(Err(IdentityError::Refused(
                    "the token's issuer is not configured",
                ))),
                _ => None,
            },
        }
    }

    fn find(&self, iss: &str) -> Option<&Issuer> {
        self.list.iter().find(|i| i.cfg.issuer == iss)
    }

    /// Fetches the JWKS of `token`'s issuer, if the cache allows a fetch now. Failures are
    /// logged (never with the token) and show as `keys unavailable` on the retry.
    pub(super) async fn fetch_keys(&self, token: &str) {
        let Some(issuer) = peek_iss(token).and_then(|iss| self.find(&iss)) else {
            return;
        };
        let Some(fetcher) = self.fetcher.get() else {
            return;
        };
        let cfg = &issuer.cfg;
        let org = match &cfg.org {
            OrgSource::Fixed(o) => o.as_str(),
            OrgSource::Claim(_) => "",
        };
        let result = issuer
            .keys
            .refresh(|| fetcher.get(&cfg.egress_policy, org, &cfg.jwks_url))
            .await;
        match result {
            Ok(()) => tracing::debug!(issuer = %cfg.issuer, "issuer JWKS fetched"),
            Err(e) => tracing::warn!(issuer = %cfg.issuer, url = %cfg.jwks_url, error = %e,
                "could not fetch the issuer's JWKS"),
        }
    }
}

impl Issuer {
    fn verify(&self, token: &str, now: u64) -> Result<Caller, IdentityError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityError::Invalid)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(IdentityError::Refused("algorithm not accepted"));
        }
        let jwk = match self.keys.lookup(header.kid.as_deref(), header.alg) {
            Lookup::Found(jwk) => jwk,
            Lookup::Fetch => return Err(IdentityError::KeysNeeded),
            Lookup::NoKey => return Err(IdentityError::Refused("unknown signing key")),
            Lookup::Unavailable => {
                return Err(IdentityError::Refused("the issuer's keys are unavailable"))
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| IdentityError::Invalid)?;
        let cfg = &self.cfg;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&cfg.issuer]);
        v.set_audience(&[&cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // Times are checked below against the verifier's clock, as for HS256 tokens.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidAudience => IdentityError::Refused("wrong audience"),
                ErrorKind::InvalidIssuer => IdentityError::Refused("wrong issuer"),
                _ => IdentityError::Invalid,
            })?
            .claims;
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(IdentityError::Invalid)?;
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(IdentityError::Invalid)?;
            if nbf > now.saturating_add(LEEWAY_SECS) {
                return Err(IdentityError::Refused("not valid yet (nbf)"));
            }
        }
        if expired(exp, now) {
            return Err(IdentityError::Expired);
        }
        for (claim, accepted) in &cfg.require {
            let value = lookup(&claims, claim).and_then(as_text);
            if !value.is_some_and(|v| accepted.contains(&v)) {
                return Err(IdentityError::Refused("a required claim does not match"));
            }
        }
        let name = |claim: &str| {
            lookup(&claims, claim)
                .and_then(as_text)
                .filter(|s| valid_name(s))
                .ok_or(IdentityError::Refused("a user or org claim is missing"))
        };
        let user = format!("{}{}", cfg.user_prefix, name(&cfg.user_claim)?);
        if user.chars().count() > MAX_CLAIM_CHARS {
            return Err(IdentityError::Refused("the user claim is too long"));
        }
        let org = match &cfg.org {
            OrgSource::Fixed(o) => o.clone(),
            OrgSource::Claim(c) => name(c)?,
        };
        Ok(Caller {
            org,
            user,
            roles: cfg.roles.clone(),
            exp,
            // Revocation by `jti`, or of a user's tokens issued before a time, covers workload
            // tokens as well.
            jti: claims
                .get("jti")
                .and_then(Value::as_str)
                .filter(|j| valid_name(j))
                .map(str::to_owned),
            iat: claims.get("iat").and_then(numeric_date),
        })
    }
}

impl Verifier {
    /// For a header whose verification said [`IdentityError::KeysNeeded`]: fetches the
    /// issuer's JWKS (through the egress path), after which the caller verifies again.
    pub async fn fetch_issuer_keys(&self, value: &[u8]) {
        if let Ok(Credentials { token, .. }) = header::parse(value) {
            self.issuers.fetch_keys(&token).await;
        }
    }

    /// [`Verifier::verify_header`], awaiting the issuer's JWKS once when a workload token
    /// needs keys that are not cached (then never [`IdentityError::KeysNeeded`]). For the
    /// async callers: the proxy's identify phase and the admin API.
    pub async fn verify_header_fetching(&self, value: &[u8]) -> Result<Arc<Caller>, IdentityError> {
        match self.verify_header(value) {
            Err(IdentityError::KeysNeeded) => {
                self.fetch_issuer_keys(value).await;
                self.verify_header(value).map_err(|e| match e {
                    IdentityError::KeysNeeded => {
                        IdentityError::Refused("the issuer's keys are unavailable")
                    }
                    e => e,
                })
            }
            verdict => verdict,
        }
    }
}

/// The `iss` claim of an unverified token: only to pick the verifier.
fn peek_iss(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// A string, number or boolean claim as text (GitHub's ids are strings, GitLab's numbers).
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// JWT NumericDate (fractions truncated; negative or huge refused).
fn numeric_date(v: &Value) -> Option<u64> {
    let f = v.as_f64()?;
    // Truncation is the intent: NumericDate fractions are sub-second precision.
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::identity::IdentityKey;

    const NOW: u64 = 1_800_000_000;

    /// Serves one JWKS body, counting the calls.
    struct Fixed(String, std::sync::atomic::AtomicUsize);

    impl JwksFetch for Fixed {
        fn get<'a>(&'a self, policy: &'a str, org: &'a str, _: &'a str) -> FetchFuture<'a> {
            assert_eq!((policy, org), ("gitlab-oidc", "acme"));
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(self.0.clone().into_bytes()) })
        }
    }

    fn setup() -> (Verifier, ManualClock, Vec<u8>, Arc<Fixed>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]});
        let cfg = IssuerConfig {
            issuer: "https://gitlab.example".into(),
            jwks_url: "https://gitlab.example/oauth/discovery/keys".into(),
            egress_policy: "gitlab-oidc".into(),
            audience: "tollgate".into(),
            org: OrgSource::Fixed("acme".into()),
            user_claim: "user_login".into(),
            user_prefix: "gl:".into(),
            roles: vec!["ci".into()],
            require: vec![("namespace.id".into(), vec!["42".into()])],
        };
        let issuers = Arc::new(Issuers::new(vec![cfg]));
        let fetch = Arc::new(Fixed(jwks.to_string(), Default::default()));
        issuers.set_fetcher(fetch.clone());
        let clock = ManualClock::new(NOW);
        let verifier = Verifier::with_clock(IdentityKey::from_bytes(&[7; 32]), clock.clock())
            .with_issuers(issuers);
        (verifier, clock, pkcs8.as_ref().to_vec(), fetch)
    }

    fn sign(pkcs8: &[u8], claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "https://gitlab.example", "aud": ["other", "tollgate"], "exp": NOW + 60,
            "nbf": NOW + 3, "user_login": "alice", "namespace": {"id": 42}, "roles": ["admin"]})
    }

    #[tokio::test]
    async fn keys_are_fetched_once_then_tokens_verify_synchronously() {
        let (verifier, clock, pkcs8, fetch) = setup();
        let token = sign(&pkcs8, claims());
        let header = format!("Bearer {token}");
        assert_eq!(
            verifier.verify_header(header.as_bytes()),
            Err(IdentityError::KeysNeeded)
        );
        verifier.fetch_issuer_keys(header.as_bytes()).await;
        // nbf 3 s ahead is within the leeway; a numeric claim matches its text; roles are the
        // entry's, not the token's.
        let caller = verifier.verify_header(header.as_bytes()).unwrap();
        assert_eq!(
            (
                caller.org.as_str(),
                caller.user.as_str(),
                caller.roles.clone()
            ),
            ("acme", "gl:alice", vec!["ci".to_string()])
        );
        assert_eq!(verifier.cached(), 1);
        // Past exp + leeway, the cached caller expires.
        clock.set(NOW + 60 + LEEWAY_SECS + 1);
        assert_eq!(
            verifier.verify_header(header.as_bytes()),
            Err(IdentityError::Expired)
        );
        clock.set(NOW);
        let mut other = claims();
        other["namespace"]["id"] = json!(43);
        assert_eq!(
            verifier.verify_token(&sign(&pkcs8, other)),
            Err(IdentityError::Refused("a required claim does not match"))
        );
        let mut early = claims();
        early["nbf"] = json!(NOW + LEEWAY_SECS + 1);
        assert!(matches!(
            verifier.verify_token(&sign(&pkcs8, early)),
            Err(IdentityError::Refused(_))
        ));
        assert_eq!(fetch.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        // tollgate's own HS256 tokens (no `iss`) still verify beside them.
        let own = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &json!({"sub": "bob", "org": "acme", "exp": NOW + 60}),
            &jsonwebtoken::EncodingKey::from_secret(&[7; 32]),
        )
        .unwrap();
        assert_eq!(verifier.verify_token(&own).unwrap().user, "bob");
    }
}
