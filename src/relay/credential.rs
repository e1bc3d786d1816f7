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
//! Credentials carry no expiry unless enrolled with a TTL: agents are long-lived services and
//! are revoked by ID (`--revoked-agents`), not by waiting.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, ClockError};
use crate::identity::IdentityKey;
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

/// Why a credential was refused. Carries no part of the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a JWT, bad signature, wrong `typ`/`aud`, or missing claims.
    #[error("invalid agent credential")]
    Invalid,
    /// The credential's `exp` has passed.
    #[error("agent credential expired")]
    Expired,
    /// The agent ID is listed in `--revoked-agents`.
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
    let iat = Clock::system().now().map_err(|e| e.to_string())?;
    let claims = Claims {
        agent: id.to_string(),
        aud: CREDENTIAL_AUD.to_string(),
        iat,
        jti,
        exp: ttl.map(|t| iat.saturating_add(t.as_secs())),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(CREDENTIAL_TYP.to_string());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key.secret()))
        .map_err(|e| e.to_string())
}

/// Verifies agent credentials against the identity key and the revocation list.
pub struct CredentialVerifier {
    key: DecodingKey,
    validation: Validation,
    revoked: Vec<String>,
}

impl std::fmt::Debug for CredentialVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVerifier")
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl CredentialVerifier {
    /// A verifier for credentials signed with `key`; IDs in `revoked` are refused.
    pub fn new(key: &IdentityKey, revoked: Vec<String>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[CREDENTIAL_AUD]);
        validation.set_required_spec_claims(&["aud"]);
        // `exp` is optional; when present it is checked below with our leeway.
        validation.validate_exp = false;
        CredentialVerifier {
            key: DecodingKey::from_secret(key.secret()),
            validation,
            revoked,
        }
    }

    /// The agent ID the credential was issued to.
    pub fn verify(&self, credential: &str) -> Result<String, CredentialError> {
        let data = jsonwebtoken::decode::<Claims>(credential.trim(), &self.key, &self.validation)
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
        if self.revoked.contains(&c.agent) {
            return Err(CredentialError::Revoked(c.agent));
        }
        Ok(c.agent)
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
        // Two enrollments differ.
        assert_ne!(c, enroll(&key(), "onprem-1", None).unwrap());
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

    #[test]
    fn ids_are_checked_at_enrollment() {
        for bad in ["", "Upper", "a b", "a_b", &"x".repeat(64)] {
            assert!(enroll(&key(), bad, None).is_err(), "{bad:?}");
        }
    }
}
