//! The session key: an HMAC-SHA256 key (ring) that signs the pages' cookies
//! (`web::login::session`), and its id, derived from it so that the key file stays one line
//! of hex like the others. It rotates through a [`super::ring::Ring`] (`keys/session.key`,
//! `keys/session/`); a superseded session key verifies for [`SESSION_TTL`], the longest a
//! session it signed lasts.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::hmac;

use super::ring::{Ring, RingKey};

/// How long a session lasts (seconds): what a superseded session key keeps verifying.
pub const SESSION_TTL: u64 = 8 * 3600;

/// One session key and its id.
#[derive(Clone)]
pub struct SessionKey {
    /// Names the key in every cookie it signs (`v1.KID....`), so verification picks it.
    id: String,
    /// Signs and verifies.
    key: hmac::Key,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SessionKey {
    /// The key whose secret is `secret` (surrounding whitespace trimmed).
    pub fn new(secret: &[u8]) -> SessionKey {
        let secret = secret.trim_ascii();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"tollgate session key id\0", secret].concat(),
        );
        SessionKey {
            id: B64.encode(&digest.as_ref()[..6]),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The HMAC key.
    pub fn hmac(&self) -> &hmac::Key {
        &self.key
    }
}

impl RingKey for SessionKey {
    const KIND: &'static str = "session";
    const VERIFIES_FOR: u64 = SESSION_TTL;
    fn load(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        if bytes.trim_ascii().is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("session key in {} is empty", path.display()),
            ));
        }
        Ok(SessionKey::new(&bytes))
    }
    fn from_text(text: &str) -> Self {
        SessionKey::new(text.as_bytes())
    }
    fn kid(&self) -> String {
        self.id.clone()
    }
}

/// The session key ring: the pages' cookies.
pub type SessionRing = Ring<SessionKey>;
