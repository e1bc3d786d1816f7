//! Agent credentials: the JWT an agent presents to the relay listener before anything else.
//!
//! A credential is signed with the same HS256 identity key as caller tokens (so enrollment is
//! offline, like `token mint`), but the two can never stand in for each other. Three marks
//! keep them apart, any one of which is enough:
//!
//! - the header `typ` is [`CREDENTIAL_TYP`], checked here;
//! - the `aud` claim is [`CREDENTIAL_AUD`]: the caller verifier refuses every token that
//!   carries an audience, and this verifier requires this one;
//! - the claims are `agent` (the ID) with no `sub` or `org`, which caller tokens require.
//!
//! Credentials expire (`agent enroll --ttl`, 90 days by default) and are revoked by ID:
//! `--revoked-agents` refuses every credential of an ID for as long as it is listed, and
//! `tollgate agent revoke` ([`Revocations`], kept in the store) refuses every credential of
//! an ID issued up to the revocation, so that enrolling the agent again brings it back. The
//! issue time is compared in nanoseconds (`iat_ns`), so an enrolment right after a
//! revocation is not caught by it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, ClockError};
use crate::identity::{IdentityKey, KeySet};
use crate::policy::{is_id, MAX_ID_LEN};

/// JWT header `typ` of agent credentials.
pub const CREDENTIAL_TYP: &str = "tollgate-agent+jwt";

/// `aud` claim of agent credentials: the relay listener.
pub const CREDENTIAL_AUD: &str = "tollgate-relay";

/// Why an agent ID is refused; the rule is the policy's (`route = "agent:ID"`).
pub fn agent_id_problem(id: &str) -> Option<String> {
    (!is_id(id)).then(|| {
        format!("invalid agent ID {id:?}: use 1 to {MAX_ID_LEN} lowercase letters, digits and '-'")
    })
}

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Nanoseconds per second, for credentials minted before `iat_ns` existed.
const NANOS: u64 = 1_000_000_000;

/// Why a credential was refused. Carries no part of the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a JWT, bad signature, wrong `typ`/`aud`, or missing claims.
    #[error("invalid agent credential")]
    Invalid,
    /// The credential's `exp` has passed.
    #[error("agent credential expired")]
    Expired,
    /// The agent ID is listed in `--revoked-agents`, or the credential was issued before
    /// `tollgate agent revoke` revoked the ID.
    #[error("agent {0:?} is revoked")]
    Revoked(String),
    /// The relay's clock is unusable, so `exp` cannot be checked: refused.
    #[error(transparent)]
    Clock(#[from] ClockError),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The agent ID.
    agent: String,
    aud: String,
    iat: u64,
    /// The issue time in nanoseconds, compared with revocations. Absent from credentials of
    /// older builds, which count as issued at the start of their `iat` second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ns: Option<u64>,
    /// Random, so two enrollments of one ID differ (and can be told apart in audits).
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Mints a credential for agent `id`, valid for `ttl` (forever when `None`).
///
/// Fails only when `id` is not a valid agent ID or the system random generator fails.
pub fn enroll(key: &IdentityKey, id: &str, ttl: Option<Duration>) -> Result<String, String> {
    if let Some(problem) = agent_id_problem(id) {
        return Err(problem);
    }
    let jti = crate::datadir::random_key_text()
        .map_err(|e| e.to_string())?
        .trim()
        .chars()
        .take(32)
        .collect();
    let iat_ns = Clock::system().now_nanos().map_err(|e| e.to_string())?;
    let iat = iat_ns / NANOS;
    let claims = Claims {
        agent: id.to_string(),
        aud: CREDENTIAL_AUD.to_string(),
        iat,
        iat_ns: Some(iat_ns),
        jti,
        exp: ttl.map(|t| iat.saturating_add(t.as_secs())),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(CREDENTIAL_TYP.to_string());
    header.kid = Some(key.kid());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key.secret()))
        .map_err(|e| e.to_string())
}

/// Which agent credentials are revoked: IDs listed in the configuration, and the ID → time
/// revocations of `tollgate agent revoke`, which the relay loads from the store and follows.
#[derive(Debug, Default)]
pub struct Revocations {
    /// `--revoked-agents`: every credential of these IDs, whenever issued.
    configured: Vec<String>,
    /// Agent ID → every credential issued at or before this time (ns) is refused.
    revoked_at: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    /// The configured list (`--revoked-agents`), with no revocation from the store yet.
    pub fn new(configured: Vec<String>) -> Self {
        Revocations {
            configured,
            revoked_at: RwLock::default(),
        }
    }

    /// Refuses the credentials of `agent` issued at or before `at_ns` (a later time than one
    /// already known wins; an earlier one changes nothing).
    pub fn revoke(&self, agent: &str, at_ns: u64) {
        // A poisoned lock only means a panic elsewhere; the map itself is intact.
        let mut map = self.revoked_at.write().unwrap_or_else(|p| p.into_inner());
        let t = map.entry(agent.to_string()).or_insert(at_ns);
        *t = (*t).max(at_ns);
    }

    /// Whether a credential of `agent` issued at `issued_at_ns` is refused.
    pub fn refuses(&self, agent: &str, issued_at_ns: u64) -> bool {
        if self.configured.iter().any(|a| a == agent) {
            return true;
        }
        let map = self.revoked_at.read().unwrap_or_else(|p| p.into_inner());
        map.get(agent).is_some_and(|at| issued_at_ns <= *at)
    }
}

/// A credential that passed [`CredentialVerifier::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The agent ID it was issued to.
    pub agent: String,
    /// When it was issued, in nanoseconds since the Unix epoch: a revocation closes the
    /// connections made with credentials issued up to its own time.
    pub issued_at_ns: u64,
    /// Its random id: a renewal names the credential it replaces by it.
    pub jti: String,
    /// When it expires, Unix seconds (`None`: never). The relay renews a session's
    /// credential at two thirds of its lifetime and cuts the session at its expiry.
    pub expires_at: Option<u64>,
}

impl Verified {
    /// Its lifetime (`exp - iat`), which a renewal keeps; `None` when it never expires.
    pub fn lifetime(&self) -> Option<Duration> {
        let iat = self.issued_at_ns / NANOS;
        self.expires_at
            .map(|exp| Duration::from_secs(exp.saturating_sub(iat)))
    }
}

/// What an agent can read of its own credential without the key: enough to tell which one
/// it holds, and when it ends. Never a proof of anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// The agent ID it claims.
    pub agent: String,
    /// Its random id.
    pub jti: String,
    /// Issue time, Unix seconds.
    pub issued_at: u64,
    /// Expiry, Unix seconds (`None`: never).
    pub expires_at: Option<u64>,
}

/// Reads the claims of an agent credential *without verifying it* (the agent holds no key):
/// `None` when it is not shaped like one.
pub fn peek(credential: &str) -> Option<Peek> {
    use base64::Engine as _;
    let mut parts = credential.trim().split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 8 * 1024 {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let c: Claims = serde_json::from_slice(&json).ok()?;
    (c.aud == CREDENTIAL_AUD).then_some(Peek {
        agent: c.agent,
        jti: c.jti,
        issued_at: c.iat,
        expires_at: c.exp,
    })
}

/// Verifies agent credentials against the identity key and the revocations.
pub struct CredentialVerifier {
    /// The identity keys that verify, by `kid` (a credential without one: the original
    /// key's), swapped when the key ring changes.
    keys: RwLock<Arc<KeySet>>,
    validation: Validation,
    /// Shared with whoever records revocations at run time (`relay::revocation`).
    revocations: Arc<Revocations>,
}

impl std::fmt::Debug for CredentialVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVerifier")
            .field("revocations", &self.revocations)
            .finish_non_exhaustive()
    }
}

impl CredentialVerifier {
    /// A verifier for credentials signed with `key`; IDs in `revoked` are refused.
    pub fn new(key: &IdentityKey, revoked: Vec<String>) -> Self {
        Self::with_revocations(key, Arc::new(Revocations::new(revoked)))
    }

    /// A verifier for credentials signed with `key`, refusing what `revocations` refuses
    /// (which may change while it is in use).
    pub fn with_revocations(key: &IdentityKey, revocations: Arc<Revocations>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[CREDENTIAL_AUD]);
        validation.set_required_spec_claims(&["aud"]);
        // `exp` is optional; when present it is checked below with our leeway.
        validation.validate_exp = false;
        CredentialVerifier {
            keys: RwLock::new(Arc::new(KeySet::single(key))),
            validation,
            revocations,
        }
    }

    /// Verifies with `keys` from now on (a key ring change; see [`Verifier::set_keys`]).
    ///
    /// [`Verifier::set_keys`]: crate::identity::Verifier::set_keys
    pub fn set_keys(&self, keys: &[IdentityKey], original: Option<String>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(KeySet::new(keys, original));
    }

    /// The revocations this verifier applies.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The agent ID the credential was issued to.
    pub fn verify(&self, credential: &str) -> Result<String, CredentialError> {
        self.check(credential).map(|v| v.agent)
    }

    /// The agent ID the credential was issued to, and when.
    pub fn check(&self, credential: &str) -> Result<Verified, CredentialError> {
        let credential = credential.trim();
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let header =
            jsonwebtoken::decode_header(credential).map_err(|_| CredentialError::Invalid)?;
        let key = keys
            .get(header.kid.as_deref())
            .ok_or(CredentialError::Invalid)?;
        let data = jsonwebtoken::decode::<Claims>(credential, key, &self.validation)
            .map_err(|_| CredentialError::Invalid)?;
        if data.header.typ.as_deref() != Some(CREDENTIAL_TYP) {
            return Err(CredentialError::Invalid);
        }
        let c = data.claims;
        if !is_id(&c.agent) {
            return Err(CredentialError::Invalid);
        }
        let now = Clock::system().now()?;
        if c.exp
            .is_some_and(|exp| exp.saturating_add(LEEWAY_SECS) < now)
        {
            return Err(CredentialError::Expired);
        }
        let issued_at_ns = c.iat_ns.unwrap_or(c.iat.saturating_mul(NANOS));
        if self.revocations.refuses(&c.agent, issued_at_ns) {
            return Err(CredentialError::Revoked(c.agent));
        }
        Ok(Verified {
            agent: c.agent,
            issued_at_ns,
            jti: c.jti,
            expires_at: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{mint, IdentityError, Verifier};

    fn key() -> IdentityKey {
        IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef-test-key")
    }

    #[test]
    fn enrolled_credential_verifies_to_its_id() {
        let c = enroll(&key(), "onprem-1", None).unwrap();
        let v = CredentialVerifier::new(&key(), vec![]);
        assert_eq!(v.verify(&c).unwrap(), "onprem-1");
        // With a lifetime: exp, jti and the lifetime are known to the relay, and the agent
        // can read them without the key.
        let c = enroll(&key(), "onprem-1", Some(Duration::from_secs(20))).unwrap();
        let checked = v.check(&c).unwrap();
        assert_eq!(checked.lifetime(), Some(Duration::from_secs(20)));
        let p = peek(&c).unwrap();
        assert_eq!(p.agent, "onprem-1");
        assert_eq!((p.jti, p.expires_at), (checked.jti, checked.expires_at));
        assert_eq!(p.expires_at, Some(p.issued_at + 20));
        assert_eq!(peek("a.b.c"), None);
        let caller = mint(&key(), "acme", "alice", &[], Duration::from_secs(60)).unwrap();
        assert_eq!(
            peek(&caller),
            None,
            "a caller token is not an agent credential"
        );
        // Two enrollments differ.
        assert_ne!(c, enroll(&key(), "onprem-1", None).unwrap());
    }

    #[test]
    fn credentials_name_their_key_and_verify_until_it_is_retired() {
        let old = key();
        let new = IdentityKey::from_bytes(b"another-key-another-key-another-key-0123");
        let v = CredentialVerifier::new(&old, vec![]);
        let by_old = enroll(&old, "onprem-1", None).unwrap();
        let by_new = enroll(&new, "onprem-1", None).unwrap();
        let kid = jsonwebtoken::decode_header(&by_new).unwrap().kid;
        assert_eq!(kid, Some(new.kid()));
        assert_eq!(
            v.verify(&by_new),
            Err(CredentialError::Invalid),
            "unknown key"
        );
        // Rotated: both verify.
        v.set_keys(&[old.clone(), new.clone()], Some(old.kid()));
        assert!(v.verify(&by_old).is_ok() && v.verify(&by_new).is_ok());
        // The old key retired: what it signed is refused.
        v.set_keys(std::slice::from_ref(&new), None);
        assert_eq!(v.verify(&by_old), Err(CredentialError::Invalid));
        assert!(v.verify(&by_new).is_ok());
    }

    #[test]
    fn caller_token_is_not_an_agent_credential_and_vice_versa() {
        let caller = mint(&key(), "acme", "alice", &[], Duration::from_secs(60)).unwrap();
        let v = CredentialVerifier::new(&key(), vec![]);
        assert_eq!(v.verify(&caller), Err(CredentialError::Invalid));

        let agent = enroll(&key(), "onprem-1", Some(Duration::from_secs(60))).unwrap();
        let callers = Verifier::new(key());
        assert_eq!(callers.verify_token(&agent), Err(IdentityError::Invalid));
        assert_eq!(
            callers.verify_header(format!("Bearer {agent}").as_bytes()),
            Err(IdentityError::Invalid)
        );
    }

    #[test]
    fn refusals() {
        let v = CredentialVerifier::new(&key(), vec!["gone".into()]);
        let cases: Vec<(&str, String, CredentialError)> = vec![
            (
                "revoked",
                enroll(&key(), "gone", None).unwrap(),
                CredentialError::Revoked("gone".into()),
            ),
            (
                "other key",
                enroll(
                    &IdentityKey::from_bytes(b"another-key-another-key-another-key"),
                    "a",
                    None,
                )
                .unwrap(),
                CredentialError::Invalid,
            ),
            ("garbage", "not.a.jwt".into(), CredentialError::Invalid),
            ("empty", String::new(), CredentialError::Invalid),
        ];
        for (name, cred, want) in cases {
            assert_eq!(v.verify(&cred), Err(want), "{name}");
        }
        // Minted by hand: a chosen `typ` and `exp`.
        let hand_minted = |typ: &str, exp: Option<u64>| {
            let mut header = Header::new(Algorithm::HS256);
            header.typ = Some(typ.into());
            let claims = Claims {
                agent: "a".into(),
                aud: CREDENTIAL_AUD.into(),
                iat: 1,
                iat_ns: None,
                jti: "x".into(),
                exp,
            };
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key().secret()))
                .unwrap()
        };
        // Expired: exp in the past.
        let expired = hand_minted(CREDENTIAL_TYP, Some(2));
        assert_eq!(v.verify(&expired), Err(CredentialError::Expired));
        let wrong_typ = hand_minted("JWT", None);
        assert_eq!(v.verify(&wrong_typ), Err(CredentialError::Invalid));
    }

    /// A revocation refuses what was issued up to it, to the nanosecond: a credential
    /// enrolled right after it is accepted.
    #[test]
    fn a_revocation_refuses_credentials_issued_up_to_it() {
        let v = CredentialVerifier::new(&key(), vec![]);
        let old = enroll(&key(), "onprem-1", None).unwrap();
        let issued = v.check(&old).unwrap().issued_at_ns;
        v.revocations().revoke("onprem-1", issued);
        assert_eq!(
            v.check(&old),
            Err(CredentialError::Revoked("onprem-1".into()))
        );
        let fresh = enroll(&key(), "onprem-1", None).unwrap();
        let checked = v.check(&fresh).unwrap();
        assert!(checked.issued_at_ns > issued);
        // Another agent is untouched; an earlier revocation does not undo a later one.
        assert!(v.check(&enroll(&key(), "other", None).unwrap()).is_ok());
        v.revocations().revoke("onprem-1", 1);
        assert!(v.check(&old).is_err());
    }

    #[test]
    fn ids_are_checked_at_enrollment() {
        for bad in ["", "Upper", "a b", "a_b", &"x".repeat(64)] {
            assert!(enroll(&key(), bad, None).is_err(), "{bad:?}");
        }
    }
}
