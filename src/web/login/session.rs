//! Signed cookies: the session of a person signed in at the pages (`tollgate_session`, 8
//! hours) and the short-lived state of a sign-in in progress (`tollgate_login`: OIDC `state`,
//! nonce, PKCE verifier and where to return, 10 minutes).
//!
//! A cookie value is `v1.KID.PAYLOAD.MAC`: `PAYLOAD` is base64url JSON, `MAC` is base64url
//! HMAC-SHA256 (ring) over the purpose and the first three parts, keyed with the signing key
//! of the session ring (`data/keys/session.key` until rotated: `crate::keys::SessionRing`).
//! `KID` names the key (derived from it), so that after a key rotation sessions signed with
//! an older key still verify; the purpose keeps a login-state
//! cookie from being replayed as a session. The value is signed, not encrypted: it holds
//! nothing the browser's owner may not see, and it is `HttpOnly`.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{SessionKey, SessionRing};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tollgate_session";
/// The sign-in-in-progress cookie's name.
pub const LOGIN_COOKIE: &str = "tollgate_login";
pub use crate::keys::session_key::SESSION_TTL;
/// How long a sign-in may take at the IdP (seconds).
pub const LOGIN_TTL: u64 = 600;
/// Longest cookie value read or written: browsers keep 4 KiB per cookie.
pub const MAX_COOKIE: usize = 4000;
/// At most this many cookies of one name are tried (a browser sends one per path/domain).
const MAX_SAME_NAME: usize = 4;
/// Format version, first part of every value.
const VERSION: &str = "v1";

/// What a signed value is for; part of the MAC input.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// `tollgate_session`.
    Session,
    /// `tollgate_login`.
    Login,
    /// The `csrf` field of the pages' forms (`web::csrf`).
    Csrf,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Session => "tollgate/session",
            Purpose::Login => "tollgate/login",
            Purpose::Csrf => "tollgate/csrf",
        }
    }
}

/// A signed-in person, as the session cookie carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    #[serde(rename = "u")]
    pub user: String,
    /// The org, when the login names one.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Roles, when the login lists them.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Unix time after which the session is over.
    pub exp: u64,
}

/// A sign-in in progress, between `GET /login` and `GET /login/callback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// The OAuth `state`, compared with the callback's.
    pub state: String,
    /// The OIDC nonce, compared with the ID token's.
    pub nonce: String,
    /// The PKCE verifier, sent with the code.
    pub verifier: String,
    /// Where to go once signed in (a same-origin path).
    #[serde(rename = "ret")]
    pub return_to: String,
    /// Unix time after which the sign-in must start again.
    pub exp: u64,
}

/// The keys that sign and verify cookies: the current one signs, every one verifies.
pub struct SessionKeys {
    /// Signs new cookies (and verifies).
    current: SessionKey,
    /// Superseded keys still accepted until the sessions they signed expire (key rotation).
    older: Vec<SessionKey>,
}

impl SessionKeys {
    /// Keys from the bytes of the current key file (surrounding whitespace trimmed).
    pub fn from_bytes(secret: &[u8]) -> SessionKeys {
        SessionKeys {
            current: SessionKey::new(secret),
            older: Vec::new(),
        }
    }

    /// The keys of the session ring at `now`: the signing one, and every one that verifies.
    pub fn from_ring(ring: &SessionRing, now: u64) -> SessionKeys {
        let current = ring.signing(now).clone();
        let older = ring
            .verifying(now)
            .0
            .into_iter()
            .filter(|k| k.id() != current.id())
            .collect();
        SessionKeys { current, older }
    }

    /// Also accepts values signed with `secret` (a superseded key).
    pub fn accept_older(mut self, secret: &[u8]) -> SessionKeys {
        self.older.push(SessionKey::new(secret));
        self
    }

    /// The id of the key that signs.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Signs `value` for `purpose`. `None` when it does not fit in a cookie.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> Option<String> {
        let payload = B64.encode(serde_json::to_vec(value).ok()?);
        let signed = format!("{VERSION}.{}.{payload}", self.current.id());
        let mac = hmac::sign(self.current.hmac(), &mac_input(purpose, &signed));
        let out = format!("{signed}.{}", B64.encode(mac.as_ref()));
        (out.len() <= MAX_COOKIE).then_some(out)
    }

    /// The value of a cookie signed for `purpose` by one of the keys; `None` when anything
    /// is off (format, key, signature, JSON). Expiry is the caller's check.
    pub fn open<T: DeserializeOwned>(&self, purpose: Purpose, cookie: &str) -> Option<T> {
        if cookie.len() > MAX_COOKIE {
            return None;
        }
        let (signed, mac) = cookie.rsplit_once('.')?;
        let mut parts = signed.splitn(3, '.');
        let (version, kid, payload) = (parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION {
            return None;
        }
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id() == kid)?;
        let mac = B64.decode(mac).ok()?;
        hmac::verify(key.hmac(), &mac_input(purpose, signed), &mac).ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }
}

fn mac_input(purpose: Purpose, signed: &str) -> Vec<u8> {
    [purpose.tag().as_bytes(), b"\0", signed.as_bytes()].concat()
}

/// The values of the cookies named `name` in `headers` (at most a few).
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
        .take(MAX_SAME_NAME)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Secure` over https. `max_age` 0 clears it;
/// `None` makes it last as long as the browser session.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    let max_age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}{max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// 32 random bytes, base64url: `state`, nonce, PKCE verifier (43 characters, as RFC 7636
/// asks).
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(B64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(exp: u64) -> Session {
        Session {
            user: "alice".into(),
            org: Some("acme".into()),
            roles: vec!["admin".into()],
            exp,
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let keys = SessionKeys::from_bytes(b"k1\n");
        let c = keys.seal(Purpose::Session, &session(10)).unwrap();
        assert!(c.starts_with(&format!("v1.{}.", keys.current_id())));
        assert_eq!(
            keys.open::<Session>(Purpose::Session, &c),
            Some(session(10))
        );
        // Another purpose, another key, a changed payload or MAC: nothing.
        assert_eq!(keys.open::<Session>(Purpose::Login, &c), None);
        let other = SessionKeys::from_bytes(b"k2");
        assert_eq!(other.open::<Session>(Purpose::Session, &c), None);
        let forged = other.seal(Purpose::Session, &session(10)).unwrap();
        assert_eq!(keys.open::<Session>(Purpose::Session, &forged), None);
        let parts: Vec<&str> = c.split('.').collect();
        let evil = B64.encode(serde_json::to_vec(&session(u64::MAX)).unwrap());
        let tampered = format!("{}.{}.{evil}.{}", parts[0], parts[1], parts[3]);
        assert_eq!(keys.open::<Session>(Purpose::Session, &tampered), None);
        assert_eq!(keys.open::<Session>(Purpose::Session, "v1.x.y"), None);
        assert_eq!(keys.open::<Session>(Purpose::Session, ""), None);
    }

    #[test]
    fn older_keys_still_verify_after_rotation() {
        let old = SessionKeys::from_bytes(b"old");
        let c = old.seal(Purpose::Session, &session(10)).unwrap();
        let rotated = SessionKeys::from_bytes(b"new").accept_older(b"old");
        assert_ne!(rotated.current_id(), old.current_id());
        assert_eq!(
            rotated.open::<Session>(Purpose::Session, &c),
            Some(session(10))
        );
        let fresh = rotated.seal(Purpose::Session, &session(10)).unwrap();
        assert!(fresh.contains(rotated.current_id()));
    }

    #[test]
    fn the_ring_signs_with_the_newest_key_after_the_delay_and_older_keys_verify_for_a_session() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("session.key"), "00aa11bb\n").unwrap();
        let mut ring = SessionRing::load(dir.path()).unwrap();
        let t = 1_700_000_000;
        let before = SessionKeys::from_ring(&ring, t);
        let old = before.seal(Purpose::Session, &session(t + 10)).unwrap();
        let new_kid = ring.rotate(t).unwrap();
        let ring = SessionRing::load(dir.path()).unwrap();
        // The previous key signs during the delay; the new one after it.
        let during = SessionKeys::from_ring(&ring, t + 1);
        assert_eq!(during.current_id(), before.current_id());
        assert!(during.open::<Session>(Purpose::Session, &old).is_some());
        let delay = crate::keys::ring::SIGNING_DELAY_SECS;
        let after = SessionKeys::from_ring(&ring, t + delay);
        assert_eq!(after.current_id(), new_kid);
        assert!(after.open::<Session>(Purpose::Session, &old).is_some());
        // A session later the old key verifies nothing any more.
        let later = SessionKeys::from_ring(&ring, t + SESSION_TTL);
        assert!(later.open::<Session>(Purpose::Session, &old).is_none());
        let fresh = later.seal(Purpose::Session, &session(t + 10)).unwrap();
        assert!(later.open::<Session>(Purpose::Session, &fresh).is_some());
    }

    #[test]
    fn cookie_header_parsing() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_session=x.y"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tollgate_session=\"z\""),
        );
        let got: Vec<&str> = cookies(&h, SESSION_COOKIE).collect();
        assert_eq!(got, ["x.y", "z"]);
        assert_eq!(cookies(&h, "b").count(), 0);
        let v = set_cookie(SESSION_COOKIE, "v", "/", Some(28800), true).unwrap();
        assert_eq!(
            v,
            "tollgate_session=v; Path=/; Max-Age=28800; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
